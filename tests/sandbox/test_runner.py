"""Sandbox runs of payload files built here: the event is recorded, nothing is written outside the child's folder,
the network is never reached, benign files are clean and failures are never clean."""

from __future__ import annotations

import _posixsubprocess
import builtins
import ctypes
import logging
import operator
import os
import pickle
import platform
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch

from dlsec.errors import InputError
from dlsec.sandbox import run_sandbox, runner
from dlsec.sandbox.child import _SECCOMP_ARCH, STOPPED

from .conftest import ISOLATION, Reduce, accepted, call, g, n, needs_namespaces, program, s, tup, write_pickle


def _write_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('payload ran')"


def test_os_system_is_recorded_and_stops_the_child(tmp_path: Path) -> None:
    f = write_pickle(tmp_path / "m.pkl", Reduce(os.system, ("true",)))
    rep = run_sandbox(f, isolation=ISOLATION)
    assert rep.loader == "pickle"
    assert rep.verdict == "dangerous" and rep.exit_code() == 1
    # the global the pickle resolves is dangerous itself: the child stops before the call
    assert rep.blocked is not None and rep.blocked.name == "pickle.find_class" and rep.blocked.kind == "global"
    assert rep.blocked.detail == f"{os.system.__module__}.system"
    assert rep.exit_status == STOPPED
    assert not any(e.name == "os.system" for e in rep.events)


