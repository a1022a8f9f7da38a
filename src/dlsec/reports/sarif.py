"""SARIF 2.1.0 rendering of a scan, for code-scanning dashboards."""

from __future__ import annotations

import json
from typing import Any

from dlsec import __version__
from dlsec.scan.results import ScanReport, Severity

_LEVEL = {Severity.LOW: "note", Severity.MEDIUM: "warning", Severity.HIGH: "error", Severity.CRITICAL: "error"}


def sarif(report: ScanReport) -> str:
    """The report as a SARIF 2.1.0 log (one run, one result per finding and per error)."""
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for f in report.findings:
        rules.setdefault(f.rule, {"id": f.rule, "shortDescription": {"text": f.rule.replace("-", " ")}})
        where = f"{f.member} @ byte {f.offset}" if f.member else f"byte {f.offset}"
        results.append(
            {
                "ruleId": f.rule,
                "level": _LEVEL[f.severity],
                "message": {"text": f"{f.message} ({where})"},
                "properties": {"severity": f.severity.name.lower(), "member": f.member, "offset": f.offset},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": f.path}}}],
            }
        )
    for e in report.errors:
        rules.setdefault("scan-error", {"id": "scan-error", "shortDescription": {"text": "file not fully scanned"}})
        results.append(
            {
                "ruleId": "scan-error",
                "level": "error",
                "message": {"text": f"{e.message}" + (f" ({e.member})" if e.member else "")},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": e.path}}}],
            }
        )
    log = {
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [
            {
                "tool": {"driver": {"name": "dlsec", "version": __version__, "rules": list(rules.values())}},
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2)
