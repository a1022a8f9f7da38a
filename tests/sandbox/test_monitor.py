"""The child's event classification and the loader registry, in process (no child started)."""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dlsec.errors import InputError
from dlsec.sandbox import LOADERS, pick_loader
from dlsec.sandbox.child import _SECCOMP_ARCH, MAX_EVENTS, make_channel, make_monitor, seccomp_filter


class Monitor:
    """The classification of :func:`make_monitor` with the private folder it judges by."""

    def __init__(self, classify: Callable[[str, tuple[Any, ...]], Any], tmp: str) -> None:
        self.classify, self.tmp = classify, tmp


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[Monitor]:
    private = tmp_path / "private"
    private.mkdir()
    r, w = os.pipe()
    os.close(r)  # messages are lost: only the classification is tested here
    send, event, dropped = make_channel(w)
    _, classify = make_monitor(event, send, dropped, str(private), str(tmp_path / "model.pt"), keep_going=True)
    yield Monitor(classify, os.path.realpath(private))
    os.close(w)


def test_writes_are_dangerous_only_outside_the_private_folder(monitor: Monitor, tmp_path: Path) -> None:
    inside = os.path.join(monitor.tmp, "x.txt")
    assert monitor.classify("open", (inside, "w", 0)) == ("file-write", False, f"{inside} (mode w)")
    assert monitor.classify("open", (str(tmp_path / "y"), "a", 0))[:2] == ("file-write", True)
    assert monitor.classify("open", (str(tmp_path / "y"), "r+b", 0))[:2] == ("file-write", True)
    # os.open passes flags and no mode
    assert monitor.classify("open", (str(tmp_path / "y"), None, os.O_WRONLY | os.O_CREAT))[:2] == ("file-write", True)
    assert monitor.classify("open", (os.devnull, "w", 0))[:2] == ("file-write", False)
    # a symlink inside the private folder that points outside is judged by its target
    os.symlink(tmp_path / "target", os.path.join(monitor.tmp, "link"))
    assert monitor.classify("open", (os.path.join(monitor.tmp, "link"), "w", 0))[:2] == ("file-write", True)
    # reads: the model and the interpreter's own files are noise; others are recorded, not dangerous
    assert monitor.classify("open", (str(tmp_path / "model.pt"), "rb", 0)) is None
    assert monitor.classify("open", ("/etc/hostname", "r", 0)) == ("file-read", False, "/etc/hostname")
    assert monitor.classify("open", (3, "w", 0)) is None  # a descriptor: its opening was the event


def test_file_changes_processes_network_code_native(monitor: Monitor, tmp_path: Path) -> None:
    assert monitor.classify("os.remove", (str(tmp_path / "a"), -1))[:2] == ("file", True)
    assert monitor.classify("os.remove", (os.path.join(monitor.tmp, "a"), -1))[:2] == ("file", False)
    assert monitor.classify("os.rename", (os.path.join(monitor.tmp, "a"), str(tmp_path / "b"), -1, -1))[1] is True
    assert monitor.classify("os.system", (b"id",)) == ("process", True, "b'id'")
    assert monitor.classify("subprocess.Popen", ("ls", ["ls"], None, None))[:2] == ("process", True)
    assert monitor.classify("socket.connect", (None, ("10.0.0.1", 80)))[:2] == ("network", True)
    assert monitor.classify("urllib.Request", ("http://x", None, {}, "GET"))[:2] == ("network", True)
    assert monitor.classify("exec", (compile("1", "<s>", "eval"),))[:2] == ("code-eval", True)
    assert monitor.classify("compile", (b"1+1", "<string>"))[:2] == ("code-eval", True)
    assert monitor.classify("ctypes.dlopen", ("libc.so.6",))[:2] == ("native", True)
    assert monitor.classify("os.kill", (1, 9))[:2] == ("signal", True)
    assert monitor.classify("import", ("json", None, [], [], [])) == ("import", False, "json")
    assert monitor.classify("pickle.find_class", ("posix", "system")) == ("global", True, "posix.system")
    assert monitor.classify("pickle.find_class", ("collections", "OrderedDict")) == (
        "import", False, "collections.OrderedDict")  # fmt: skip
    assert monitor.classify("sys._getframe", (None,))[:2] == ("other", True)


