"""OSV records (https://ossf.github.io/osv-schema/): parsing, version matching and severity.

Only what an audit of PyPI packages needs: ``affected[].package`` of ecosystem ``PyPI``, its ``ranges`` of type
``ECOSYSTEM`` (``introduced`` / ``fixed`` / ``last_affected`` events) and its explicit ``versions`` list. Versions
are compared with :class:`packaging.version.Version` on their *public* part, so ``2.5.1+cu121`` is matched as
``2.5.1`` (never skipped). A record with a version that does not parse, or a field of the wrong JSON type, is
rejected with :class:`OsvFormatError`; database loaders and the online client skip such a record with a warning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.version import InvalidVersion, Version

from dlsec.errors import InputError
from dlsec.scan.results import Severity

ECOSYSTEM = "PyPI"

_NORMALIZE = re.compile(r"[-_.]+")


class OsvFormatError(InputError):
    """An OSV record that does not follow the schema (missing id, unparsable version, wrong types)."""


def normalize_name(name: str) -> str:
    """PEP 503 normalised project name: lower case, runs of ``-``, ``_``, ``.`` become one ``-``."""
    return _NORMALIZE.sub("-", name).lower().strip()


def public_version(text: str) -> Version:
    """The public part of a version (local label such as ``+cu121`` dropped); :class:`InvalidVersion` if bad."""
    v = Version(text)
    return Version(v.public) if v.local is not None else v


@dataclass(frozen=True)
class Event:
    """One range event: ``kind`` is ``introduced``, ``fixed`` or ``last_affected``; ``version`` None means 0."""

    kind: str
    version: Version | None


@dataclass(frozen=True)
class AffectedPackage:
    """One ``affected[]`` entry for a PyPI package: its ECOSYSTEM ranges and explicit versions."""

    name: str
    ranges: tuple[tuple[Event, ...], ...] = ()
    versions: frozenset[Version] = frozenset()

    def affects(self, version: Version) -> bool:
        """Whether ``version`` (already public) is in one of the ranges or in the explicit list."""
        if version in self.versions:
            return True
        return any(_in_range(version, events) for events in self.ranges)

    def fixed_versions(self) -> tuple[Version, ...]:
        """Every ``fixed`` event of every range, sorted."""
        return tuple(sorted({e.version for r in self.ranges for e in r if e.kind == "fixed" and e.version}))


def _in_range(version: Version, events: tuple[Event, ...]) -> bool:
    """The OSV schema's evaluation: walk the sorted events, the last one at or below ``version`` decides."""
    affected = False
    for e in events:
        if e.kind == "introduced":
            if e.version is None or version >= e.version:
                affected = True
        elif e.kind == "fixed":
            if e.version is not None and version >= e.version:
                affected = False
        elif e.kind == "last_affected" and e.version is not None and version > e.version:
            affected = False
    return affected


_KIND_RANK = {"introduced": 0, "fixed": 1, "last_affected": 1}


def _event_key(e: Event) -> tuple[int, Version, int]:
    """Sort key: ``0`` first, then by version; at equal versions introduced before fixed/last_affected.

    The rank makes the result independent of the order the record lists its events in: ``introduced: 1.0``
    and ``fixed: 1.0`` together always mean "not affected at 1.0" (the fix wins), whichever comes first.
    """
    rank = _KIND_RANK.get(e.kind, 1)
    if e.version is None:
        return (0, Version("0"), rank)
    return (1, e.version, rank)


@dataclass(frozen=True)
class Advisory:
    """One OSV record, reduced to what an audit shows: ids, text, severity and the PyPI packages it affects."""

    id: str
    aliases: tuple[str, ...]
    summary: str
    severity: Severity | None
    affected: tuple[AffectedPackage, ...]
    references: tuple[str, ...] = ()
    cvss: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def names(self) -> frozenset[str]:
        """The normalised names of the packages this advisory affects."""
        return frozenset(a.name for a in self.affected)

    @property
    def all_ids(self) -> frozenset[str]:
        """Its id and aliases: two records sharing one describe the same vulnerability."""
        return frozenset((self.id, *self.aliases))

    def affects(self, name: str, version: Version) -> bool:
        """Whether package ``name`` (normalised) at public ``version`` is affected."""
        return any(a.name == name and a.affects(version) for a in self.affected)

    def fixed_versions(self, name: str) -> tuple[Version, ...]:
        """All fixed versions the record gives for package ``name``, sorted."""
        return tuple(sorted({v for a in self.affected if a.name == name for v in a.fixed_versions()}))


def _text(value: object, what: str, record_id: str) -> str:
    if not isinstance(value, str):
        raise OsvFormatError(f"{record_id}: {what} must be a string")
    return value


