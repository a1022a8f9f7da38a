"""Keras / tf.keras: ``load_model(safe_mode=False)`` and ``enable_unsafe_deserialization()``."""

from __future__ import annotations

from collections.abc import Iterator

from dlsec.lint.rules.base import UNKNOWN, CallSite, Hit, Rule, literal, root
from dlsec.scan.results import Severity

KERAS_ROOTS = frozenset({"keras", "tensorflow", "tf_keras"})
SAFE_MODE_CALLS = {
    "load_model": 3,
    "model_from_json": 2,
    "model_from_config": None,
    "deserialize_keras_object": 3,
}
"""Keras loaders that take ``safe_mode`` and its position (None: keyword only)."""


def _is_keras(site: CallSite) -> bool:
    """A call resolved into keras/tensorflow, or a method call dlsec cannot resolve (``self.keras.load_model``)."""
    return site.qname is None or root(site.qname) in KERAS_ROOTS


class KerasSafeModeOff(Rule):
    """``keras.models.load_model(path, safe_mode=False)``."""

    id = "DLS601"
    name = "keras-safe-mode-off"
    severity = Severity.HIGH
    why = "safe_mode=False lets a .keras file deserialize Lambda layers: marshalled Python bytecode runs on load"
    fix = "keep safe_mode=True (the default); rewrite Lambda layers as registered custom layers"

    def check(self, site: CallSite) -> Iterator[Hit]:
        if site.attr not in SAFE_MODE_CALLS or not _is_keras(site):
            return
        expr = site.arg("safe_mode", SAFE_MODE_CALLS[site.attr])
        if expr is None:
            return
        value = literal(expr)
        name = site.qname or site.attr
        if value is UNKNOWN:
            yield Hit(f"{name} with a non-literal safe_mode", severity=Severity.MEDIUM, confidence="low")
        elif not value:
            yield Hit(f"{name} with safe_mode={value!r}")


class KerasUnsafeDeserialization(Rule):
    """``keras.config.enable_unsafe_deserialization()``."""

    id = "DLS602"
    name = "keras-enable-unsafe-deserialization"
    severity = Severity.HIGH
    why = "enable_unsafe_deserialization() turns safe mode off for every later Keras load in the process"
    fix = "remove the call; load trusted models only, with safe_mode=True"

    def check(self, site: CallSite) -> Iterator[Hit]:
        if site.attr == "enable_unsafe_deserialization" and _is_keras(site):
            yield Hit(f"{site.qname or site.attr}() disables Keras safe mode globally")
