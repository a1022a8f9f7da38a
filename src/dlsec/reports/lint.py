"""Renderings of a :class:`~dlsec.lint.results.LintReport`: text lines, JSON, SARIF 2.1.0, and the rule list."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from dlsec import __version__
from dlsec.lint.results import LintReport
from dlsec.lint.rules import REGISTRY, Rule
from dlsec.scan.results import Severity

_LEVEL = {
    Severity.LOW: "note",
    Severity.MEDIUM: "warning",
    Severity.HIGH: "error",
    Severity.CRITICAL: "error",
}


def text(report: LintReport) -> str:
    """One ``path:line:col: ID severity message`` line per finding and error, then a summary line."""
    out = []
    for f in sorted(report.findings, key=lambda f: (f.path, f.line, f.col, f.rule)):
        conf = "" if f.confidence == "high" else f", {f.confidence} confidence"
        out.append(f"{f.path}:{f.line}:{f.col + 1}: {f.rule} [{f.severity.name.lower()}{conf}] {f.message}")
    for e in report.errors:
        out.append(f"{e.path}: ERROR {e.message}")
    out.append(
        f"{len(report.files)} files, {len(report.findings)} findings, {report.suppressed} suppressed, "
        f"{len(report.errors)} errors" + (f", {report.fixed} calls fixed" if report.fixed else "")
    )
    return "\n".join(out)


def to_json(report: LintReport) -> str:
    """The report as JSON (``LintReport.to_dict``)."""
    return json.dumps(report.to_dict(), indent=2)


def _rule_descriptor(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.name.replace("-", " ")},
        "fullDescription": {"text": rule.why},
        "help": {"text": rule.fix},
        "defaultConfiguration": {"level": _LEVEL[rule.severity]},
        "properties": {"severity": rule.severity.name.lower()},
    }


def sarif(report: LintReport) -> str:
    """The report as a SARIF 2.1.0 log: one run, every registered rule, one result per finding and error."""
    rules = [_rule_descriptor(r) for r in sorted(REGISTRY.values(), key=lambda r: r.id)]
    index = {r["id"]: i for i, r in enumerate(rules)}
    results: list[dict[str, Any]] = []
    for f in report.findings:
        results.append(
            {
                "ruleId": f.rule,
                "ruleIndex": index[f.rule],
                "level": _LEVEL[f.severity],
                "message": {"text": f"{f.message}. Fix: {f.fix}"},
                "properties": {"severity": f.severity.name.lower(), "confidence": f.confidence},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": f.path},
                            "region": {"startLine": f.line, "startColumn": f.col + 1},
                        }
                    }
                ],
            }
        )
    if report.errors:
        rules.append({"id": "lint-error", "shortDescription": {"text": "file not linted"}})
    for e in report.errors:
        results.append(
            {
                "ruleId": "lint-error",
                "level": "error",
                "message": {"text": e.message},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": e.path}}}],
            }
        )
    log = {
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "dlsec-lint",
                        "version": __version__,
                        "informationUri": "https://github.com/",
                        "rules": rules,
                    }
                },
                "results": results,
                "properties": {"suppressed": report.suppressed, "files": len(report.files)},
            }
        ],
    }
    return json.dumps(log, indent=2)


def rule_table(rules: Iterable[Rule]) -> str:
    """``--list-rules``: id, severity, name, why and fix of each rule."""
    out = []
    for r in sorted(rules, key=lambda r: r.id):
        out.append(
            f"{r.id}  {r.severity.name.lower():8} {r.name}\n        why: {r.why}\n        fix: {r.fix}"
        )
    return "\n".join(out)
