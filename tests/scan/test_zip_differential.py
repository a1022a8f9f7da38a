"""Differential tests against PyTorch's zip reader: what ``torch.load`` runs, the scanner has seen.

PyTorch reads its archives with miniz, which trusts the central directory: it does not compare the local header's
name with it and does not check CRCs, and it reads deflated members as well as stored ones. Python's :mod:`zipfile`
refuses the first two, so a scanner built on it would report an error where PyTorch runs the payload. Each case
below builds an altered archive, proves that PyTorch still loads it and runs the (harmless) payload, and checks that
the scanner reports the payload as critical. Benign archives written by the usual writers stay free of findings.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from dlsec.scan import Severity, scan_path


class Payload:
    """Unpickles to ``os.getcwd()``, a string: harmless, and proof that the loader ran it."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.getcwd, ())


def archive(payload: bool = True) -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(4.0), "p": Payload()} if payload else {"w": torch.arange(4.0)}, buf)
    return buf.getvalue()


def rewrite(data: bytes, edit: Callable[[str, bytes], bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, edit(info.filename, src.read(info.filename)))
    return out.getvalue()


def pkl_offsets(data: bytes) -> tuple[int, int]:
    """Offsets of data.pkl's local header and central directory entry."""
    info = next(i for i in zipfile.ZipFile(io.BytesIO(data)).infolist() if i.filename.endswith("data.pkl"))
    central = data.index(b"PK\x01\x02")
    while data[central + 46 : central + 46 + len(info.filename)] != info.filename.encode():
        central = data.index(b"PK\x01\x02", central + 4)
    return info.header_offset, central


def local_name_differs(data: bytes) -> bytes:
    local, _ = pkl_offsets(data)
    (n,) = struct.unpack("<H", data[local + 26 : local + 28])
    out = bytearray(data)
    out[local + 30 + n - 8 : local + 30 + n - 4] = b"XXXX"  # archive/data.pkl -> archive/XXXX.pkl, same length
    return bytes(out)


def bad_crc(data: bytes) -> bytes:
    local, central = pkl_offsets(data)
    out = bytearray(data)
    out[local + 14 : local + 18] = out[central + 16 : central + 20] = b"\x00\x00\x00\x00"
    return bytes(out)


def concatenated(first: bytes, second: bytes) -> bytes:
    return first + second


CASES: dict[str, Callable[[], bytes]] = {
    "plain": archive,
    "local-header-name-differs": lambda: local_name_differs(archive()),
    "bad-crc": lambda: bad_crc(archive()),
    "deflated-members": lambda: rewrite(archive(), lambda n, d: d, zipfile.ZIP_DEFLATED),
    "bytes-after-stop": lambda: rewrite(archive(), lambda n, d: d + b"trailing\x00" if n.endswith(".pkl") else d),
    "other-top-folder": lambda: rewrite(archive(), lambda n, d: d).replace(b"archive/", b"zzzzzzz/"),
}


def torch_runs_payload(data: bytes) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.load(io.BytesIO(data), weights_only=False)  # dlsec: ignore[DLS102] - proves torch runs the payload
    return isinstance(loaded["p"], str)


@pytest.mark.parametrize("case", sorted(CASES))
def test_what_torch_runs_is_reported(tmp_path: Path, case: str) -> None:
    data = CASES[case]()
    assert torch_runs_payload(data), "the altered archive must still load in torch, or the case proves nothing"
    path = tmp_path / "model.pt"
    path.write_bytes(data)
    report = scan_path(path)
    critical = [f for f in report.findings if f.severity is Severity.CRITICAL]
    assert critical and critical[0].member.endswith("data.pkl"), report
    assert report.exit_code(Severity.HIGH) == 1


def test_altered_archives_are_named(tmp_path: Path) -> None:
    for name, data, rule in [
        ("mismatch.pt", local_name_differs(archive(False)), "zip-header-mismatch"),
        ("crc.pt", bad_crc(archive(False)), "zip-bad-crc"),
    ]:
        (tmp_path / name).write_bytes(data)
        report = scan_path(tmp_path / name)
        assert [f.rule for f in report.findings] == [rule], report


@pytest.mark.parametrize("order", ["payload-first", "payload-last"])
def test_a_second_archive_in_the_same_file_is_scanned(tmp_path: Path, order: str) -> None:
    # zipfile reads the last archive; a reader that walks local headers forward reads the first. Both are scanned.
    parts = (archive(), archive(False)) if order == "payload-first" else (archive(False), archive())
    path = tmp_path / "two.pt"
    path.write_bytes(concatenated(*parts))
    report = scan_path(path)
    rules = {f.rule for f in report.findings}
    assert "zip-hidden-data" in rules and "pickle-dangerous-import" in rules, report


def test_data_before_an_archive_is_still_scanned_as_zip(tmp_path: Path) -> None:
    # zipfile (and so Keras, or any zipfile-based loader) opens an archive with bytes in front of it.
    path = tmp_path / "prefixed.keras"
    path.write_bytes(b"JUNKJUNK" + archive())
    report = scan_path(path)
    assert {f.rule for f in report.findings} >= {"zip-hidden-data", "pickle-dangerous-import"}, report
    assert not report.skipped


def test_duplicate_member_names_are_all_scanned(tmp_path: Path) -> None:
    benign, evil = zipfile.ZipFile(io.BytesIO(archive(False))), zipfile.ZipFile(io.BytesIO(archive()))
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as dst:
        warnings.simplefilter("ignore")  # "Duplicate name"
        for info in evil.infolist():
            if info.filename.endswith("data.pkl"):
                dst.writestr(info.filename, evil.read(info.filename))
                dst.writestr(info.filename, benign.read(info.filename))
            else:
                dst.writestr(info.filename, evil.read(info.filename))
    path = tmp_path / "dup.pt"
    path.write_bytes(out.getvalue())
    assert any(f.rule == "pickle-dangerous-import" for f in scan_path(path).findings)


def _benign_archives(tmp_path: Path) -> dict[str, bytes]:
    model = torch.nn.Linear(3, 2)
    files = {"torch-bytesio": archive(False), "torch-deflated": rewrite(archive(False), lambda n, d: d, 8)}
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    files["torch-file"] = (tmp_path / "sd.pt").read_bytes()
    # Written to a pipe, zipfile cannot seek back: members get data descriptors after their data.
    code = "import sys, zipfile; z = zipfile.ZipFile(sys.stdout.buffer, 'w'); z.writestr('a/x', b'1' * 99); z.close()"
    files["zip-with-data-descriptors"] = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    assert zipfile.ZipFile(io.BytesIO(files["zip-with-data-descriptors"])).infolist()[0].flag_bits & 0x8
    for fn in (np.savez, np.savez_compressed):
        buf = io.BytesIO()
        fn(buf, a=np.arange(10), b=np.ones((3, 3)))
        files[fn.__name__] = buf.getvalue()
    return files


def test_benign_archives_have_no_findings(tmp_path: Path) -> None:
    for name, data in _benign_archives(tmp_path).items():
        assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        report = scan_path(path)
        assert not report.findings and not report.errors and report.scanned, (name, report)
