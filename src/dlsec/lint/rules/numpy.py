"""NumPy: ``numpy.load(..., allow_pickle=True)``."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from dlsec.lint.rules.base import UNKNOWN, CallSite, Hit, Rule, literal
from dlsec.scan.results import Severity

NUMPY_LOAD = {"numpy.load": 2, "numpy.lib.npyio.load": 2, "numpy.lib.format.read_array": 1}
"""NumPy readers that take ``allow_pickle`` and its position."""


class NumpyAllowPickle(Rule):
    """``numpy.load(f, allow_pickle=True)``."""

    id = "DLS301"
    name = "numpy-load-allow-pickle"
    severity = Severity.HIGH
    why = "allow_pickle=True lets a .npy/.npz object array unpickle arbitrary objects, running code on load"
    fix = "keep allow_pickle=False (the default) and save numeric arrays only"

    def check(self, site: CallSite) -> Iterator[Hit]:
        if site.qname not in NUMPY_LOAD:
            return
        pos = NUMPY_LOAD[site.qname]
        ap = site.arg("allow_pickle", pos)
        value = literal(ap)
        if ap is None:
            hidden_pos = any(isinstance(a, ast.Starred) for a in site.args[: pos + 1])
            if site.star_kwargs or hidden_pos:
                yield Hit(
                    f"{site.qname} whose allow_pickle cannot be seen (it may come in *args/**kwargs)",
                    severity=Severity.MEDIUM,
                    confidence="low",
                )
            return
        if value is UNKNOWN:
            yield Hit(
                f"{site.qname} with a non-literal allow_pickle", severity=Severity.MEDIUM, confidence="low"
            )
        elif value:
            yield Hit(f"{site.qname} with allow_pickle={value!r}")
