"""Sandbox runs of payload files built here: the event is recorded, nothing is written outside the child's folder,
the network is never reached, benign files are clean and failures are never clean."""

from __future__ import annotations

import _posixsubprocess
import builtins
import ctypes
import operator
import os
import pickle
import platform
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dlsec.errors import InputError
from dlsec.sandbox import run_sandbox
from dlsec.sandbox.child import _SECCOMP_ARCH, STOPPED

from .conftest import Reduce, accepted, needs_namespaces, write_pickle


def _write_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('payload ran')"


def test_os_system_is_recorded_and_stops_the_child(tmp_path: Path) -> None:
    f = write_pickle(tmp_path / "m.pkl", Reduce(os.system, ("true",)))
    rep = run_sandbox(f)
    assert rep.loader == "pickle"
    assert rep.verdict == "dangerous" and rep.exit_code() == 1
    assert rep.blocked is not None and rep.blocked.name == "os.system" and rep.blocked.kind == "process"
    assert "true" in rep.blocked.detail
    assert rep.exit_status == STOPPED
    # the global the pickle resolved is recorded before the call
    assert any(e.name == "pickle.find_class" and e.detail.endswith(".system") for e in rep.events)


def test_exec_writing_outside_is_stopped_before_the_write(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    f = write_pickle(tmp_path / "m.pkl", Reduce(builtins.exec, (_write_code(marker),)))
    rep = run_sandbox(f)
    assert rep.verdict == "dangerous"
    assert rep.blocked is not None and rep.blocked.kind == "code-eval"
    assert str(marker) in rep.blocked.detail
    assert not marker.exists()


@needs_namespaces
def test_keep_going_write_outside_is_recorded_and_the_read_only_fs_blocks_it(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    f = write_pickle(tmp_path / "m.pkl", Reduce(builtins.exec, (_write_code(marker),)))
    rep = run_sandbox(f, keep_going=True)
    assert rep.blocked is None
    writes = [e for e in rep.events if e.kind == "file-write"]
    assert writes and writes[0].dangerous and str(marker) in writes[0].detail
    assert [e.kind for e in rep.dangerous][:3] == ["code-eval", "code-eval", "file-write"]
    assert rep.verdict == "dangerous"
    assert "Read-only file system" in rep.error  # the payload's write failed: the load failed with it
    assert not marker.exists()
    on = {i.name for i in rep.isolation if i.in_force}
    assert {"namespaces", "read-only filesystem", "private tmpfs"} <= on


def test_write_inside_the_private_folder_is_recorded_not_dangerous(tmp_path: Path) -> None:
    f = write_pickle(tmp_path / "m.pkl", Reduce(builtins.open, ("inside.txt", "w")))
    rep = run_sandbox(f)
    writes = [e for e in rep.events if e.kind == "file-write"]
    assert len(writes) == 1 and not writes[0].dangerous and writes[0].detail.split(" (")[0].endswith("/inside.txt")
    assert rep.verdict == "clean"
    assert not (tmp_path / "inside.txt").exists()


def _connect(port: int) -> Reduce:
    return Reduce(socket.create_connection, (("127.0.0.1", port), 2))


@pytest.mark.parametrize("isolation", [True, False])
def test_connect_is_stopped_before_the_network(tmp_path: Path, listener: socket.socket, isolation: bool) -> None:
    port = listener.getsockname()[1]
    f = write_pickle(tmp_path / "m.pkl", _connect(port))
    rep = run_sandbox(f, isolation=isolation)
    assert rep.verdict == "dangerous" and rep.blocked is not None and rep.blocked.kind == "network"
    assert str(port) in rep.blocked.detail
    time.sleep(0.05)
    assert not accepted(listener)


@needs_namespaces
def test_keep_going_connect_is_recorded_and_fails_in_the_network_namespace(
    tmp_path: Path, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    f = write_pickle(tmp_path / "m.pkl", _connect(port))
    rep = run_sandbox(f, keep_going=True)
    connects = [e for e in rep.events if e.name == "socket.connect"]
    assert connects and connects[0].dangerous and str(port) in connects[0].detail
    assert rep.verdict == "dangerous"
    assert "unreachable" in rep.error.lower() or "refused" in rep.error.lower()
    time.sleep(0.05)
    assert not accepted(listener)


def test_popen_is_recorded_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "popen-marker"
    f = write_pickle(tmp_path / "m.pkl", Reduce(subprocess.Popen, (["touch", str(marker)],)))
    rep = run_sandbox(f)
    assert rep.blocked is not None and rep.blocked.name == "subprocess.Popen"
    assert str(marker) in rep.blocked.detail
    time.sleep(0.05)
    assert not marker.exists()


def test_ctypes_library_is_recorded(tmp_path: Path) -> None:
    f = write_pickle(tmp_path / "m.pkl", Reduce(ctypes.CDLL, ("libc.so.6",)))
    rep = run_sandbox(f)
    assert rep.blocked is not None and rep.blocked.kind == "native" and rep.blocked.name == "ctypes.dlopen"
    assert "libc.so.6" in rep.blocked.detail


def test_torch_checkpoint_with_payload_and_benign_state_dict(tmp_path: Path) -> None:
    marker = tmp_path / "torch-marker"
    bad = tmp_path / "bad.pt"
    torch.save({"w": torch.zeros(3), "cfg": Reduce(os.system, (f"touch {marker}",))}, bad)
    rep = run_sandbox(bad)
    assert rep.loader == "torch"
    assert rep.blocked is not None and rep.blocked.name == "os.system" and str(marker) in rep.blocked.detail
    assert not marker.exists()

    good = tmp_path / "good.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).state_dict(), good)
    rep = run_sandbox(good)
    assert rep.verdict == "clean" and rep.exit_code() == 0, rep
    assert rep.dangerous == () and rep.loaded == "OrderedDict" and rep.exit_status == 0


def test_numpy_benign_and_object_array_payload(tmp_path: Path) -> None:
    good = tmp_path / "a.npy"
    np.save(good, np.arange(10, dtype=np.float32))
    rep = run_sandbox(good)
    assert rep.loader == "numpy" and rep.verdict == "clean" and rep.loaded == "ndarray"
    bad = tmp_path / "b.npz"
    np.savez(bad, x=np.arange(3), y=np.array([Reduce(os.system, ("true",)), 1], dtype=object))
    rep = run_sandbox(bad)
    assert rep.verdict == "dangerous" and rep.blocked is not None and rep.blocked.name == "os.system"


def test_load_failure_is_an_error_not_clean(tmp_path: Path) -> None:
    f = tmp_path / "cut.pkl"
    f.write_bytes(pickle.dumps({"a": list(range(100))}, protocol=4)[:-20])
    rep = run_sandbox(f)
    assert rep.verdict == "error" and rep.exit_code() == 2
    assert rep.error.startswith("load failed:")


def test_timeout_kills_the_child_and_is_an_error(tmp_path: Path) -> None:
    f = write_pickle(tmp_path / "m.pkl", Reduce(time.sleep, (30,)))
    t0 = time.perf_counter()
    rep = run_sandbox(f, timeout=1.5)
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
    rep = run_sandbox(f, memory_mb=64)
    assert rep.verdict == "error" and "MemoryError" in rep.error and "--memory-mb" in rep.error
    assert any(i.name == "RLIMIT_AS" and i.in_force for i in rep.isolation)
    assert run_sandbox(f, memory_mb=2048).verdict == "clean"  # the same file within the limit loads


def test_joblib_compressed_payload_and_benign_safetensors(tmp_path: Path) -> None:
    import gzip

    from safetensors.numpy import save_file

    bad = tmp_path / "model.gz"
    bad.write_bytes(gzip.compress(pickle.dumps(Reduce(os.system, ("true",)), protocol=4)))
    rep = run_sandbox(bad)
    assert rep.loader == "joblib" and rep.blocked is not None and rep.blocked.name == "os.system"
    good = tmp_path / "m.safetensors"
    save_file({"w": np.ones((2, 2), np.float32)}, str(good))
    rep = run_sandbox(good)
    assert rep.loader == "safetensors" and rep.verdict == "clean" and rep.loaded == "dict"


class _Call(Reduce):
    """A callable stand-in (pickle wants a callable) whose pickled form is ``func(*args)``."""

    def __call__(self, *args: object) -> None:
        raise AssertionError("never called here")


@pytest.mark.skipif(platform.machine() not in _SECCOMP_ARCH, reason="no seccomp filter for this architecture")
@pytest.mark.parametrize("isolation", [False, True])
def test_process_started_without_an_audit_event_is_killed_by_seccomp(tmp_path: Path, isolation: bool) -> None:
    """``_posixsubprocess.fork_exec`` raises no audit event: the kernel filter is what stops and reports it."""
    marker = tmp_path / "fork-exec-marker"
    pipe = Reduce(os.pipe, ())  # one object, memoised: both ends come from the same pipe
    r = Reduce(_Call(operator.itemgetter, (0,)), (pipe,))
    w = Reduce(_Call(operator.itemgetter, (1,)), (pipe,))
    exe = b"/usr/bin/touch"
    args = ([exe, os.fsencode(marker)], (exe,), True, (w,), None, None, -1, -1, -1, -1, -1, -1, r, w, False, False,
            -1, -1, None, -1, -1, None, False)  # fmt: skip
    f = write_pickle(tmp_path / "m.pkl", Reduce(_posixsubprocess.fork_exec, args))
    rep = run_sandbox(f, isolation=isolation)
    assert not any(e.kind == "process" and e.name != "seccomp" for e in rep.events)  # no audit event, indeed
    assert rep.verdict == "dangerous" and rep.blocked is not None and rep.blocked.name == "seccomp"
    assert rep.exit_status == -signal.SIGSYS
    time.sleep(0.1)
    assert not marker.exists()


def test_exec_through_the_import_machinery_gets_no_exemption(tmp_path: Path) -> None:
    """Code evaluation during the import of an installed module is not dangerous; calling importlib's helper is."""
    import importlib._bootstrap as bootstrap

    f = write_pickle(tmp_path / "m.pkl", Reduce(bootstrap._call_with_frames_removed, (builtins.exec, "x = 1")))
    rep = run_sandbox(f)
    assert rep.verdict == "dangerous" and rep.blocked is not None and rep.blocked.kind == "code-eval"
    # the benign counterpart: importing an installed module that compiles code at import (namedtuple) is clean
    g = write_pickle(tmp_path / "g.pkl", Reduce(__import__, ("sched",)))
    rep = run_sandbox(g)
    assert rep.verdict == "clean", rep
    assert any(e.kind == "import" and e.detail == "sched" for e in rep.events)


def test_without_namespaces_the_report_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlsec.sandbox import runner

    monkeypatch.setattr(runner, "namespaces_available", lambda: "unshare failed: test")
    f = write_pickle(tmp_path / "m.pkl", Reduce(os.system, ("true",)))
    rep = run_sandbox(f)
    assert rep.verdict == "dangerous" and rep.blocked is not None and rep.blocked.name == "os.system"
    iso = {i.name: i for i in rep.isolation}
    assert not iso["namespaces"].in_force and iso["namespaces"].detail == "unshare failed: test"
    assert "read-only filesystem" not in iso and iso["seccomp: no new processes"].in_force is (
        platform.machine() in _SECCOMP_ARCH
    )
    with pytest.raises(InputError, match="keep-going"):
        run_sandbox(f, keep_going=True)
