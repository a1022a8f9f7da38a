"""Text, JSON and SARIF 2.1.0 renderings of a sandbox run (:class:`dlsec.sandbox.SandboxReport`).

A ``clean`` verdict means that nothing dangerous was observed by an in-process monitor (audit hooks) under the
isolation the report lists; it is no proof that the file is safe.
"""

from __future__ import annotations

import json
from typing import Any

from dlsec import __version__
from dlsec.sandbox.events import SandboxReport

_RULES = {
    "process": "sandbox-process", "network": "sandbox-network", "file-write": "sandbox-file-write",
    "file": "sandbox-file-change", "code-eval": "sandbox-code-eval", "native": "sandbox-native-library",
    "signal": "sandbox-signal", "global": "sandbox-dangerous-global", "other": "sandbox-other",
}  # fmt: skip
_RULE_TEXT = {
    "sandbox-process": "the load started a process",
    "sandbox-network": "the load used the network",
    "sandbox-file-write": "the load wrote a file outside its private folder",
    "sandbox-file-change": "the load changed the file system outside its private folder",
    "sandbox-code-eval": "the load evaluated code",
    "sandbox-native-library": "the load opened or called a native library",
    "sandbox-signal": "the load sent a signal",
    "sandbox-dangerous-global": "the pickle fetched a global no model load needs (processes, code, interpreter)",
    "sandbox-other": "the load did something a model load never needs",
    "sandbox-error": "the load did not complete (never clean)",
}


def text(report: SandboxReport, verbose: bool = False) -> str:
    """Plain lines: verdict, the dangerous events (every event with ``verbose``), isolation in force, errors."""
    r = report
    head = {"clean": "CLEAN", "dangerous": "DANGEROUS", "error": "ERROR"}[r.verdict]
    lines = [f"{head}  {r.path}  (loader {r.loader}, {r.seconds:.2f} s, child exit status {r.exit_status})"]
    if r.verdict == "clean":
        lines.append("clean: the load completed and nothing dangerous was observed by the in-process monitor "
                     "(audit hooks) under the isolation listed below; no proof that the file is safe")  # fmt: skip
    if r.blocked:
        lines.append(f"stopped at: [{r.blocked.kind}] {r.blocked.name} {r.blocked.detail}")
    for e in r.events:
        if e.dangerous or verbose:
            lines.append(f"  {'!' if e.dangerous else ' '} {e.kind:10} {e.name:22} {e.detail}")
    quiet = sum(not e.dangerous for e in r.events)
    if quiet and not verbose:
        lines.append(f"  ({quiet} other events recorded: imports, reads, writes inside the private folder; -v shows)")
    if r.events_dropped:
        lines.append(f"  ({r.events_dropped} more events not kept)")
    if r.error:
        lines.append(f"error: {r.error}")
    if r.loaded:
        lines.append(f"loaded: a {r.loaded}")
    on = [f"{i.name} ({i.detail})" if i.detail else i.name for i in r.isolation if i.in_force]
    off = [f"{i.name} ({i.detail})" for i in r.isolation if not i.in_force]
    lines.append("isolation in force: " + ("; ".join(on) if on else "none"))
    if off:
        lines.append("isolation NOT in force: " + "; ".join(off))
    return "\n".join(lines)


def sarif(report: SandboxReport) -> str:
    """The run as a SARIF 2.1.0 log: one result per dangerous event, one for an error; isolation as properties."""
    r = report
    rules: dict[str, dict[str, Any]] = {}
    results = []
    location = [{"physicalLocation": {"artifactLocation": {"uri": r.path}}}]

    def add(rule: str, message: str, props: dict[str, Any]) -> None:
        rules.setdefault(rule, {"id": rule, "shortDescription": {"text": _RULE_TEXT[rule]}})
        results.append({"ruleId": rule, "level": "error", "message": {"text": message}, "properties": props,
                        "locations": location})  # fmt: skip

    for e in r.dangerous:
        add(_RULES.get(e.kind, "sandbox-other"), f"{e.name}: {e.detail} (loader {r.loader})",
            {"kind": e.kind, "event": e.name, "stopped_here": e == r.blocked})  # fmt: skip
    if r.verdict == "error":
        add("sandbox-error", r.error or "the load did not complete", {"exit_status": r.exit_status})
    log = {
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [
            {
                "tool": {"driver": {"name": "dlsec-sandbox", "version": __version__, "rules": list(rules.values())}},
                "results": results,
                "properties": {
                    "verdict": r.verdict, "loader": r.loader,
                    "isolation": [i.to_dict() for i in r.isolation],
                },  # fmt: skip
            }
        ],
    }
    return json.dumps(log, indent=2)
