"""ONNX and SavedModel protobufs, built here with a tiny encoder (no onnx or tensorflow needed)."""

from __future__ import annotations

import pickle
from pathlib import Path

from dlsec.scan import Severity, scan_path
from tests.scan.test_engine import evil


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def msg(num: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def num(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def onnx(nodes: list[bytes], initializers: list[bytes] = (), opsets: list[str] = ("",)) -> bytes:  # type: ignore[assignment]
    graph = b"".join(msg(1, n) for n in nodes) + b"".join(msg(5, t) for t in initializers)
    return num(1, 9) + b"".join(msg(8, msg(1, d) + num(2, 17)) for d in opsets) + msg(7, graph)


def node(op: str, domain: str = "", subgraph: bytes | None = None) -> bytes:
    out = msg(4, op) + (msg(7, domain) if domain else b"")
    if subgraph is not None:
        out += msg(5, msg(1, "body") + msg(6, subgraph))
    return out


def external(location: str) -> bytes:
    return msg(8, "w") + msg(13, msg(1, "location") + msg(2, location)) + num(14, 1)


def test_standard_onnx_model_is_clean(tmp_path: Path) -> None:
    p = tmp_path / "m.onnx"
    p.write_bytes(onnx([node("Conv"), node("Relu")], [external("weights.bin")]))
    report = scan_path(str(p))
    assert report.findings == () and report.errors == () and report.scanned == (str(p),)


def test_onnx_external_data_escaping_the_folder(tmp_path: Path) -> None:
    for loc in ("../../etc/passwd", "/etc/shadow", "C:\\Windows\\x", "a/../../b"):
        p = tmp_path / "m.onnx"
        p.write_bytes(onnx([node("Relu")], [external(loc)]))
        assert [f.rule for f in scan_path(str(p)).findings] == ["onnx-external-data-escape"], loc


def test_onnx_custom_domain_also_inside_a_loop_body(tmp_path: Path) -> None:
    body = msg(1, node("Evil", "com.example"))
    p = tmp_path / "m.onnx"
    p.write_bytes(onnx([node("Loop", subgraph=body)]))
    report = scan_path(str(p))
    assert [f.rule for f in report.findings] == ["onnx-custom-domain"]
    assert report.at_least(Severity.HIGH) == ()


def test_savedmodel_file_and_python_ops(tmp_path: Path) -> None:
    graph = msg(1, msg(1, "read") + msg(2, "ReadFile")) + msg(1, msg(1, "mm") + msg(2, "MatMul"))
    lib = msg(2, msg(1, msg(3, msg(1, "f") + msg(2, "PyFunc"))))
    saved = num(1, 1) + msg(2, msg(2, graph + lib))
    d = tmp_path / "export"
    d.mkdir()
    (d / "saved_model.pb").write_bytes(saved)
    report = scan_path(str(d))
    assert sorted(f.message.split()[1] for f in report.findings) == ["PyFunc", "ReadFile"]
    assert all(f.severity is Severity.CRITICAL for f in report.findings)


def test_malformed_protobuf_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "m.onnx"
    p.write_bytes(onnx([node("Relu")])[:-2])
    assert scan_path(str(p)).exit_code(Severity.HIGH) == 2


def test_a_pickle_named_onnx_is_scanned_as_a_pickle(tmp_path: Path) -> None:
    p = tmp_path / "model.onnx"
    p.write_bytes(evil())
    assert scan_path(str(p)).at_least(Severity.CRITICAL)
    p.write_bytes(pickle.dumps({"fine": 1}, protocol=4))
    assert scan_path(str(p)).findings == ()
