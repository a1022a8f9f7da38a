"""The shipped database: every record parses, matches its own examples, and is found in a fake environment."""

from __future__ import annotations

import json
from collections import defaultdict
from importlib import resources
from pathlib import Path

import pytest
from packaging.version import Version

from dlsec.audit import audit_environment, load_database
from dlsec.audit.osv import normalize_name, parse_record, public_version
from tests.audit.helpers import site_packages

RECORDS = json.loads(resources.files("dlsec.audit").joinpath("data/advisories.json").read_text())
ISSUE_PACKAGES = {
    "torch", "tensorflow", "keras", "transformers", "onnx", "numpy", "joblib", "scikit-learn", "skops", "mlflow",
    "pytorch-lightning", "vllm", "llama-cpp-python", "pyyaml", "paddlepaddle",
}  # fmt: skip
# torchvision, huggingface-hub and onnxruntime: no advisory could be confirmed from the sources at hand.


def test_all_records_parse_without_warnings() -> None:
    db = load_database()
    assert len(db) == len(RECORDS) >= 20 and db.warnings == []
    ids = [r["id"] for r in RECORDS]
    assert len(set(ids)) == len(ids)
    covered = {n for a in db.advisories for n in a.names}
    assert covered >= ISSUE_PACKAGES


@pytest.mark.parametrize("rec", RECORDS, ids=[r["id"] for r in RECORDS])
def test_record_fields_and_examples(rec: dict) -> None:
    assert rec["summary"] and rec["references"] and rec["affected"]
    for alias in rec["aliases"]:
        assert alias.split("-")[0] in ("CVE", "GHSA", "PYSEC")
    examples = rec["database_specific"]["examples"]
    assert any(e["affected"] for e in examples) and any(not e["affected"] for e in examples)
    adv = parse_record(rec)
    for e in examples:
        assert adv.affects(normalize_name(e["package"]), public_version(e["version"])) is e["affected"], e
    for a in rec["affected"]:  # every range has a fix, and the first fixed version is not affected
        for r in a["ranges"]:
            fixed = [ev["fixed"] for ev in r["events"] if "fixed" in ev]
            assert fixed and not adv.affects(normalize_name(a["package"]["name"]), Version(fixed[0]))


@pytest.mark.parametrize("label", ["", "+cu121"])
def test_every_advisory_found_in_affected_environment(tmp_path: Path, label: str) -> None:
    """One environment per affected example (with a local label on every version in the second run)."""
    for i, rec in enumerate(RECORDS):
        for j, e in enumerate(x for x in rec["database_specific"]["examples"] if x["affected"]):
            site = site_packages(
                tmp_path / f"{label or 'plain'}-{i}-{j}", {e["package"]: e["version"] + label}
            )
            report = audit_environment(site)
            assert rec["id"] in {v.id for v in report.vulns}, (rec["id"], e)
            assert report.exit_code() == 1


def test_nothing_found_with_fixed_versions(tmp_path: Path) -> None:
    """Each package at the highest fixed version the database knows: no advisory applies."""
    fixed: dict[str, Version] = defaultdict(lambda: Version("0"))
    for a in load_database().advisories:
        for aff in a.affected:
            for v in aff.fixed_versions():
                fixed[aff.name] = max(fixed[aff.name], v)
    site = site_packages(tmp_path / "site", {n: str(v) + "+cpu" for n, v in fixed.items()})
    report = audit_environment(site)
    assert len(report.packages) == len(fixed) >= 15
    assert report.vulns == () and report.exit_code() == 0
