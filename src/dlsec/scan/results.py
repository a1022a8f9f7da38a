"""What a scan returns: frozen dataclasses that every output format (text, JSON, SARIF) renders."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class Severity(enum.IntEnum):
    """Ordered severities: ``Severity.HIGH > Severity.MEDIUM``."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        """``low``/``medium``/``high``/``critical`` (any case)."""
        from dlsec.errors import ConfigError

        try:
            return cls[text.upper()]
        except KeyError:
            raise ConfigError(f"severity must be low, medium, high or critical, got {text!r}") from None


@dataclass(frozen=True)
class Finding:
    """Something dangerous or unknown in a file: where (file, member inside an archive, byte offset) and why."""

    path: str
    member: str
    offset: int | None
    severity: Severity
    rule: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, severity by name."""
        d = asdict(self)
        d["severity"] = self.severity.name.lower()
        return d


@dataclass(frozen=True)
class ScanError:
    """A file or member that could not be parsed (or hit a limit): never clean."""

    path: str
    member: str
    message: str


@dataclass(frozen=True)
class Skipped:
    """A file whose format dlsec cannot scan (yet, or without an optional dependency): never clean either."""

    path: str
    reason: str


@dataclass(frozen=True)
class ScanReport:
    """All findings, errors and skipped files of one scan, and the files scanned."""

    findings: tuple[Finding, ...] = ()
    errors: tuple[ScanError, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    scanned: tuple[str, ...] = field(default=())

    def at_least(self, threshold: Severity) -> tuple[Finding, ...]:
        """Findings at or above ``threshold``."""
        return tuple(f for f in self.findings if f.severity >= threshold)

    def merge(self, other: ScanReport) -> ScanReport:
        """Both reports in one."""
        return ScanReport(
            self.findings + other.findings,
            self.errors + other.errors,
            self.skipped + other.skipped,
            self.scanned + other.scanned,
        )

    def exit_code(self, threshold: Severity) -> int:
        """0 nothing at or above ``threshold``, 1 findings, 2 errors, 3 nothing scannable."""
        if self.at_least(threshold):
            return 1
        if self.errors:
            return 2
        if not self.scanned:
            return 3
        return 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON document."""
        return {
            "scanned": list(self.scanned),
            "findings": [f.to_dict() for f in self.findings],
            "errors": [asdict(e) for e in self.errors],
            "skipped": [asdict(s) for s in self.skipped],
        }
