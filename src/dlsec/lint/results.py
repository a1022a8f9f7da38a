"""What ``dlsec lint`` returns: frozen dataclasses that every output format (text, JSON, SARIF) renders."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dlsec.scan.results import Severity

__all__ = ["LintError", "LintFinding", "LintReport", "Severity"]


@dataclass(frozen=True)
class LintFinding:
    """One unsafe call: where (1-based line, 0-based column), which rule, how bad, why and how to fix it.

    ``confidence`` is ``high`` when the unsafe value is a literal in the code (``weights_only=False``) or the
    call is unsafe whatever its arguments (``pickle.load``), and ``low`` when the deciding value is not a
    literal (a variable, ``**kwargs``): the call may be safe at run time, a human has to look.
    """

    path: str
    line: int
    col: int
    rule: str
    severity: Severity
    message: str
    fix: str
    confidence: str = "high"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, severity by name."""
        d = asdict(self)
        d["severity"] = self.severity.name.lower()
        return d


@dataclass(frozen=True)
class LintError:
    """A file that could not be linted (unreadable, too large, a syntax error): never clean."""

    path: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass(frozen=True)
class LintReport:
    """All findings and errors of one run, the number of findings suppressed inline, and the files linted."""

    findings: tuple[LintFinding, ...] = ()
    errors: tuple[LintError, ...] = ()
    suppressed: int = 0
    files: tuple[str, ...] = field(default=())
    fixed: int = 0

    def exit_code(self) -> int:
        """0 clean, 1 findings, 2 errors (and no findings), 3 no Python file found (never reported clean)."""
        if self.findings:
            return 1
        if self.errors:
            return 2
        return 0 if self.files else 3

    def to_dict(self) -> dict[str, Any]:
        """The JSON document."""
        return {
            "files": list(self.files),
            "findings": [f.to_dict() for f in self.findings],
            "errors": [e.to_dict() for e in self.errors],
            "suppressed": self.suppressed,
            "fixed": self.fixed,
        }
