"""Static pickle analysis. Every malicious pickle is built here with a harmless payload; none is ever loaded."""

from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from dlsec.scan.pickle import PickleAnalysis, PickleCall, analyze_pickle, analyze_pickles, classify


class Evil:
    """``pickle.dumps`` only records the reduce tuple; nothing runs (and the tests never load it)."""

    def __reduce__(self):
        return (os.system, ("true",))


def sb(s: str) -> bytes:  # SHORT_BINUNICODE
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def analyze(data: bytes, **kw) -> PickleAnalysis:
    return analyze_pickle(io.BytesIO(data), **kw)


def dangerous(res: PickleAnalysis) -> list[PickleCall]:
    return [c for c in res.calls if c.verdict == "dangerous"]


@pytest.fixture(autouse=True)
def _never_unpickle(monkeypatch):
    """The analyser must not unpickle or use pickletools (the tests themselves may dump)."""

    def boom(*a, **k):
        raise AssertionError("analysis must not unpickle")

    from dlsec.scan import pickle as mod

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)
    monkeypatch.setattr(pickletools, "genops", boom)
    assert not hasattr(mod, "pickletools")


# ------------------------------------------------------------------------------------------ the routes


@pytest.mark.parametrize("proto", [0, 1, 2, 3])
def test_global_reduce(proto):
    data = pickle.dumps(Evil(), protocol=proto)
    res = analyze(data)
    assert res.error is None and res.end_offset == len(data)
    assert [(c.module, c.name, c.opcode, c.verdict) for c in res.calls] == [
        (os.system.__module__, "system", "GLOBAL", "dangerous")
    ]
    assert res.calls[0].offset == (2 if proto >= 2 else 0)
    assert res.protocol == (proto if proto >= 2 else None)


@pytest.mark.parametrize("proto", [4, 5])
def test_stack_global_pickle_dumps(proto):
    res = analyze(pickle.dumps(Evil(), protocol=proto))
    assert res.error is None and res.protocol == proto
    [c] = res.calls
    assert (c.name, c.opcode, c.verdict) == ("system", "STACK_GLOBAL", "dangerous")


def test_stack_global_names_from_memo():
    data = (b"\x80\x04" + sb("os") + b"q\x00" + b"0" + sb("system") + b"r\x07\x00\x00\x00" + b"0"
            + b"h\x00j\x07\x00\x00\x00" + b"\x93" + sb("true") + b"\x85R.")
    res = analyze(data)
    assert res.error is None
    [c] = res.calls
    assert (c.module, c.name, c.opcode, c.verdict) == ("os", "system", "STACK_GLOBAL", "dangerous")
    assert c.offset == data.index(b"\x93")


def test_stack_global_memoize_and_dup():
    # MEMOIZE numbers entries by memo size; DUP copies the module string.
    data = b"\x80\x04" + sb("x") + b"\x94" + sb("subprocess") + b"\x94" + b"0" + b"h\x01" + sb("run") + b"\x93."
    [c] = analyze(data).calls
    assert (c.module, c.name, c.verdict) == ("subprocess", "run", "dangerous")
    data = b"\x80\x04" + sb("os") + b"2" + b"\x93."
    [c] = analyze(data).calls
    assert (c.module, c.name) == ("os", "os")


def test_stack_global_unresolved_operands_are_reported():
    # module name computed by a call: cannot be resolved statically -> "?" / unknown, never skipped
    data = b"\x80\x04" + sb("builtins") + sb("str") + b"\x93" + sb("o") + b"\x85R" + sb("system") + b"\x93."
    res = analyze(data)
    assert [(c.module, c.name, c.verdict) for c in res.calls] == [
        ("builtins", "str", "safe"), ("?", "system", "unknown")
    ]
    # the name from a memo slot that holds a non-string; the module is known and dangerous
    data = b"\x80\x04" + sb("os") + b"N\x94" + b"0" + b"h\x00\x93."
    [c] = analyze(data).calls
    assert (c.module, c.name, c.verdict) == ("os", "?", "dangerous")
    # empty stack
    [c] = analyze(b"\x80\x04\x93.").calls
    assert (c.module, c.name, c.verdict) == ("?", "?", "unknown")


