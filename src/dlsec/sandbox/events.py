"""What a sandbox run returns: frozen dataclasses that every output format (text, JSON, SARIF) renders."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

KINDS = ("process", "file-write", "file-read", "file", "network", "import", "global", "code-eval", "native", "signal",
         "other")  # fmt: skip
"""Event kinds the child reports; ``file`` is a change other than a write (remove, rename, chmod, mkdir...),
``global`` a pickle global no model load needs (``os.system``, ``builtins.exec``, ``sys.modules``...)."""


@dataclass(frozen=True)
class SandboxEvent:
    """One audit event seen in the child while the loader ran.

    ``kind`` is one of :data:`KINDS`, ``name`` the Python audit event (``os.system``, ``open``...), ``detail`` its
    arguments as bounded text, ``dangerous`` whether it is behaviour a model load never needs.
    """

    kind: str
    name: str
    detail: str
    dangerous: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass(frozen=True)
class Isolation:
    """One isolation measure and whether it was in force for the child (``detail`` says why not, or its value)."""

    name: str
    in_force: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


VERDICTS = ("clean", "dangerous", "error")


@dataclass(frozen=True)
class SandboxReport:
    """A sandbox run of one file.

    ``verdict`` is ``dangerous`` when a dangerous event was seen (``blocked`` is the first one, where the child was
    stopped; ``None`` with ``keep_going``), ``clean`` only when the load completed with none, ``error`` otherwise (a
    load failure, crash, timeout, kill, malformed message or event stream past its bound is never clean). ``clean``
    means that nothing dangerous was observed by an in-process monitor (Python audit hooks, which native code can
    evade) under the isolation listed in ``isolation``: no proof that the file is safe. ``exit_status`` is the child's status (negative: the signal
    that ended it), ``None`` when it never ran; ``events_dropped`` counts events past the bound.
    """

    path: str
    loader: str
    verdict: str
    events: tuple[SandboxEvent, ...]
    blocked: SandboxEvent | None
    isolation: tuple[Isolation, ...]
    exit_status: int | None
    error: str
    seconds: float
    events_dropped: int = 0
    loaded: str = ""

    @property
    def dangerous(self) -> tuple[SandboxEvent, ...]:
        """The dangerous events, in order."""
        return tuple(e for e in self.events if e.dangerous)

    def exit_code(self) -> int:
        """0 clean, 1 dangerous behaviour observed, 2 error (the load did not complete: never clean)."""
        return {"clean": 0, "dangerous": 1}.get(self.verdict, 2)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document."""
        return {
            "path": self.path,
            "loader": self.loader,
            "verdict": self.verdict,
            "blocked": self.blocked.to_dict() if self.blocked else None,
            "events": [e.to_dict() for e in self.events],
            "events_dropped": self.events_dropped,
            "isolation": [i.to_dict() for i in self.isolation],
            "exit_status": self.exit_status,
            "error": self.error,
            "loaded": self.loaded,
            "seconds": self.seconds,
        }
