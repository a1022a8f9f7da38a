"""``dlsec audit`` end to end: exit codes, table / JSON / SARIF / requirements output, sources, posture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.audit.fake_osv import FakeOsv, serve
from tests.audit.helpers import osv_zip, record, run, site_packages

VULNERABLE = {"torch": "2.5.1+cu121", "keras": "3.8.0", "numpy": "2.1.0", "joblib": "1.1.1"}
PATCHED = {"torch": "2.10.0+cu126", "keras": "3.11.3", "numpy": "2.1.0", "joblib": "1.2.0"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "HF_DATASETS_TRUST_REMOTE_CODE", "DLSEC_OSV_URL"):
        monkeypatch.delenv(var, raising=False)


def test_exit_codes(monkeypatch, capsys, tmp_path: Path) -> None:
    bad = site_packages(tmp_path / "bad", VULNERABLE)
    good = site_packages(tmp_path / "good", PATCHED)
    code, out, _ = run(monkeypatch, capsys, "--path", str(bad))
    assert code == 1
    assert "GHSA-53q9-r3pm-6pq6" in out and "2.5.1+cu121" in out and "CVE-2025-32434" in out
    assert "DLSEC-AUDIT-P001" in out and "DLSEC-AUDIT-P003" in out
    code, out, _ = run(monkeypatch, capsys, "--path", str(good))
    assert code == 0 and "0 known vulnerabilities" in out
    code, _, err = run(monkeypatch, capsys, "--path", str(tmp_path / "missing"))
    assert code == 2 and err.startswith("dlsec: error:")
    code, _, err = run(monkeypatch, capsys, "--online", "--osv-db", "x.zip", "--path", str(good))
    assert code == 2 and "exclusive" in err


def test_json_fix_covers_all_findings(monkeypatch, capsys, tmp_path: Path) -> None:
    bad = site_packages(tmp_path / "bad", VULNERABLE)
    code, out, _ = run(monkeypatch, capsys, "--path", str(bad), "--format", "json")
    doc = json.loads(out)
    assert code == 1
    torch_ids = {v["id"] for v in doc["vulnerabilities"] if v["package"] == "torch"}
    assert {"GHSA-53q9-r3pm-6pq6", "GHSA-63cw-57p8-fm3p", "GHSA-887c-mr87-cxwp"} <= torch_ids
    # torch 2.5.1: fixes at 2.6.0, 2.8.0 and 2.10.0; only 2.10.0 fixes all of them
    assert doc["fixes"] == {"torch": "2.10.0", "keras": "3.11.3", "joblib": "1.2.0"}
    assert all(v["fix"] == doc["fixes"][v["package"]] for v in doc["vulnerabilities"])
    cve = next(v for v in doc["vulnerabilities"] if v["id"] == "GHSA-53q9-r3pm-6pq6")
    assert (
        cve["severity"] == "critical"
        and cve["fixed_versions"] == ["2.6.0"]
        and cve["version"] == "2.5.1+cu121"
    )
    assert {p["id"] for p in doc["posture"]} == {"DLSEC-AUDIT-P001", "DLSEC-AUDIT-P003"}


def test_requirements_format(monkeypatch, capsys, tmp_path: Path) -> None:
    bad = site_packages(tmp_path / "bad", VULNERABLE)
    code, out, _ = run(monkeypatch, capsys, "--path", str(bad), "--format", "requirements")
    assert code == 1 and out.splitlines() == ["joblib==1.2.0", "keras==3.11.3", "torch==2.10.0"]
    fixed = site_packages(
        tmp_path / "fixed", {line.split("==")[0]: line.split("==")[1] for line in out.splitlines()}
    )
    assert run(monkeypatch, capsys, "--path", str(fixed))[0] == 0  # the pins really fix everything


def test_sarif(monkeypatch, capsys, tmp_path: Path) -> None:
    bad = site_packages(tmp_path / "bad", VULNERABLE)
    code, out, _ = run(monkeypatch, capsys, "--path", str(bad), "--format", "sarif")
    log = json.loads(out)
    assert code == 1 and log["version"] == "2.1.0"
    res = log["runs"][0]["results"]
    rules = {r["id"] for r in log["runs"][0]["tool"]["driver"]["rules"]}
    assert {r["ruleId"] for r in res} == rules
    crit = next(r for r in res if r["ruleId"] == "GHSA-53q9-r3pm-6pq6")
    assert crit["level"] == "error" and crit["properties"]["fix"] == "2.10.0"
    assert any(r["ruleId"] == "DLSEC-AUDIT-P001" and r["level"] == "warning" for r in res)


def test_ignore_vuln_by_id_or_alias(monkeypatch, capsys, tmp_path: Path) -> None:
    site = site_packages(tmp_path / "s", {"joblib": "1.1.1", "llama-cpp-python": "0.2.71"})
    code, out, _ = run(monkeypatch, capsys, "--path", str(site), "--format", "json", "--ignore-vuln",
                       "CVE-2022-21797", "--ignore-vuln", "GHSA-56xg-wfcc-g829")  # fmt: skip
    doc = json.loads(out)
    assert code == 0 and doc["vulnerabilities"] == []
    assert doc["ignored"] == ["GHSA-56xg-wfcc-g829", "GHSA-6hrg-qmvc-2xh8"]


def test_requirements_and_locks(monkeypatch, capsys, tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("torch==2.5.1+cpu\ntransformers>=4\n")
    lock = tmp_path / "uv.lock"
    lock.write_text('version = 1\n[[package]]\nname = "vllm"\nversion = "0.8.4"\n')
    code, out, _ = run(monkeypatch, capsys, "-r", str(req), "-r", str(lock), "--format", "json")
    doc = json.loads(out)
    assert code == 1
    assert {v["package"] for v in doc["vulnerabilities"]} == {"torch", "vllm"}
    assert doc["skipped"] == [
        {"name": "transformers", "reason": "not pinned to one version (>=4)", "source": f"{req}:2"}
    ]
    src = next(v["source"] for v in doc["vulnerabilities"] if v["package"] == "torch")
    assert src == f"{req}:1"


def test_osv_db_zip(monkeypatch, capsys, tmp_path: Path) -> None:
    z = osv_zip(
        tmp_path / "all.zip",
        [record("GHSA-zzzz-zzzz-zzzz", "numpy", [{"introduced": "2.0"}, {"fixed": "2.1.1"}])],
    )
    site = site_packages(tmp_path / "s", {"numpy": "2.1.0", "torch": "2.10.0"})
    code, out, _ = run(monkeypatch, capsys, "--path", str(site), "--osv-db", str(z), "--format", "json")
    doc = json.loads(out)
    assert code == 1 and [v["id"] for v in doc["vulnerabilities"]] == ["GHSA-zzzz-zzzz-zzzz"]
    assert doc["database"] == "OSV export all.zip"
    code, _, err = run(monkeypatch, capsys, "--path", str(site), "--osv-db", str(tmp_path / "none.zip"))
    assert code == 2


def test_online(monkeypatch, capsys, tmp_path: Path) -> None:
    rec = record("GHSA-oooo-oooo-oooo", "torch", [{"introduced": "0"}, {"fixed": "2.6.0"}])
    site = site_packages(tmp_path / "s", {"torch": "2.5.1+cu121"})
    fake = FakeOsv([rec])
    with serve(fake) as url:
        code, out, _ = run(
            monkeypatch, capsys, "--path", str(site), "--online", "--osv-url", url, "--format", "json"
        )
        assert code == 1 and [v["id"] for v in json.loads(out)["vulnerabilities"]] == [rec["id"]]
        monkeypatch.setenv("DLSEC_OSV_URL", url)
        assert run(monkeypatch, capsys, "--path", str(site), "--online")[0] == 1
    code, _, err = run(
        monkeypatch, capsys, "--path", str(site), "--online", "--osv-url", url, "--timeout", "2"
    )
    assert code == 2 and "cannot reach OSV" in err  # the server is gone: an error, never "clean"
    code, _, err = run(monkeypatch, capsys, "--path", str(site), "--osv-url", url)
    assert code == 2 and "--online" in err


def test_environment_posture(monkeypatch, capsys, tmp_path: Path) -> None:
    site = site_packages(tmp_path / "s", {"torch": "2.10.0"})
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "yes")
    monkeypatch.setenv("HF_DATASETS_TRUST_REMOTE_CODE", "1")
    code, out, _ = run(monkeypatch, capsys, "--path", str(site), "--format", "json")
    assert code == 1 and {p["id"] for p in json.loads(out)["posture"]} == {
        "DLSEC-AUDIT-P002",
        "DLSEC-AUDIT-P004",
    }
    assert run(monkeypatch, capsys, "--path", str(site), "--no-env")[0] == 0
    req = tmp_path / "r.txt"
    req.write_text("torch==2.10.0\n")
    assert run(monkeypatch, capsys, "-r", str(req))[0] == 0  # a requirements file has no environment
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "0")
    monkeypatch.setenv("HF_DATASETS_TRUST_REMOTE_CODE", "false")
    assert run(monkeypatch, capsys, "--path", str(site))[0] == 0


def test_running_environment(monkeypatch, capsys, tmp_path: Path) -> None:
    """No --path / -r: the interpreter's sys.path (here replaced by a fake one)."""
    site = site_packages(tmp_path / "s", {"onnx": "1.15.0"})
    monkeypatch.setattr("sys.path", [str(site)])
    code, out, _ = run(monkeypatch, capsys, "--format", "json")
    doc = json.loads(out)
    assert code == 1 and [v["id"] for v in doc["vulnerabilities"]] == ["CVE-2024-27318"]
    assert doc["packages"] == [{"name": "onnx", "version": "1.15.0", "source": "environment"}]


def test_nothing_audited_is_never_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file whose every line is skipped audits nothing: exit 3, like a scan with nothing scanned (not 0)."""
    req = tmp_path / "requirements.txt"
    req.write_text("torch>=2.0\n-e ./local\n")
    from dlsec.audit import audit_requirements

    report = audit_requirements(req)
    assert report.packages == () and len(report.skipped) == 2 and report.exit_code() == 3