def test_inst():
    res = analyze(b"(S'true'\nios\nsystem\n.")
    [c] = res.calls
    assert (c.module, c.name, c.opcode, c.verdict, c.offset) == ("os", "system", "INST", "dangerous", 9)
    assert res.error is None


def test_obj():
    [c] = analyze(b"(cos\nsystem\nS'true'\no.").calls
    assert (c.module, c.name, c.opcode, c.verdict) == ("os", "system", "GLOBAL", "dangerous")


def test_newobj_and_newobj_ex():
    [c] = analyze(b"\x80\x02csubprocess\nPopen\n(S'true'\nt\x81.").calls
    assert (c.name, c.verdict) == ("Popen", "dangerous")
    [c] = analyze(b"\x80\x04" + sb("subprocess") + sb("Popen") + b"\x93" + sb("true") + b"\x85}\x92.").calls
    assert (c.module, c.name, c.opcode, c.verdict) == ("subprocess", "Popen", "STACK_GLOBAL", "dangerous")


def test_build_state_is_scanned_too():
    data = b"\x80\x02ccollections\nOrderedDict\n)R}S'x'\ncos\nsystem\nsb."
    res = analyze(data)
    assert res.error is None
    assert [(c.name, c.verdict) for c in res.calls] == [("OrderedDict", "safe"), ("system", "dangerous")]


def test_ext_codes():
    res = analyze(b"\x80\x02\x82\x2a)R\x83\x00\x01)R\x84\x01\x02\x03\x04)R.")
    assert res.error is None
    assert [c.opcode for c in res.calls] == ["EXT1", "EXT2", "EXT4"]
    assert all(c.verdict != "safe" for c in res.calls)
    assert "extension 42" in res.calls[0].name and "copyreg" in res.calls[0].reason


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("torch", "serialization.load"),
        ("collections", "OrderedDict.__init__.__globals__"),
        ("torch", "os.system"),
        ("builtins", "getattr"),
        ("numpy", "testing._private.utils.runstring"),
    ],
)
def test_dotted_names_in_stack_global(module, name):
    data = b"\x80\x04" + sb(module) + sb(name) + b"\x93" + sb("x") + b"\x85R."
    [c] = analyze(data).calls
    assert (c.module, c.name, c.verdict) == (module, name, "dangerous")


def test_py2_builtin_spelling():
    res = analyze(b"c__builtin__\neval\n(S'1'\ntR.")
    [c] = res.calls
    assert (c.module, c.name, c.verdict) == ("__builtin__", "eval", "dangerous")
    assert classify("__builtin__", "set")[0] == "safe"
    assert classify("copy_reg", "_reconstructor")[0] == "safe"
    assert classify("commands", "getoutput")[0] == "dangerous"  # py2 `commands` maps to subprocess


@pytest.mark.parametrize(
    "target",
    [
        "runpy._run_code", "pydoc.pipepager", "torch.serialization.load", "operator.methodcaller",
        "operator.attrgetter", "numpy.testing._private.utils.runstring", "torch.storage._load_from_bytes",
        "posix.system", "nt.system", "_posixsubprocess.fork_exec", "functools.partial", "builtins.exec",
        "builtins.__import__", "timeit.timeit", "cProfile.run", "pty.spawn", "shutil.rmtree", "ctypes.CDLL",
        "importlib.import_module", "code.InteractiveInterpreter", "pickle.loads", "_pickle.loads",
        "marshal.loads", "types.CodeType", "webbrowser.open", "urllib.request.urlopen", "asyncio.subprocess",
        "io.open", "torch.hub.load", "torch.jit.load", "numpy.load", "platform.popen", "bdb.Bdb.run",
        "pdb.run", "trace.Trace", "logging.config.listen", "joblib.load",
    ],
)
def test_callables_denylists_often_miss(target):
    module, name = target.rsplit(".", 1)
    [c] = analyze(b"c" + module.encode() + b"\n" + name.encode() + b"\n)R.").calls
    assert c.verdict == "dangerous", c


