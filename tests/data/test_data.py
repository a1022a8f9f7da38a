"""Data loading: the contract (NCHW float in [0, 1], int64 labels) and each source."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from dlsec.data import digits, load_data, read_idx, validate
from dlsec.errors import DataError


def test_digits_split_is_fixed_stratified_and_scaled() -> None:
    tr, te = digits("train"), digits("test")
    assert te.x.shape == (540, 1, 8, 8) and tr.x.shape == (1257, 1, 8, 8)
    assert te.x.dtype == torch.float32 and te.y.dtype == torch.int64
    assert float(te.x.min()) == 0.0 and float(te.x.max()) == 1.0
    assert torch.equal(digits("test").x, te.x)  # same split every time
    counts = torch.bincount(te.y).float()
    totals = counts + torch.bincount(tr.y).float()
    assert float((counts - 0.3 * totals).abs().max()) <= 1  # stratified: 30% of each class, to rounding
    assert te.num_classes == 10


def _idx(path: Path, arr: np.ndarray, code: int, compress: bool) -> Path:
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    raw = header + arr.astype(arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


@pytest.mark.parametrize("compress", [True, False])
def test_idx_directory(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 4, 4), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 9], dtype=np.uint8)
    _idx(tmp_path / "t10k-images-idx3-ubyte", imgs, 0x08, compress)
    _idx(tmp_path / "t10k-labels-idx1-ubyte", labels, 0x08, compress)
    ds = load_data(f"idx:{tmp_path}")
    assert ds.x.shape == (5, 1, 4, 4)
    assert torch.allclose(ds.x[:, 0], torch.from_numpy(imgs.astype(np.float32) / 255))
    assert ds.y.tolist() == [0, 1, 2, 3, 9]


def test_idx_bad_magic_and_truncation(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="magic"):
        read_idx(bad)
    short = _idx(tmp_path / "short", np.zeros((3, 2), dtype=np.uint8), 0x08, False)
    short.write_bytes(short.read_bytes()[:-1])
    with pytest.raises(DataError, match="header says"):
        read_idx(short)


def test_npz_round_trip(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((6, 1, 8, 8), dtype=np.float32)
    y = np.arange(6, dtype=np.int64)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_data(f"npz:{tmp_path / 'd.npz'}")
    assert torch.allclose(ds.x, torch.from_numpy(x)) and ds.y.tolist() == list(range(6))


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.full((2, 1, 4, 4), 2.0, np.float32), np.zeros(2, np.int64), r"\[0, 1\]"),
        (np.zeros((2, 16), np.float32), np.zeros(2, np.int64), "NCHW"),
        (np.zeros((2, 1, 4, 4), np.float32), np.array([0, -1]), "non-negative"),
        (np.zeros((2, 1, 4, 4), np.float32), np.zeros(3, np.int64), "labels must have shape"),
        (np.zeros((2, 1, 4, 4), np.float32), np.zeros(2, np.float32), "int64"),
        (np.array([object()] * 2, dtype=object), np.zeros(2, np.int64), "without pickle"),
    ],
)
def test_npz_contract_violations(tmp_path: Path, x: np.ndarray, y: np.ndarray, match: str) -> None:
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(DataError, match=match):
        load_data(f"npz:{tmp_path / 'd.npz'}")


def test_unknown_spec_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown data spec"):
        load_data("cifar")
    with pytest.raises(DataError, match="not found"):
        load_data(f"npz:{tmp_path / 'nope.npz'}")
    with pytest.raises(DataError, match="not found"):
        load_data(f"idx:{tmp_path / 'nope'}")


def test_validate_checks_label_range() -> None:
    with pytest.raises(DataError, match="out of range"):
        validate(torch.zeros(2, 1, 2, 2), torch.tensor([0, 10]), num_classes=10)


def test_torchvision_spec_without_torchvision_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torchvision", None)  # importing it now raises ImportError
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(DataError, match="needs torchvision"):
        load_data("torchvision:MNIST:/nowhere")
