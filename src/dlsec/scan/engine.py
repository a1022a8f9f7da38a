"""The scanning engine: one scanner per format, registered by name; the base enforces fail-closed.

A scanner writes only :meth:`Scanner.scan`. :meth:`Scanner.__call__` turns any exception or limit hit into a
:class:`ScanError` for that file or member, so a file that cannot be parsed is never reported clean. Containers
(zip, gzip, bz2, xz, zlib) hand their members back to :meth:`Context.dispatch`, which identifies each by content.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, BinaryIO, ClassVar, cast

from dlsec.scan.identify import Stream, read_head, sniff
from dlsec.scan.results import Finding, ScanError, Severity, Skipped

__all__ = ["SCANNERS", "Context", "Limits", "Scanner", "ScanLimitError"]

SCANNERS: dict[str, Scanner] = {}
"""Each scanner by the format name it handles (see :func:`dlsec.scan.identify.sniff`)."""


class ScanLimitError(Exception):
    """A limit of :class:`Limits` was hit: reported as an error, never clean."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what one scan reads."""

    max_depth: int = 6
    max_members: int = 100_000
    max_member_bytes: int = 64 << 30
    max_ratio: float = 1000.0
    max_opcodes: int = 50_000_000  # for the whole file, all its pickles together
    ratio_floor: int = 1 << 20  # decompressed bytes below which a stream's ratio is not judged


@dataclass
class Context:
    """One file's scan: where findings go, how deep in containers we are, and the limits."""

    path: str
    strict: bool = False
    limits: Limits = field(default_factory=Limits)
    findings: list[Finding] = field(default_factory=list)
    errors: list[ScanError] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    depth: int = 0
    members: int = 0
    archive: int = 0  # how many archive members (zip, tar) we are inside
    opcodes: int = 0  # pickle opcodes read so far in this file

    def finding(self, member: str, offset: int | None, severity: Severity, rule: str, message: str) -> None:
        """Record a finding."""
        self.findings.append(Finding(self.path, member, offset, severity, rule, message))

    def error(self, member: str, message: str) -> None:
        """Record an error: this part of the file was not fully checked."""
        self.errors.append(ScanError(self.path, member, message))

    def dispatch(self, f: Stream, member: str, *, top: bool = False, kind: str | None = None) -> bool:
        """Identify ``f`` by content (unless ``kind`` is given) and scan it; False when no scanner knows it."""
        if self.depth > self.limits.max_depth:
            self.error(member, f"nested deeper than {self.limits.max_depth} containers")
            return True
        kind = kind or sniff(read_head(f))
        scanner = SCANNERS.get(kind)
        if scanner is None:
            if top:
                self.skipped.append(Skipped(self.path, f"format not supported by the scanner: {kind}"))
            return False
        self.depth += 1
        try:
            scanner(self, f, member)
        finally:
            self.depth -= 1
        return True


class Scanner(ABC):
    """Base of every format scanner; subclasses set ``formats`` and write :meth:`scan`."""

    formats: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            raise TypeError(f"{cls.__name__} must not override Scanner.__call__; write scan() instead")
        for fmt in cls.formats:
            SCANNERS[fmt] = cls()

    @abstractmethod
    def scan(self, ctx: Context, f: Stream, member: str) -> None:
        """Report findings and errors for the stream ``f`` (at its start) into ``ctx``."""

    def __call__(self, ctx: Context, f: Stream, member: str) -> None:
        """Fail closed: any exception becomes an error for this member, never a clean result."""
        try:
            self.scan(ctx, f, member)
        except ScanLimitError as exc:
            ctx.error(member, f"limit hit: {exc}")
        except Exception as exc:  # a parser bug or a hostile file must not end the whole scan
            ctx.error(member, f"{type(exc).__name__}: {exc}")


def _severity(verdict: str, strict: bool) -> Severity | None:
    if verdict == "dangerous":
        return Severity.CRITICAL
    if verdict == "unknown":
        return Severity.CRITICAL if strict else Severity.MEDIUM
    return None


