"""The Python API: the running interpreter, requirements files, fix selection and de-duplication."""

from __future__ import annotations

from pathlib import Path

from packaging.version import Version

from dlsec.audit import Database, audit_environment, audit_requirements, dedupe, parse_record, smallest_fix
from dlsec.reports.audit import RENDERERS
from tests.audit.helpers import record


def test_running_interpreter_inventory() -> None:
    """This venv really has torch, numpy and click: they are found with the versions importlib reports."""
    from importlib.metadata import version

    report = audit_environment(service=Database(), env={})
    got = {p.name: p.version for p in report.packages}
    for name in ("torch", "numpy", "click", "packaging"):
        assert got[name] == version(name)
    assert report.vulns == () and report.exit_code() == 0


def test_audit_requirements_api(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("transformers==4.36.0\nscikit-learn==1.4.1.post1\n")
    report = audit_requirements(req)
    assert {(v.package, v.id) for v in report.vulns} == {
        ("transformers", "PYSEC-2024-227"),
        ("transformers", "GHSA-37q5-v5qm-c9v8"),
        ("transformers", "GHSA-29pf-2h5f-8g72"),
        ("transformers", "GHSA-69w3-r845-3855"),
        ("transformers", "PYSEC-2024-228"),
        ("scikit-learn", "CVE-2024-5206"),
    }
    assert report.fixes() == {"transformers": "5.3.0", "scikit-learn": "1.5.0"}
    text = RENDERERS["table"](report)
    assert (
        "PYSEC-2024-227" in text
        and "2 packages audited" in text
        and "6 known vulnerabilities in 2 packages" in text
    )


def test_smallest_fix_skips_versions_still_affected() -> None:
    a = parse_record(
        record("A", "p", [{"introduced": "0"}, {"fixed": "1.2"}, {"introduced": "1.3"}, {"fixed": "1.5"}])
    )
    b = parse_record(record("B", "p", [{"introduced": "1.0"}, {"fixed": "1.3"}]))
    assert smallest_fix("p", "1.1", [a, b]) == "1.5"  # 1.2 is still hit by B, 1.3 by A again
    assert smallest_fix("p", "1.1", [b]) == "1.3"
    c = parse_record(record("C", "p", [{"introduced": "0"}]))  # no fix at all
    assert smallest_fix("p", "1.1", [a, c]) is None
    assert Version(smallest_fix("p", "1.1+cu121", [a]) or "0") == Version("1.2")


def test_dedupe_prefers_ghsa_and_unites_aliases() -> None:
    g = parse_record(record("GHSA-1111-2222-3333", "p", [{"introduced": "0"}], aliases=["CVE-1"]))
    p = parse_record(record("PYSEC-1", "p", [{"introduced": "0"}], aliases=["CVE-1", "BIT-1"]))
    other = parse_record(record("PYSEC-2", "p", [{"introduced": "0"}]))
    out = dedupe([p, other, g])
    assert [a.id for a in out] == ["GHSA-1111-2222-3333", "PYSEC-2"]
    assert set(out[0].aliases) == {"CVE-1", "BIT-1", "PYSEC-1"}
