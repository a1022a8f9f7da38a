"""Protected model files: encrypted at rest, signed, and loaded through one path that checks both.

    from dlsec.protect import KeyFile, encrypt_file, sign, load
    encrypt_file("model.safetensors", "model.safetensors.enc", [KeyFile("team.kek")], sign_key=private_key)
    state = load("model.safetensors.enc", key="team.kek", verify_key="signer.pem.pub")   # also: dlsec.load

* :mod:`~dlsec.protect.container`: streaming, chunked AES-256-GCM; header, tensor table, chunk order and count bound
  to every chunk; envelope keys, ``rewrap`` without re-encrypting.
* :mod:`~dlsec.protect.keys`: key files, environment keys, Argon2id passphrases, key-service plug-ins; Ed25519 and
  ECDSA signing keys.
* :mod:`~dlsec.protect.signing`: detached signatures in the OpenSSF model-signing format (Sigstore bundle, DSSE,
  in-toto manifest of SHA-256 digests, per tensor for safetensors).
* :mod:`~dlsec.protect.load`: verify, then decrypt in memory, then load without pickle.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlsec.protect.container import DEFAULT_CHUNK, Header, decrypt_bytes, decrypt_file, rewrap_file
from dlsec.protect.container import encrypt_file as _encrypt_file
from dlsec.protect.keys import (
    EnvKey,
    KeyFile,
    KeyService,
    KeySource,
    Passphrase,
    RawKey,
    generate_signing_key,
    key_service,
    load_private_key,
    load_public_key,
    register_key_service,
    write_key_file,
    write_signing_key,
)
from dlsec.protect.load import RefusedFormatError, load
from dlsec.protect.signing import Manifest, Verified, build_manifest, sign, verify

__all__ = [
    "EnvKey", "Header", "KeyFile", "KeyService", "KeySource", "Manifest", "Passphrase", "RawKey",
    "RefusedFormatError", "Verified", "build_manifest", "decrypt_bytes", "decrypt_file", "encrypt_file",
    "generate_signing_key", "key_service", "load", "load_private_key", "load_public_key", "register_key_service",
    "rewrap_file", "sign", "verify", "write_key_file", "write_signing_key",
]  # fmt: skip


def encrypt_file(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], keys: Sequence[KeySource], *,
    sign_key: Any = None, signature: str | os.PathLike[str] | None = None, chunk_size: int = DEFAULT_CHUNK,
) -> tuple[Header, Path | None]:  # fmt: skip
    """Encrypt ``src`` to ``dst``; with ``sign_key``, sign ``dst`` as written (its digest from the same pass).

    Returns the header and the signature's path (None when not signed).
    """
    header, digest = _encrypt_file(src, dst, keys, chunk_size=chunk_size)
    if sign_key is None:
        return header, None
    return header, sign(dst, sign_key, signature, file_digest=digest)