class PickleScanner(Scanner):
    """Pickle streams (protocols 0-5), several in a row (torch's legacy format): imports judged, never run."""

    formats = ("pickle", "pickle0")

    def scan(self, ctx: Context, f: Stream, member: str) -> None:
        from dlsec.scan.pickle import analyze_pickles

        candidate = sniff(read_head(f)) == "pickle0"
        analyses = analyze_pickles(cast(BinaryIO, f), max_opcodes=max(0, ctx.limits.max_opcodes - ctx.opcodes))
        ctx.opcodes += analyses.opcodes
        for i, a in enumerate(analyses):
            for call in a.calls:
                sev = _severity(call.verdict, ctx.strict)
                if sev is not None:
                    ctx.finding(
                        member, call.offset, sev, f"pickle-{call.verdict}-import",
                        f"{call.opcode} imports {call.module}.{call.name}: {call.reason}",
                    )  # fmt: skip
            if a.error:
                limit = a.error.startswith("opcode limit")
                if not a.calls and not limit and ((candidate and ctx.archive) or (a.opcodes < 16 and (i > 0 or candidate))):
                    # Bytes that merely look like a pickle's first opcodes: a text file, raw tensor data in an
                    # archive, or the storage bytes after the pickles of torch's legacy format. No import is
                    # reached before the parse fails, so no loader could call anything from them either. Inside
                    # an archive, raw tensor bytes can run on for many opcode-like bytes (e.g. int8 data of 'N').
                    # A whole file (or a compressed whole file) that is no pickle is skipped, never clean.
                    if i == 0 and not ctx.archive:
                        ctx.skipped.append(Skipped(ctx.path, "not a recognised model format"))
                    return
                ctx.error(member, f"pickle parse stopped at byte {a.end_offset}: {a.error}")


class CompressedScanner(Scanner):
    """gzip, bz2, xz, zlib and lz4 streams (joblib): the content is identified and scanned as it decompresses.

    lz4 needs the ``lz4`` package (extra ``lz4``); without it an lz4 stream is reported as skipped, never clean.
    """

    formats = ("gzip", "bz2", "xz", "zlib", "lz4")

    def scan(self, ctx: Context, f: Stream, member: str) -> None:
        kind = sniff(read_head(f))
        inner: Stream
        if kind == "lz4":
            try:
                import lz4.frame  # type: ignore[import-not-found,unused-ignore]
            except ImportError:
                ctx.skipped.append(Skipped(ctx.path, "lz4 stream: install the lz4 extra (pip install 'dlsec[lz4]')"))
                return
            src = _Counting(f)
            inner = lz4.frame.LZ4FrameFile(src)
        else:
            src = _Counting(f)
            if kind == "gzip":
                inner = gzip.GzipFile(fileobj=src)  # type: ignore[arg-type,assignment]  # noqa: SIM115 (closed below)
            elif kind == "bz2":
                inner = bz2.BZ2File(src)  # type: ignore[arg-type,assignment]  # noqa: SIM115
            elif kind == "xz":
                inner = lzma.LZMAFile(src)  # type: ignore[arg-type,assignment]  # noqa: SIM115
            else:
                inner = _ZlibReader(src)
        name = f"{member}!{kind}" if member else kind
        with inner:
            out = _Decompressed(inner, src, ctx.limits)
            if not ctx.dispatch(SeekableReader(out, ctx.limits.max_member_bytes), name):
                ctx.skipped.append(Skipped(ctx.path, f"{kind} stream of an unsupported format"))
        if out.failure is not None:
            # What was read before the failure has been scanned (a loader would have run it too).
            failure = out.failure
            ctx.error(name, f"limit hit: {failure}" if isinstance(failure, ScanLimitError) else f"{kind} stream: {failure}")


