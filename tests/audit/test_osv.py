"""OSV parsing and matching: range events, explicit versions, local labels, pre-releases, severity."""

from __future__ import annotations

from typing import Any

import pytest
from packaging.version import Version

from dlsec.audit.osv import OsvFormatError, cvss3_base_score, normalize_name, parse_record, public_version
from dlsec.audit.service import Database
from dlsec.scan.results import Severity
from tests.audit.helpers import record


def affects(rec: dict, version: str, name: str = "pkg") -> bool:
    return parse_record(rec).affects(normalize_name(name), public_version(version))


def test_introduced_fixed() -> None:
    rec = record("X-1", "pkg", [{"introduced": "1.0"}, {"fixed": "1.5"}])
    assert not affects(rec, "0.9")
    assert affects(rec, "1.0") and affects(rec, "1.4.99")
    assert not affects(rec, "1.5") and not affects(rec, "2.0")


def test_zero_and_prerelease() -> None:
    rec = record("X-2", "pkg", [{"introduced": "0"}, {"fixed": "2.6.0"}])
    assert affects(rec, "0.0.1")
    assert affects(rec, "2.6.0rc1")  # a pre-release of the fix comes before it
    assert affects(rec, "2.6.0.dev20240101")
    assert not affects(rec, "2.6.0") and not affects(rec, "2.6.1rc1")


def test_local_label_compared_by_public_version() -> None:
    rec = record("X-3", "torch", [{"introduced": "0"}, {"fixed": "2.6.0"}])
    assert affects(rec, "2.5.1+cu121", "torch")
    assert affects(rec, "2.5.1+cpu", "torch")
    assert not affects(rec, "2.6.0+cu124", "torch")


def test_last_affected_and_reintroduced() -> None:
    rec = record("X-4", "pkg", [{"introduced": "1.0"}, {"last_affected": "1.2"}])
    assert affects(rec, "1.2") and not affects(rec, "1.2.1")
    two = record(
        "X-5", "pkg", [{"introduced": "0"}, {"fixed": "1.0"}, {"introduced": "2.0"}, {"fixed": "2.1"}]
    )
    assert (
        affects(two, "0.5") and not affects(two, "1.5") and affects(two, "2.0.5") and not affects(two, "2.1")
    )


def test_unsorted_events_and_versions_list() -> None:
    rec = record("X-6", "pkg", [{"fixed": "3.0"}, {"introduced": "2.0"}])
    assert affects(rec, "2.5") and not affects(rec, "1.0") and not affects(rec, "3.0")
    listed = {
        "id": "X-7",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "Pkg_Name"}, "versions": ["1.0", "1.1"]}],
    }
    assert affects(listed, "1.1", "pkg-name") and not affects(listed, "1.2", "pkg-name")


def test_other_ecosystems_and_git_ranges_ignored() -> None:
    rec = {
        "id": "X-8",
        "affected": [
            {"package": {"ecosystem": "npm", "name": "pkg"}, "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}]}]},
            {"package": {"ecosystem": "PyPI", "name": "pkg"},
             "ranges": [{"type": "GIT", "repo": "r", "events": [{"introduced": "0"}, {"fixed": "abc123"}]}]},
        ],
    }  # fmt: skip
    adv = parse_record(rec)
    assert adv.names == {"pkg"} and not adv.affects("pkg", Version("1.0"))


@pytest.mark.parametrize(
    "bad",
    [
        {"affected": []},
        {
            "id": "B-1",
            "affected": [{"package": {"ecosystem": "PyPI", "name": "p"}, "versions": ["not a version!"]}],
        },
        record("B-2", "p", [{"introduced": "0"}, {"fixed": "1.0 final"}]),
        record("B-3", "p", [{"introduced": "0", "fixed": "1.0"}]),
        {"id": "B-4", "aliases": "CVE-1", "affected": []},
    ],
)
def test_invalid_records_rejected(bad: dict) -> None:
    with pytest.raises(OsvFormatError):
        parse_record(bad)


def test_database_skips_invalid_record_with_warning() -> None:
    good = record("G-1", "pkg", [{"introduced": "0"}, {"fixed": "1.0"}])
    bad = record("B-9", "pkg", [{"introduced": "0"}, {"fixed": "??"}])
    db = Database.from_records([good, bad, "not an object"])
    assert [a.id for a in db.advisories] == ["G-1"]
    assert len(db.warnings) == 2 and "B-9" in db.warnings[0]


@pytest.mark.parametrize(
    ("vector", "score"),
    [  # reference scores from the CVSS 3.1 calculator (first.org)
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 8.8),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:H/I:H/A:H", 9.6),
        ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:L", 3.3),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", 7.5),
        ("CVSS:3.1/AV:L/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 7.8),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
    ],
)
def test_cvss3(vector: str, score: float) -> None:
    assert cvss3_base_score(vector) == score