def test_plain_events_are_bounded_dangerous_ones_always_sent(tmp_path: Path) -> None:
    r, w = os.pipe()
    _, event, dropped = make_channel(w)
    try:
        for i in range(MAX_EVENTS + 5):
            event("import", "import", f"m{i}", False)
        event("process", "os.system", 'x "\n\u2603', True)
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as f:
        lines = f.read().splitlines()
    assert len(lines) == MAX_EVENTS + 1 and dropped() == 5
    assert json.loads(lines[-1]) == {"t": "event", "kind": "process", "name": "os.system", "detail": 'x "\n\u2603',
                                     "dangerous": True}  # fmt: skip


def test_pick_loader_by_name_then_content(tmp_path: Path) -> None:
    pkl = pickle.dumps({"a": 1}, protocol=2)
    cases = {"m.pkl": pkl, "m.pt": b"anything", "m.npy": b"", "m.joblib": b""}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    assert pick_loader(tmp_path / "m.pkl").name == "pickle"
    assert pick_loader(tmp_path / "m.pt").name == "torch"
    assert pick_loader(tmp_path / "m.npy").name == "numpy"
    assert pick_loader(tmp_path / "m.joblib").name == "joblib"
    (tmp_path / "noext").write_bytes(pkl)
    assert pick_loader(tmp_path / "noext").name == "pickle"
    np.save(tmp_path / "arr", np.arange(3))
    (tmp_path / "arr.npy").rename(tmp_path / "arr.weird")
    assert pick_loader(tmp_path / "arr.weird").name == "numpy"
    with zipfile.ZipFile(tmp_path / "ckpt.zipped", "w") as z:
        z.writestr("archive/data.pkl", pkl)
    assert pick_loader(tmp_path / "ckpt.zipped").name == "torch"
    (tmp_path / "x.gzz").write_bytes(b"\x1f\x8b\x08rest")
    assert pick_loader(tmp_path / "x.gzz").name == "joblib"
    (tmp_path / "st.weights").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"__metadata__":{}}')
    assert pick_loader(tmp_path / "st.weights").name == "safetensors"
    (tmp_path / "text.txt").write_bytes(b"\x00\x01 nothing known")
    with pytest.raises(InputError, match="no loader"):
        pick_loader(tmp_path / "text.txt")
    assert set(LOADERS) >= {"torch", "torchscript", "pickle", "joblib", "numpy", "keras", "safetensors"}


def test_the_hook_reads_no_module_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """S1: the tables live in the hook's closure; rebinding every global of the child's module changes nothing."""
    from dlsec.sandbox import child

    for gone in ("PROCESS", "NETWORK_PREFIX", "CODE_EVAL", "FILE_CHANGE", "NATIVE", "OTHER", "OTHER_DANGEROUS",
                 "SIGNAL", "_WRITE_FLAGS", "Monitor", "Channel"):  # fmt: skip
        assert not hasattr(child, gone)
    r, w = os.pipe()
    send, event, dropped = make_channel(w)
    classify: Callable[..., Any] = make_monitor(event, send, dropped, str(tmp_path), str(tmp_path / "m.pkl"), True)[1]
    for name in [k for k in vars(child) if not k.startswith("__")]:
        monkeypatch.setattr(child, name, None)  # what a payload holding the module could do, without an event
    try:
        assert classify("socket.connect", (None, ("10.0.0.1", 80)))[:2] == ("network", True)
        assert classify("exec", (compile("1", "<s>", "eval"),))[:2] == ("code-eval", True)
        assert classify("open", ("/etc/x", "w", 0))[:2] == ("file-write", True)
        assert classify("pickle.find_class", ("posix", "system"))[:2] == ("global", True)
        event("process", "os.system", "x", True)
        send({"t": "done", "dropped": dropped()})
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as f:
        assert [json.loads(ln)["t"] for ln in f.read().splitlines()] == ["event", "done"]


