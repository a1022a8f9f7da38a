"""Advisory sources: an OSV export zip (bounded) and the online client against a fake OSV on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import dlsec.audit.service as service
from dlsec.audit import audit_environment, load_database
from dlsec.audit.inventory import Package
from dlsec.audit.service import Database, OnlineOsv, ServiceError
from dlsec.errors import InputError
from tests.audit.fake_osv import FakeOsv, serve
from tests.audit.helpers import osv_zip, record, site_packages

TORCH = record("GHSA-aaaa-bbbb-cccc", "torch", [{"introduced": "0"}, {"fixed": "2.6.0"}],
               aliases=["CVE-2099-0001", "PYSEC-2099-1"], database_specific={"severity": "CRITICAL"})  # fmt: skip
TORCH_DUP = record(
    "PYSEC-2099-1", "torch", [{"introduced": "0"}, {"fixed": "2.6.0"}], aliases=["CVE-2099-0001"]
)
TORCH_2 = record("GHSA-dddd-eeee-ffff", "torch", [{"introduced": "2.0"}, {"fixed": "2.7.1"}])
OTHER = record("GHSA-gggg-hhhh-iiii", "requests", [{"introduced": "0"}, {"fixed": "9.0"}])


def test_zip_database(tmp_path: Path) -> None:
    z = osv_zip(
        tmp_path / "all.zip",
        [TORCH, TORCH_DUP, TORCH_2, OTHER, record("BAD-1", "torch", [{"introduced": "0"}, {"fixed": "x y"}])],
        raw={"broken.json": b"{not json", "README.txt": b"ignored"},
    )
    db = load_database(z)
    assert {a.id for a in db.advisories} == {TORCH["id"], TORCH_DUP["id"], TORCH_2["id"], OTHER["id"]}
    assert len(db.warnings) == 2 and any("BAD-1" in w for w in db.warnings)
    only = load_database(z, names={"torch"})
    assert {a.id for a in only.advisories} == {TORCH["id"], TORCH_DUP["id"], TORCH_2["id"]}
    odd = osv_zip(tmp_path / "odd.zip", [record("GHSA-odd", "Llama_CPP.Python", [{"introduced": "0"}])])
    assert [a.id for a in load_database(odd, names={"llama-cpp-python"}).advisories] == ["GHSA-odd"]
    site = site_packages(tmp_path / "site", {"torch": "2.5.1+cu121"})
    report = audit_environment(site, db)
    # PYSEC-2099-1 is the same vulnerability as the GHSA record: shown once, under the GHSA id
    assert [v.id for v in report.vulns] == ["GHSA-aaaa-bbbb-cccc", "GHSA-dddd-eeee-ffff"]
    assert set(report.vulns[0].aliases) == {"CVE-2099-0001", "PYSEC-2099-1"}
    assert {v.fix for v in report.vulns} == {"2.7.1"}  # the smallest version fixing both


def test_zip_bounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    z = osv_zip(tmp_path / "all.zip", [TORCH, TORCH_2, OTHER])
    monkeypatch.setattr(service, "MAX_ZIP_ENTRIES", 2)
    with pytest.raises(InputError, match="members"):
        Database.from_zip(z)
    monkeypatch.setattr(service, "MAX_ZIP_ENTRIES", 10)
    monkeypatch.setattr(service, "MAX_ZIP_TOTAL", 100)
    with pytest.raises(InputError, match="uncompressed"):
        Database.from_zip(z)
    monkeypatch.setattr(service, "MAX_ZIP_TOTAL", 10**6)
    monkeypatch.setattr(service, "MAX_RECORD_BYTES", len(json.dumps(OTHER)) + 1)
    db = Database.from_zip(z)  # the two larger records are skipped, with warnings
    assert len(db) + len(db.warnings) == 3 and len(db.warnings) >= 1
    (tmp_path / "not.zip").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(InputError, match="zip"):
        Database.from_zip(tmp_path / "not.zip")


def test_online_querybatch_then_vulns(tmp_path: Path) -> None:
    fake = FakeOsv([TORCH, TORCH_2, OTHER], page_size=1)  # one id per page: paging must be followed
    pkgs = [
        Package("torch", "2.5.1+cu121", "t"),
        Package("numpy", "2.0.0", "t"),
        Package("requests", "2.0", "t"),
    ]
    with serve(fake) as url:
        client = OnlineOsv(url)
        got = client.query(pkgs)
    assert sorted(a.id for a in got[pkgs[0]]) == [TORCH["id"], TORCH_2["id"]]
    assert got[pkgs[1]] == [] and [a.id for a in got[pkgs[2]]] == [OTHER["id"]]
    batches = [b for m, p, b in fake.log if p == "/v1/querybatch"]
    assert len(batches) == 2  # second page for torch only
    first = batches[0]["queries"]
    assert first[0] == {
        "package": {"name": "torch", "ecosystem": "PyPI"},
        "version": "2.5.1",
    }  # public version
    assert batches[1]["queries"] == [{"package": {"name": "torch", "ecosystem": "PyPI"}, "version": "2.5.1",
                                      "page_token": "1"}]  # fmt: skip
    gets = sorted(p for m, p, _ in fake.log if m == "GET")
    assert gets == sorted(f"/v1/vulns/{r['id']}" for r in (TORCH, TORCH_2, OTHER))  # each record fetched once


def test_online_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(FakeOsv([TORCH], fail=503)) as url, pytest.raises(ServiceError, match="HTTP 503"):
        OnlineOsv(url).query([Package("torch", "2.5.1", "t")])
    with serve(FakeOsv([TORCH])) as url:
        dead = url
    with pytest.raises(ServiceError, match="cannot reach"):
        OnlineOsv(dead, timeout=2).query([Package("torch", "2.5.1", "t")])
    with pytest.raises(InputError, match="http"):
        OnlineOsv("file:///etc/passwd")
    monkeypatch.setenv("DLSEC_OSV_URL", "http://127.0.0.1:9/base/")
    assert OnlineOsv().base_url == "http://127.0.0.1:9/base"


def test_online_response_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "MAX_RESPONSE_BYTES", 10)
    with serve(FakeOsv([TORCH])) as url, pytest.raises(ServiceError, match="larger"):
        OnlineOsv(url).query([Package("torch", "2.5.1", "t")])


@contextmanager
def _drip_server(in_headers: bool) -> Iterator[str]:
    """A loopback HTTP server that answers one byte every 50 ms (in the headers or in the body)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    stop = threading.Event()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            try:
                if not in_headers:
                    conn.sendall(head)
                for i in range(200):
                    if stop.is_set():
                        return
                    conn.sendall(head[i : i + 1] if in_headers and i < len(head) else b" ")
                    time.sleep(0.05)
            except OSError:
                pass

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        t.join(5)
        srv.close()