def test_payload_in_second_pickle(tmp_path):
    data = pickle.dumps({"a": 1}, protocol=2) + pickle.dumps(Evil(), protocol=2) + pickle.dumps([1], protocol=0)
    path = tmp_path / "multi.pt"
    path.write_bytes(data)
    with open(path, "rb") as f:
        results = analyze_pickles(f)
    assert len(results) == 3 and all(r.error is None for r in results)
    assert results[0].calls == () and results[2].calls == ()
    assert [c.name for c in dangerous(results[1])] == ["system"]
    assert sum(r.end_offset for r in results) == len(data)
    with open(path, "rb") as f:
        assert len(analyze_pickles(f, max_pickles=1)) == 1
        assert f.tell() == results[0].end_offset


def test_payload_before_parse_error_still_reported():
    good = pickle.dumps(Evil(), protocol=4)
    for broken in (good[:-3], good[:-1], good[:-2] + b"\xff", good[:-1] + b"\x80\x09"):
        res = analyze(broken)
        assert res.error is not None
        assert [c.name for c in dangerous(res)] == ["system"], broken
    assert analyze(good[:-3]).error.startswith("truncated")
    assert "invalid opcode" in analyze(good[:-2] + b"\xff").error


def test_bytes_after_stop():
    data = pickle.dumps(Evil(), protocol=2)
    f = io.BytesIO(data + b"\xff\xfe trailing junk")
    res = analyze_pickle(f)
    assert res.error is None and res.end_offset == len(data) and f.tell() == len(data)
    assert len(dangerous(res)) == 1
    f.seek(0)
    assert len(analyze_pickles(f)) == 1  # \xff is not a plausible pickle start
    # start= reads a pickle embedded at an offset; offsets are relative to it
    res2 = analyze_pickle(io.BytesIO(b"JUNK" + data), start=4)
    assert res2.calls == res.calls and res2.end_offset == len(data)


def test_frames_protocol4():
    payload = ["x" * 30_000 for _ in range(5)] + [Evil()]
    data = pickle.dumps(payload, protocol=4)
    assert data.count(b"\x95") >= 2  # several FRAMEs
    res = analyze(data)
    assert res.error is None and res.end_offset == len(data)
    assert [c.name for c in dangerous(res)] == ["system"]


def _write_big(path, opcode: bytes, size: int, length_fmt: str) -> None:
    with open(path, "wb") as f:
        f.write(b"\x80\x04" + opcode + struct.pack(length_fmt, size))
        zeros = bytes(1 << 20)
        left = size
        while left:
            f.write(zeros[: min(left, len(zeros))])
            left -= min(left, len(zeros))
        f.write(b"0" + sb("os") + sb("system") + b"\x93" + sb("true") + b"\x85R.")


class _NoSeek(io.RawIOBase):
    def __init__(self, f):
        self.f = f

    def readable(self):
        return True

    def seekable(self):
        return False

    def readinto(self, b):
        data = self.f.read(len(b))
        b[: len(data)] = data
        return len(data)


@pytest.mark.parametrize(("opcode", "fmt"), [(b"\x8e", "<Q"), (b"B", "<I"), (b"\x8d", "<Q"), (b"\x96", "<Q")])
def test_huge_payload_bounded_memory(tmp_path, opcode, fmt):
    path = tmp_path / "big.pkl"
    size = 50 * 1024 * 1024
    _write_big(path, opcode, size, fmt)
    tracemalloc.start()
    try:
        with open(path, "rb") as f:
            res = analyze_pickle(f)
        with open(path, "rb") as f:
            res2 = analyze_pickle(_NoSeek(f))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024, peak
    for r in (res, res2):
        assert r.error is None and r.end_offset == path.stat().st_size
        assert [(c.module, c.name, c.verdict) for c in r.calls] == [("os", "system", "dangerous")]


