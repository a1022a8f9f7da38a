"""Where advisories come from: the offline :class:`Database` (shipped JSON or an OSV zip) or :class:`OnlineOsv`.

Both implement :class:`VulnerabilityService`: ``query(packages)`` returns, for each package, the advisories
that affect its (public) version. The online client speaks OSV's API: ``POST /v1/querybatch`` for ids, then
``GET /v1/vulns/{id}`` for each record; every response is bounded in size and time.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from dlsec.audit.inventory import Package
from dlsec.audit.osv import ECOSYSTEM, Advisory, OsvFormatError, normalize_name, parse_record, public_version
from dlsec.errors import DlsecError, InputError

log = logging.getLogger(__name__)

DEFAULT_OSV_URL = "https://api.osv.dev"
"""OSV's API; ``--osv-url`` or ``DLSEC_OSV_URL`` point elsewhere (a mirror, a test server)."""
MAX_ZIP_ENTRIES = 500_000
MAX_ZIP_TOTAL = 2 * 1024**3
"""Sum of the uncompressed sizes of an OSV zip's members."""
MAX_RECORD_BYTES = 8 * 1024 * 1024
"""One advisory (a zip member, a JSON file, an API response for one record)."""
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
"""One querybatch response."""
MAX_PAGES = 20
"""``next_page_token`` rounds per querybatch."""
BATCH = 1000
"""Queries per querybatch request (OSV's limit)."""


class ServiceError(DlsecError):
    """The vulnerability service could not be reached or answered something unreadable (exit status 2)."""


class VulnerabilityService(Protocol):
    """Anything that maps packages to the advisories affecting them."""

    def query(self, packages: Sequence[Package]) -> dict[Package, list[Advisory]]:
        """For each package, the advisories affecting its version (an empty list when none)."""
        ...


