"""Pickle-family loads: pickle, _pickle, cPickle, dill, cloudpickle, joblib, pandas, shelve, jsonpickle."""

from __future__ import annotations

from collections.abc import Iterator

from dlsec.lint.rules.base import CallSite, Hit, Rule
from dlsec.scan.results import Severity

PICKLE_LOADS = frozenset(
    f"{mod}.{fn}"
    for mod in ("pickle", "_pickle", "cPickle", "dill", "cloudpickle")
    for fn in ("load", "loads", "Unpickler", "_load", "_loads", "_Unpickler")  # _x: pickle's pure-Python ones
) | frozenset(
    {
        "dill._dill.load",
        "dill._dill.loads",
        "joblib.load",
        "joblib.numpy_pickle.load",
        "sklearn.externals.joblib.load",
        "pandas.read_pickle",
        "pandas.io.pickle.read_pickle",
        "shelve.open",
        "shelve.Shelf",
        "shelve.DbfilenameShelf",
        "jsonpickle.decode",
        "jsonpickle.unpickler.decode",
        "jsonpickle.unpickler.Unpickler",
    }
)
"""Calls that unpickle their input (``cloudpickle.load`` is ``pickle.load`` re-exported)."""


class PickleLoad(Rule):
    """Any pickle-family load."""

    id = "DLS201"
    name = "pickle-load"
    severity = Severity.HIGH
    why = "unpickling runs code chosen by whoever wrote the data: a malicious model or data file runs on load"
    fix = "store tensors/arrays as safetensors, .npy (allow_pickle=False) or JSON; scan untrusted files first"

    def check(self, site: CallSite) -> Iterator[Hit]:
        if site.qname in PICKLE_LOADS:
            yield Hit(f"{site.qname} deserializes with pickle")
