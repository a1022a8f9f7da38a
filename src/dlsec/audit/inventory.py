"""What is installed or pinned: distributions of a site-packages folder, requirements files, uv.lock, poetry.lock.

Names are normalised per PEP 503; versions keep their local label (``2.5.1+cu121``) for display and are
compared by their public part. Anything that cannot be audited (an unpinned requirement, a URL, an editable
project, a lock entry without a version) is reported as :class:`SkippedPackage` with a reason, never dropped.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion

from dlsec.audit.osv import normalize_name, public_version
from dlsec.errors import InputError

_INCLUDE = re.compile(r"^(?:-r|--requirement)(?:\s*=\s*|\s+|(?=[^-\s]))(\S.*)$")

MAX_FILE_BYTES = 16 * 1024 * 1024
"""Largest requirements or lock file read."""
MAX_METADATA_BYTES = 256 * 1024
"""Bytes of a METADATA / PKG-INFO file read: the headers come first, the long description after."""
MAX_INCLUDE_DEPTH = 8
"""Nesting of ``-r other.txt`` inside requirements files."""


@dataclass(frozen=True)
class Package:
    """One distribution at one exact version; ``name`` is normalised, ``source`` says where it was found."""

    name: str
    version: str
    source: str

    @property
    def public(self) -> str:
        """The version without its local label (``2.5.1+cu121`` -> ``2.5.1``)."""
        return str(public_version(self.version))


@dataclass(frozen=True)
class SkippedPackage:
    """A dependency that could not be audited, and why."""

    name: str
    reason: str
    source: str


@dataclass(frozen=True)
class Inventory:
    """Packages to audit and dependencies skipped, from one or more sources."""

    packages: tuple[Package, ...] = ()
    skipped: tuple[SkippedPackage, ...] = ()

    def merge(self, other: Inventory) -> Inventory:
        """Both inventories; a package at the same version from two sources is kept once."""
        seen = {(p.name, p.version) for p in self.packages}
        extra = tuple(p for p in other.packages if (p.name, p.version) not in seen)
        return Inventory(self.packages + extra, self.skipped + other.skipped)


def _auditable(name: str, version: Any, where: str, skipped: list[SkippedPackage], what: str = "") -> bool:
    """Whether ``version`` is a version string packaging can compare; if not, ``name`` is recorded as skipped."""
    if not isinstance(version, str) or not version:
        skipped.append(SkippedPackage(name, f"no version{what}", where))
        return False
    try:
        public_version(version)
    except InvalidVersion:
        skipped.append(SkippedPackage(name, f"invalid version {version!r}{what}", where))
        return False
    return True


def _read_text(path: Path, limit: int | None = None) -> str:
    """A whole text file (UTF-8, a byte order mark dropped), refused above ``limit`` bytes (default
    :data:`MAX_FILE_BYTES`)."""
    limit = MAX_FILE_BYTES if limit is None else limit
    try:
        size = path.stat().st_size
        if size > limit:
            raise InputError(f"{path}: {size} bytes, above the {limit}-byte limit")
        return path.read_text(encoding="utf-8-sig", errors="replace")  # -sig: a leading BOM is dropped
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _metadata_headers(path: Path) -> dict[str, str]:
    """``Name`` and ``Version`` from the RFC 822 headers of a METADATA / PKG-INFO file (first block only)."""
    try:
        with path.open("rb") as f:
            head = f.read(MAX_METADATA_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in head.splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version") and key not in out:
            out[key] = value.strip()
    return out


def _from_dir_name(stem: str) -> tuple[str, str]:
    """``torch-2.5.1+cu121`` -> (``torch``, ``2.5.1+cu121``): the dist-info naming rule (name, dash, version)."""
    name, _, version = stem.partition("-")
    return name, version.split("-")[0] if version else ""


def read_site_packages(path: str | os.PathLike[str], source: str | None = None) -> Inventory:
    """Distributions installed in one folder (``*.dist-info`` and ``*.egg-info``), sorted by name."""
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    src = source or str(root)
    packages: dict[str, Package] = {}
    skipped: list[SkippedPackage] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"cannot list {root}: {exc.strerror or exc}") from None
    for entry in entries:
        if entry.name.endswith(".dist-info"):
            meta, stem = Path(entry.path) / "METADATA", entry.name[: -len(".dist-info")]
        elif entry.name.endswith(".egg-info"):
            meta, stem = Path(entry.path), entry.name[: -len(".egg-info")]
            if entry.is_dir():
                meta = meta / "PKG-INFO"
        else:
            continue
        headers = _metadata_headers(meta)
        dir_name, dir_version = _from_dir_name(stem)
        name = headers.get("Name") or dir_name
        version = headers.get("Version") or dir_version
        norm = normalize_name(name)
        if not _auditable(norm, version, src, skipped, f" in {entry.name}"):
            continue
        packages.setdefault(norm, Package(norm, version, src))
    return Inventory(tuple(sorted(packages.values(), key=lambda p: p.name)), tuple(skipped))


def read_environment(paths: Sequence[str] | None = None) -> Inventory:
    """The running interpreter's distributions: every directory on ``sys.path``, first one wins (as imports do)."""
    inv = Inventory()
    names: set[str] = set()
    for entry in paths if paths is not None else sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        found = read_site_packages(entry, source="environment")
        new = tuple(p for p in found.packages if p.name not in names)
        names.update(p.name for p in new)
        inv = Inventory(inv.packages + new, inv.skipped + found.skipped)
    return Inventory(tuple(sorted(inv.packages, key=lambda p: p.name)), inv.skipped)


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """Requirement lines with comments stripped and ``\\`` continuations joined, with their first line number."""
    buf, start = "", 0
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw
        if line.lstrip().startswith("#"):
            line = ""
        elif " #" in line or "\t#" in line:
            line = line[: min(i for i in (line.find(" #"), line.find("\t#")) if i >= 0)]
        if not buf:
            start = no
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        if buf.strip():
            yield start, buf.strip()
        buf = ""
    if buf.strip():
        yield start, buf.strip()