def test_reaching_the_interpreter_internals_is_dangerous(monitor: Monitor, tmp_path: Path) -> None:
    """S1b, S3, S4: what a payload needs to find or change the hook's state, or the report pipe, is dangerous."""
    from dlsec.sandbox import child

    danger = [
        ("object.__setattr__", (make_monitor, "__code__", None)),  # a function of the child
        ("object.__setattr__", (child, "make_monitor", None)),  # a module
        ("object.__delattr__", (child, "make_monitor")),
        ("object.__setattr__", (pytest.approx, "__code__", None)),  # any function's code
        ("gc.get_objects", (0,)), ("gc.get_referrers", ((),)), ("gc.get_referents", ((),)),
        ("sys._getframe", (None,)), ("sys.settrace", (None,)), ("sys.setprofile", (None,)),
        ("ctypes.cdata", (1234,)), ("ctypes.dlsym", (None, "system")), ("ctypes.call_function", (1, ())),
        ("ctypes.dlopen", ("libc.so.6",)),
        ("sqlite3.connect", ("/tmp/x.db",)), ("sqlite3.load_extension", (None, "x.so")),
        ("os.listdir", ("/proc/self/fd",)), ("os.scandir", ("/dev/fd",)), ("os.listdir", (f"/proc/{os.getpid()}/fd",)),
        ("open", ("/proc/self/fd", None, os.O_RDONLY)),
    ]  # fmt: skip
    for ev, args in danger:
        got = monitor.classify(ev, args)
        assert got is not None and got[1] is True, (ev, args, got)
    assert monitor.classify("object.__setattr__", (Monitor, "x", 1)) is None  # a class of someone else
    assert monitor.classify("os.listdir", (monitor.tmp,))[:2] == ("other", False)


def test_dir_fd_descriptors_and_link_sources_are_judged(monitor: Monitor, tmp_path: Path) -> None:
    """S3: a path relative to a descriptor escapes the path checks; os.link's source must be private too."""
    inside, outside = os.path.join(monitor.tmp, "a"), str(tmp_path / "victim")
    assert monitor.classify("os.remove", ("a", 5))[:2] == ("file", True)
    assert monitor.classify("os.mkdir", (inside, 0o777, -1))[:2] == ("file", False)
    assert monitor.classify("os.mkdir", (inside, 0o777, None))[:2] == ("file", False)
    assert monitor.classify("os.rename", (inside, inside + "b", -1, 3))[:2] == ("file", True)
    assert monitor.classify("os.link", (outside, inside, -1, -1))[:2] == ("file", True)
    assert monitor.classify("os.link", (inside, inside + "b", -1, -1))[:2] == ("file", False)
    (tmp_path / "victim").write_text("x")
    with open(tmp_path / "victim") as f:  # a descriptor is judged by the file it is open on
        assert monitor.classify("os.chmod", (f.fileno(), 0o777, -1))[:2] == ("file", True)
    # a path object of unknown code is not asked for its path (its code would run inside the hook): not private
    assert monitor.classify("os.remove", (_NoPath(), -1))[:2] == ("file", True)
    assert monitor.classify("os.mkdir", (Path(inside), 0o777, -1))[:2] == ("file", False)
    # os.open of a directory outside: relative opens from it (dir_fd) raise events with private-looking paths
    assert monitor.classify("open", (str(tmp_path), None, os.O_RDONLY))[:2] == ("file", True)
    assert monitor.classify("open", (monitor.tmp, None, os.O_RDONLY)) == ("file-read", False, monitor.tmp)


class _NoPath:
    def __fspath__(self) -> str:
        raise AssertionError("the hook ran a path object's code")


