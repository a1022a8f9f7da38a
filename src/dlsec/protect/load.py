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
from typing import Any

from dlsec.errors import DlsecError, InputError, VerificationError
from dlsec.protect.container import (
    HashingReader,
    check_digest,
    is_encrypted,
    iter_decrypt,
    open_input,
    signature_first,
    sniff_format,
)
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
    from dlsec.protect.signing import signed_file_digest

    name = str(path)
    digest = None
    if verify_key is not None:
        digest = signed_file_digest(path, _public(verify_key), signature)  # the bundle and key, before any read
    elif not allow_unsigned:
        raise VerificationError(f"{name}: unsigned load refused: pass verify_key (or allow_unsigned=True)")
    sources = _sources(key)
    f, size = open_input(path)
    with f:
        if size > max_bytes:
            raise InputError(f"{name} is {size} bytes, over the {max_bytes}-byte limit")
        reader = HashingReader(f)
        head = reader.read(8)
        plain = _memory_file(name)
        try:
            if is_encrypted(head):
                if not sources:
                    raise InputError(f"{name} is encrypted: pass key (a key file, environment key, passphrase or service)")
                rest = _Prefixed(head, reader)
                try:
                    for block in iter_decrypt(rest, sources, name):  # type: ignore[arg-type]
                        plain.write(block)
                except VerificationError as exc:
                    signature_first(reader, digest, name, exc)
                    raise
            elif sources:
                raise VerificationError(f"{name} is not encrypted, but a key was given: refusing a possibly stripped file")
            else:
                plain.write(head)
                total = len(head)
                while block := reader.read(1 << 20):
                    total += len(block)
                    if total > size:
                        raise InputError(f"{name} grew while it was read")
                    plain.write(block)
            check_digest(reader, digest, name)  # nothing is parsed or loaded before this
            plain.seek(0)
            return _load_plain(plain, name, allow_pickle=allow_pickle, map_location=map_location)
        finally:
            plain.close()


class _Prefixed:
    """A reader that hands out ``head`` first, then what ``reader`` gives (the magic was already read)."""

    def __init__(self, head: bytes, reader: HashingReader) -> None:
        self.head, self.reader = head, reader

    def read(self, n: int = -1) -> bytes:
        if self.head:
            out, self.head = self.head[:n] if n >= 0 else self.head, self.head[n:] if n >= 0 else b""
            if n < 0 or len(out) < n:
                out += self.reader.read(-1 if n < 0 else n - len(out))
            return out
        return self.reader.read(n)

    def readinto(self, b: memoryview) -> int:
        if self.head:
            data = self.read(len(b))
            b[: len(data)] = data
            return len(data)
        return self.reader.readinto(b)


def _memory_file(name: str) -> Any:
    """Where the plaintext goes: an anonymous in-memory file (``memfd``, never on disk) where the OS has one."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("dlsec-plaintext", getattr(os, "MFD_CLOEXEC", 0))
        return os.fdopen(fd, "w+b")
    return io.BytesIO()


def _load_plain(f: Any, name: str, *, allow_pickle: bool, map_location: Any) -> Any:
    from dlsec.models import loading

    fmt = sniff_format(f.read(16))
    f.seek(0)
    if fmt == "safetensors":
        return loading.weights_from_file(f, name)
    if fmt == "zip" and loading.is_pt2(f):
        return loading.load_exported(f, name)
    if fmt in ("zip", "pickle"):
        if not allow_pickle:
            raise RefusedFormatError(
                f"{name} needs pickle to load (a torch.save checkpoint or a pickle): refused; "
                "convert it to safetensors, or pass allow_pickle=True to load it after a clean scan"
            )
        from dlsec.scan import scan_open_file

        report = scan_open_file(f, name)
        f.seek(0)
        if report.findings or report.errors or not report.scanned:
            what = (
                report.findings[0].message if report.findings
                else report.errors[0].message if report.errors
                else "format not recognised by the scanner"
            )  # fmt: skip
            raise RefusedFormatError(f"{name} did not scan clean, refusing to load it: {what}")
        return loading.torch_load_file(f, name, map_location)
    raise RefusedFormatError(f"{name}: format not recognised (not safetensors, torch.export or a torch checkpoint)")