def test_huge_payload_truncated(tmp_path):
    res = analyze(b"\x80\x04" + b"\x8e" + struct.pack("<Q", 1 << 60) + b"abc")
    assert res.error.startswith("truncated")
    with open(tmp_path / "t.pkl", "wb") as f:
        f.write(b"\x80\x04B" + struct.pack("<I", 10_000_000) + b"x" * 100)
    with open(tmp_path / "t.pkl", "rb") as f:
        assert analyze_pickle(f).error.startswith("truncated")


def test_long_line_names_are_unresolved_not_skipped():
    data = b"c" + b"a" * 70_000 + b"\nsystem\n)R."
    [c] = analyze(data).calls
    assert (c.module, c.name, c.verdict) == ("?", "system", "unknown")


def test_max_opcodes_limit():
    data = b"\x80\x04" + b"N0" * 2_000_000 + b"."
    res = analyze(data, max_opcodes=1_000_000)
    assert res.opcodes == 1_000_000 and "opcode limit" in res.error
    res = analyze(b"\x80\x04" + b"N" * 100 + b".", max_opcodes=10)
    assert res.opcodes == 10 and res.error is not None


def test_malformed_stack_is_flagged_but_scanning_goes_on():
    res = analyze(b"\x80\x02R0cos\nsystem\n.")
    assert res.error is not None and res.error.startswith("malformed")
    assert [c.name for c in dangerous(res)] == ["system"]


# -------------------------------------------------------------------------------------------- benign


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 3),
                         nn.Dropout(0.1), nn.LayerNorm(3))


