"""Keys and model files for the protect tests, built here (no committed keys or binaries)."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dlsec.protect import Passphrase, RawKey, generate_signing_key
from dlsec.protect.container import MAGIC, read_header

FAST_ARGON2 = {"memory_kib": 8 * 1024, "iterations": 1, "lanes": 1}


def fast_passphrase(text: str) -> Passphrase:
    """A passphrase with the smallest Argon2id cost the format allows, to keep tests quick."""
    return Passphrase(text.encode(), **FAST_ARGON2)


@pytest.fixture
def kek() -> RawKey:
    return RawKey(bytes(range(32)), origin="test")


@pytest.fixture
def other_kek() -> RawKey:
    return RawKey(bytes(range(1, 33)), origin="other")


@pytest.fixture(scope="session")
def ed25519() -> object:
    return generate_signing_key("ed25519")


@pytest.fixture(scope="session")
def ecdsa() -> object:
    return generate_signing_key("ecdsa-p256")


def make_safetensors(path: Path, seed: int = 0, n: int = 3, size: int = 40) -> dict[str, torch.Tensor]:
    """A small safetensors file with ``n`` float tensors (plus an empty one) and metadata."""
    g = torch.Generator().manual_seed(seed)
    state = {f"layer{i}.weight": torch.randn(size, size, generator=g) for i in range(n)}
    state["empty"] = torch.zeros(0)
    save_file(state, str(path), metadata={"producer": "dlsec tests"})
    return state


@pytest.fixture
def st_file(tmp_path: Path) -> Path:
    p = tmp_path / "model.safetensors"
    make_safetensors(p)
    return p


def edit_header(blob: bytes, edit) -> bytes:
    """An encrypted file with its header JSON edited by ``edit(doc)`` and re-encoded (chunks untouched)."""
    h = read_header(io.BytesIO(blob))
    doc = json.loads(blob[12 : h.data_offset])
    edit(doc)
    body = json.dumps(doc).encode()
    return MAGIC + struct.pack(">I", len(body)) + body + blob[h.data_offset :]
