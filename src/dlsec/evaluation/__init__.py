"""Robustness evaluation: the protocol, its results and the gradient-masking checks."""

from __future__ import annotations

from dlsec.evaluation.masking import CHECKS, Check
from dlsec.evaluation.protocol import DEFAULT_CASCADE, STAGES, Protocol, build_stage, evaluate
from dlsec.evaluation.results import CheckResult, CurvePoint, EvalResult, Examples, StageResult

__all__ = [
    "CHECKS",
    "DEFAULT_CASCADE",
    "STAGES",
    "Check",
    "CheckResult",
    "CurvePoint",
    "EvalResult",
    "Examples",
    "Protocol",
    "StageResult",
    "build_stage",
    "evaluate",
]
