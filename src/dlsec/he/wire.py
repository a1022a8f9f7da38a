"""A small binary container for keys, ciphertexts and encrypted weights: a JSON header and raw byte sections.

Layout: the magic ``DLSECHE1``, a 4-byte big-endian header length, the UTF-8 JSON header
``{"kind": ..., "meta": {...}, "sections": [[name, length], ...]}`` and the sections back to back. Nothing is
pickled: sections are TenSEAL's and SEAL's own serializations. Every length is checked against the data before
anything is sliced, so a truncated or oversized message is an :class:`~dlsec.errors.InputError`, never a crash.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dlsec.errors import InputError

__all__ = ["MAGIC", "Message", "pack", "unpack"]

MAGIC = b"DLSECHE1"
MAX_HEADER = 1 << 20
MAX_SECTIONS = 1 << 16


@dataclass(frozen=True)
class Message:
    """A decoded container: its kind, JSON metadata and named byte sections (in order)."""

    kind: str
    meta: Mapping[str, Any]
    sections: Mapping[str, bytes]


def pack(kind: str, meta: Mapping[str, Any], sections: Mapping[str, bytes]) -> bytes:
    """Encode a message."""
    header = json.dumps(
        {"kind": kind, "meta": dict(meta), "sections": [[k, len(v)] for k, v in sections.items()]},
        separators=(",", ":"),
    ).encode()
    return b"".join([MAGIC, struct.pack(">I", len(header)), header, *sections.values()])


def unpack(data: bytes, kind: str | None = None, max_bytes: int | None = None) -> Message:
    """Decode and check a message; ``kind`` (when given) must match. Raises :class:`InputError` on anything malformed."""
    if max_bytes is not None and len(data) > max_bytes:
        raise InputError(f"message of {len(data)} bytes is over the {max_bytes}-byte limit")
    if len(data) < len(MAGIC) + 4 or not data.startswith(MAGIC):
        raise InputError("not a dlsec HE message (bad magic)")
    (hlen,) = struct.unpack(">I", data[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if hlen > MAX_HEADER or start + hlen > len(data):
        raise InputError("malformed dlsec HE message: bad header length")
    try:
        header = json.loads(data[start : start + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"malformed dlsec HE message header: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("kind"), str):
        raise InputError("malformed dlsec HE message header")
    if kind is not None and header["kind"] != kind:
        raise InputError(f"expected a {kind!r} message, got {header['kind']!r}")
    meta, secs = header.get("meta", {}), header.get("sections")
    if not isinstance(meta, dict) or not isinstance(secs, list) or len(secs) > MAX_SECTIONS:
        raise InputError("malformed dlsec HE message header")
    pos = start + hlen
    sections: dict[str, bytes] = {}
    for item in secs:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], int)
            or isinstance(item[1], bool)
            or item[1] < 0
            or item[0] in sections
        ):
            raise InputError("malformed dlsec HE message: bad section table")
        if pos + item[1] > len(data):
            raise InputError("truncated dlsec HE message")
        sections[item[0]] = data[pos : pos + item[1]]
        pos += item[1]
    if pos != len(data):
        raise InputError("malformed dlsec HE message: trailing bytes")
    return Message(header["kind"], meta, sections)
