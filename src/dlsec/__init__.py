"""dlsec: a security toolkit for deep-learning models.

The first pillar attacks a model with the strongest known methods and measures honestly how robust it is::

    from dlsec.attacks import PGD
    result = PGD(norm="linf", eps=0.1, steps=50)(model, x, y)

    import dlsec
    report = dlsec.evaluate(model, x, y, norm="linf", eps=0.1)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "evaluate", "load", "safe_load"]

if TYPE_CHECKING:  # pragma: no cover
    from dlsec.evaluation import EvalResult


def evaluate(model: Any, x: Any, y: Any, **kwargs: Any) -> EvalResult:
    """Run the robust-accuracy protocol; see :func:`dlsec.evaluation.evaluate`."""
    from dlsec.evaluation import evaluate as _evaluate

    return _evaluate(model, x, y, **kwargs)


def safe_load(path: Any, map_location: Any = None, *, strict: bool = False) -> Any:
    """Load a torch checkpoint only after a clean scan; see :func:`dlsec.scan.safe_load.safe_load`."""
    from dlsec.scan.safe_load import safe_load as _safe_load

    return _safe_load(path, map_location, strict=strict)


def load(path: Any, key: Any = None, verify_key: Any = None, **kwargs: Any) -> Any:
    """Verify, decrypt in memory and load a protected model file; see :func:`dlsec.protect.load.load`."""
    from dlsec.protect.load import load as _load

    return _load(path, key, verify_key, **kwargs)
