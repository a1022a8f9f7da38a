"""Tar archives (also .tar.gz) and GGUF headers."""

from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path

from dlsec.scan import Severity, scan_path
from tests.scan.test_engine import evil, write


def _tar(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_payload_in_tar_and_tar_gz(tmp_path: Path) -> None:
    for mode, name in (("w", "model.tar"), ("w:gz", "model.tar.gz")):
        data = _tar({"sys_info": b"\x80\x02}q\x00.", "pickle": evil(2)}, mode)
        report = scan_path(write(tmp_path, name, data))
        crit = [f for f in report.findings if f.severity is Severity.CRITICAL]
        assert crit and crit[0].member.endswith("pickle"), (name, report)


def test_benign_tar_is_clean(tmp_path: Path) -> None:
    import pickle

    report = scan_path(write(tmp_path, "ok.tar", _tar({"a.pkl": pickle.dumps({"w": [1.0, 2.0]}, protocol=2)})))
    assert report.findings == () and report.errors == () and report.scanned


def _gguf(kv: dict[str, str]) -> bytes:
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv))
    for key, value in kv.items():
        k, v = key.encode(), value.encode()
        out += struct.pack("<Q", len(k)) + k + struct.pack("<I", 8) + struct.pack("<Q", len(v)) + v
    return out


def test_gguf_chat_template_reaching_python_internals(tmp_path: Path) -> None:
    bad = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    report = scan_path(write(tmp_path, "m.gguf", _gguf({"general.name": "x", "tokenizer.chat_template": bad})))
    assert [f.rule for f in report.findings] == ["gguf-template-escape"]
    ok = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% endfor %}"
    report = scan_path(write(tmp_path, "ok.gguf", _gguf({"tokenizer.chat_template": ok})))
    assert report.findings == () and report.errors == () and report.scanned


def test_truncated_gguf_is_an_error(tmp_path: Path) -> None:
    data = _gguf({"tokenizer.chat_template": "hello"})
    report = scan_path(write(tmp_path, "cut.gguf", data[:-3]))
    assert report.errors and report.exit_code(Severity.HIGH) == 2