def _zip_data_pkl(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(buf) as z:
        [name] = [n for n in z.namelist() if n.endswith("/data.pkl")]
        return z.read(name)


def _assert_all_safe(res: PickleAnalysis) -> None:
    assert res.error is None
    assert res.calls
    assert all(c.verdict == "safe" for c in res.calls), [c for c in res.calls if c.verdict != "safe"]


def test_benign_torch_state_dict():
    _assert_all_safe(analyze(_zip_data_pkl(_tiny_model().state_dict())))


def test_benign_torch_whole_model_zip():
    res = analyze(_zip_data_pkl(_tiny_model()))
    _assert_all_safe(res)
    assert any(c.module.startswith("torch.nn.modules") for c in res.calls)


def test_benign_torch_legacy_format(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save(_tiny_model().state_dict(), path, _use_new_zipfile_serialization=False)
    with open(path, "rb") as f:
        results = analyze_pickles(f, max_pickles=5)
    assert len(results) == 5
    for r in results:
        assert r.error is None and all(c.verdict == "safe" for c in r.calls)
    assert any(r.calls for r in results)


@pytest.mark.parametrize("proto", [2, 4, 5])
def test_whole_module_plain_pickle(proto):
    # torch.nn classes are safe. Plain pickle stores each storage as torch.storage._load_from_bytes(bytes),
    # which runs torch.load(weights_only=False) on the embedded bytes: that one is flagged on purpose.
    res = analyze(pickle.dumps(_tiny_model(), protocol=proto))
    assert res.error is None
    nn_calls = [c for c in res.calls if c.module.startswith("torch.nn.")]
    assert len(nn_calls) >= 7 and all(c.verdict == "safe" for c in nn_calls)
    others = {(c.module, c.name) for c in res.calls if c.verdict != "safe"}
    assert others == {("torch.storage", "_load_from_bytes")}


@pytest.mark.parametrize("proto", [0, 2, 3, 4, 5])
def test_benign_numpy_ordered_dict(proto):
    od = collections.OrderedDict(
        a=np.zeros((3, 2), dtype=np.float32), b=np.arange(5), c=np.float64(1.5), d=np.array(["x", "yz"]),
        r=np.random.RandomState(0), g=np.random.default_rng(0),
    )
    _assert_all_safe(analyze(pickle.dumps(od, protocol=proto)))


@pytest.mark.parametrize("proto", [2, 4, 5])
def test_benign_sklearn_pipeline(proto):
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    pipe = Pipeline([("s", StandardScaler()), ("c", LogisticRegression(max_iter=50))]).fit(x[:300], y[:300])
    forest = RandomForestClassifier(n_estimators=2, max_depth=3, random_state=0).fit(x[:300], y[:300])
    _assert_all_safe(analyze(pickle.dumps([pipe, forest], protocol=proto)))


# ------------------------------------------------------------------------------------------- classify


@pytest.mark.parametrize(
    ("module", "name", "verdict"),
    [
        ("torch._utils", "_rebuild_tensor_v2", "safe"),
        ("torch", "FloatStorage", "safe"),
        ("torch", "float32", "safe"),
        ("torch.nn.modules.linear", "Linear", "safe"),
        ("torch.optim.adam", "Adam", "safe"),
        ("sklearn.tree._tree", "Tree", "safe"),
        ("sklearn.utils", "some_function", "unknown"),
        ("numpy.core.multiarray", "_reconstruct", "safe"),
        ("builtins", "object", "safe"),
        ("copyreg", "_reconstructor", "safe"),
        ("_codecs", "encode", "safe"),
        ("torch.serialization", "_get_layout", "safe"),
        ("torch.storage", "_load_from_bytes", "dangerous"),
        ("torch.nn.modules.linear", "Linear.__init__", "unknown"),
        ("torch.nn.modules.linear", "Linear.__init__.__globals__", "dangerous"),
        ("mypackage.models", "MyNet", "unknown"),
        ("os.path", "join", "dangerous"),
        ("builtins", "type", "unknown"),
        ("posix", "", "unknown"),
        ("o\ns", "system", "unknown"),
        # Classes that are plain data stay allowed; reaching their file-touching methods does not.
        ("pathlib", "PosixPath", "safe"),
        ("pathlib", "Path.write_text", "dangerous"),
        ("pathlib", "PosixPath.unlink", "dangerous"),
        ("zipfile", "ZipFile", "dangerous"),
        ("tarfile", "open", "dangerous"),
        ("gzip", "open", "dangerous"),
        ("joblib.numpy_pickle", "NumpyArrayWrapper", "safe"),
        ("joblib.memory", "Memory", "dangerous"),
        ("sklearn.utils.parallel", "Parallel", "dangerous"),
        ("sklearn.linear_model._logistic", "LogisticRegression", "safe"),
        # namedtuple builds source code; pickled namedtuple instances import their own class, never the factory
        ("collections", "namedtuple", "unknown"),
    ],
)
def test_classify(module, name, verdict):
    v, reason = classify(module, name)
    assert v == verdict, reason
    assert reason


# ----------------------------------------------------------------------------------------------- fuzz

_VALID = [
    pickle.dumps(obj, protocol=p)
    for p in range(6)
    for obj in (Evil(), {"a": [1, 2.5, "s", b"b", (None, True)]}, collections.OrderedDict(x=np.arange(3)))
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_fuzz_random_bytes(data):
    res = analyze(data, max_opcodes=10_000)
    assert isinstance(res, PickleAnalysis) and res.opcodes <= 10_000
    assert 0 <= res.end_offset <= len(data)
    for r in analyze_pickles(io.BytesIO(data), max_opcodes=10_000):
        assert isinstance(r, PickleAnalysis)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_VALID),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from("sid")), max_size=6),
)
def test_fuzz_mutated_pickles(data, edits):
    buf = bytearray(data)
    for pos, val, kind in edits:
        pos %= len(buf) + 1
        if kind == "s" and pos < len(buf):
            buf[pos] = val
        elif kind == "i":
            buf[pos:pos] = bytes([val])
        elif kind == "d":
            del buf[pos:pos + 1 + val % 4]
    res = analyze(bytes(buf), max_opcodes=10_000)
    assert isinstance(res, PickleAnalysis) and res.opcodes <= 10_000
    assert all(isinstance(c, PickleCall) and c.verdict in {"safe", "unknown", "dangerous"} for c in res.calls)
