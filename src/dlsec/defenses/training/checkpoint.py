"""Checkpoints: written atomically, read back without unpickling arbitrary objects.

A checkpoint holds only tensors and plain containers (dicts, lists, tuples, numbers, strings, None), is saved with
``torch.save`` to a temporary file in the same folder, flushed and fsynced, then moved over the old one with
``os.replace`` (atomic on POSIX): a run killed at any moment leaves the previous complete checkpoint or the new one,
never a torn file. It is read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import torch

from dlsec.errors import ConfigError, InputError

__all__ = ["CHECKPOINT", "FORMAT", "atomic_write_bytes", "load_checkpoint", "save_checkpoint"]

CHECKPOINT = "checkpoint.pt"
"""The checkpoint's name inside the output folder."""

FORMAT = "dlsec-train-checkpoint/1"
"""Marks a dlsec training checkpoint and its layout version."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    _atomic(path, lambda f: f.write(data))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors and plain containers only) to ``path`` atomically."""
    _atomic(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with ``weights_only=True``.

    Raises :class:`ConfigError` when there is none (``--resume`` without a checkpoint) and :class:`InputError` when
    the file is not a dlsec training checkpoint or holds anything but tensors and plain values.
    """
    if not path.is_file():
        raise ConfigError(f"cannot resume: no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()
        raise InputError(f"cannot read checkpoint {path}: {first[0] if first else type(exc).__name__}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path} is not a dlsec training checkpoint ({FORMAT})")
    return state