def test_severity_sources() -> None:
    base = record("S-1", "p", [{"introduced": "0"}])
    assert parse_record(base).severity is None
    cvss = dict(base, severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:L"}])
    assert parse_record(cvss).severity is Severity.LOW
    ghsa = dict(cvss, database_specific={"severity": "MODERATE"})
    assert parse_record(ghsa).severity is Severity.MEDIUM  # the advisory's own word wins
    v4 = dict(
        base,
        severity=[
            {"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}
        ],
    )
    assert parse_record(v4).severity is None  # v4 is not scored here: unknown, not guessed


MALFORMED: list[dict[str, Any]] = [
    {"id": "M-1", "severity": 5, "affected": []},
    {"id": "M-2", "affected": [{"package": {"ecosystem": "PyPI", "name": "pkg"}, "ranges": 7}]},
    {"id": "M-3", "affected": "x"},
    {
        "id": "M-4",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "pkg"},
                "ranges": [{"type": "ECOSYSTEM", "events": ["introduced"]}],
            }
        ],
    },
    {
        "id": "M-5",
        "affected": [
            {"package": {"ecosystem": "PyPI", "name": "pkg"}, "ranges": [{"type": "ECOSYSTEM", "events": 3}]}
        ],
    },
    {"id": "M-6", "affected": [{"package": {"ecosystem": "PyPI", "name": "pkg"}, "versions": "1.0"}]},
    {"id": "M-7", "affected": [], "references": 1},
    {"id": "M-8", "affected": [{"package": {"ecosystem": "PyPI", "name": "pkg"}, "ranges": ["x"]}]},
]


@pytest.mark.parametrize("rec", MALFORMED, ids=[r["id"] for r in MALFORMED])
def test_malformed_record_types_are_format_errors(rec: dict) -> None:
    # regression: these raised TypeError and aborted the whole audit
    with pytest.raises(OsvFormatError):
        parse_record(rec)
    good = record("GOOD-1", "pkg", [{"introduced": "0"}])
    db = Database.from_records([rec, good], origin="test")
    assert [a.id for a in db.advisories] == ["GOOD-1"]
    assert len(db.warnings) == 1 and rec["id"] in db.warnings[0]


def test_event_order_does_not_change_the_result_at_equal_versions() -> None:
    # regression: at one version, "fixed" listed before "introduced" used to leave the version affected
    a = record("X-1", "pkg", [{"introduced": "1.0"}, {"fixed": "1.0"}, {"introduced": "2.0"}])
    b = record("X-2", "pkg", [{"fixed": "1.0"}, {"introduced": "1.0"}, {"introduced": "2.0"}])
    for v in ("0.9", "1.0", "1.5", "2.0", "3.0"):
        assert affects(a, v) == affects(b, v), v
    assert not affects(b, "1.0") and affects(b, "2.0")
    c = record("X-3", "pkg", [{"last_affected": "1.0"}, {"introduced": "1.0"}])
    assert affects(c, "1.0") and not affects(c, "1.1")