@pytest.mark.parametrize("in_headers", [False, True], ids=["body", "headers"])
def test_online_timeout_is_a_total_deadline(in_headers: bool) -> None:
    # regression: --timeout was per socket read, so a server dripping a byte at a time never tripped it
    with _drip_server(in_headers) as url:
        start = time.monotonic()
        with pytest.raises(ServiceError, match="no complete answer within 0.5 s"):
            OnlineOsv(url, timeout=0.5).query([Package("torch", "2.5.1", "t")])
        assert time.monotonic() - start < 3


class _FakeWithBadRecords(FakeOsv):
    """Lists every malformed record for any query (besides the good records that match)."""

    def __init__(self, good: list[dict[str, Any]], bad: list[dict[str, Any]]) -> None:
        super().__init__([*good, *bad])
        self.good = FakeOsv(good)
        self.bad_ids = [r["id"] for r in bad]

    def ids_for(self, name: str, version: str) -> list[str]:
        return sorted([*self.good.ids_for(name, version), *self.bad_ids])


BAD_RECORDS: list[dict[str, Any]] = [
    {"id": "BAD-sev", "severity": 5, "affected": []},
    {"id": "BAD-aff", "affected": "x"},
    {"id": "BAD-rng", "affected": [{"package": {"ecosystem": "PyPI", "name": "torch"}, "ranges": 7}]},
]


def test_malformed_records_are_skipped_everywhere(tmp_path: Path) -> None:
    # regression: one malformed record aborted the whole audit with a TypeError
    z = osv_zip(tmp_path / "all.zip", [TORCH, *BAD_RECORDS])
    for names in (None, {"torch"}):
        db = Database.from_zip(z, names=names)
        assert [a.id for a in db.advisories] == [TORCH["id"]]
    assert len(Database.from_zip(z).warnings) == 3
    fake = _FakeWithBadRecords([TORCH], BAD_RECORDS)
    pkg = Package("torch", "2.5.1", "t")
    with serve(fake) as url:
        client = OnlineOsv(url)
        got = client.query([pkg])
    assert [a.id for a in got[pkg]] == [TORCH["id"]]
    assert sorted(w.split()[3].rstrip(":") for w in client.warnings) == sorted(r["id"] for r in BAD_RECORDS)
