"""The encrypted file format: streaming, chunked AES-256-GCM with everything that matters bound to every chunk.

Layout (version 1)::

    b"DLSECENC"  u32 big-endian header length  header (JSON)  chunk 0  chunk 1 ... chunk n-1

The header is ``{"meta": {...}, "meta_mac": hex, "wraps": [...]}``.

* ``meta`` is immutable for the life of the file: format version, cipher, chunk size, plaintext size, chunk count, a
  random file id, the plaintext's format and, for safetensors, the SHA-256 of its tensor table (names, dtypes, shapes,
  offsets, metadata, canonical JSON). Its canonical JSON's SHA-256 is associated data of every chunk, so editing any
  of it (the tensor table included) fails every chunk; ``meta_mac`` (HMAC-SHA256 under a key derived from the data
  key) says so before any chunk is read.
* Chunk ``i`` is ``AES-256-GCM(data key, nonce = 0^4 || u64(i), plaintext[i*C:(i+1)*C], AAD = label || meta digest
  || u64(i) || u64(n))`` with its 16-byte tag. A chunk moved, dropped, duplicated or cut fails its tag or the count;
  bytes after the last chunk are refused. The data key is fresh per file, so counter nonces never repeat.
* ``wraps`` hold the data key wrapped by one or more key-encryption keys (:mod:`dlsec.protect.keys`), each bound to
  the file id and meta digest. :func:`rewrap` replaces them without touching a chunk.

Memory is one chunk at a time whatever the file size; the default chunk is 1 MiB.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dlsec.errors import InputError, KeyMismatchError, VerificationError
from dlsec.protect.keys import MAX_PASSPHRASE_TRIES, KeySource, strict_hex

MAGIC = b"DLSECENC"
VERSION = 1
CIPHER = "AES-256-GCM"
TAG = 16
DEFAULT_CHUNK = 1 << 20
MIN_CHUNK, MAX_CHUNK = 1 << 10, 64 << 20
MAX_HEADER = 1 << 20
MAX_WRAPS = 64
MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors library's own limit
_CHUNK_LABEL = b"dlsec chunk v1\x00"


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _subkeys(dek: bytes) -> tuple[bytes, bytes]:
    """(chunk key, meta MAC key), derived from the data key with HKDF-SHA256."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"dlsec protect v1 subkeys").derive(dek)
    return okm[:32], okm[32:]


def _nonce(i: int) -> bytes:
    return b"\x00\x00\x00\x00" + struct.pack(">Q", i)


def _aad(meta_digest: bytes, i: int, n: int) -> bytes:
    return _CHUNK_LABEL + meta_digest + struct.pack(">QQ", i, n)


def _context(meta: dict[str, Any], meta_digest: bytes) -> bytes:
    return b"dlsec wrap v1\x00" + bytes.fromhex(meta["file_id"]) + meta_digest


def tensor_table_digest(header: bytes) -> str:
    """SHA-256 of a safetensors header's canonical JSON (names, dtypes, shapes, offsets, ``__metadata__``)."""
    try:
        table = json.loads(header, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"the safetensors header is not valid JSON: {type(exc).__name__}") from None
    if not isinstance(table, dict):
        raise InputError("the safetensors header is not a JSON object")
    return hashlib.sha256(_canonical(table)).hexdigest()


def sniff_format(head: bytes) -> str:
    """The plaintext's format from its first bytes: safetensors, zip (torch, .pt2, npz, keras), pickle or raw."""
    if len(head) >= 10 and head[8:9] == b"{":
        n = struct.unpack("<Q", head[:8])[0]
        if 2 <= n <= MAX_SAFETENSORS_HEADER:
            return "safetensors"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    return "raw"


@dataclass(frozen=True)
class Header:
    """A parsed header: the immutable ``meta``, its canonical digest and MAC, and the key wraps."""

    meta: dict[str, Any]
    meta_digest: bytes
    meta_mac: str
    wraps: tuple[dict[str, Any], ...]
    data_offset: int

    @property
    def chunks(self) -> int:
        """Number of chunks."""
        return int(self.meta["chunks"])

    @property
    def size(self) -> int:
        """Plaintext size in bytes."""
        return int(self.meta["size"])

    @property
    def chunk_size(self) -> int:
        """Plaintext bytes per chunk (the last may be shorter)."""
        return int(self.meta["chunk_size"])

    def ciphertext_size(self) -> int:
        """Bytes after the header that the chunks must occupy exactly."""
        return self.size + TAG * self.chunks

    def key_ids(self) -> list[str]:
        """``kind:key_id`` of each wrap, for messages."""
        return [f"{w.get('kind')}:{w.get('key_id')}" for w in self.wraps]