class Database:
    """Advisories held in memory, indexed by normalised package name."""

    def __init__(self, advisories: Iterable[Advisory] = (), warnings: Sequence[str] = ()) -> None:
        self.advisories: list[Advisory] = []
        self.warnings: list[str] = list(warnings)
        self._by_name: dict[str, list[Advisory]] = {}
        for a in advisories:
            self.add(a)

    def add(self, advisory: Advisory) -> None:
        """Index one more advisory."""
        self.advisories.append(advisory)
        for name in advisory.names:
            self._by_name.setdefault(name, []).append(advisory)

    def __len__(self) -> int:
        return len(self.advisories)

    def for_name(self, name: str) -> list[Advisory]:
        """Every advisory naming package ``name`` (normalised)."""
        return list(self._by_name.get(name, ()))

    def query(self, packages: Sequence[Package]) -> dict[Package, list[Advisory]]:
        """See :class:`VulnerabilityService`."""
        out: dict[Package, list[Advisory]] = {}
        for p in packages:
            v = public_version(p.version)
            out[p] = [a for a in self._by_name.get(p.name, ()) if a.affects(p.name, v)]
        return out

    @classmethod
    def from_records(cls, records: Iterable[Any], origin: str = "records") -> Database:
        """Parse OSV JSON objects; a record breaking the schema is skipped with a warning."""
        db = cls()
        for i, rec in enumerate(records):
            try:
                db.add(parse_record(rec))
            except OsvFormatError as exc:
                rid = rec.get("id", f"#{i}") if isinstance(rec, Mapping) else f"#{i}"
                msg = f"{origin}: skipped advisory {rid}: {exc}"
                log.warning(msg)
                db.warnings.append(msg)
        return db

    @classmethod
    def shipped(cls) -> Database:
        """The deep-learning advisories shipped with dlsec (``dlsec/audit/data/advisories.json``)."""
        text = resources.files("dlsec.audit").joinpath("data/advisories.json").read_text(encoding="utf-8")
        records = json.loads(text)
        if not isinstance(records, list):
            raise InputError("shipped advisory database is not a JSON list")
        return cls.from_records(records, origin="shipped database")

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Database:
        """A JSON file holding one OSV record or a list of them."""
        p = Path(path)
        if p.stat().st_size > MAX_RESPONSE_BYTES:
            raise InputError(f"{p}: larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError(f"{p}: invalid JSON: {exc}") from None
        return cls.from_records(data if isinstance(data, list) else [data], origin=str(p))

    @classmethod
    def from_zip(cls, path: str | os.PathLike[str], names: Iterable[str] | None = None) -> Database:
        """OSV's per-ecosystem export (``PyPI/all.zip``: one JSON file per advisory), read offline.

        With ``names``, only advisories naming one of those packages are kept (faster, less memory).
        Refused (:class:`InputError`) above :data:`MAX_ZIP_ENTRIES` members or :data:`MAX_ZIP_TOTAL`
        uncompressed bytes; a member above :data:`MAX_RECORD_BYTES` or not valid JSON is skipped with a warning.
        """
        p = Path(path)
        wanted = set(names) if names is not None else None
        try:
            zf = zipfile.ZipFile(p)
        except (OSError, zipfile.BadZipFile) as exc:
            raise InputError(f"{p}: not a readable zip file: {exc}") from None
        db = cls()
        with zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            if len(infos) > MAX_ZIP_ENTRIES:
                raise InputError(f"{p}: {len(infos)} members, above the {MAX_ZIP_ENTRIES} limit")
            total = sum(i.file_size for i in infos)
            if total > MAX_ZIP_TOTAL:
                raise InputError(f"{p}: {total} bytes uncompressed, above the {MAX_ZIP_TOTAL}-byte limit")
            for info in infos:
                if not info.filename.endswith(".json"):
                    continue
                if info.file_size > MAX_RECORD_BYTES:
                    db._warn(f"{p}: skipped {info.filename}: {info.file_size} bytes, above the record limit")
                    continue
                with zf.open(info) as f:
                    data = f.read(MAX_RECORD_BYTES + 1)
                if len(data) > MAX_RECORD_BYTES:  # the header lied about the size
                    db._warn(f"{p}: skipped {info.filename}: larger than its header says")
                    continue
                if wanted is not None and not _raw_names(data) & wanted:
                    continue  # cheap pre-filter: no "name" field naming a wanted package, skip the JSON parse
                try:
                    rec = json.loads(data)
                except ValueError as exc:
                    db._warn(f"{p}: skipped {info.filename}: invalid JSON ({exc})")
                    continue
                if wanted is not None and not _names_in(rec) & wanted:
                    continue
                try:
                    db.add(parse_record(rec))
                except OsvFormatError as exc:
                    db._warn(f"{p}: skipped advisory in {info.filename}: {exc}")
        return db

    def _warn(self, msg: str) -> None:
        log.warning(msg)
        self.warnings.append(msg)


_NAME_FIELD = re.compile(rb'"name"\s*:\s*"([A-Za-z0-9._-]{1,200})"')


def _raw_names(data: bytes) -> set[str]:
    """Normalised values of every ``"name"`` field in raw JSON bytes: a superset of the package names."""
    return {normalize_name(m.decode("ascii")) for m in _NAME_FIELD.findall(data)}


def _names_in(record: Any) -> set[str]:
    """Normalised PyPI package names an OSV record's ``affected`` entries name."""
    out: set[str] = set()
    affected = record.get("affected") if isinstance(record, Mapping) else None
    if isinstance(affected, list):
        for entry in affected:
            pkg = entry.get("package") if isinstance(entry, Mapping) else None
            if (
                isinstance(pkg, Mapping)
                and pkg.get("ecosystem") == ECOSYSTEM
                and isinstance(pkg.get("name"), str)
            ):
                out.add(normalize_name(pkg["name"]))
    return out


class _Deadline:
    """A total time budget for one HTTP exchange; a watchdog shuts the socket down when it runs out."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self._timers: list[threading.Timer] = []
        self._fired = False

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return self._fired or time.monotonic() >= self.end

    def arm(self, sock: socket.socket | None) -> None:
        """Shut ``sock`` down at the deadline: a read blocked on it (headers or body) then returns at once."""
        if sock is None:
            return

        def fire() -> None:
            self._fired = True
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(self.remaining(), fire)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def cancel(self) -> None:
        for t in self._timers:
            t.cancel()


class _DeadlineMixin(urllib.request.AbstractHTTPHandler):
    """Arms the request's :class:`_Deadline` on each connection's socket once it is connected."""

    def __init__(self, deadline: _Deadline, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline

    def do_open(self, http_class: Any, req: Any, **http_conn_args: Any) -> Any:
        deadline = self.deadline

        def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            conn = http_class(host, **kwargs)
            plain_connect = conn.connect
            create = getattr(conn, "_create_connection", None)
            if create is not None:  # the raw socket as soon as it exists: a TLS handshake is covered too

                def create_and_arm(*args: Any, **kw: Any) -> socket.socket:
                    sock: socket.socket = create(*args, **kw)
                    deadline.arm(sock)
                    return sock

                conn._create_connection = create_and_arm

            def connect() -> None:
                plain_connect()
                deadline.arm(conn.sock)

            conn.connect = connect
            return conn  # type: ignore[no-any-return]

        return super().do_open(make, req, **http_conn_args)


class _DeadlineHTTP(_DeadlineMixin, urllib.request.HTTPHandler):
    pass


class _DeadlineHTTPS(_DeadlineMixin, urllib.request.HTTPSHandler):
    pass


class OnlineOsv:
    """OSV's API over HTTP(S): querybatch for ids, then one GET per advisory (each record fetched once)."""

    def __init__(self, base_url: str | None = None, timeout: float = 15.0) -> None:
        url = base_url or os.environ.get("DLSEC_OSV_URL") or DEFAULT_OSV_URL
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InputError(f"OSV URL must be http(s)://host[:port][/path], got {url!r}")
        self.base_url = url.rstrip("/")
        self.timeout = timeout
        self.warnings: list[str] = []
        self.requests = 0

    def _request(self, path: str, body: Any = None, limit: int | None = None) -> Any:
        """One request, its answer parsed as JSON: at most ``limit`` bytes, within ``timeout`` seconds in all.

        ``timeout`` is a total deadline (connect, headers and body together), not a per-read socket timeout:
        a server dripping one byte at a time is cut off when the deadline passes (a watchdog shuts the socket
        down, which also ends a read blocked in the headers) and the body is read in chunks against a
        monotonic clock.
        """
        limit = MAX_RESPONSE_BYTES if limit is None else limit
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base_url + path,
            data=data,
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json", "User-Agent": "dlsec-audit"},
        )
        self.requests += 1
        deadline = _Deadline(self.timeout)
        opener = urllib.request.build_opener(_DeadlineHTTP(deadline), _DeadlineHTTPS(deadline))
        late = ServiceError(f"OSV {path}: no complete answer within {self.timeout:g} s")
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                chunks: list[bytes] = []
                size = 0
                while size <= limit:
                    if deadline.expired():
                        raise late
                    chunk = resp.read1(min(64 * 1024, limit + 1 - size))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                raw = b"".join(chunks)
        except urllib.error.HTTPError as exc:
            if deadline.expired():
                raise late from None
            raise ServiceError(f"OSV {path}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            if deadline.expired():
                raise late from None
            reason = getattr(exc, "reason", exc)
            raise ServiceError(f"cannot reach OSV at {self.base_url}: {reason}") from None
        finally:
            deadline.cancel()
        if deadline.expired():  # the watchdog cut the answer short
            raise late
        if len(raw) > limit:
            raise ServiceError(f"OSV {path}: response larger than {limit} bytes")
        try:
            return json.loads(raw)
        except ValueError:
            raise ServiceError(f"OSV {path}: response is not JSON") from None

    def _ids(self, packages: Sequence[Package]) -> list[list[str]]:
        """For each package, the ids OSV lists for its public version (following page tokens)."""
        ids: list[list[str]] = [[] for _ in packages]
        for start in range(0, len(packages), BATCH):
            chunk = list(range(start, min(start + BATCH, len(packages))))
            tokens: dict[int, str | None] = {i: None for i in chunk}
            for _ in range(MAX_PAGES):
                if not tokens:
                    break
                order = list(tokens)
                queries = []
                for i in order:
                    q: dict[str, Any] = {
                        "package": {"name": packages[i].name, "ecosystem": ECOSYSTEM},
                        "version": packages[i].public,
                    }
                    if tokens[i]:
                        q["page_token"] = tokens[i]
                    queries.append(q)
                answer = self._request("/v1/querybatch", {"queries": queries})
                results = answer.get("results") if isinstance(answer, dict) else None
                if not isinstance(results, list) or len(results) != len(order):
                    raise ServiceError(
                        "OSV querybatch: malformed response (results do not match the queries)"
                    )
                tokens = {}
                for i, res in zip(order, results, strict=True):
                    res = res if isinstance(res, dict) else {}
                    vulns = res.get("vulns")
                    for v in vulns if isinstance(vulns, list) else []:
                        if isinstance(v, dict) and isinstance(v.get("id"), str):
                            ids[i].append(v["id"])
                    if isinstance(res.get("next_page_token"), str) and res["next_page_token"]:
                        tokens[i] = res["next_page_token"]
            if tokens:
                self.warnings.append(
                    f"OSV: stopped paging after {MAX_PAGES} pages; results may be incomplete"
                )
        return ids

    def query(self, packages: Sequence[Package]) -> dict[Package, list[Advisory]]:
        """See :class:`VulnerabilityService`; a record that cannot be parsed is skipped with a warning."""
        ids = self._ids(packages)
        records: dict[str, Advisory | None] = {}
        for vid in sorted({v for row in ids for v in row}):
            rec = self._request("/v1/vulns/" + urllib.parse.quote(vid, safe=""), None, MAX_RECORD_BYTES)
            try:
                records[vid] = parse_record(rec)
            except OsvFormatError as exc:
                records[vid] = None
                self.warnings.append(f"OSV: skipped advisory {vid}: {exc}")
        out: dict[Package, list[Advisory]] = {}
        for p, row in zip(packages, ids, strict=True):
            found = [records[v] for v in dict.fromkeys(row)]
            out[p] = [a for a in found if a is not None]
        return out
