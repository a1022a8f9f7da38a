"""Scanners for tar archives (also PyTorch's oldest format) and GGUF headers."""

from __future__ import annotations

import re
import struct
import tarfile
from typing import Any

from dlsec.scan.engine import Context, ScanLimitError, Scanner, SeekableReader
from dlsec.scan.identify import Stream
from dlsec.scan.results import Severity


class TarScanner(Scanner):
    """Tar archives, read as a stream: every regular member identified by content and scanned."""

    formats = ("tar",)

    def scan(self, ctx: Context, f: Stream, member: str) -> None:
        with tarfile.open(fileobj=f, mode="r|") as tf:  # type: ignore[call-overload]
            for info in tf:
                ctx.members += 1
                if ctx.members > ctx.limits.max_members:
                    raise ScanLimitError(f"more than {ctx.limits.max_members} archive members")
                if not info.isfile():
                    continue  # links and devices are never followed or extracted
                name = f"{member}/{info.name}" if member else info.name
                if info.size > ctx.limits.max_member_bytes:
                    ctx.error(name, "member larger than the limit")
                    continue
                data = tf.extractfile(info)
                if data is not None:
                    ctx.dispatch(SeekableReader(data, ctx.limits.max_member_bytes), name)


_TEMPLATE_ESCAPES = re.compile(
    r"__(class|globals|subclasses|builtins|import|mro|bases|base|init|getattribute|code|dict)__|\bos\.|popen|"
    r"\bsubprocess\b|\beval\b|\bexec\b|\bimport\b",
)
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
MAX_GGUF_STRING = 16 << 20


class GgufScanner(Scanner):
    """GGUF: the key-value header is parsed (bounded); chat templates that reach Python internals are critical."""

    formats = ("gguf",)

    def scan(self, ctx: Context, f: Stream, member: str) -> None:
        f.read(4)
        (version,) = struct.unpack("<I", _exact(f, 4))
        if version not in (1, 2, 3):
            ctx.error(member, f"unknown GGUF version {version}")
            return
        _tensors, kv_count = struct.unpack("<QQ", _exact(f, 16))
        if kv_count > 1_000_000:
            raise ScanLimitError(f"{kv_count} header entries")
        for _ in range(kv_count):
            key = _string(f)
            (vtype,) = struct.unpack("<I", _exact(f, 4))
            value = _value(f, vtype)
            if isinstance(value, str) and "template" in key:
                hit = _TEMPLATE_ESCAPES.search(value)
                if hit:
                    ctx.finding(
                        member or key, None, Severity.CRITICAL, "gguf-template-escape",
                        f"{key} reaches Python internals ({hit.group(0)!r}): Jinja templates can run code",
                    )  # fmt: skip


def _exact(f: Stream, n: int) -> bytes:
    data = f.read(n)
    if data is None or len(data) != n:
        raise ValueError("truncated GGUF header")
    return bytes(data)


def _string(f: Stream) -> str:
    (n,) = struct.unpack("<Q", _exact(f, 8))
    if n > MAX_GGUF_STRING:
        raise ScanLimitError(f"GGUF string of {n} bytes")
    return _exact(f, n).decode("utf-8", errors="replace")


def _value(f: Stream, vtype: int) -> Any:
    if vtype == 8:
        return _string(f)
    if vtype in _FIXED:
        return _exact(f, _FIXED[vtype])
    if vtype == 9:
        (itype,) = struct.unpack("<I", _exact(f, 4))
        (n,) = struct.unpack("<Q", _exact(f, 8))
        if n > 50_000_000:
            raise ScanLimitError(f"GGUF array of {n} items")
        if itype in _FIXED:
            f.seek(n * _FIXED[itype], 1)
        elif itype == 8:
            for _ in range(n):
                _string(f)
        else:
            raise ValueError(f"GGUF array of type {itype}")
        return None
    raise ValueError(f"unknown GGUF value type {vtype}")
