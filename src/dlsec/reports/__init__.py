"""Output formats. Each renders the same result objects; registered by name in :data:`FORMATS`."""

from __future__ import annotations

from typing import Any

from dlsec.reports.jsonout import dumps

__all__ = ["FORMATS", "dumps", "render_attack", "render_eval", "write_report"]

FORMATS = {
    "table": "rich table on the terminal (dlsec.reports.console)",
    "json": "JSON document (dlsec.reports.jsonout)",
    "markdown": "report folder: summary.md, summary.html and PNG plots (dlsec.reports.document)",
}
"""The output formats by name, for ``dlsec formats``."""


def __getattr__(name: str) -> Any:
    """Import the heavy renderers (torch, matplotlib) only when asked for."""
    if name in ("render_attack", "render_eval"):
        from dlsec.reports import console

        return getattr(console, name)
    if name == "write_report":
        from dlsec.reports.document import write_report

        return write_report
    raise AttributeError(name)