class ZipScanner(Scanner):
    """Zip archives (PyTorch's format, npz, nested zips): every member identified by content, with limits.

    Members are read the way PyTorch's reader (miniz) reads them, not the way :mod:`zipfile` would: located by the
    central directory, with no check that the local header's name agrees and no CRC check, stored or deflated. Such
    disagreements, and bytes the central directory does not account for (a second archive before this one, data
    hidden between members), are findings, and the unaccounted bytes are scanned too.
    """

    formats = ("zip",)

    def scan(self, ctx: Context, f: Stream, member: str) -> None:
        if not f.seekable():  # a zip inside a compressed stream or another archive: spooled, bounded in size
            spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115 (closed below)
            with spool:
                shutil.copyfileobj(f, spool, 1 << 20)
                spool.seek(0)
                self.scan(ctx, cast(Stream, spool), member)
            return
        with zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            for dup in sorted({n for n in names if names.count(n) > 1}) if len(set(names)) < len(names) else ():
                ctx.finding(
                    f"{member}/{dup}" if member else dup, None, Severity.MEDIUM, "zip-duplicate-name",
                    "several members share this name; readers disagree on which one they load (all are scanned)",
                )  # fmt: skip
            # Keras 3 reads config.json at the archive's root before anything else, whatever the weights' format.
            keras = "config.json" in names and (
                "metadata.json" in names
                or any(n.startswith("model.weights.") for n in names)
                or (member or ctx.path).endswith(".keras")
            )
            if keras:
                from dlsec.scan.keras import scan_keras_zip

                scan_keras_zip(ctx, zf, member)
            self._unaccounted(ctx, f, infos, zf.start_dir, member)
            for info in infos:
                ctx.members += 1
                if ctx.members > ctx.limits.max_members:
                    raise ScanLimitError(f"more than {ctx.limits.max_members} archive members")
                name = f"{member}/{info.filename}" if member else info.filename
                if info.is_dir() or (keras and info.filename.endswith(".weights.h5")):
                    continue  # Keras 3 reads only datasets from its weights file, never code or a config
                if info.compress_size and info.file_size / info.compress_size > ctx.limits.max_ratio:
                    ctx.error(name, "compression ratio over the limit (zip bomb?)")
                    continue
                if info.file_size > ctx.limits.max_member_bytes:
                    ctx.error(name, "member larger than the limit")
                    continue
                if info.flag_bits & 0x1:
                    ctx.error(name, "encrypted member: its content cannot be checked")
                    continue
                ctx.archive += 1
                try:  # one unreadable member must not hide the others (PyTorch reads each by name)
                    self._member(ctx, zf, f, info, name)
                except ScanLimitError as exc:
                    ctx.error(name, f"limit hit: {exc}")
                except Exception as exc:
                    ctx.error(name, f"{type(exc).__name__}: {exc}")
                finally:
                    ctx.archive -= 1

    def _member(self, ctx: Context, zf: zipfile.ZipFile, f: Stream, info: zipfile.ZipInfo, name: str) -> None:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise ValueError(f"{info.filename}: no local header where the central directory points")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        local_name = f.read(name_len)
        if local_name not in (info.orig_filename.encode("utf-8"), info.orig_filename.encode("cp437", "replace")):
            ctx.finding(
                name, info.header_offset, Severity.MEDIUM, "zip-header-mismatch",
                f"local header names {local_name!r}; readers disagree on which member this is",
            )  # fmt: skip
        start = info.header_offset + 30 + name_len + extra_len
        if info.compress_type == zipfile.ZIP_STORED:
            f.seek(start)
            if sniff(f.read(min(512, info.compress_size))) not in SCANNERS:
                return  # tensor bytes and other data no scanner knows: not read further (the common case)
            raw: Stream = _Slice(f, start, info.compress_size)
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            raw = cast(Stream, _ZlibReader(_Slice(f, start, info.compress_size), wbits=-15))
        else:  # bzip2 / lzma members: PyTorch cannot read them, zipfile (numpy, Keras) can
            raw = cast(Stream, zf.open(info))
        crc = _CrcReader(raw)
        overflow = f"member inflates past its declared size of {info.file_size} bytes (a lying ratio: zip bomb?)"
        ctx.dispatch(SeekableReader(crc, min(info.file_size, ctx.limits.max_member_bytes), overflow), name)
        if crc.done and crc.crc != info.CRC:
            ctx.finding(
                name, info.header_offset, Severity.LOW, "zip-bad-crc",
                "CRC-32 does not match: the member was changed after the archive was written (PyTorch loads it anyway)",
            )  # fmt: skip

    def _unaccounted(self, ctx: Context, f: Stream, infos: list[zipfile.ZipInfo], end: int, member: str) -> None:
        """Bytes before the first member or between members: what another reader might take as the archive."""
        spans = sorted((i.header_offset, i) for i in infos)
        pos, descriptor = 0, (0, 0)  # sizes a data descriptor after the previous member may take
        for offset, info in [*spans, (end, None)]:
            if offset > pos and offset - pos not in descriptor:
                where = f"{member}@{pos}-{offset}" if member else f"@{pos}-{offset}"
                ctx.finding(
                    where, pos, Severity.MEDIUM, "zip-hidden-data",
                    f"{offset - pos} bytes the central directory does not account for",
                )  # fmt: skip
                ctx.archive += 1
                try:
                    ctx.dispatch(_Slice(f, pos, offset - pos), where)
                finally:
                    ctx.archive -= 1
            if info is None:
                break
            f.seek(offset + 26)
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            pos = max(pos, offset + 30 + name_len + extra_len + info.compress_size)
            descriptor = (0, 0)
            if info.flag_bits & 0x8:  # a data descriptor follows: optional signature, CRC and two sizes (4 or 8)
                f.seek(pos)
                sig = 4 if f.read(4) == b"PK\x07\x08" else 0
                descriptor = (sig + 12, sig + 20)