@pytest.mark.parametrize(
    "module,name",
    [("__main__", "Monitor"), ("dlsec.sandbox.child", "make_channel"), ("sys", "modules"), ("builtins", "getattr"),
     ("builtins", "setattr"), ("builtins", "delattr"), ("builtins", "exec"), ("builtins", "eval"),
     ("builtins", "compile"), ("builtins", "__import__"), ("builtins", "open"), ("builtins", "globals"),
     ("builtins", "vars"), ("__builtin__", "eval"), ("os", "write"), ("os", "_exit"), ("posix", "system"),
     ("nt", "system"), ("subprocess", "Popen"), ("socket", "socket"), ("ctypes", "CDLL"),
     ("importlib", "import_module"), ("runpy", "run_path"), ("gc", "get_objects"), ("sqlite3", "connect"),
     ("shutil", "rmtree"), ("pty", "spawn"), ("signal", "raise_signal"), ("code", "interact"), ("marshal", "loads"),
     ("types", "FunctionType"), ("types", "CodeType"), ("operator", "attrgetter"), ("operator", "methodcaller"),
     ("collections", "_sys"), ("typing", "sys"), ("pathlib", "os.system"), ("builtins", "object.__subclasses__"),
     ("json", "codecs"),
     # R2-1: foreign-function interfaces (raw system calls, no audit event)
     ("_cffi_backend", "load_library"), ("_cffi_backend", "CLibrary.load_function"), ("cffi", "FFI"),
     # R2-2: native-code file writers (they open files without an ``open`` audit event)
     ("torch", "save"), ("torch.serialization", "save"), ("torch.serialization", "_open_file"),
     ("torch.jit", "save"), ("scipy.io", "savemat"), ("scipy.io._fast_matrix_market", "mmwrite"),
     ("scipy.io.matlab", "savemat"), ("numpy", "save"), ("numpy", "savez"), ("numpy", "savez_compressed"),
     ("numpy", "savetxt"), ("numpy", "ndarray.tofile"), ("numpy", "ndarray.dump"), ("numpy", "memmap"),
     ("numpy.lib.format", "open_memmap"), ("numpy.lib.npyio", "save"), ("numpy.lib._npyio_impl", "savetxt"),
     ("safetensors.numpy", "save_file"), ("safetensors.torch", "save_file"), ("safetensors.numpy", "save"),
     ("joblib", "dump"), ("joblib.numpy_pickle", "dump"), ("pickle", "dump"), ("_pickle", "dump"),
     ("pickle", "Pickler"), ("_pickle", "Pickler"), ("shelve", "open"), ("dbm", "open"), ("dbm.dumb", "open"),
     # R2-3: name resolvers, and what the static scanner calls dangerous
     ("pydoc", "locate"), ("pkgutil", "resolve_name"), ("unittest.mock", "_importer"),
     ("unittest.mock", "_dot_lookup"), ("logging.config", "valid_ident"), ("logging.config", "dictConfig"),
     ("importlib", "util.resolve_name"), ("operator", "attrgetter"), ("pdb", "run"), ("zipimport", "zipimporter"),
     ("pickletools", "dis")],
)  # fmt: skip
def test_dangerous_pickle_globals(monitor: Monitor, module: str, name: str) -> None:
    """S1c: globals that reach processes, code, the interpreter or the child itself (aliases included)."""
    assert monitor.classify("pickle.find_class", (module, name)) == ("global", True, f"{module}.{name}")


@pytest.mark.parametrize(
    "module,name",
    [("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch", "FloatStorage"),
     ("torch.nn.modules.linear", "Linear"), ("numpy.core.multiarray", "_reconstruct"), ("numpy", "dtype"),
     ("numpy", "ndarray"), ("copyreg", "_reconstructor"), ("copyreg", "__newobj__"), ("_codecs", "encode"),
     ("builtins", "set"), ("functools", "partial"), ("numpy.random._pickle", "__randomstate_ctor"),
     ("sklearn.linear_model._logistic", "LogisticRegression"), ("joblib.numpy_pickle", "NumpyArrayWrapper"),
     ("not.imported.yet", "Thing"), ("torch.storage", "_load_from_bytes"), ("torch", "zeros"),
     ("logging", "getLogger")],
)  # fmt: skip
def test_model_pickle_globals_are_not_dangerous(monitor: Monitor, module: str, name: str) -> None:
    assert monitor.classify("pickle.find_class", (module, name)) == ("import", False, f"{module}.{name}")


