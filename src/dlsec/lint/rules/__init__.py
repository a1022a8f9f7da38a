"""Lint rules, one module per family; importing this package registers them all in :data:`REGISTRY`.

Ids are stable and never reused: DLS1xx PyTorch, DLS2xx pickle family, DLS3xx NumPy, DLS4xx YAML,
DLS5xx Hugging Face, DLS6xx Keras, DLS9xx dynamic code.
"""

from __future__ import annotations

from dlsec.lint.rules import code, hf, keras, numpy, pickle, torch, yaml  # noqa: F401  (registration)
from dlsec.lint.rules.base import REGISTRY, UNKNOWN, CallSite, Hit, Rule, literal

__all__ = ["REGISTRY", "UNKNOWN", "CallSite", "Hit", "Rule", "literal"]