def read_requirements(path: str | os.PathLike[str], _depth: int = 0) -> Inventory:
    """Exact pins (``==`` / ``===``) of a pip requirements file; anything else is skipped with a reason."""
    p = Path(path)
    if _depth > MAX_INCLUDE_DEPTH:
        raise InputError(f"{p}: requirements files nested more than {MAX_INCLUDE_DEPTH} deep")
    text = _read_text(p)
    packages: list[Package] = []
    skipped: list[SkippedPackage] = []
    inv = Inventory()
    for no, line in _logical_lines(text):
        where = f"{p}:{no}"
        include = _INCLUDE.match(line)
        if include:
            inv = inv.merge(read_requirements(p.parent / include.group(1).strip(), _depth + 1))
            continue
        if line.startswith("-"):
            if line.startswith(("-e", "--editable")):
                skipped.append(SkippedPackage(line.split(None, 1)[-1], "editable requirement", where))
            # other options (-c, --index-url, --hash on its own line...) do not name a package
            continue
        spec = line.split(" --hash", 1)[0].split("--hash=", 1)[0].strip()
        try:
            req = Requirement(spec)
        except InvalidRequirement as exc:
            skipped.append(SkippedPackage(spec, f"cannot parse requirement: {exc}", where))
            continue
        name = normalize_name(req.name)
        if req.url:
            skipped.append(SkippedPackage(name, "URL requirement (no version to audit)", where))
            continue
        pins = [s for s in req.specifier if s.operator in ("==", "===") and "*" not in s.version]
        if len(pins) != 1 or len(req.specifier) != 1:
            reason = f"not pinned to one version ({req.specifier})" if str(req.specifier) else "not pinned"
            skipped.append(SkippedPackage(name, reason, where))
            continue
        if not _auditable(name, pins[0].version, where, skipped):
            continue
        packages.append(Package(name, pins[0].version, where))
    return inv.merge(Inventory(tuple(packages), tuple(skipped)))


def _toml(path: Path, text: str | None = None) -> dict[str, Any]:
    """A TOML file (or its ``text``, already read) parsed with ``tomllib`` (Python 3.11+) or ``tomli``."""
    try:
        import tomllib as toml_mod  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        try:
            import tomli as toml_mod  # type: ignore[no-redef,import-not-found,unused-ignore]
        except ModuleNotFoundError:
            raise InputError(f"{path}: reading lock files on Python 3.10 needs the tomli package") from None
    try:
        data = toml_mod.loads(_read_text(path) if text is None else text)
    except ValueError as exc:
        raise InputError(f"{path}: invalid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a TOML table")
    return data


POETRY_LOCAL_SOURCES = frozenset({"directory", "file", "git", "url"})
"""Poetry ``[package.source] type`` values of packages not installed from an index: not a PyPI release."""


def read_lock(path: str | os.PathLike[str], _data: dict[str, Any] | None = None) -> Inventory:
    """The ``[[package]]`` entries of a ``uv.lock`` or ``poetry.lock`` (both: name, version, optional source).

    Local projects are skipped with a reason, not audited as the PyPI package of the same name: uv's
    ``editable``/``virtual``/``directory``/``path`` sources and Poetry's ``directory``/``file``/``git``/``url``
    source types (Poetry's ``legacy`` index sources are audited).
    """
    p = Path(path)
    data = _toml(p) if _data is None else _data
    entries = data.get("package", [])
    if not isinstance(entries, list):
        raise InputError(f"{p}: 'package' is not an array of tables")
    packages: list[Package] = []
    skipped: list[SkippedPackage] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InputError(f"{p}: package entry {i} has no name")
        name = normalize_name(entry["name"])
        where = f"{p}:{name}"
        source = entry.get("source")
        if isinstance(source, dict) and ({"editable", "virtual", "directory", "path"} & set(source)):
            kind = next(k for k in ("editable", "virtual", "directory", "path") if k in source)
            skipped.append(SkippedPackage(name, f"local project ({kind} source)", where))
            continue
        if isinstance(source, dict) and source.get("type") in POETRY_LOCAL_SOURCES:
            kind = source["type"]
            skipped.append(SkippedPackage(name, f"not from a package index (Poetry {kind} source)", where))
            continue
        version = entry.get("version")
        if not _auditable(name, version, where, skipped, " in lock entry"):
            continue
        packages.append(Package(name, str(version), where))
    return Inventory(tuple(packages), tuple(skipped))


TOML_LOCKS = frozenset({"uv.lock", "poetry.lock", "pdm.lock"})
"""Lock file names that are always TOML with ``[[package]]`` tables."""


def read_file(path: str | os.PathLike[str]) -> Inventory:
    """A requirements file or a TOML lock file, by name and content.

    ``uv.lock``, ``poetry.lock`` and ``pdm.lock`` are TOML (an error if they do not parse). Rye's
    ``requirements.lock`` / ``requirements-dev.lock`` (any ``requirements*.lock``) are pip requirements
    files. Any other ``*.lock`` is read as a TOML lock when it parses as a non-empty TOML table and as a
    requirements file otherwise (``torch==2.0.0`` is not valid TOML). Every other name is a requirements file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    name = p.name.lower()
    if name in TOML_LOCKS:
        return read_lock(p)
    if name.endswith(".lock") and not name.startswith("requirements"):
        try:
            data = _toml(p)
        except InputError:
            data = {}
        if data:
            return read_lock(p, data)
    return read_requirements(p)