def _list(value: object, what: str, record_id: str) -> list[Any]:
    """A JSON array field (absent or null: empty); any other type is an :class:`OsvFormatError`."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise OsvFormatError(f"{record_id}: {what} must be a list, not {type(value).__name__}")
    return value


def _version(text: object, record_id: str) -> Version:
    if not isinstance(text, str):
        raise OsvFormatError(f"{record_id}: version {text!r} is not a string")
    try:
        return public_version(text)
    except InvalidVersion:
        raise OsvFormatError(f"{record_id}: invalid version {text!r}") from None


def parse_record(record: Mapping[str, Any]) -> Advisory:
    """An :class:`Advisory` from one OSV JSON object; :class:`OsvFormatError` if it breaks the schema.

    Entries for other ecosystems and ranges of other types (``GIT``, ``SEMVER``) are ignored. Every field is
    type-checked (``"severity": 5``, ``"ranges": 7``, ``"affected": "x"``, an event that is not an object are
    all :class:`OsvFormatError`), so loaders skip one bad record with a warning instead of aborting the audit.
    """
    if not isinstance(record, Mapping):
        raise OsvFormatError("an OSV record must be a JSON object")
    rid = _text(record.get("id"), "id", "?")
    try:
        return _parse(record, rid)
    except OsvFormatError:
        raise
    except (TypeError, AttributeError, KeyError, ValueError) as exc:  # a shape no check above foresaw
        raise OsvFormatError(f"{rid}: malformed record ({type(exc).__name__}: {exc})") from None


def _parse(record: Mapping[str, Any], rid: str) -> Advisory:
    aliases = record.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise OsvFormatError(f"{rid}: aliases must be a list of strings")
    summary = record.get("summary") or record.get("details") or ""
    summary = " ".join(_text(summary, "summary", rid).split())
    if len(summary) > 300:
        summary = summary[:297] + "..."
    affected_in = _list(record.get("affected"), "affected", rid)
    affected: list[AffectedPackage] = []
    for entry in affected_in:
        if not isinstance(entry, Mapping):
            raise OsvFormatError(f"{rid}: affected entries must be objects")
        pkg = entry.get("package") or {}
        if not isinstance(pkg, Mapping) or pkg.get("ecosystem") != ECOSYSTEM:
            continue
        name = normalize_name(_text(pkg.get("name"), "package name", rid))
        ranges: list[tuple[Event, ...]] = []
        for r in _list(entry.get("ranges"), "ranges", rid):
            if not isinstance(r, Mapping):
                raise OsvFormatError(f"{rid}: ranges entries must be objects")
            if r.get("type") != "ECOSYSTEM":
                continue
            events: list[Event] = []
            for ev in _list(r.get("events"), "range events", rid):
                if not isinstance(ev, Mapping) or len(ev) != 1:
                    raise OsvFormatError(f"{rid}: each range event must have exactly one key")
                ((kind, value),) = ev.items()
                if kind not in ("introduced", "fixed", "last_affected", "limit"):
                    raise OsvFormatError(f"{rid}: unknown range event {kind!r}")
                if kind == "limit":
                    continue
                events.append(Event(kind, None if value == "0" else _version(value, rid)))
            events.sort(key=_event_key)
            ranges.append(tuple(events))
        versions = frozenset(_version(v, rid) for v in _list(entry.get("versions"), "versions", rid))
        affected.append(AffectedPackage(name, tuple(ranges), versions))
    severity, vector = _severity(record, rid)
    refs = tuple(
        str(r["url"])
        for r in _list(record.get("references"), "references", rid)
        if isinstance(r, Mapping) and isinstance(r.get("url"), str)
    )
    return Advisory(rid, tuple(aliases), summary, severity, tuple(affected), refs, vector, record)


_GHSA_SEVERITY = {"LOW": Severity.LOW, "MODERATE": Severity.MEDIUM, "MEDIUM": Severity.MEDIUM,
                  "HIGH": Severity.HIGH, "CRITICAL": Severity.CRITICAL}  # fmt: skip


def _severity(record: Mapping[str, Any], rid: str) -> tuple[Severity | None, str]:
    """``database_specific.severity`` (GHSA's words) first, else the CVSS v3 base score of a vector."""
    vectors = [
        s.get("score", "") for s in _list(record.get("severity"), "severity", rid) if isinstance(s, Mapping)
    ]
    vector = next((v for v in vectors if isinstance(v, str) and v.startswith("CVSS:3")), "")
    db = record.get("database_specific")
    if isinstance(db, Mapping) and isinstance(db.get("severity"), str):
        sev = _GHSA_SEVERITY.get(db["severity"].upper())
        if sev is not None:
            return sev, vector or next((v for v in vectors if isinstance(v, str)), "")
    if vector:
        score = cvss3_base_score(vector)
        if score is not None:
            return severity_of_score(score), vector
    return None, next((v for v in vectors if isinstance(v, str)), "")


def severity_of_score(score: float) -> Severity:
    """CVSS qualitative rating: 9.0+ critical, 7.0+ high, 4.0+ medium, else low."""
    if score >= 9.0:
        return Severity.CRITICAL
    if score >= 7.0:
        return Severity.HIGH
    if score >= 4.0:
        return Severity.MEDIUM
    return Severity.LOW


_W = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
}


def _roundup(x: float) -> float:
    """CVSS 3.1's Roundup: the smallest number with one decimal that is at least ``x``."""
    i = round(x * 100000)
    return i / 100000.0 if i % 10000 == 0 else (math.floor(i / 10000) + 1) / 10.0


def cvss3_base_score(vector: str) -> float | None:
    """The CVSS 3.x base score of a vector string, or None if it is not a complete v3 base vector."""
    parts = dict(p.split(":", 1) for p in vector.split("/")[1:] if ":" in p)
    try:
        scope_changed = parts["S"] == "C"
        pr = {"N": 0.85, "L": 0.68 if scope_changed else 0.62, "H": 0.5 if scope_changed else 0.27}[
            parts["PR"]
        ]
        av, ac, ui = _W["AV"][parts["AV"]], _W["AC"][parts["AC"]], _W["UI"][parts["UI"]]
        c, i, a = (_W["C"][parts[k]] for k in ("C", "I", "A"))
    except KeyError:
        return None
    iss = 1 - (1 - c) * (1 - i) * (1 - a)
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if scope_changed else 6.42 * iss
    exploitability = 8.22 * av * ac * pr * ui
    if impact <= 0:
        return 0.0
    if scope_changed:
        return _roundup(min(1.08 * (impact + exploitability), 10))
    return _roundup(min(impact + exploitability, 10))