def _encode_header(meta: dict[str, Any], meta_mac: str, wraps: Sequence[dict[str, Any]]) -> tuple[bytes, Header]:
    """The header's bytes, and the header as a reader parses them (what is written must read back)."""
    if not 1 <= len(wraps) <= MAX_WRAPS:
        raise InputError(f"a file holds 1 to {MAX_WRAPS} key wraps, not {len(wraps)}")
    body = json.dumps({"meta": meta, "meta_mac": meta_mac, "wraps": list(wraps)}, sort_keys=True).encode()
    if len(body) > MAX_HEADER:
        raise InputError("too many key wraps: the header would exceed its size limit")
    out = MAGIC + struct.pack(">I", len(body)) + body
    return out, read_header(io.BytesIO(out), "the new header")


def is_encrypted(head: bytes) -> bool:
    """Whether these first bytes start a dlsec-encrypted file."""
    return head[:8] == MAGIC


def read_header(f: IO[bytes], name: str = "file") -> Header:
    """Parse and sanity-check a header (nothing is authenticated yet: that needs the data key)."""
    head = f.read(12)
    if len(head) < 12 or head[:8] != MAGIC:
        raise InputError(f"{name} is not a dlsec-encrypted file")
    (n,) = struct.unpack(">I", head[8:12])
    if n > MAX_HEADER:
        raise VerificationError(f"{name}: header length {n} is over the {MAX_HEADER}-byte limit: the file was edited")
    body = f.read(n)
    if len(body) != n:
        raise VerificationError(f"{name} is truncated inside its header")
    try:
        doc = json.loads(body, object_pairs_hook=_no_duplicates)
        meta, mac, wraps = doc["meta"], doc["meta_mac"], doc["wraps"]
        if not isinstance(meta, dict) or not isinstance(wraps, list) or len(strict_hex(mac)) != 32:
            raise TypeError("layout")
        if not 1 <= len(wraps) <= MAX_WRAPS or not all(isinstance(w, dict) for w in wraps):
            raise TypeError("wraps")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise VerificationError(f"{name}: the header is not valid ({type(exc).__name__}): the file was edited") from None
    if meta.get("version") != VERSION or meta.get("cipher") != CIPHER:
        raise InputError(f"{name}: format version {meta.get('version')!r} / {meta.get('cipher')!r} is not supported")
    for k in ("size", "chunk_size", "chunks"):
        v = meta.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise VerificationError(f"{name}: header field {k} is not a size: the file was edited")
    cs, size, chunks = meta["chunk_size"], meta["size"], meta["chunks"]
    if not MIN_CHUNK <= cs <= MAX_CHUNK or chunks != max(1, -(-size // cs)):
        raise VerificationError(f"{name}: header sizes are inconsistent: the file was edited")
    try:
        if len(strict_hex(meta["file_id"])) != 16:
            raise ValueError
    except (KeyError, ValueError, TypeError):
        raise VerificationError(f"{name}: header has no valid file id: the file was edited") from None
    digest = hashlib.sha256(_canonical(meta)).digest()
    return Header(meta, digest, mac, tuple(wraps), 12 + n)


def _unwrap(header: Header, sources: Sequence[KeySource], name: str) -> bytes:
    context = _context(header.meta, header.meta_digest)
    tried = []
    for source in sources:
        candidates = [e for e in header.wraps if source.matches(e)]
        if source.kind == "passphrase":
            candidates = candidates[:MAX_PASSPHRASE_TRIES]  # each try is a memory-hard derivation
        for entry in candidates:
            try:
                return source.unwrap(entry, context)
            except KeyMismatchError:
                continue
        tried.append(source.describe())
    wanted = ", ".join(repr(k) for k in header.key_ids()[:8])
    if any(s.kind == "passphrase" for s in sources) and any(w.get("kind") == "passphrase" for w in header.wraps):
        raise KeyMismatchError(f"{name}: wrong passphrase")
    raise KeyMismatchError(f"{name}: wrong key: it is protected for {wanted}; given {', '.join(tried)}")


def _check_meta(header: Header, mac_key: bytes, name: str) -> None:
    want = hmac.new(mac_key, header.meta_digest, hashlib.sha256).digest()
    if not hmac.compare_digest(want, strict_hex(header.meta_mac)):
        raise VerificationError(f"{name}: the header's metadata failed authentication: it was edited")


def _meta_for(size: int, chunk_size: int, fmt: str, table: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "version": VERSION, "cipher": CIPHER, "chunk_size": chunk_size, "size": size,
        "chunks": max(1, -(-size // chunk_size)), "file_id": os.urandom(16).hex(), "format": fmt,
    }  # fmt: skip
    if table is not None:
        meta["tensor_table_sha256"] = table
    return meta


def _read_exact(f: IO[bytes], n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise InputError("the input file changed size while it was read")
    return data


def _read_into(f: IO[bytes], view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise InputError("the input file changed size while it was read")
        got += n


def _plain_info(src: IO[bytes], size: int) -> tuple[str, str | None]:
    head = src.read(16)
    fmt = sniff_format(head)
    table = None
    if fmt == "safetensors":
        n = struct.unpack("<Q", head[:8])[0]
        if 8 + n > size:
            raise InputError("the safetensors header runs past the end of the file")
        src.seek(8)
        table = tensor_table_digest(_read_exact(src, n))
    src.seek(0)
    return fmt, table


def encrypt_stream(
    src: IO[bytes], dst: IO[bytes], size: int, keys: Sequence[KeySource], *, chunk_size: int = DEFAULT_CHUNK,
    on_write: Callable[[bytes], None] | None = None,
) -> Header:  # fmt: skip
    """Encrypt ``size`` bytes of ``src`` (seekable) to ``dst``; ``on_write`` sees every byte written (to hash it)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not keys:
        raise InputError("no key given: pass a key file, an environment key, a passphrase or a key service")
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise InputError(f"chunk size must be in [{MIN_CHUNK}, {MAX_CHUNK}]")
    fmt, table = _plain_info(src, size)
    meta = _meta_for(size, chunk_size, fmt, table)
    digest = hashlib.sha256(_canonical(meta)).digest()
    dek = os.urandom(32)
    chunk_key, mac_key = _subkeys(dek)
    wraps = [k.wrap(dek, _context(meta, digest)) for k in keys]
    mac = hmac.new(mac_key, digest, hashlib.sha256).hexdigest()
    out, header = _encode_header(meta, mac, wraps)
    def write(b: bytes | memoryview) -> None:
        if on_write is not None:
            on_write(b)  # type: ignore[arg-type]
        dst.write(b)

    write(out)
    aead = AESGCM(chunk_key)
    n = meta["chunks"]
    inbuf, outbuf = bytearray(chunk_size), bytearray(chunk_size + TAG)  # reused: no allocation per chunk
    inview, outview = memoryview(inbuf), memoryview(outbuf)
    for i in range(n):
        k = min(chunk_size, size - i * chunk_size)
        _read_into(src, inview[:k])
        if hasattr(aead, "encrypt_into"):  # cryptography >= 45
            aead.encrypt_into(_nonce(i), inview[:k], _aad(digest, i, n), outview[: k + TAG])
            write(outview[: k + TAG])
        else:  # pragma: no cover - older cryptography
            write(aead.encrypt(_nonce(i), bytes(inview[:k]), _aad(digest, i, n)))
    if src.read(1):
        raise InputError("the input file grew while it was read")
    return header


def iter_decrypt(f: IO[bytes], keys: Sequence[KeySource], name: str = "file") -> Iterator[bytes | memoryview]:
    """Authenticate and decrypt chunk by chunk (nothing is yielded before its chunk's tag checks).

    A yielded block is only valid until the next one is asked for (one buffer is reused): copy it to keep it.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header = read_header(f, name)
    dek = _unwrap(header, keys, name)
    chunk_key, mac_key = _subkeys(dek)
    _check_meta(header, mac_key, name)
    aead = AESGCM(chunk_key)
    n, cs, size = header.chunks, header.chunk_size, header.size
    table = _TableCheck(header, name)
    inbuf, outbuf = bytearray(min(cs, size) + TAG), bytearray(min(cs, size))  # reused: no allocation per chunk
    inview, outview = memoryview(inbuf), memoryview(outbuf)
    for i in range(n):
        k = min(cs, size - i * cs)
        try:
            _read_into(f, inview[: k + TAG])
        except InputError:
            raise VerificationError(f"{name} is truncated: chunk {i} of {n} is incomplete or missing") from None
        try:
            if hasattr(aead, "decrypt_into"):  # cryptography >= 45
                aead.decrypt_into(_nonce(i), inview[: k + TAG], _aad(header.meta_digest, i, n), outview[:k])
                plain: bytes | memoryview = outview[:k]
            else:  # pragma: no cover - older cryptography
                plain = aead.decrypt(_nonce(i), bytes(inview[: k + TAG]), _aad(header.meta_digest, i, n))
        except InvalidTag:
            raise VerificationError(
                f"{name}: chunk {i} of {n} failed authentication (altered, reordered or duplicated)"
            ) from None
        table.feed(plain)
        yield plain
    table.finish()
    if f.read(1):
        raise VerificationError(f"{name} has data after its last chunk: it was appended to")


class _TableCheck:
    """For safetensors: the decrypted tensor table must hash to the digest bound in the metadata."""

    def __init__(self, header: Header, name: str) -> None:
        self.want = header.meta.get("tensor_table_sha256") if header.meta.get("format") == "safetensors" else None
        self.name = name
        self.buf = bytearray()
        self.done = self.want is None

    def feed(self, plain: bytes | memoryview) -> None:
        if self.done:
            return
        self.buf += plain[: 8 + MAX_SAFETENSORS_HEADER - len(self.buf)]
        if len(self.buf) < 8:
            return
        n = struct.unpack("<Q", bytes(self.buf[:8]))[0]
        if len(self.buf) >= 8 + n:
            try:
                got = tensor_table_digest(bytes(self.buf[8 : 8 + n]))
            except InputError:
                got = None
            if got != self.want:
                raise VerificationError(f"{self.name}: the tensor table does not match the one bound at encryption")
            self.done, self.buf = True, bytearray()

    def finish(self) -> None:
        if not self.done:
            raise VerificationError(f"{self.name}: the tensor table bound at encryption is missing")


def open_input(path: str | os.PathLike[str]) -> tuple[IO[bytes], int]:
    """An open file and its size; a missing file, a folder or an unreadable file is one clear :class:`InputError`."""
    p = Path(path)
    if p.exists() and not p.is_dir() and not p.is_file():
        raise InputError(f"{p} is not a regular file (a FIFO or device is never opened)")
    try:
        f = open(p, "rb", buffering=0)  # noqa: SIM115 - returned to the caller, closed there; unbuffered: chunk reads go straight to the kernel
    except FileNotFoundError:
        raise InputError(f"{p} not found") from None
    except IsADirectoryError:
        raise InputError(f"{p} is a directory; give a file") from None
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from None
    return f, os.fstat(f.fileno()).st_size


class _AtomicOutput:
    """A temporary file next to ``path``, renamed over it only when everything succeeded."""

    def __init__(self, path: str | os.PathLike[str], mode: int = 0o644) -> None:
        self.path = Path(path)
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(f"cannot write {self.path}: folder {parent} does not exist")
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=parent)
        os.fchmod(fd, mode)
        self.f = os.fdopen(fd, "wb")

    def commit(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def encrypt_file(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], keys: Sequence[KeySource], *,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[Header, str]:  # fmt: skip
    """Encrypt file ``src`` to ``dst`` (written atomically); returns the header and the SHA-256 of ``dst``."""
    fin, size = open_input(src)
    out = _AtomicOutput(dst)
    h = hashlib.sha256()
    try:
        with fin:
            header = encrypt_stream(fin, out.f, size, keys, chunk_size=chunk_size, on_write=h.update)
        out.commit()
    except BaseException:
        out.abort()
        raise
    return header, h.hexdigest()


class HashingReader:
    """A binary reader that hashes every byte it hands out (so a check covers exactly what was used)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.h = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.h.update(data)
        return data

    def readinto(self, b: memoryview) -> int:
        n = self.f.readinto(b)  # type: ignore[attr-defined]
        self.h.update(b[:n])
        return int(n)


def check_digest(reader: HashingReader, expect_sha256: str | None, name: str) -> None:
    """Raise :class:`VerificationError` unless the bytes ``reader`` handed out hash to ``expect_sha256`` (if given)."""
    if expect_sha256 is not None and not hmac.compare_digest(reader.h.hexdigest(), expect_sha256):
        raise VerificationError(f"{name} does not match its signature (the bytes read hash differently)")


def signature_first(reader: HashingReader, expect_sha256: str | None, name: str, exc: BaseException) -> None:
    """After a failed chunk: if a signature is expected and the file does not match it, say that instead.

    The signature is the first check a reader asked for; a tampered signed file is reported as not matching its
    signature, not as whichever chunk happened to fail first.
    """
    if expect_sha256 is None:
        return
    while reader.read(8 << 20):
        pass
    check_digest(reader, expect_sha256, name)


def decrypt_file(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], keys: Sequence[KeySource], *,
    expect_sha256: str | None = None,
) -> Header:  # fmt: skip
    """Decrypt ``src`` to ``dst`` (mode 0600, written atomically: nothing is left behind if any check fails).

    ``expect_sha256``: the digest a verified signature vouches for (:func:`~dlsec.protect.signing.signed_file_digest`);
    the file is read once, hashed as it is decrypted, and the output is released only if the bytes read match it,
    so no file swapped or edited after the signature check can be decrypted in its place.
    """
    fin, _ = open_input(src)
    out = _AtomicOutput(dst, mode=0o600)
    try:
        with fin:
            reader = HashingReader(fin)
            header = None
            try:
                for block in iter_decrypt(reader, keys, str(src)):  # type: ignore[arg-type]
                    out.f.write(block)
            except VerificationError as exc:
                signature_first(reader, expect_sha256, str(src), exc)
                raise
            check_digest(reader, expect_sha256, str(src))
            fin.seek(0)
            header = read_header(fin, str(src))
        out.commit()
    except BaseException:
        out.abort()
        raise
    return header


def decrypt_bytes(data: bytes, keys: Sequence[KeySource], name: str = "file") -> bytes:
    """Decrypt a whole encrypted file held in memory; the plaintext never touches the disk."""
    out = bytearray()
    for block in iter_decrypt(io.BytesIO(data), keys, name):
        out += block
    return bytes(out)


def rewrap_file(
    path: str | os.PathLike[str], old: Sequence[KeySource], new: Sequence[KeySource], *, keep: bool = False,
    expect_sha256: str | None = None,
) -> Header:
    """Replace the key wraps of ``path`` in place (atomically): the chunks are copied, never re-encrypted.

    The old key must open the file (and its metadata must authenticate) first. With ``keep`` the old wraps stay and
    the new ones are added. ``expect_sha256``: the file must hash to this (a verified signature's digest) as read.
    """
    if not new:
        raise InputError("rewrap needs a new key")
    raw, _ = open_input(path)
    with raw:
        fin = HashingReader(raw)
        header = read_header(fin, str(path))  # type: ignore[arg-type]
        dek = _unwrap(header, old, str(path))
        _, mac_key = _subkeys(dek)
        _check_meta(header, mac_key, str(path))
        context = _context(header.meta, header.meta_digest)
        wraps = [k.wrap(dek, context) for k in new]
        if keep:
            wraps = list(header.wraps) + wraps
        out = _AtomicOutput(path)
        try:
            out.f.write(_encode_header(header.meta, header.meta_mac, wraps)[0])
            remaining = header.ciphertext_size()
            while remaining:
                block = fin.read(min(remaining, 8 << 20))
                if not block:
                    raise VerificationError(f"{path} is truncated")
                out.f.write(block)
                remaining -= len(block)
            if fin.read(1):
                raise VerificationError(f"{path} has data after its last chunk: it was appended to")
            check_digest(fin, expect_sha256, str(path))
            out.commit()
        except BaseException:
            out.abort()
            raise
    with open(path, "rb") as f:
        return read_header(f, str(path))
