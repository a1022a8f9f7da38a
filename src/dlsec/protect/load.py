"""``dlsec.load``: one load path that verifies, decrypts in memory and loads without pickle, or refuses.

Order of checks, each failing with an error that names it:

1. the file is read once into memory (size bounded); every later step uses exactly these bytes;
2. **signature**: the bytes as stored (ciphertext for an encrypted file) must match a single-file signature made by
   ``verify_key``; without ``verify_key`` the file is refused as unsigned unless ``allow_unsigned=True``;
3. **decryption**: an encrypted file needs ``key``; a plaintext file given a ``key`` is refused (a stripped
   encryption is a downgrade, not a convenience); chunks and metadata are authenticated as they decrypt;
4. **format**: safetensors (returns the state dict) and ``torch.export`` archives (returns the module) load without
   pickle; anything that needs pickle (a ``torch.save`` checkpoint, a raw pickle) is refused unless
   ``allow_pickle=True`` *and* the scanner finds it clean, and even then it is loaded with ``weights_only=True``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlsec.errors import DlsecError, InputError, VerificationError
from dlsec.protect.container import decrypt_bytes, is_encrypted, open_input, sniff_format
from dlsec.protect.keys import KeyFile, KeySource, load_public_key

MAX_LOAD_BYTES = 64 << 30


class RefusedFormatError(DlsecError):
    """The decrypted, verified file is in a format this load path will not run (pickle without consent)."""

    exit_code = 1


def _sources(key: Any) -> list[KeySource]:
    if key is None:
        return []
    if isinstance(key, (str, os.PathLike)):
        return [KeyFile(key)]
    if isinstance(key, Sequence) and not isinstance(key, (bytes, bytearray)):
        return [s for k in key for s in _sources(k)]
    if isinstance(key, (bytes, bytearray)):
        from dlsec.protect.keys import RawKey

        return [RawKey(bytes(key), origin="key given")]
    return [key]


def _public(verify_key: Any) -> Any:
    if isinstance(verify_key, (str, os.PathLike)):
        return load_public_key(verify_key)
    return verify_key


def read_bounded(path: str | os.PathLike[str], limit: int = MAX_LOAD_BYTES) -> bytes:
    """A whole file, refusing one over ``limit`` bytes or one that is not a regular file."""
    p = Path(path)
    f, size = open_input(p)
    with f:
        if size > limit:
            raise InputError(f"{p} is {size} bytes, over the {limit}-byte limit")
        data = f.read(size)
        if len(data) != size or f.read(1):
            raise InputError(f"{p} changed size while it was read")
    return data


def load(
    path: str | os.PathLike[str],
    key: Any = None,
    verify_key: Any = None,
    *,
    signature: str | os.PathLike[str] | None = None,
    allow_unsigned: bool = False,
    allow_pickle: bool = False,
    map_location: Any = "cpu",
    max_bytes: int = MAX_LOAD_BYTES,
) -> Any:
    """Verify, decrypt in memory and load a model file; see the module docstring for the checks.

    ``key``: a :class:`~dlsec.protect.keys.KeySource` (key file, env key, passphrase, key service), a key file path,
    32 raw bytes, or a list of these. ``verify_key``: an Ed25519/ECDSA public key or its PEM path; the signature is
    ``signature`` or ``<path>.sig``. Returns a ``dict[str, Tensor]`` for safetensors, an ``nn.Module`` for a
    ``torch.export`` archive, and what ``torch.load(weights_only=True)`` returns for an allowed pickle checkpoint.
    """
    from dlsec.protect.signing import verify

    name = str(path)
    data = read_bounded(path, max_bytes)
    if verify_key is not None:
        verify(path, _public(verify_key), signature, data=data)
    elif not allow_unsigned:
        raise VerificationError(f"{name}: unsigned load refused: pass verify_key (or allow_unsigned=True)")
    sources = _sources(key)
    if is_encrypted(data[:8]):
        if not sources:
            raise InputError(f"{name} is encrypted: pass key (a key file, environment key, passphrase or service)")
        data = decrypt_bytes(data, sources, name)
    elif sources:
        raise VerificationError(f"{name} is not encrypted, but a key was given: refusing a possibly stripped file")
    return _load_plain(data, name, allow_pickle=allow_pickle, map_location=map_location)


def _load_plain(data: bytes, name: str, *, allow_pickle: bool, map_location: Any) -> Any:
    from dlsec.models import loading

    fmt = sniff_format(data[:16])
    if fmt == "safetensors":
        return loading.weights_from_bytes(data, name)
    if fmt == "zip" and loading.is_pt2(io.BytesIO(data)):
        return loading.load_exported(io.BytesIO(data), name)
    if fmt in ("zip", "pickle"):
        if not allow_pickle:
            raise RefusedFormatError(
                f"{name} needs pickle to load (a torch.save checkpoint or a pickle): refused; "
                "convert it to safetensors, or pass allow_pickle=True to load it after a clean scan"
            )
        from dlsec.scan import scan_bytes

        report = scan_bytes(data, name)
        if report.findings or report.errors or not report.scanned:
            what = (
                report.findings[0].message if report.findings
                else report.errors[0].message if report.errors
                else "format not recognised by the scanner"
            )  # fmt: skip
            raise RefusedFormatError(f"{name} did not scan clean, refusing to load it: {what}")
        return loading.torch_load_bytes(data, name, map_location)
    raise RefusedFormatError(f"{name}: format not recognised (not safetensors, torch.export or a torch checkpoint)")
