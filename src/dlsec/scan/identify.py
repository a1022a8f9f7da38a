"""Format identification by content (magic bytes), never by file name alone."""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

Stream = BinaryIO | io.RawIOBase | io.BufferedIOBase
"""Any readable, seekable binary stream: a file, an archive member, a decompressing reader."""

PICKLE_PROTO = 0x80
# Opcodes a protocol 0 or 1 pickle can start with (MARK, EMPTY_*, GLOBAL, INST, constants, PERSID...).
_PICKLE_V0_START = set(b"(]})cNIJKLMFSVXUTGdlitP")


def sniff(head: bytes) -> str:
    """The format of a stream from its first bytes (at least 512 where the stream is that long).

    One of ``zip``, ``gzip``, ``bz2``, ``xz``, ``lz4``, ``zlib``, ``npy``, ``hdf5``, ``gguf``, ``tar``, ``safetensors``,
    ``pickle``, ``pickle0`` (a protocol 0/1 candidate, confirmed only by parsing) or ``unknown``.
    """
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and len(head) > 3 and head[3:4].isdigit():
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x04\x22\x4d\x18"):
        return "lz4"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head.startswith(b"GGUF"):
        return "gguf"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if len(head) >= 2 and head[0] == PICKLE_PROTO and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n < (100 << 20) and head[8:9] == b"{":
            return "safetensors"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:
        return "zlib"
    if head[:1] and head[0] in _PICKLE_V0_START:
        return "pickle0"
    return "unknown"


def read_head(f: Stream, n: int = 512) -> bytes:
    """The first ``n`` bytes of ``f``; the position is restored."""
    pos = f.tell()
    head = f.read(n)
    f.seek(pos)
    return head
