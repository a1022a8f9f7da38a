"""Fuzzing the whole scanner: any bytes, behind any format's magic, give a report, never an exception or a hang."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlsec.scan import scan_path

MAGICS = [
    b"", b"PK\x03\x04", b"\x1f\x8b", b"BZh9", b"\xfd7zXZ\x00", b"\x93NUMPY\x01\x00", b"GGUF\x03\x00\x00\x00",
    b"\x80\x04", b"\x80\x02", b"(", b"\x08\x01", b"\x10\x00\x00\x00\x00\x00\x00\x00{",
]  # fmt: skip
NAMES = ["f.bin", "m.onnx", "saved_model.pb", "x.keras", "noext"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(magic=st.sampled_from(MAGICS), body=st.binary(max_size=600), name=st.sampled_from(NAMES))
def test_any_bytes_give_a_report(magic: bytes, body: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(magic + body)
        report = scan_path(str(path))
    # Every file ends up somewhere: scanned (clean or not), with an error, or skipped — never lost.
    assert report.scanned or report.errors or report.skipped
