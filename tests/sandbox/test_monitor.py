"""The child's event classification and the loader registry, in process (no child started)."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dlsec.errors import InputError
from dlsec.sandbox import LOADERS, pick_loader
from dlsec.sandbox.child import MAX_EVENTS, Channel, Monitor


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[Monitor]:
    private = tmp_path / "private"
    private.mkdir()
    r, w = os.pipe()
    os.close(r)  # messages are lost: only the classification is tested here
    m = Monitor(Channel(w), str(private), str(tmp_path / "model.pt"), keep_going=True)
    yield m
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
    assert monitor.classify("pickle.find_class", ("posix", "system")) == ("import", False, "posix.system")
    assert monitor.classify("sys._getframe", (None,)) is None


def test_plain_events_are_bounded_dangerous_ones_always_sent(tmp_path: Path) -> None:
    r, w = os.pipe()
    ch = Channel(w)
    try:
        for i in range(MAX_EVENTS + 5):
            ch.event("import", "import", f"m{i}", False)
        ch.event("process", "os.system", "x", True)
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as f:
        lines = f.read().splitlines()
    assert len(lines) == MAX_EVENTS + 1 and ch.dropped == 5
    assert b'"os.system"' in lines[-1]


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
