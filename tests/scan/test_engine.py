"""The scanning engine: formats by content, containers, fail-closed, exit codes, safe_load.

Every malicious file is built here with a harmless payload; none is ever loaded except to prove safe_load refuses.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import pathlib
import pickle
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import dlsec
from dlsec.scan import Severity, scan_path
from dlsec.scan.safe_load import UnsafeModelError


class Payload:
    """Unpickling this would call os.system("true") — harmless, and never unpickled here."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("true",))


class Marker:
    """Unpickling this would create a marker file: proves safe_load never unpickles a flagged file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def evil(protocol: int = 4) -> bytes:
    return pickle.dumps({"weights": [1, 2], "x": Payload()}, protocol=protocol)


def write(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def torch_zip(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def critical(report) -> list:  # type: ignore[no-untyped-def]
    return [f for f in report.findings if f.severity is Severity.CRITICAL]


@pytest.mark.parametrize("name", ["model.pkl", "model.bin", "weights.pt", "x.ckpt", "noextension", "m.joblib"])
def test_raw_pickle_any_name(tmp_path: Path, name: str) -> None:
    report = scan_path(write(tmp_path, name, evil()))
    assert critical(report) and "os.system" in critical(report)[0].message.replace("posix", "os")
    assert report.exit_code(Severity.HIGH) == 1


def test_benign_torch_checkpoints_are_clean(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 4)).sum().backward()
    opt.step()
    files = [
        write(tmp_path, "state.pt", torch_zip(model.state_dict())),
        write(tmp_path, "ckpt.pt", torch_zip({"model": model.state_dict(), "optim": opt.state_dict(), "epoch": 3})),
    ]
    legacy = tmp_path / "legacy.pt"
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    files.append(str(legacy))
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(st))
    files.append(str(st))
    np.save(tmp_path / "a.npy", np.arange(10.0))
    files.append(str(tmp_path / "a.npy"))
    report = scan_path(*files)
    assert report.findings == () and report.errors == (), (report.findings, report.errors)
    assert len(report.scanned) == len(files)
    assert report.exit_code(Severity.LOW) == 0


def test_payload_in_any_zip_member_and_any_top_folder(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("innocent_name/data.pkl", pickle.dumps({"a": 1}, protocol=2))
        zf.writestr("innocent_name/extra/other.pkl", evil(2))
    report = scan_path(write(tmp_path, "m.pt", buf.getvalue()))
    assert [f.member for f in critical(report)] == ["innocent_name/extra/other.pkl"]


def test_payload_in_later_pickle_of_legacy_multi_pickle_file(tmp_path: Path) -> None:
    data = pickle.dumps(119547037146038801333356, protocol=2) + pickle.dumps({"ok": 1}, protocol=2) + evil(2)
    report = scan_path(write(tmp_path, "legacy.pt", data))
    assert critical(report)
    assert critical(report)[0].offset is not None


@pytest.mark.parametrize(
    "wrap",
    [gzip.compress, bz2.compress, lzma.compress, zlib.compress],
    ids=["gzip", "bz2", "xz", "zlib"],
)
def test_compressed_containers(tmp_path: Path, wrap) -> None:  # type: ignore[no-untyped-def]
    report = scan_path(write(tmp_path, "model.dat", wrap(evil())))
    assert critical(report)


def test_lz4_streams_and_joblib_lz4(tmp_path: Path) -> None:
    import joblib
    import lz4.frame

    assert critical(scan_path(write(tmp_path, "model.lz4", lz4.frame.compress(evil()))))
    joblib.dump({"w": np.arange(8.0), "x": Payload()}, tmp_path / "m.joblib", compress="lz4")
    joblib.dump({"w": np.arange(8.0)}, tmp_path / "ok.joblib", compress="lz4")
    assert critical(scan_path(tmp_path / "m.joblib"))
    ok = scan_path(tmp_path / "ok.joblib")
    assert not ok.findings and not ok.errors and ok.scanned


def test_lz4_without_the_package_is_skipped_never_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lz4.frame

    path = write(tmp_path, "model.lz4", lz4.frame.compress(pickle.dumps({"w": [1.0]})))
    monkeypatch.setitem(sys.modules, "lz4", None)  # import lz4 now raises ImportError
    monkeypatch.setitem(sys.modules, "lz4.frame", None)
    report = scan_path(path)
    assert report.skipped and "lz4" in report.skipped[0].reason
    assert not report.scanned and report.exit_code(Severity.HIGH) == 3


def test_nested_zip_in_zip(tmp_path: Path) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("deep/payload", evil())
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w") as zf:
        zf.writestr("inner.zip", inner.getvalue())
    report = scan_path(write(tmp_path, "bundle.zip", outer.getvalue()))
    assert critical(report) and critical(report)[0].member == "inner.zip/deep/payload"


def test_object_arrays_in_npy_and_npz(tmp_path: Path) -> None:
    arr = np.array([Payload(), 1], dtype=object)
    np.save(tmp_path / "o.npy", arr, allow_pickle=True)
    np.savez(tmp_path / "o.npz", good=np.zeros(3), bad=arr)
    for name in ("o.npy", "o.npz"):
        report = scan_path(str(tmp_path / name))
        assert critical(report), name
        assert any(f.rule == "npy-object-array" for f in report.findings)


def test_zip_bomb_is_an_error_not_clean(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.pkl", b"\x00" * (20 << 20))
    report = scan_path(write(tmp_path, "bomb.pt", buf.getvalue()))
    assert report.errors and "ratio" in report.errors[0].message
    assert report.exit_code(Severity.HIGH) == 2


def test_truncated_pickle_keeps_finding_and_reports_error(tmp_path: Path) -> None:
    data = evil(2)
    report = scan_path(write(tmp_path, "cut.pkl", data[: len(data) - 3]))
    assert critical(report) and report.errors


def test_corrupt_safetensors_is_an_error(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 999]}}).encode()
    report = scan_path(write(tmp_path, "bad.safetensors", struct.pack("<Q", len(header)) + header + b"\x00" * 16))
    assert report.errors and report.exit_code(Severity.HIGH) == 2


def test_unknown_format_is_skipped_not_clean(tmp_path: Path) -> None:
    report = scan_path(write(tmp_path, "notes.txt", b"Hello, this is not a model\n"))
    assert report.scanned == () and report.skipped
    assert report.exit_code(Severity.HIGH) == 3


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    report = scan_path(str(tmp_path / "nope.pt"))
    assert report.errors and report.exit_code(Severity.HIGH) == 2


def test_directory_walk_and_parallel_jobs(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path, "sub/bad.bin", evil())
    write(tmp_path, "good.pt", torch_zip({"w": torch.zeros(2)}))
    one = scan_path(str(tmp_path))
    two = scan_path(str(tmp_path), jobs=2)
    assert sorted(one.scanned) == sorted(two.scanned) and len(one.scanned) == 2
    assert {f.path for f in critical(one)} == {f.path for f in critical(two)} == {str(tmp_path / "sub" / "bad.bin")}


def test_automatic_jobs_on_a_large_folder_give_the_sequential_report(tmp_path: Path) -> None:
    from dlsec.scan import PARALLEL_FROM

    good = torch_zip({"w": torch.zeros(2)})
    for i in range(PARALLEL_FROM):
        write(tmp_path, f"m{i:03d}.pt", evil() if i in (3, 50) else good)
    auto, one = scan_path(tmp_path, jobs=0), scan_path(tmp_path, jobs=1)
    assert auto == one and len(auto.scanned) == PARALLEL_FROM
    assert {Path(f.path).name for f in critical(auto)} == {"m003.pt", "m050.pt"}


def test_safe_load_refuses_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write(tmp_path, "m.pt", torch_zip({"w": torch.zeros(2), "m": Marker(marker)}))
    with pytest.raises(UnsafeModelError, match="refusing to load"):
        dlsec.safe_load(path)
    assert not marker.exists()


def test_safe_load_loads_a_clean_checkpoint(tmp_path: Path) -> None:
    path = write(tmp_path, "ok.pt", torch_zip({"w": torch.arange(3.0)}))
    assert torch.equal(dlsec.safe_load(path)["w"], torch.arange(3.0))


def test_raw_tensor_bytes_that_look_like_protocol_0_opcodes_are_not_errors(tmp_path: Path) -> None:
    # int8 data of 78 ('N', protocol 0's NONE) parses as thousands of opcodes before failing: it is data.
    report = scan_path(write(tmp_path, "i8.pt", torch_zip({"w": torch.full((4096,), 78, dtype=torch.int8)})))
    assert report.findings == () and report.errors == (), report.errors


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("bz2", 3), ("xz", 3)])
def test_joblib_raw_arrays_are_skipped_and_payloads_after_them_found(tmp_path: Path, compress) -> None:  # type: ignore[no-untyped-def]
    import joblib

    bad = tmp_path / "bad.joblib"
    joblib.dump({"w": np.arange(64), "m": np.ones((3, 5), np.float32).T, "cfg": Payload()}, bad, compress=compress)
    report = scan_path(str(bad))
    assert critical(report) and report.errors == (), report.errors
    obj = tmp_path / "obj.joblib"  # object arrays are written as a nested pickle with its own memo
    joblib.dump({"o": np.array([Payload(), 1], dtype=object), "f": np.zeros(4)}, obj, compress=compress)
    report = scan_path(str(obj))
    assert critical(report) and report.errors == (), report.errors


def test_benign_joblib_models_are_clean(tmp_path: Path) -> None:
    import joblib
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    models = [make_pipeline(StandardScaler(), LogisticRegression(max_iter=50)), RandomForestClassifier(n_estimators=3)]
    for i, model in enumerate(models):
        for compress in (0, 3):
            path = tmp_path / f"m{i}-{compress}.joblib"
            joblib.dump(model.fit(x[:300], y[:300]), path, compress=compress)
            report = scan_path(str(path))
            assert report.findings == () and report.errors == (), (path.name, report.findings, report.errors)
