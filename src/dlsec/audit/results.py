"""What an audit returns: frozen dataclasses that every output format (table, JSON, SARIF, requirements) renders."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dlsec.audit.inventory import Package, SkippedPackage
from dlsec.scan.results import Severity


def _sev(severity: Severity | None) -> str:
    return severity.name.lower() if severity is not None else "unknown"


@dataclass(frozen=True)
class VulnFinding:
    """A package version affected by one advisory.

    ``fixed_versions`` are the advisory's own fixed versions; ``fix`` is the smallest version above the installed
    one that fixes *all* the package's findings (None when no such version is known).
    """

    package: str
    version: str
    source: str
    id: str
    aliases: tuple[str, ...]
    summary: str
    severity: Severity | None
    fixed_versions: tuple[str, ...]
    fix: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, severity by name (``unknown`` when the advisory gives none)."""
        d = asdict(self)
        d["severity"] = _sev(self.severity)
        d["aliases"] = list(self.aliases)
        d["fixed_versions"] = list(self.fixed_versions)
        return d


@dataclass(frozen=True)
class PostureFinding:
    """A risky setting beyond version numbers (a default, an environment variable), with a stable id and a fix."""

    id: str
    severity: Severity
    title: str
    message: str
    fix: str
    package: str | None = None
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, severity by name."""
        d = asdict(self)
        d["severity"] = self.severity.name.lower()
        return d


@dataclass(frozen=True)
class AuditReport:
    """All findings of one audit, the packages audited, those skipped and the database used."""

    packages: tuple[Package, ...] = ()
    vulns: tuple[VulnFinding, ...] = ()
    posture: tuple[PostureFinding, ...] = ()
    skipped: tuple[SkippedPackage, ...] = ()
    ignored: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    database: str = ""

    @property
    def vulnerable_packages(self) -> tuple[str, ...]:
        """Names of the packages with at least one finding, sorted."""
        return tuple(sorted({v.package for v in self.vulns}))

    def fixes(self) -> dict[str, str | None]:
        """Package name -> the version that fixes all its findings (None: no fix known)."""
        return {v.package: v.fix for v in self.vulns}

    def exit_code(self) -> int:
        """0 clean, 1 a vulnerable package or a posture finding, 3 nothing audited (never reported clean)."""
        if self.vulns or self.posture:
            return 1
        return 0 if self.packages else 3

    def to_dict(self) -> dict[str, Any]:
        """The JSON document."""
        return {
            "database": self.database,
            "packages": [{"name": p.name, "version": p.version, "source": p.source} for p in self.packages],
            "vulnerabilities": [v.to_dict() for v in self.vulns],
            "posture": [p.to_dict() for p in self.posture],
            "fixes": self.fixes(),
            "skipped": [asdict(s) for s in self.skipped],
            "ignored": list(self.ignored),
            "warnings": list(self.warnings),
        }
