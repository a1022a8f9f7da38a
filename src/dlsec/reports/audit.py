"""Renderers of an :class:`~dlsec.audit.results.AuditReport`: table, JSON, SARIF 2.1.0 and requirements pins.

Every format renders the same objects; the registry :data:`RENDERERS` maps a format name to its function.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from dlsec import __version__
from dlsec.audit.results import AuditReport
from dlsec.scan.results import Severity

_LEVEL = {
    Severity.LOW: "note",
    Severity.MEDIUM: "warning",
    Severity.HIGH: "error",
    Severity.CRITICAL: "error",
}


def _sev(severity: Severity | None) -> str:
    return severity.name.lower() if severity is not None else "unknown"


def _columns(rows: list[list[str]]) -> list[str]:
    """Rows padded into aligned columns (two spaces apart)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def table(report: AuditReport) -> str:
    """Plain aligned text: one row per finding, then posture findings, skipped dependencies and a summary."""
    lines: list[str] = []
    if report.vulns:
        rows = [["PACKAGE", "VERSION", "ID", "SEVERITY", "FIX", "ALIASES"]]
        for v in report.vulns:
            aliases = ",".join(a for a in v.aliases if a.startswith("CVE-")) or ",".join(v.aliases[:2])
            rows.append([v.package, v.version, v.id, _sev(v.severity), v.fix or "none known", aliases])
        lines += _columns(rows)
    if report.posture:
        lines.append("")
        rows = [["POSTURE", "SEVERITY", "PACKAGE", "FINDING"]]
        for p in report.posture:
            rows.append(
                [p.id, p.severity.name.lower(), f"{p.package} {p.version}" if p.package else "-", p.title]
            )
        lines += _columns(rows)
        lines += [f"  {p.id}: {p.message}. Fix: {p.fix}" for p in report.posture]
    if report.skipped:
        lines.append("")
        lines += [f"SKIPPED  {s.name}  {s.reason} ({s.source})" for s in report.skipped]
    for w in report.warnings:
        lines.append(f"WARNING  {w}")
    if report.ignored:
        lines.append(f"ignored: {', '.join(report.ignored)}")
    npk = len(report.vulnerable_packages)
    lines.append(
        f"{len(report.packages)} packages audited ({report.database}): {len(report.vulns)} known vulnerabilities "
        f"in {npk} package{'s' if npk != 1 else ''}, {len(report.posture)} posture findings, "
        f"{len(report.skipped)} skipped"
    )
    return "\n".join(lines).lstrip("\n")


def to_json(report: AuditReport) -> str:
    """The report's JSON document (``AuditReport.to_dict``), indented."""
    return json.dumps(report.to_dict(), indent=2, sort_keys=False)


def sarif(report: AuditReport) -> str:
    """A SARIF 2.1.0 log: one rule per advisory or posture check, one result per finding."""
    rules: dict[str, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []
    for v in report.vulns:
        rules.setdefault(
            v.id,
            {
                "id": v.id,
                "shortDescription": {"text": v.summary or v.id},
                "helpUri": f"https://osv.dev/vulnerability/{v.id}",
                "properties": {"aliases": list(v.aliases), "severity": _sev(v.severity)},
            },
        )
        fix = f"upgrade to {v.package}=={v.fix}" if v.fix else "no fixed version known"
        results.append(
            {
                "ruleId": v.id,
                "level": _LEVEL[v.severity] if v.severity is not None else "warning",
                "message": {"text": f"{v.package} {v.version} is affected by {v.id}: {v.summary} ({fix})"},
                "properties": {
                    "package": v.package,
                    "version": v.version,
                    "fix": v.fix,
                    "fixedVersions": list(v.fixed_versions),
                },  # fmt: skip
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": _uri(v.source)}}}],
            }
        )
    for p in report.posture:
        rules.setdefault(p.id, {"id": p.id, "shortDescription": {"text": p.title}})
        results.append(
            {
                "ruleId": p.id,
                "level": _LEVEL[p.severity],
                "message": {"text": f"{p.message}. Fix: {p.fix}"},
                "properties": {"package": p.package, "version": p.version, "fix": p.fix},
                "locations": [
                    {"physicalLocation": {"artifactLocation": {"uri": p.package or "environment"}}}
                ],
            }
        )
    log = {
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [
            {
                "tool": {
                    "driver": {"name": "dlsec-audit", "version": __version__, "rules": list(rules.values())}
                },
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2)


def _uri(source: str) -> str:
    """A SARIF artifact URI from a finding's source (``requirements.txt:3`` -> ``requirements.txt``)."""
    head, sep, tail = source.rpartition(":")
    return head if sep and (tail.isdigit() or "/" not in tail) and head else source


def requirements(report: AuditReport) -> str:
    """``name==version`` pins that fix every finding; a package with no known fix is a comment line."""
    lines = []
    for name, fix in sorted(report.fixes().items()):
        lines.append(f"{name}=={fix}" if fix else f"# {name}: no fixed version known")
    return "\n".join(lines)


RENDERERS: dict[str, Callable[[AuditReport], str]] = {
    "table": table,
    "json": to_json,
    "sarif": sarif,
    "requirements": requirements,
}
"""Format name -> renderer."""