def test_exec_writing_outside_is_stopped_before_the_write(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    f = write_pickle(tmp_path / "m.pkl", Reduce(builtins.exec, (_write_code(marker),)))
    rep = run_sandbox(f, isolation=ISOLATION)
    assert rep.verdict == "dangerous"
    assert rep.blocked is not None and rep.blocked.kind == "global" and rep.blocked.detail == "builtins.exec"
    assert not marker.exists()


@needs_namespaces
def test_keep_going_write_outside_is_recorded_and_the_read_only_fs_blocks_it(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    f = write_pickle(tmp_path / "m.pkl", Reduce(builtins.exec, (_write_code(marker),)))
    rep = run_sandbox(f, keep_going=True)
    assert rep.blocked is None
    writes = [e for e in rep.events if e.kind == "file-write"]
    assert writes and writes[0].dangerous and str(marker) in writes[0].detail
    assert [e.kind for e in rep.dangerous][:4] == ["global", "code-eval", "code-eval", "file-write"]
    assert rep.verdict == "dangerous"
    # the payload's write failed (read-only, or a folder hidden under an empty tmpfs): the load failed with it
    assert "Read-only file system" in rep.error or "No such file or directory" in rep.error
    assert not marker.exists()
    on = {i.name for i in rep.isolation if i.in_force}
    assert {"namespaces", "read-only filesystem", "private tmpfs"} <= on


def test_write_inside_the_private_folder_is_recorded_not_dangerous(tmp_path: Path) -> None:
    # a writer that neither the hook's tables nor the static scanner call dangerous (pathlib's writers are, for the
    # scanner): the open it does inside the private folder is recorded, not dangerous
    f = write_pickle(tmp_path / "m.pkl", Reduce(logging.FileHandler, ("inside.txt",)))
    rep = run_sandbox(f, isolation=ISOLATION)
    writes = [e for e in rep.events if e.kind == "file-write"]
    assert len(writes) == 1 and not writes[0].dangerous and writes[0].detail.split(" (")[0].endswith("/inside.txt")
    assert rep.verdict == "clean"
    assert not (tmp_path / "inside.txt").exists()


def _connect(port: int) -> Reduce:
    return Reduce(socket.create_connection, (("127.0.0.1", port), 2))


@pytest.mark.parametrize("isolation", [pytest.param(True, marks=needs_namespaces), False])
def test_connect_is_stopped_before_the_network(tmp_path: Path, listener: socket.socket, isolation: bool) -> None:
    port = listener.getsockname()[1]
    f = write_pickle(tmp_path / "m.pkl", _connect(port))
    rep = run_sandbox(f, isolation=isolation)
    assert rep.verdict == "dangerous" and rep.blocked is not None and rep.blocked.kind == "global"
    assert rep.blocked.detail == "socket.create_connection"
    time.sleep(0.05)
    assert not accepted(listener)


@needs_namespaces
def test_keep_going_connect_is_recorded_and_killed_at_the_socket(tmp_path: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    f = write_pickle(tmp_path / "m.pkl", _connect(port))
    rep = run_sandbox(f, keep_going=True)
    lookups = [e for e in rep.events if e.name == "socket.getaddrinfo"]
    assert lookups and lookups[0].dangerous and str(port) in lookups[0].detail
    assert rep.verdict == "dangerous"
    # the seccomp filter kills the child at socket(AF_INET): the network namespace is never even tried
    assert rep.blocked is not None and rep.blocked.name == "seccomp" and rep.exit_status == -signal.SIGSYS
    time.sleep(0.05)
    assert not accepted(listener)


def test_popen_is_recorded_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "popen-marker"
    f = write_pickle(tmp_path / "m.pkl", Reduce(subprocess.Popen, (["touch", str(marker)],)))
    rep = run_sandbox(f, isolation=ISOLATION)
    assert rep.blocked is not None and rep.blocked.detail == "subprocess.Popen"
    time.sleep(0.05)
    assert not marker.exists()


def test_ctypes_library_is_recorded(tmp_path: Path) -> None:
    f = write_pickle(tmp_path / "m.pkl", Reduce(ctypes.CDLL, ("libc.so.6",)))
    rep = run_sandbox(f, isolation=ISOLATION)
    assert rep.blocked is not None and rep.blocked.kind == "global" and rep.blocked.detail == "ctypes.CDLL"


def test_torch_checkpoint_with_payload_and_benign_state_dict(tmp_path: Path) -> None:
    marker = tmp_path / "torch-marker"
    bad = tmp_path / "bad.pt"
    torch.save({"w": torch.zeros(3), "cfg": Reduce(os.system, (f"touch {marker}",))}, bad)
    rep = run_sandbox(bad, isolation=ISOLATION)
    assert rep.loader == "torch"
    assert rep.blocked is not None and rep.blocked.detail == f"{os.system.__module__}.system"
    assert not marker.exists()

    good = tmp_path / "good.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).state_dict(), good)
    rep = run_sandbox(good, isolation=ISOLATION)
    assert rep.verdict == "clean" and rep.exit_code() == 0, rep
    assert rep.dangerous == () and rep.loaded == "OrderedDict" and rep.exit_status == 0


def test_numpy_benign_and_object_array_payload(tmp_path: Path) -> None:
    good = tmp_path / "a.npy"
    np.save(good, np.arange(10, dtype=np.float32))
    rep = run_sandbox(good, isolation=ISOLATION)
    assert rep.loader == "numpy" and rep.verdict == "clean" and rep.loaded == "ndarray"
    bad = tmp_path / "b.npz"
    np.savez(bad, x=np.arange(3), y=np.array([Reduce(os.system, ("true",)), 1], dtype=object))
    rep = run_sandbox(bad, isolation=ISOLATION)
    assert rep.verdict == "dangerous" and rep.blocked is not None and rep.blocked.detail.endswith(".system")


def test_load_failure_is_an_error_not_clean(tmp_path: Path) -> None:
    f = tmp_path / "cut.pkl"
    f.write_bytes(pickle.dumps({"a": list(range(100))}, protocol=4)[:-20])
    rep = run_sandbox(f, isolation=ISOLATION)
    assert rep.verdict == "error" and rep.exit_code() == 2
    assert rep.error.startswith("load failed:")


def test_timeout_kills_the_child_and_is_an_error(tmp_path: Path) -> None:
    f = write_pickle(tmp_path / "m.pkl", Reduce(time.sleep, (30,)))
    t0 = time.perf_counter()
    rep = run_sandbox(f, timeout=1.5, isolation=ISOLATION)
    assert time.perf_counter() - t0 < 10
    assert rep.verdict == "error" and "timed out" in rep.error and rep.exit_status is not None
    assert rep.exit_status < 0


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        run_sandbox(tmp_path / "missing.pt")
    with pytest.raises(InputError, match="not a regular file"):
        run_sandbox(tmp_path)
    f = write_pickle(tmp_path / "ok.pkl", {"a": 1})
    with pytest.raises(InputError, match="unknown loader"):
        run_sandbox(f, "nope")
    with pytest.raises(InputError, match="keep-going"):
        run_sandbox(f, isolation=False, keep_going=True)


def test_memory_limit_stops_a_large_allocation(tmp_path: Path) -> None:
    f = write_pickle(tmp_path / "m.pkl", Reduce(bytes, (1 << 30,)))  # calloc: no page is touched
    rep = run_sandbox(f, memory_mb=64, isolation=ISOLATION)
    assert rep.verdict == "error" and "MemoryError" in rep.error and "--memory-mb" in rep.error
    assert any(i.name == "RLIMIT_AS" and i.in_force for i in rep.isolation)
    assert run_sandbox(f, memory_mb=2048, isolation=ISOLATION).verdict == "clean"  # the same file within the limit loads


def test_joblib_compressed_payload_and_benign_safetensors(tmp_path: Path) -> None:
    import gzip

    from safetensors.numpy import save_file

    bad = tmp_path / "model.gz"
    bad.write_bytes(gzip.compress(pickle.dumps(Reduce(os.system, ("true",)), protocol=4)))
    rep = run_sandbox(bad, isolation=ISOLATION)
    assert rep.loader == "joblib" and rep.blocked is not None and rep.blocked.detail.endswith(".system")
    good = tmp_path / "m.safetensors"
    save_file({"w": np.ones((2, 2), np.float32)}, str(good))
    rep = run_sandbox(good, isolation=ISOLATION)
    assert rep.loader == "safetensors" and rep.verdict == "clean" and rep.loaded == "dict"


class _Call(Reduce):
    """A callable stand-in (pickle wants a callable) whose pickled form is ``func(*args)``."""

    def __call__(self, *args: object) -> None:
        raise AssertionError("never called here")


@pytest.mark.skipif(platform.machine() not in _SECCOMP_ARCH, reason="no seccomp filter for this architecture")
@needs_namespaces
def test_process_started_without_an_audit_event_is_killed_by_seccomp(tmp_path: Path) -> None:
    """``_posixsubprocess.fork_exec`` raises no audit event: the kernel filter is what stops and reports it (with
    ``keep_going``: the global itself is dangerous and stops the child otherwise)."""
    marker = tmp_path / "fork-exec-marker"
    pipe = Reduce(os.pipe, ())  # one object, memoised: both ends come from the same pipe
    r = Reduce(_Call(operator.itemgetter, (0,)), (pipe,))
    w = Reduce(_Call(operator.itemgetter, (1,)), (pipe,))
    exe = b"/usr/bin/touch"
    args = ([exe, os.fsencode(marker)], (exe,), True, (w,), None, None, -1, -1, -1, -1, -1, -1, r, w, False, False,
            -1, -1, None, -1, -1, None, False)  # fmt: skip
    f = write_pickle(tmp_path / "m.pkl", Reduce(_posixsubprocess.fork_exec, args))
    rep = run_sandbox(f, keep_going=True)
    assert not any(e.kind == "process" and e.name != "seccomp" for e in rep.events)  # no audit event, indeed
    assert rep.verdict == "dangerous" and rep.blocked is not None and rep.blocked.name == "seccomp"
    assert rep.exit_status == -signal.SIGSYS
    time.sleep(0.1)
    assert not marker.exists()


def test_exec_through_the_import_machinery_gets_no_exemption(tmp_path: Path) -> None:
    """Code evaluation during the import of an installed module is not dangerous; calling importlib's helper is."""
    import importlib._bootstrap as bootstrap

    f = write_pickle(tmp_path / "m.pkl", Reduce(bootstrap._call_with_frames_removed, (builtins.exec, "x = 1")))  # type: ignore[attr-defined]
    rep = run_sandbox(f, isolation=ISOLATION)
    assert rep.verdict == "dangerous" and rep.blocked is not None and rep.blocked.kind == "global"
    if ISOLATION:  # --keep-going needs the namespaces
        rep = run_sandbox(f, keep_going=True)
        assert [e.kind for e in rep.dangerous][:2] == ["global", "code-eval"]
    # the benign counterpart: importing an installed module that compiles code at import (namedtuple) is clean
    import sched

    g = write_pickle(tmp_path / "g.pkl", Reduce(sched.scheduler, ()))
    rep = run_sandbox(g, isolation=ISOLATION)
    assert rep.verdict == "clean", rep
    assert any(e.kind == "import" and e.detail == "sched" for e in rep.events)


def test_without_namespaces_the_run_is_refused_unless_no_isolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlsec.sandbox import runner

    monkeypatch.setattr(runner, "namespaces_available", lambda: "unshare failed: test")
    f = write_pickle(tmp_path / "m.pkl", Reduce(os.system, ("true",)))
    # never on the hooks alone unless asked: refused, with the reason and the way out
    with pytest.raises(InputError, match=r"no namespace isolation here \(unshare failed: test\); --no-isolation"):
        run_sandbox(f)
    rep = run_sandbox(f, isolation=False)
    assert rep.verdict == "dangerous" and rep.blocked is not None and rep.blocked.detail.endswith(".system")
    iso = {i.name: i for i in rep.isolation}
    assert not iso["namespaces"].in_force and "--no-isolation" in iso["namespaces"].detail
    assert "read-only filesystem" not in iso and iso["seccomp: no new processes"].in_force is (
        platform.machine() in _SECCOMP_ARCH
    )
    with pytest.raises(InputError, match="no namespace isolation"):
        run_sandbox(f, keep_going=True)


# ------------------------------------------------------------------------------------------ review regressions
_TABLES = ("PROCESS", "SIGNAL", "NETWORK_PREFIX", "FILE_CHANGE", "CODE_EVAL", "NATIVE", "OTHER_DANGEROUS", "OTHER",
           "_WRITE_FLAGS", "_AST", "MAX_DETAIL", "STOPPED", "make_monitor", "make_channel", "LOADERS")  # fmt: skip


@needs_namespaces
def test_rebinding_the_child_module_does_not_blind_the_monitor(tmp_path: Path) -> None:
    """S1: the payload rebinds the names of ``__main__`` (no audit event), then runs code: still seen and stopped."""
    marker = tmp_path / "marker"
    main = call(call(g("builtins", "getattr"), g("sys", "modules"), s("get")), s("__main__")) + b"p0\n"
    junk = [call(g("builtins", "setattr"), b"g0\n", s(name), tup(s("zzz."))) for name in _TABLES]
    f = tmp_path / "m.pkl"
    f.write_bytes(program(main, *junk, call(g("builtins", "exec"), s(_write_code(marker)))))
    rep = run_sandbox(f, isolation=ISOLATION)  # stopped at the first dangerous global
    assert rep.verdict == "dangerous" and rep.blocked is not None and rep.blocked.detail == "builtins.getattr"
    rep = run_sandbox(f, keep_going=True)  # the payload goes on: the hook still sees all it does after the rebinding
    kinds = [e.kind for e in rep.dangerous]
    assert kinds.count("global") == 3 + len(_TABLES) and "code-eval" in kinds and "file-write" in kinds, kinds
    assert not marker.exists()


@needs_namespaces
def test_host_sockets_are_hidden_and_a_socket_kills_the_child(tmp_path: Path) -> None:
    """S2: a UNIX socket of the host (this test's listener) is not even visible, and socket() is a seccomp kill."""
    path = tmp_path / "listener.sock"
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(str(path))
        srv.listen(1)
        srv.setblocking(False)
        f = tmp_path / "stat.pkl"
        f.write_bytes(program(call(g("os", "stat"), s(str(path)))))
        rep = run_sandbox(f, keep_going=True)
        assert "No such file or directory" in rep.error and str(path) in rep.error
        iso = {i.name: i for i in rep.isolation}
        assert iso["host sockets hidden"].in_force and "/tmp" in iso["host sockets hidden"].detail
        assert iso["namespaces"].in_force and "PID and IPC" in iso["namespaces"].detail
        f = tmp_path / "connect.pkl"
        sock = call(g("socket", "socket"), n(socket.AF_UNIX)) + b"p0\n"
        f.write_bytes(program(sock, call(call(g("builtins", "getattr"), b"g0\n", s("connect")), s(str(path)))))
        rep = run_sandbox(f, keep_going=True)
        assert rep.blocked is not None and rep.blocked.name == "seccomp" and rep.exit_status == -signal.SIGSYS
        assert any(e.name == "socket.__new__" and e.dangerous for e in rep.events)
        with pytest.raises(BlockingIOError):
            srv.accept()


@needs_namespaces
def test_a_signal_to_another_process_kills_the_child(tmp_path: Path) -> None:
    """S2: ``kill`` of any process but the child's own is a seccomp kill (the PID namespace hides the rest too)."""
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        f = tmp_path / "kill.pkl"
        f.write_bytes(program(call(g("os", "kill"), n(sleeper.pid), n(signal.SIGTERM))))
        rep = run_sandbox(f, keep_going=True)
        assert any(e.name == "os.kill" and e.dangerous for e in rep.events)
        assert rep.blocked is not None and rep.blocked.name == "seccomp" and rep.exit_status == -signal.SIGSYS
        time.sleep(0.05)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_cut_or_forged_event_stream_is_never_clean() -> None:
    """S4: past the byte bound the stream may hide events, whatever ``done`` says; junk lines are forgeries."""
    done = b'{"t": "done", "loaded": "dict", "dropped": 0}\n'
    assert runner._report("m", "pickle", done, 0, False, "", [], 0.1, False).verdict == "clean"
    rep = runner._report("m", "pickle", b'{"t": "ev' + b"x" * 100 + b"\n" + done, 0, False, "", [], 0.1, False,
                         cut=True)  # fmt: skip
    assert rep.verdict == "error" and "byte bound" in rep.error
    rep = runner._report("m", "pickle", b"junk\n" + done, 0, False, "", [], 0.1, False)
    assert rep.verdict == "error" and "malformed" in rep.error
    # the reader: a child writing past the bound is read up to it, and the cut is reported
    r, w = os.pipe()
    big = b"x" * (runner.MAX_CHANNEL_BYTES + 70000)

    def write() -> None:
        with os.fdopen(w, "wb") as out:
            out.write(big)

    t = threading.Thread(target=write)
    t.start()
    try:
        data, timed_out, cut = runner._read(r, cast(Any, _Running()), time.perf_counter() + 30)
    finally:
        t.join()
        os.close(r)
    assert cut and not timed_out and len(data) == runner.MAX_CHANNEL_BYTES


class _Running:
    def poll(self) -> None:
        return None


def test_real_time_signals_and_malformed_messages_give_an_error_report() -> None:
    """S5: no crash of the parent: the verdict is an error, with a report."""
    rep = runner._report("m", "pickle", b"", -40, False, "", [], 0.1, False)
    assert rep.verdict == "error" and "killed by signal SIGRTMIN+" in rep.error
    rep = runner._report("m", "pickle", b"", -200, False, "", [], 0.1, False)
    assert rep.verdict == "error" and "signal 200" in rep.error
    for bad in (b'{"t": "isolation", "items": 5}', b'{"t": "isolation", "items": [5]}',
                b'{"t": "done", "loaded": "dict", "dropped": "many"}', b'{"t": "done", "dropped": -1}',
                b'{"t": "surprise"}', b"[1, 2]"):  # fmt: skip
        rep = runner._report("m", "pickle", bad + b'\n{"t": "done", "loaded": "dict"}\n', 0, False, "", [], 0.1,
                             False)  # fmt: skip
        assert rep.verdict == "error" and "malformed" in rep.error, bad


def test_a_deeply_nested_line_gives_an_error_report_not_a_crash() -> None:
    """R2-4: 200,000 '[' on the report pipe (a RecursionError in a JSON decoder) is a malformed line, no crash."""
    done = b'{"t": "done", "loaded": "dict", "dropped": 0}\n'
    for bad in (b"[" * 200_000, b'{"t": "event", "detail": ' + b"[" * 200_000, b'{"x": 1}'):
        rep = runner._report("m", "pickle", bad + b"\n" + done, 0, False, "", [], 0.1, False)
        assert rep.verdict == "error" and "malformed" in rep.error


def test_benign_files_holding_torch_objects_are_clean(tmp_path: Path) -> None:
    """R2-5: importing torch during the load changes module classes (torch's config modules): no false alarm."""
    import joblib

    f = tmp_path / "tensor.pkl"
    with open(f, "wb") as out:
        pickle.dump(torch.zeros(3), out)
    rep = run_sandbox(f, isolation=ISOLATION)
    assert rep.verdict == "clean", (rep.error, rep.dangerous)
    j = tmp_path / "w.joblib"
    joblib.dump({"w": torch.ones(2)}, j)
    rep = run_sandbox(j, isolation=ISOLATION)
    assert rep.verdict == "clean", (rep.error, rep.dangerous)


def test_native_file_writers_are_stopped_before_writing_to_a_fifo(tmp_path: Path) -> None:
    """R2-2: torch.save, numpy and pickle writers open files in native code (no ``open`` event): the globals stop
    the child first; the test's own FIFO stays empty."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a writer could open it without blocking
    try:
        payloads = [Reduce(torch.save, ({"owned": 1}, str(fifo))), Reduce(np.save, (str(fifo), np.arange(3))),
                    Reduce(pickle.dump, ({"owned": 1}, str(fifo)))]  # fmt: skip
        for i, payload in enumerate(payloads):
            rep = run_sandbox(write_pickle(tmp_path / f"m{i}.pkl", payload), isolation=ISOLATION)
            assert rep.verdict == "dangerous" and rep.blocked is not None and rep.blocked.kind == "global", rep
        try:
            got = os.read(reader, 100)  # no writer now: end of file, with nothing written before
        except BlockingIOError:
            got = b""
        assert got == b""
    finally:
        os.close(reader)


def test_cffi_and_name_resolvers_are_stopped(tmp_path: Path) -> None:
    """R2-1, R2-3: _cffi_backend (raw system calls), pydoc.locate and pkgutil.resolve_name stop the child."""
    marker = tmp_path / "marker"
    cases = {
        "cffi": program(call(g("_cffi_backend", "load_library"), b"N")),
        "locate": program(call(call(g("pydoc", "locate"), s("posix.mkdir")), s(str(marker)))),
        "resolve": program(call(call(g("pkgutil", "resolve_name"), s("posix:mkdir")), s(str(marker)))),
    }
    for name, data in cases.items():
        f = tmp_path / f"{name}.pkl"
        f.write_bytes(data)
        rep = run_sandbox(f, isolation=ISOLATION)
        assert rep.verdict == "dangerous" and rep.blocked is not None and rep.blocked.kind == "global", name
    assert not marker.exists()


@needs_namespaces
def test_var_tmp_sockets_are_out_of_reach(tmp_path: Path) -> None:
    """R2-1: a UNIX listener of the test under /var/tmp is not even visible inside the sandbox."""
    import tempfile

    if os.path.islink("/var/tmp") or not os.path.isdir("/var/tmp") or not os.access("/var/tmp", os.W_OK):
        pytest.skip("no writable /var/tmp folder here")
    d = tempfile.mkdtemp(dir="/var/tmp", prefix="dlsec-test-")
    path = os.path.join(d, "l.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        srv.bind(path)
        srv.listen(1)
        # the loaded value: "hidden" (a str) when the socket file is not there, 1 (an int) when it is
        data = program()[:-1] + b"0" + call(g("_operator", "getitem"), tup(s("hidden"), n(1)),
                                                call(g("genericpath", "exists"), s(path))) + b"."
        f = tmp_path / "m.pkl"
        f.write_bytes(data)
        rep = run_sandbox(f)
        assert rep.verdict == "clean" and rep.loaded == "str", rep
        assert any(i.name == "host sockets hidden" and "/var/tmp" in i.detail for i in rep.isolation)
    finally:
        srv.close()
        shutil.rmtree(d, ignore_errors=True)


def test_the_childs_output_is_not_stored_on_the_host(tmp_path: Path) -> None:
    """R2-6: a payload printing megabytes fills no host file: the output is read from a pipe, its tail kept."""
    data = program(call(g("builtins", "print"), call(g("_operator", "mul"), s("x"), n(20 << 20))))
    f = tmp_path / "m.pkl"
    f.write_bytes(data)
    rep = run_sandbox(f, isolation=ISOLATION)
    assert rep.verdict == "clean", rep.error
    # the tail of the output still explains a child that ends without a report
    out = bytearray()
    r, w = os.pipe()
    t = threading.Thread(target=runner._drain_tail, args=(r, out))
    t.start()
    with os.fdopen(w, "wb") as fw:
        fw.write(b"y" * 100_000 + b"\nlast words\n")
    t.join()
    os.close(r)
    assert len(out) == runner.MAX_OUTPUT_BYTES and out.endswith(b"last words\n")