class NpyScanner(Scanner):
    """NumPy ``.npy``: the header is read as numpy reads it; an object dtype means the data is a pickle, scanned."""

    formats = ("npy",)
    MAX_HEADER = 1 << 20

    def scan(self, ctx: Context, f: Stream, member: str) -> None:
        import ast

        import numpy as np

        magic = f.read(8)
        major = magic[6]
        size = 2 if major == 1 else 4
        hlen_bytes = f.read(size)
        if len(hlen_bytes) != size:
            raise ValueError("npy header length cut short")
        (hlen,) = struct.unpack("<H" if major == 1 else "<I", hlen_bytes)
        if hlen > self.MAX_HEADER:
            raise ScanLimitError(f"npy header over {self.MAX_HEADER} bytes")
        raw = f.read(hlen)
        if len(raw) != hlen:
            raise ValueError(f"npy header cut short ({len(raw)} of {hlen} bytes)")
        # numpy evaluates the header as a Python literal (ast.literal_eval): the last of duplicate keys wins and
        # escapes count, so it is read here the same way, never by pattern.
        header = ast.literal_eval(raw.decode("utf-8" if major >= 3 else "latin1"))
        if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
            raise ValueError("npy header is not a dict of descr, fortran_order and shape")
        dtype = np.lib.format.descr_to_dtype(header["descr"])
        if dtype.hasobject:
            ctx.finding(member, 0, Severity.MEDIUM, "npy-object-array", "object array: its data is a pickle")
            ctx.dispatch(f, f"{member}:data" if member else "data")


class SafetensorsScanner(Scanner):
    """safetensors: the header is validated as the safetensors library validates it.

    A JSON object of tensors, each with a known dtype, a shape of non-negative integers and integer offsets; the
    tensors tile the data section exactly, with no gap and no overlap, and the header length fits the file.
    """

    formats = ("safetensors",)
    DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
              "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "C64": 8}  # fmt: skip

    def scan(self, ctx: Context, f: Stream, member: str) -> None:
        (n,) = struct.unpack("<Q", f.read(8))
        raw = f.read(n)
        if len(raw) != n:
            raise ValueError(f"header length {n} runs past the end of the file")
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        f.seek(0, io.SEEK_END)
        data_len = f.tell() - 8 - n
        spans = []
        for key, meta in header.items():
            if key == "__metadata__":
                if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
                    ctx.error(member, "metadata must map strings to strings")
                continue
            if not isinstance(meta, dict) or not {"dtype", "shape", "data_offsets"} <= set(meta):
                ctx.error(member, f"tensor {key!r}: entry must hold dtype, shape and data_offsets")
                continue
            size, shape, offsets = self.DTYPES.get(meta["dtype"]), meta["shape"], meta["data_offsets"]
            if size is None:
                ctx.error(member, f"tensor {key!r}: unknown dtype {meta['dtype']!r}")
                continue
            if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
                ctx.error(member, f"tensor {key!r}: shape must be a list of non-negative integers")
                continue
            if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
                ctx.error(member, f"tensor {key!r}: data_offsets must be two integers")
                continue
            count = 1
            for d in shape:
                count *= d
            start, end = offsets
            if not 0 <= start <= end or end - start != count * size:
                ctx.error(member, f"tensor {key!r}: offsets {start}..{end} do not fit its shape")
                continue
            spans.append((start, end, key))
        pos = 0
        for start, end, key in sorted(spans):
            if start != pos:
                ctx.error(member, f"tensor {key!r}: data at {start}, expected {pos} (gap or overlap)")
                return
            pos = end
        if pos != data_len:
            ctx.error(member, f"tensors cover {pos} bytes of a {data_len}-byte data section")


