"""The evaluation's results: frozen dataclasses that every output format renders."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class StageResult:
    """One attack of the cascade: robust accuracy after it, the points it broke, what it cost."""

    name: str
    robust_accuracy: float
    broken: int
    attacked: int
    seconds: float
    forwards: int
    backwards: int


@dataclass(frozen=True)
class CheckResult:
    """One sanity check: whether it fired (a sign of gradient masking), what was seen, what to do."""

    name: str
    fired: bool
    detail: str
    meaning: str
    advice: str


@dataclass(frozen=True)
class CurvePoint:
    """Robust accuracy at one epsilon, measured by ``source`` (a fixed-budget attack or min-norm distances)."""

    eps: float
    robust_accuracy: float
    source: str


@dataclass(frozen=True)
class Examples:
    """A few clean/adversarial pairs for the report's image grid (not part of the JSON)."""

    x: torch.Tensor
    x_adv: torch.Tensor
    y: torch.Tensor
    pred_adv: torch.Tensor


@dataclass(frozen=True)
class EvalResult:
    """The whole robust-accuracy evaluation; :meth:`to_dict` is the JSON document."""

    model: str
    data: str
    n: int
    norm: str
    eps: float
    seed: int
    clean_accuracy: float
    robust_accuracy: float
    attacks: tuple[StageResult, ...]
    checks: tuple[CheckResult, ...]
    curve: tuple[CurvePoint, ...]
    min_norm_attack: str
    median_distance: float
    distances: tuple[float, ...]
    seconds: float
    examples: Examples | None = field(default=None, compare=False, repr=False)

    @property
    def flags(self) -> tuple[str, ...]:
        """Names of the masking checks that fired."""
        return tuple(c.name for c in self.checks if c.fired)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``inf`` distances become ``None``)."""
        return {
            "model": self.model,
            "data": self.data,
            "n": self.n,
            "norm": self.norm,
            "eps": self.eps,
            "seed": self.seed,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "seconds": self.seconds,
            "attacks": [asdict(a) for a in self.attacks],
            "flags": list(self.flags),
            "checks": [asdict(c) for c in self.checks],
            "min_norm_attack": self.min_norm_attack,
            "median_distance": _finite(self.median_distance),
            "distances": [_finite(d) for d in self.distances],
            "curve": [asdict(p) for p in self.curve],
        }


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None
