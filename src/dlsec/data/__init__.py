"""Data in, with no network: the data contract is float32 NCHW in [0, 1] and int64 labels.

Specs: ``digits`` (scikit-learn's bundled 8x8 digits, fixed stratified 70/30 split with seed 0), ``npz:PATH``
(arrays ``x`` and ``y``), ``idx:DIR`` (MNIST-format IDX files, gzip or raw), ``torchvision:NAME:ROOT`` (a
torchvision dataset already on disk; never downloaded).
"""

from __future__ import annotations

import gzip
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlsec.errors import DataError

__all__ = ["Dataset", "load_data", "validate", "digits", "read_idx"]

MAX_DATA_BYTES = 2 << 30
"""Largest data file read (2 GiB, uncompressed)."""


@dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` (N, C, H, W) float32 in [0, 1], labels ``y`` (N,) int64, and where they came from."""

    x: torch.Tensor
    y: torch.Tensor
    name: str

    @property
    def num_classes(self) -> int:
        """One more than the largest label."""
        return int(self.y.max().item()) + 1 if len(self.y) else 0

    def head(self, limit: int | None) -> Dataset:
        """The first ``limit`` points (all when ``None``)."""
        if limit is None:
            return self
        if limit <= 0:
            raise DataError(f"--limit must be positive, got {limit}")
        return Dataset(self.x[:limit], self.y[:limit], self.name)


def validate(x: torch.Tensor, y: torch.Tensor, num_classes: int | None = None) -> None:
    """Check the data contract; raise :class:`DataError` with one clear line if broken."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise DataError("inputs and labels must be torch tensors")
    if x.dim() < 2:
        raise DataError(f"inputs must be batched (N, ...), got shape {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    if len(x) == 0:
        raise DataError("no data points")
    if not x.is_floating_point():
        raise DataError(f"inputs must be floating point in [0, 1], got {x.dtype}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise DataError(f"labels must be integers, got {y.dtype}")
    if not torch.isfinite(x).all():
        raise DataError("inputs contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(f"inputs must lie in [0, 1]; found values in [{lo:.4g}, {hi:.4g}]")
    if int(y.min()) < 0:
        raise DataError(f"labels must be non-negative, found {int(y.min())}")
    if num_classes is not None and int(y.max()) >= num_classes:
        raise DataError(f"label {int(y.max())} is out of range for a model with {num_classes} classes")


def load_data(spec: str, split: str = "test") -> Dataset:
    """Load a dataset from its spec (see module docstring); ``split`` is ``test`` or ``train``."""
    if split not in ("test", "train"):
        raise DataError(f"split must be 'test' or 'train', got {split!r}")
    kind, _, rest = spec.partition(":")
    if kind == "digits":
        ds = digits(split)
    elif kind == "npz" and rest:
        ds = _npz(Path(rest))
    elif kind == "idx" and rest:
        ds = _idx_dir(Path(rest), split)
    elif kind == "torchvision" and rest:
        ds = _torchvision(rest, split)
    else:
        raise DataError(f"unknown data spec {spec!r}: use digits, npz:PATH, idx:DIR or torchvision:NAME:ROOT")
    validate(ds.x, ds.y)
    return ds


def digits(split: str = "test") -> Dataset:
    """scikit-learn's 8x8 digits scaled to [0, 1], N x 1 x 8 x 8; stratified 70/30 split, seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    xs, ys = (x_te, y_te) if split == "test" else (x_tr, y_tr)
    return Dataset(torch.from_numpy(np.ascontiguousarray(xs)), torch.from_numpy(ys), f"digits:{split}")


def _check_size(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if path.stat().st_size > MAX_DATA_BYTES:
        raise DataError(f"{path} is over the {MAX_DATA_BYTES}-byte limit")


def _npz(path: Path) -> Dataset:
    _check_size(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f or "y" not in f:
                raise DataError(f"{path} must hold arrays 'x' and 'y', found {sorted(f.files)}")
            x, y = f["x"], f["y"]
    except DataError:
        raise
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read {path} as .npz without pickle: {exc}") from exc
    if x.dtype.kind != "f":
        raise DataError(f"{path}: x must be float32 in [0, 1], got {x.dtype}")
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: y must be int64 labels, got {y.dtype}")
    if x.ndim != 4:
        raise DataError(f"{path}: x must be NCHW (4 dimensions), got shape {x.shape}")
    return Dataset(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64)), f"npz:{path}")


_IDX_DTYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4")}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip or raw), checking its header against its length."""
    _check_size(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(MAX_DATA_BYTES + 1)
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) > MAX_DATA_BYTES:
        raise DataError(f"{path} unpacks to more than {MAX_DATA_BYTES} bytes")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    head = 4 + 4 * ndim
    if ndim == 0 or len(raw) < head:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(shape))
    if len(raw) - head != count * dtype.itemsize:
        raise DataError(f"{path}: IDX header says {shape} but the file holds {len(raw) - head} bytes of data")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=head).reshape(shape)


def _idx_dir(root: Path, split: str) -> Dataset:
    if not root.is_dir():
        raise DataError(f"IDX directory not found: {root}")
    stem = "t10k" if split == "test" else "train"

    def find(kind: str) -> Path:
        hits = sorted(p for p in root.iterdir() if f"{kind}-idx" in p.name and p.name.startswith(stem))
        if not hits:
            hits = sorted(p for p in root.iterdir() if f"{kind}-idx" in p.name)
        if not hits:
            raise DataError(f"no {kind} IDX file in {root}")
        return hits[0]

    images, labels = read_idx(find("images")), read_idx(find("labels"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{root}: IDX images {images.shape} and labels {labels.shape} do not match")
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    x = torch.from_numpy((images.astype(np.float32) / scale)[:, None].copy())
    return Dataset(x, torch.from_numpy(labels.astype(np.int64)), f"idx:{root}:{split}")


def _torchvision(rest: str, split: str) -> Dataset:
    name, _, root = rest.partition(":")
    try:
        datasets = importlib.import_module("torchvision.datasets")
    except ImportError as exc:
        raise DataError("torchvision data needs torchvision installed") from exc
    cls = getattr(datasets, name, None)
    if cls is None:
        raise DataError(f"torchvision has no dataset {name!r}")
    try:
        ds = cls(root or ".", train=(split == "train"), download=False)
    except Exception as exc:
        raise DataError(f"cannot open torchvision {name} at {root or '.'} (never downloaded): {exc}") from exc
    data = np.asarray(ds.data)
    x = data.astype(np.float32) / (255.0 if data.dtype == np.uint8 else 1.0)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    y = np.asarray(ds.targets, dtype=np.int64)
    return Dataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), f"torchvision:{name}:{split}")