class _RawReader(io.RawIOBase):
    """Base of the readers below: readable, with ``readinto`` through the subclass's ``read``."""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class SeekableReader(_RawReader):
    """A forward-only stream made seekable forward (by reading) and bounded in size; back seeks are buffered."""

    def __init__(self, raw: Any, limit: int, overflow: str | None = None) -> None:
        self.raw, self.limit, self.pos = raw, limit, 0
        self.overflow = overflow or f"more than {limit} bytes once decompressed"
        self.head = b""  # the first bytes, so that read_head's seek back works

    def seekable(self) -> bool:
        return False  # forward seeks work (by reading); readers that probe the end must not rely on it

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if self.pos < len(self.head):
            want = len(self.head) - self.pos if n < 0 else min(n, len(self.head) - self.pos)
            out = self.head[self.pos : self.pos + want]
            self.pos += want
            if n < 0 or len(out) < n:
                out += self.read(-1 if n < 0 else n - len(out))
            return out
        if n < 0:
            n = self.limit - self.pos + 1
        data = self.raw.read(n)
        if self.pos < 4096:
            self.head += data[: 4096 - self.pos]
        self.pos += len(data)
        if self.pos > self.limit:
            raise ScanLimitError(self.overflow)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self.pos + offset
        if whence == io.SEEK_END:
            while self.read(1 << 20):
                pass
            target = self.pos + offset
        if target < self.pos:
            if target > len(self.head):
                raise OSError("cannot seek back this far in a compressed stream")
            self.pos = target
            return self.pos
        while self.pos < target:
            if not self.read(min(1 << 20, target - self.pos)):
                break
        return self.pos


class _ZlibReader(_RawReader):
    """A zlib stream (joblib's compression) or, with ``wbits=-15``, a raw deflate stream as a readable file.

    Data decompressed before an error (corrupt or truncated input) is returned first; the error comes on the next
    read, so a scan sees everything a loader would have acted on before failing.
    """

    def __init__(self, f: Stream, wbits: int = zlib.MAX_WBITS) -> None:
        self.f, self.d, self.buf = f, zlib.decompressobj(wbits), b""
        self.pending: Exception | None = None

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self.buf) < n) and not self.d.eof and self.pending is None:
            data = self.d.unconsumed_tail or self.f.read(1 << 16)
            if not data:
                self.pending = zlib.error("the stream ends before its end marker (truncated)")
                break
            try:
                self.buf += self.d.decompress(data, 1 << 22)
            except zlib.error as exc:
                self.pending = exc
        if not self.buf and self.pending is not None:
            raise self.pending
        out, self.buf = (self.buf, b"") if n < 0 else (self.buf[:n], self.buf[n:])
        return out


class _Counting(_RawReader):
    """Passes a stream through, counting the bytes read (a decompressor's input)."""

    def __init__(self, f: Stream) -> None:
        self.f, self.n = f, 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.n += len(data)
        return data


