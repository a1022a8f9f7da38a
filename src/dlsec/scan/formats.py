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
        with tarfile.open(fileobj=f, mode="r|", tarinfo=_StrictTarInfo) as tf:  # type: ignore[call-overload]
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


class _StrictTarInfo(tarfile.TarInfo):
    """tarfile ends an archive silently at a bad or cut header after the first; here that is an error."""

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> _StrictTarInfo:  # noqa: D102
        try:
            return super().fromtarfile(tf)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError) as exc:  # type: ignore[attr-defined]
            raise ValueError(f"bad tar header at byte {tf.offset}: {exc}") from None


_TEMPLATE_ESCAPES = re.compile(
    r"__(class|globals|subclasses|builtins|import|mro|bases|base|init|getattribute|code|dict)__|\bos\.|popen|"
    r"\bsubprocess\b|\beval\b|\bexec\b|\bimport\b",
)
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
MAX_GGUF_STRING = 16 << 20


class GgufScanner(Scanner):
    """GGUF: the key-value header and the tensor table are parsed (bounded); chat templates that reach Python
    internals are critical. Version 1 uses 32-bit lengths and counts, versions 2 and 3 64-bit ones."""

    formats = ("gguf",)

    def scan(self, ctx: Context, f: Stream, member: str) -> None:
        f.read(4)
        (version,) = struct.unpack("<I", _exact(f, 4))
        if version not in (1, 2, 3):
            ctx.error(member, f"unknown GGUF version {version}")
            return
        r = _Gguf(f, "<I" if version == 1 else "<Q")
        tensors, kv_count = r.count(), r.count()
        if kv_count > 1_000_000 or tensors > 10_000_000:
            raise ScanLimitError(f"{kv_count} header entries, {tensors} tensors")
        for _ in range(kv_count):
            key = r.string()
            (vtype,) = struct.unpack("<I", _exact(f, 4))
            value = r.value(vtype)
            if isinstance(value, str) and "template" in key:
                hit = _TEMPLATE_ESCAPES.search(value)
                if hit:
                    ctx.finding(
                        member or key, None, Severity.CRITICAL, "gguf-template-escape",
                        f"{key} reaches Python internals ({hit.group(0)!r}): Jinja templates can run code",
                    )  # fmt: skip
        for _ in range(tensors):  # name, dimensions, type, offset: a file cut inside the table is an error
            r.string()
            (dims,) = struct.unpack("<I", _exact(f, 4))
            if dims > 16:
                raise ValueError(f"GGUF tensor with {dims} dimensions")
            _exact(f, dims * r.width + 4 + 8)


def _exact(f: Stream, n: int) -> bytes:
    data = f.read(n)
    if data is None or len(data) != n:
        raise ValueError("truncated GGUF header")
    return bytes(data)


class _Gguf:
    """Reads GGUF values; ``fmt`` is the format of lengths and counts (``<I`` in version 1, else ``<Q``)."""

    def __init__(self, f: Stream, fmt: str) -> None:
        self.f, self.fmt, self.width = f, fmt, struct.calcsize(fmt)

    def count(self) -> int:
        (n,) = struct.unpack(self.fmt, _exact(self.f, self.width))
        return int(n)

    def string(self) -> str:
        n = self.count()
        if n > MAX_GGUF_STRING:
            raise ScanLimitError(f"GGUF string of {n} bytes")
        return _exact(self.f, n).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype == 8:
            return self.string()
        if vtype in _FIXED:
            return _exact(self.f, _FIXED[vtype])
        if vtype == 9:
            (itype,) = struct.unpack("<I", _exact(self.f, 4))
            n = self.count()
            if n > 50_000_000:
                raise ScanLimitError(f"GGUF array of {n} items")
            if itype in _FIXED:
                left = n * _FIXED[itype]
                while left:  # read, not seek: seeking past the end of a file would pass silently
                    left -= len(_exact(self.f, min(left, 1 << 20)))
            elif itype == 8:
                for _ in range(n):
                    self.string()
            else:
                raise ValueError(f"GGUF array of type {itype}")
            return None
        raise ValueError(f"unknown GGUF value type {vtype}")
