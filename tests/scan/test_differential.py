"""Differential tests: every global CPython's own unpickler would resolve, the scanner reports.

A recording unpickler stands in for the loader: its ``find_class`` notes ``(module, name)`` and returns a harmless
stub, so nothing real is ever called. Whatever route a pickle takes to a global (GLOBAL, STACK_GLOBAL from the memo,
INST, OBJ, frames, protocols 0-5), the scanner must have seen it.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import pickle
import pickletools

from hypothesis import given, settings
from hypothesis import strategies as st

from dlsec.scan.pickle import analyze_pickle


class _Recorder(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.seen: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str):  # type: ignore[no-untyped-def]
        self.seen.add((module, name))
        return _Stub


class _Stub:
    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> _Stub:
        return self

    def __setstate__(self, state: object) -> None:
        pass


class Reduce:
    """Pickles as a call of ``fn(*args)``; never unpickled for real."""

    def __init__(self, fn: object, args: tuple) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (self.fn, self.args)


CALLABLES = [os.system, collections.OrderedDict, eval, getattr, print, len, os.path.join, pickle.loads]

leaves = st.one_of(
    st.integers(), st.text(max_size=8), st.binary(max_size=16), st.floats(allow_nan=False), st.none(),
    st.builds(lambda i, a: Reduce(CALLABLES[i], (a,)), st.integers(0, len(CALLABLES) - 1), st.text(max_size=4)),
)  # fmt: skip
trees = st.recursive(
    leaves,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=4), kids, max_size=4),
                           st.tuples(kids, kids)),  # fmt: skip
    max_leaves=12,
)


def _seen_by_loader(data: bytes) -> set[tuple[str, str]]:
    rec = _Recorder(data)
    with contextlib.suppress(Exception):  # the stub may not fit every use; globals resolved so far count
        rec.load()
    return rec.seen


def _seen_by_scanner(data: bytes) -> set[tuple[str, str]]:
    a = analyze_pickle(io.BytesIO(data))
    assert a.error is None, a.error
    return {(c.module, c.name) for c in a.calls}


@settings(max_examples=150, deadline=None)
@given(tree=trees, protocol=st.integers(0, 5), optimize=st.booleans())
def test_scanner_sees_every_global_the_unpickler_resolves(tree: object, protocol: int, optimize: bool) -> None:
    data = pickle.dumps(tree, protocol=protocol)
    if optimize:
        data = pickletools.optimize(data)  # drops unused PUTs: memo references change shape
    assert _seen_by_loader(data) <= _seen_by_scanner(data)


def test_dotted_stack_global_name_is_reported_as_the_loader_resolves_it() -> None:
    # Protocol 4: STACK_GLOBAL "os" "path.join" — the loader resolves the attribute chain os.path.join.
    data = b"\x80\x04\x8c\x02os\x94\x8c\tpath.join\x94\x93\x94."
    loader = _seen_by_loader(data)
    assert loader == {("os", "path.join")}
    assert loader <= _seen_by_scanner(data)


def test_bytes_after_stop_are_not_loaded_by_the_unpickler() -> None:
    data = pickle.dumps({"a": 1}, protocol=2) + pickle.dumps(Reduce(os.system, ("true",)), protocol=2)
    assert _seen_by_loader(data) == set()  # one load stops at the first STOP...
    a = analyze_pickle(io.BytesIO(data))
    assert a.calls == () and a.end_offset < len(data)  # ...and so does one analysis; the engine reads on
