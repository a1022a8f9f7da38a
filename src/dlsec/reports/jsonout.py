"""JSON rendering of results: ``inf`` and ``nan`` never appear (they are not JSON)."""

from __future__ import annotations

import json
import math
from typing import Any


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def dumps(result: Any, indent: int | None = 2) -> str:
    """A result with a ``to_dict()`` as strict JSON text."""
    return json.dumps(_clean(result.to_dict()), indent=indent, allow_nan=False)