class _Decompressed(_RawReader):
    """A decompressor's output with a ratio limit; an error ends the stream and is kept in ``failure``.

    Reads use ``read1`` where the decompressor has it, so the data before a corrupt tail still comes out.
    """

    def __init__(self, inner: Any, src: _Counting, limits: Limits) -> None:
        self.inner, self.src, self.limits, self.n = inner, src, limits, 0
        self.failure: Exception | None = None

    def read(self, n: int = -1) -> bytes:
        if self.failure is not None:
            return b""
        size = n if n >= 0 else 1 << 20
        try:
            data = self.inner.read1(size) if hasattr(self.inner, "read1") else self.inner.read(size)
        except (OSError, EOFError, ValueError, RuntimeError, zlib.error, lzma.LZMAError) as exc:
            self.failure = exc
            return b""
        self.n += len(data)
        if self.n > self.limits.ratio_floor and self.n > self.limits.max_ratio * max(1, self.src.n):
            self.failure = ScanLimitError(f"compression ratio over {self.limits.max_ratio:g} (a bomb?)")
            return b""
        return bytes(data)


class _Slice(_RawReader):
    """``size`` bytes of a seekable stream from ``start``, as a seekable stream of its own."""

    def __init__(self, f: Stream, start: int, size: int) -> None:
        self.f, self.start, self.size, self.pos = f, start, size, 0

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
        if n <= 0:
            return b""
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos


class _CrcReader(_RawReader):
    """Passes a stream through, computing the CRC-32 of what was read; ``done`` once its end was reached."""

    def __init__(self, f: Stream) -> None:
        self.f, self.crc, self.done = f, 0, False

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.crc = zlib.crc32(data, self.crc)
        self.done = self.done or (not data and n != 0)
        return data


def _ends_like_zip(f: Stream) -> bool:
    """Whether an end-of-central-directory record sits in the last 64 KiB, as zipfile looks for one."""
    size = f.seek(0, io.SEEK_END)
    f.seek(max(0, size - (1 << 16) - 22))
    tail = f.read((1 << 16) + 22)
    f.seek(0)
    return b"PK\x05\x06" in tail


def scan_file(path: str, *, strict: bool = False, limits: Limits | None = None) -> Context:
    """Scan one file; the context holds its findings, errors and skips."""
    ctx = Context(path=path, strict=strict, limits=limits or Limits())
    try:
        with open(path, "rb") as f:
            _scan_opened(ctx, f, path)
    except OSError as exc:
        ctx.error("", f"cannot read: {exc}")
    except Exception as exc:  # fail closed, whatever went wrong (MemoryError included)
        ctx.error("", f"{type(exc).__name__}: {exc}")
    return ctx


def scan_stream(f: Stream, name: str, *, strict: bool = False, limits: Limits | None = None) -> Context:
    """Scan an open, seekable binary stream (bytes held in memory, for one): as :func:`scan_file` would the file.

    ``name`` labels the findings; formats identified by file name (ONNX, SavedModel) are not recognised here.
    """
    ctx = Context(path=name, strict=strict, limits=limits or Limits())
    try:
        _scan_opened(ctx, f, None)
    except Exception as exc:  # fail closed, whatever went wrong (MemoryError included)
        ctx.error("", f"{type(exc).__name__}: {exc}")
    return ctx


def _scan_opened(ctx: Context, f: Stream, path: str | None) -> None:
    kind = sniff(read_head(f))
    if path is not None and (os.path.basename(path) == "saved_model.pb" or path.endswith(".onnx")):
        # Protobuf has no magic bytes: these go by name, always, whatever else the bytes also look like.
        from dlsec.scan.protobuf import scan_protobuf

        scan_protobuf(ctx, path, "onnx" if path.endswith(".onnx") else "savedmodel")
        if kind in ("unknown", "pickle0"):
            return
    if kind in ("unknown", "pickle0") and _ends_like_zip(f):
        # Data before a zip archive: zipfile-based loaders (Keras, numpy's zipfile users) still open it.
        # The bytes before it are scanned as hidden data; if it is no zip after all, as what it looked like.
        errors = len(ctx.errors)
        ctx.dispatch(f, "", kind="zip")
        if len(ctx.errors) > errors and kind == "pickle0":
            f.seek(0)
            ctx.dispatch(f, "", top=True)
    else:
        ctx.dispatch(f, "", top=True)