def _bpf(prog: list[tuple[int, int, int, int]], arch: int, nr: int, *args: int) -> int:
    """Run a classic-BPF seccomp program on one system call (``struct seccomp_data``, little-endian)."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(a & (2**64 - 1) for a in (*args, 0, 0, 0, 0, 0, 0)[:6]))
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == 0x20:
            acc, pc = struct.unpack_from("<I", data, k)[0], pc + 1
        elif code in (0x15, 0x35, 0x45):
            hit = acc == k if code == 0x15 else acc >= k if code == 0x35 else bool(acc & k)
            pc += 1 + (jt if hit else jf)
        elif code == 0x05:
            pc += 1 + k
        else:
            assert code == 0x06
            return k


@pytest.mark.parametrize("machine", sorted(_SECCOMP_ARCH))
def test_seccomp_filter_decisions(machine: str) -> None:
    """S2: processes, programs, sockets to the outside and signals to other processes kill; the rest is allowed."""
    arch, _, clone, clone3, sock, kill, tgkill = _SECCOMP_ARCH[machine]
    nrs = {"x86_64": {"write": 1, "execve": 59, "ptrace": 101, "socketpair": 53},
           "aarch64": {"write": 64, "execve": 221, "ptrace": 117, "socketpair": 199}}[machine]  # fmt: skip
    prog = seccomp_filter(1234, machine)
    allow, killed, enosys = 0x7FFF0000, 0x80000000, 0x00050000 | 38
    cases = [
        (arch, nrs["write"], (1,), allow), (arch, nrs["execve"], (), killed), (arch, nrs["ptrace"], (), killed),
        (arch + 1, nrs["write"], (), killed), (arch, 0x40000000 | nrs["write"], (), killed),
        (arch, clone, (0x10000 | 0x100,), allow), (arch, clone, (17,), killed), (arch, clone3, (), enosys),
        (arch, sock, (1, 1, 0), killed), (arch, sock, (2, 1, 0), killed), (arch, sock, (10, 2, 0), killed),
        (arch, sock, (16, 3, 0), allow), (arch, nrs["socketpair"], (1, 1, 0), allow),
        (arch, kill, (1234, 0), allow), (arch, kill, (1, 15), killed), (arch, kill, (0, 15), killed),
        (arch, kill, (-1, 9), killed), (arch, tgkill, (1234, 1240, 10), allow), (arch, tgkill, (77, 77, 10), killed),
        # R2-1: io_uring (IORING_OP_SOCKET opens a socket past the socket rule): setup, enter, register kill
        (arch, 425, (8, 0), killed), (arch, 426, (3, 1, 1, 1), killed), (arch, 427, (3, 0, 0, 0), killed),
    ]  # fmt: skip
    for a, nr, args, want in cases:
        assert _bpf(prog, a, nr, *args) == want, (machine, nr, args)


def test_static_scanner_verdicts_are_followed(monitor: Monitor) -> None:
    """R2-3: a global the static scanner calls dangerous is dangerous for the hook too; its "unknown" is not."""
    from dlsec.scan.pickle import classify

    for module, name in (("pdb", "run"), ("zipimport", "zipimporter"), ("tarfile", "open"), ("pydoc", "locate")):
        assert classify(module, name)[0] == "dangerous"
        assert monitor.classify("pickle.find_class", (module, name)) == ("global", True, f"{module}.{name}")
    for module, name in (("mypackage.models", "CustomNet"), ("builtins", "print")):
        assert classify(module, name)[0] == "unknown"
        assert monitor.classify("pickle.find_class", (module, name)) == ("import", False, f"{module}.{name}")


def test_other_modules_class_changes_are_not_the_hooks_own(monitor: Monitor) -> None:
    """R2-5: installed code changes a module's ``__class__`` (torch's config modules): only this module counts."""
    import types

    from dlsec.sandbox import child

    other = types.ModuleType("some_config")
    assert monitor.classify("object.__setattr__", (other, "__class__", types.ModuleType)) is None
    assert monitor.classify("object.__setattr__", (json, "x", 1)) is None
    assert monitor.classify("object.__setattr__", (child, "__class__", types.ModuleType))[1] is True


def test_var_tmp_is_hidden() -> None:
    """R2-1: the host's UNIX sockets and FIFOs under /var/tmp are covered too."""
    from dlsec.sandbox.child import HIDDEN

    assert {"/tmp", "/var/tmp", "/run", "/var/run", "/dev/shm"} <= set(HIDDEN)
