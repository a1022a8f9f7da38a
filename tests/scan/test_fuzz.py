"""Fuzzing the whole scanner: it never crashes or hangs, and never reports clean a file it could not fully parse.

Two kinds of input: any bytes behind any format's magic, and, for every format, a VALID file built here (harmless
content) that hypothesis then mutates (flipped, set, inserted or deleted bytes, truncation) or generates with
hypothesis-chosen fields. Properties checked:

* ``scan_path`` returns a report (no exception escapes) and the file is accounted for (scanned, error or skipped);
* where a mutation makes the file unparsable (a truncated header, a broken container) the report is not clean;
* a malicious pickle (or Keras Lambda, GGUF template, ONNX/TF op) is still found whatever happens to the bytes
  OUTSIDE it (other members, padding, other fields).

The "malicious" pickles would call ``os.system("true")``; nothing built here is ever loaded.

The tests at the end are regression tests for the bugs this fuzzing found (each built from its minimal
reproducer): regex-parsed npy headers, Keras archives not recognised, polyglot ONNX files, FIFOs and devices in
folders, missing ratio and opcode budgets, tar, zlib, safetensors and GGUF files cut or bent and still clean, one bad
zip member or a corrupt compressed tail hiding a payload.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlsec.scan import Limits, ScanReport, Severity, scan_path
from dlsec.scan.engine import scan_file
from tests.scan.test_protobuf import _varint, msg, num

Draw = Callable[..., Any]

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)



# --------------------------------------------------------------------------------------------------- helpers


class _Payload:
    """Unpickling this would call os.system("true"): harmless, and never unpickled here."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("true",))


EVIL = pickle.dumps({"weights": [1.0, 2.0], "x": _Payload()}, protocol=2)
BENIGN = pickle.dumps({"weights": [1.0, 2.0, 3.0], "name": "layer", "shape": (3,)}, protocol=2)


def scan_bytes(data: bytes, name: str = "f.bin") -> ScanReport:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        return scan_path(str(path))


def accounted(report: ScanReport) -> bool:
    """Every file ends up somewhere: scanned (clean or not), with an error, or skipped — never lost."""
    return bool(report.scanned or report.errors or report.skipped)


def clean(report: ScanReport) -> bool:
    """Exit code 0 at the lowest threshold: scanned, with no finding, error or skip."""
    return report.exit_code(Severity.LOW) == 0


def critical(report: ScanReport) -> list[Any]:
    return [f for f in report.findings if f.severity is Severity.CRITICAL]


def assert_not_clean(report: ScanReport) -> None:
    assert not clean(report), report


BYTE = st.one_of(
    st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01, 0x2E, 0x7B, 0x7D, 0x22, 0x20]), st.integers(0, 255)
)


def mutate(draw: Draw, data: bytes, max_edits: int = 4) -> bytes:
    """``data`` with 1..max_edits edits at hypothesis-chosen positions: flip, set, insert, delete, truncate."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, max_edits))):
        op = draw(st.sampled_from(("flip", "set", "insert", "delete", "truncate")))
        pos = draw(st.integers(0, len(buf)))
        if op == "flip" and pos < len(buf):
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and pos < len(buf):
            buf[pos] = draw(BYTE)
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 64))]
        elif op == "truncate":
            del buf[pos:]
    return bytes(buf)


def overwrite_in(draw: Draw, data: bytes, regions: list[tuple[int, int]], max_edits: int = 8) -> bytes:
    """``data`` with bytes overwritten at positions inside ``regions`` only (its length and layout unchanged)."""
    regions = [(a, b) for a, b in regions if b > a]
    if not regions:
        return data
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, max_edits))):
        a, b = draw(st.sampled_from(regions))
        buf[draw(st.integers(a, b - 1))] = draw(BYTE)
    return bytes(buf)


# --------------------------------------------------------------------------------------------------- any bytes

MAGICS = [
    b"", b"PK\x03\x04", b"\x1f\x8b", b"BZh9", b"\xfd7zXZ\x00", b"\x93NUMPY\x01\x00", b"GGUF\x03\x00\x00\x00",
    b"\x80\x04", b"\x80\x02", b"(", b"\x08\x01", b"\x10\x00\x00\x00\x00\x00\x00\x00{", b"\x04\x22\x4d\x18",
]  # fmt: skip
NAMES = ["f.bin", "m.onnx", "saved_model.pb", "x.keras", "noext"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(magic=st.sampled_from(MAGICS), body=st.binary(max_size=600), name=st.sampled_from(NAMES))
def test_any_bytes_give_a_report(magic: bytes, body: bytes, name: str) -> None:
    report = scan_bytes(magic + body, name)
    assert accounted(report)


# --------------------------------------------------------------------------------------------------- zip


def torch_zip(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def zip_members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def make_zip(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def zip_spans(data: bytes) -> dict[str, tuple[int, int, int]]:
    """Each member's (local header start, data start, data end)."""
    out = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            name_len, extra_len = struct.unpack(
                "<HH", data[info.header_offset + 26 : info.header_offset + 30]
            )
            start = info.header_offset + 30 + name_len + extra_len
            out[info.filename] = (info.header_offset, start, start + info.compress_size)
    return out


TORCH_ZIP = torch_zip({"w": torch.zeros(4), "b": torch.ones(2)})
_TORCH_MEMBERS = zip_members(TORCH_ZIP)
# PyTorch-like archives with a malicious data.pkl placed LAST, after members that the mutations may break.
EVIL_TORCH_MEMBERS = [(n, b) for n, b in _TORCH_MEMBERS if not n.endswith("data.pkl")] + [
    ("archive/data.pkl", EVIL)
]
ZIPS = {
    "torch": TORCH_ZIP,
    "deflated": make_zip(_TORCH_MEMBERS, zipfile.ZIP_DEFLATED),
    "nested": make_zip([("inner.pt", TORCH_ZIP), ("notes.txt", b"hello")]),
    "nested-deflated": make_zip([("inner.pt", TORCH_ZIP)], zipfile.ZIP_DEFLATED),
}


def test_the_zip_bases_are_clean_and_the_evil_one_is_found() -> None:
    for name, data in ZIPS.items():
        report = scan_bytes(data, "model.pt")
        assert clean(report), (name, report)
    assert critical(scan_bytes(make_zip(EVIL_TORCH_MEMBERS), "model.pt"))


@FUZZ
@given(base=st.sampled_from(sorted(ZIPS)), data=st.data())
def test_mutated_zip_gives_a_report(base: str, data: st.DataObject) -> None:
    report = scan_bytes(mutate(data.draw, ZIPS[base]), "model.pt")
    assert accounted(report)


@FUZZ
@given(base=st.sampled_from(sorted(ZIPS)), cut=st.integers(0, 10**9))
def test_truncated_zip_is_not_clean(base: str, cut: int) -> None:
    raw = ZIPS[base]
    assert_not_clean(scan_bytes(raw[: cut % len(raw)], "model.pt"))


@FUZZ
@given(data=st.data())
def test_mutated_zip_inside_a_zip_gives_a_report_and_truncated_is_not_clean(data: st.DataObject) -> None:
    inner = mutate(data.draw, TORCH_ZIP)
    compression = data.draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    assert accounted(scan_bytes(make_zip([("inner.pt", inner)], compression), "outer.zip"))
    cut = TORCH_ZIP[: data.draw(st.integers(4, len(TORCH_ZIP) - 1))]  # shorter: not a zip, any member may be
    assert_not_clean(scan_bytes(make_zip([("inner.pt", cut)], compression), "outer.zip"))


@FUZZ
@given(data=st.data(), compression=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
def test_zip_pickle_is_found_whatever_happens_to_the_other_members(
    data: st.DataObject, compression: int
) -> None:
    raw = make_zip(EVIL_TORCH_MEMBERS, compression)
    spans = zip_spans(raw)
    regions: list[tuple[int, int]] = []
    for name, (h, _, e) in spans.items():
        if name == "archive/data.pkl":
            continue
        regions.append((h, e))
    report = scan_bytes(overwrite_in(data.draw, raw, regions), "model.pt")
    assert critical(report), report


# --------------------------------------------------------------------------------------------------- tar


def make_tar(members: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_spans(raw: bytes) -> list[tuple[str, int, int, int]]:
    """Each member's (name, header start, data start, data size)."""
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return [(i.name, i.offset, i.offset_data, i.size) for i in tf.getmembers()]


def _pad(n: int) -> int:
    return -(-n // 512) * 512


TAR_FORMATS = st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
TAR_MEMBERS = st.lists(
    st.tuples(
        st.sampled_from(
            ["sys_info", "pickle", "tensors", "storages", "d" * 60 + "/" + "e" * 60, "dir/x.bin"]
        ),
        st.one_of(st.just(BENIGN), st.binary(max_size=700), st.just(TORCH_ZIP)),
    ),
    min_size=1,
    max_size=4,
)


@FUZZ
@given(members=TAR_MEMBERS, fmt=TAR_FORMATS, gz=st.booleans(), data=st.data())
def test_mutated_tar_gives_a_report(
    members: list[tuple[str, bytes]], fmt: int, gz: bool, data: st.DataObject
) -> None:
    raw = mutate(data.draw, make_tar(members, fmt))
    report = scan_bytes(gzip.compress(raw, mtime=0) if gz else raw, "model.tar.gz" if gz else "model.tar")
    assert accounted(report)


@FUZZ
@given(members=TAR_MEMBERS, fmt=TAR_FORMATS, gz=st.booleans(), data=st.data())
def test_truncated_tar_is_not_clean(
    members: list[tuple[str, bytes]], fmt: int, gz: bool, data: st.DataObject
) -> None:
    raw = make_tar(members, fmt)
    spans = tar_spans(raw)
    # Cut strictly inside a member's data, or strictly inside a header block: never a whole tar.
    where = data.draw(st.sampled_from(["data", "header"]))
    name, head, start, size = data.draw(st.sampled_from(spans))
    if where == "data" and size > 1:
        cut = data.draw(st.integers(start + 1, start + size - 1))
    else:
        cut = data.draw(st.integers(head + 1, head + 511))
    body = raw[:cut]
    report = scan_bytes(gzip.compress(body, mtime=0) if gz else body, "model.tar.gz" if gz else "model.tar")
    assert_not_clean(report)


@FUZZ
@given(members=TAR_MEMBERS, fmt=TAR_FORMATS, gz=st.booleans(), where=st.integers(0, 4), data=st.data())
def test_tar_pickle_is_found_whatever_happens_to_the_other_members(
    members: list[tuple[str, bytes]], fmt: int, gz: bool, where: int, data: st.DataObject
) -> None:
    members = list(members)
    members.insert(where % (len(members) + 1), ("evil.pkl", EVIL))
    raw = make_tar(members, fmt)
    spans = tar_spans(raw)
    regions = [(start, start + _pad(size)) for name, _, start, size in spans if name != "evil.pkl"]
    name, _, start, size = spans[-1]
    regions.append((start + _pad(size), len(raw)))  # the end-of-archive blocks and the record padding
    body = overwrite_in(data.draw, raw, regions)
    report = scan_bytes(gzip.compress(body, mtime=0) if gz else body, "model.tar.gz" if gz else "model.tar")
    assert critical(report), report


@FUZZ
@given(data=st.data())
def test_zip_inside_a_tar(data: st.DataObject) -> None:
    """A PyTorch zip in a tar: mutated it gives a report; with a malicious data.pkl, mutating the tar's other
    members never hides it."""
    report = scan_bytes(make_tar([("model.pt", mutate(data.draw, TORCH_ZIP)), ("x", BENIGN)]), "m.tar")
    assert accounted(report)
    raw = make_tar([("readme", b"hello" * 50), ("model.pt", make_zip(EVIL_TORCH_MEMBERS)), ("end", BENIGN)])
    regions = [(start, start + _pad(size)) for name, _, start, size in tar_spans(raw) if name != "model.pt"]
    assert critical(scan_bytes(overwrite_in(data.draw, raw, regions), "m.tar"))


# --------------------------------------------------------------------------------------------------- compressed

COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda b: gzip.compress(b, mtime=0),
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zlib": zlib.compress,
}
BIG_BENIGN = pickle.dumps({"w": list(range(300)), "names": [f"layer{i}" for i in range(50)]}, protocol=2)


@FUZZ
@given(
    kind=st.sampled_from(sorted(COMPRESS)),
    payload=st.sampled_from([BENIGN, BIG_BENIGN, EVIL]),
    data=st.data(),
)
def test_mutated_compressed_pickle_gives_a_report(kind: str, payload: bytes, data: st.DataObject) -> None:
    report = scan_bytes(mutate(data.draw, COMPRESS[kind](payload)), "model.joblib")
    assert accounted(report)


@FUZZ
@given(
    kind=st.sampled_from(sorted(COMPRESS)),
    payload=st.sampled_from([BENIGN, BIG_BENIGN]),
    cut=st.integers(0, 10**9),
)
def test_truncated_compressed_pickle_is_not_clean(kind: str, payload: bytes, cut: int) -> None:
    raw = COMPRESS[kind](payload)
    report = scan_bytes(raw[: cut % len(raw)], "model.joblib")
    assert_not_clean(report)


@st.composite
def gzip_header(draw: Draw) -> bytes:
    """A gzip member header with hypothesis-chosen optional fields (FEXTRA, FNAME, FCOMMENT, FHCRC), all valid."""
    extra = draw(st.one_of(st.none(), st.binary(max_size=40)))
    fname = draw(st.one_of(st.none(), st.binary(max_size=30).map(lambda b: b.replace(b"\0", b"_"))))
    comment = draw(st.one_of(st.none(), st.binary(max_size=30).map(lambda b: b.replace(b"\0", b"_"))))
    hcrc = draw(st.booleans())
    flags = (
        (4 if extra is not None else 0) | (8 if fname is not None else 0) | (16 if comment is not None else 0)
    )
    flags |= 2 if hcrc else 0
    out = b"\x1f\x8b\x08" + bytes([flags]) + draw(st.binary(min_size=4, max_size=4)) + bytes([0, draw(BYTE)])
    if extra is not None:
        out += struct.pack("<H", len(extra)) + extra
    if fname is not None:
        out += fname + b"\0"
    if comment is not None:
        out += comment + b"\0"
    if hcrc:
        out += struct.pack("<H", zlib.crc32(out) & 0xFFFF)
    return out


@FUZZ
@given(header=gzip_header(), trailing_zeros=st.integers(0, 40))
def test_gzip_pickle_is_found_whatever_its_header_fields(header: bytes, trailing_zeros: int) -> None:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = header + c.compress(EVIL) + c.flush() + struct.pack("<II", zlib.crc32(EVIL), len(EVIL))
    assert gzip.decompress(raw) == EVIL
    assert critical(scan_bytes(raw + b"\0" * trailing_zeros, "model.joblib"))


# --------------------------------------------------------------------------------------------------- npy / npz


def npy(arr: np.ndarray[Any, Any]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def npy_with_header(header: str, payload: bytes, version: int = 1) -> bytes:
    """An .npy file with a hand-written header dict (padded as numpy pads it) and ``payload`` as its data."""
    h = header.encode("latin1")
    prefix = 10 if version == 1 else 12
    h += b" " * ((64 - (prefix + len(h) + 1) % 64) % 64) + b"\n"
    size = struct.pack("<H", len(h)) if version == 1 else struct.pack("<I", len(h))
    return b"\x93NUMPY" + bytes([version, 0]) + size + h + payload


ARRAYS = st.one_of(
    st.builds(lambda n, dt: np.arange(n).astype(dt), st.integers(0, 20), st.sampled_from(["<f4", ">i8", "u1", "?", "<c8"])),
    st.builds(lambda n: np.array([1, "a", None, 2.5][:n] + [[1, 2]], dtype=object), st.integers(0, 4)),
    st.builds(lambda n: np.zeros(n, dtype=[("a", "<f4"), ("b", "O")]), st.integers(0, 3)),
)  # fmt: skip


@FUZZ
@given(arr=ARRAYS, data=st.data())
def test_mutated_npy_gives_a_report(arr: np.ndarray[Any, Any], data: st.DataObject) -> None:
    assert accounted(scan_bytes(mutate(data.draw, npy(arr)), "x.npy"))


@FUZZ
@given(arr=ARRAYS, data=st.data())
def test_npy_cut_inside_its_header_is_not_clean(arr: np.ndarray[Any, Any], data: st.DataObject) -> None:
    raw = npy(arr)
    (hlen,) = struct.unpack("<H", raw[8:10])
    cut = data.draw(st.integers(0, 10 + hlen - 1))
    assert_not_clean(scan_bytes(raw[:cut], "x.npy"))


@FUZZ
@given(
    descr=st.sampled_from(["'|O'", "'O'", '"|O"', "[('a', '<f4'), ('b', '|O')]", "[('b', '|O')]"]),
    order=st.permutations(["descr", "fortran_order", "shape"]),
    quote=st.sampled_from(["'", '"']),
    space=st.sampled_from(["", " ", "  ", "\t"]),
    trailing=st.booleans(),
    version=st.sampled_from([1, 2]),
)
def test_npy_object_header_variants_numpy_accepts_are_never_clean(
    descr: str, order: list[str], quote: str, space: str, trailing: bool, version: int
) -> None:
    values = {"descr": descr, "fortran_order": "False", "shape": "(1,)"}
    items = [f"{quote}{k}{quote}:{space}{values[k]}" for k in order]
    header = "{" + f",{space}".join(items) + ("," if trailing else "") + "}"
    raw = npy_with_header(header, EVIL, version)
    reader = np.lib.format.read_array_header_1_0 if version == 1 else np.lib.format.read_array_header_2_0
    # numpy's own header parser (literal_eval): nothing is unpickled.
    _, _, dtype = reader(io.BytesIO(raw[8:]))
    assert dtype.hasobject  # so np.load(allow_pickle=True) would unpickle the data
    assert_not_clean(scan_bytes(raw, "x.npy"))


@FUZZ
@given(arrays=st.lists(ARRAYS, min_size=1, max_size=3), compressed=st.booleans(), data=st.data())
def test_mutated_npz_gives_a_report_and_truncated_is_not_clean(
    arrays: list[np.ndarray[Any, Any]], compressed: bool, data: st.DataObject
) -> None:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, *arrays)
    raw = buf.getvalue()
    assert accounted(scan_bytes(mutate(data.draw, raw), "x.npz"))
    assert_not_clean(scan_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))], "x.npz"))


def test_npz_object_array_with_a_payload_is_found() -> None:
    raw = make_zip([("a.npy", npy(np.arange(3.0))), ("b.npy", npy_with_header(
        "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", pickle.dumps([_Payload()], protocol=3)))])  # fmt: skip
    assert critical(scan_bytes(raw, "x.npz"))


# --------------------------------------------------------------------------------------------------- safetensors

ST_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
             "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}  # fmt: skip
_DIM = st.one_of(st.integers(0, 4), st.sampled_from([-1, -4, 2**64, 2.5, "3", True, None]))


@st.composite
def safetensors_file(draw: Draw) -> tuple[bytes, str | None]:
    """A safetensors file with hypothesis-chosen header fields, and why it is invalid (None when it is valid)."""
    header: dict[str, Any] = {}
    bad: str | None = None
    lax = False  # numbers the library rejects but the scanner takes (negative, non-integer)
    pos = 0
    for i in range(draw(st.integers(0, 4))):
        dtype = draw(
            st.one_of(st.sampled_from(sorted(ST_DTYPES)), st.sampled_from(["X9", "", "f32", 1, None]))
        )
        shape = draw(st.lists(_DIM, max_size=3))
        if dtype in ST_DTYPES and all(type(d) is int and 0 <= d < 2**32 for d in shape):
            size = ST_DTYPES[dtype] * int(np.prod(shape, dtype=object))
            offsets: Any = draw(
                st.one_of(
                    st.just([pos, pos + size]), st.tuples(st.integers(-2, 80), st.integers(-2, 80)).map(list)
                )
            )
        else:
            offsets = draw(st.tuples(st.integers(-2, 80), st.integers(-2, 80)).map(list))
        meta: Any = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
        if draw(st.integers(0, 9)) == 0:
            meta = draw(
                st.sampled_from(
                    [[], "x", 3, {"dtype": "F32"}, {"dtype": "F32", "shape": [1], "data_offsets": 5}]
                )
            )
        header[f"t{i}"] = meta
        if (
            not isinstance(meta, dict)
            or "shape" not in meta
            or not isinstance(meta.get("data_offsets"), list)
        ):
            bad = bad or "malformed tensor entry"
            continue
        if meta["dtype"] not in ST_DTYPES:
            bad = bad or "unknown dtype"
        if not all(type(d) is int and d >= 0 for d in shape):
            lax = True
        start, end = offsets
        if type(start) is int and type(end) is int and start <= end:
            pos = max(pos, end)
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.one_of(
            st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
            st.dictionaries(st.text(max_size=5), st.integers(), min_size=1, max_size=2),
        ))  # fmt: skip
        if not all(isinstance(v, str) for v in header["__metadata__"].values()):
            bad = bad or "metadata not str -> str"
    text = json.dumps(header, sort_keys=draw(st.booleans())).encode() + b" " * draw(st.integers(0, 8))
    data = bytes(draw(st.integers(0, 90)))
    n = draw(
        st.one_of(
            st.just(len(text)),
            st.integers(0, len(text) + 100),
            st.sampled_from([2**63, 2**64 - 1, 100 << 20]),
        )
    )
    raw = struct.pack("<Q", n) + text + data
    data_len = len(raw) - 8 - n
    if n > len(raw) - 8:
        return raw, "safetensors-header-past-eof"
    try:
        parsed = json.loads(raw[8 : 8 + n])
    except ValueError:
        return raw, "header is not JSON"
    if parsed != header:
        return raw, "header cut"
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        if (
            isinstance(meta, dict)
            and isinstance(meta.get("data_offsets"), list)
            and meta.get("dtype") in ST_DTYPES
        ):
            start, end = meta["data_offsets"]
            try:
                count = int(np.prod([int(d) for d in meta["shape"]], dtype=object))
            except (TypeError, ValueError):
                bad = bad or "bad shape"
                continue
            if not (0 <= start <= end <= data_len) or end - start != count * ST_DTYPES[meta["dtype"]]:
                bad = bad or "offsets do not fit"
    if bad is None and lax:
        bad = "safetensors-lax-numbers"
    return raw, bad


@settings(FUZZ, max_examples=200)
@given(generated=safetensors_file())
def test_generated_safetensors_headers(generated: tuple[bytes, str | None]) -> None:
    # The safetensors library itself is the oracle: what it refuses is not clean, what it accepts is clean.
    import safetensors

    raw, _ = generated
    report = scan_bytes(raw, "model.safetensors")
    assert accounted(report)
    try:
        safetensors.deserialize(raw)
        accepted = True
    except Exception:  # noqa: BLE001 (SafetensorError and friends)
        accepted = False
    assert clean(report) == accepted, report


@FUZZ
@given(data=st.data())
def test_mutated_safetensors_gives_a_report(data: st.DataObject) -> None:
    header = json.dumps({"__metadata__": {"format": "pt"}, "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                         "b": {"dtype": "F16", "shape": [2], "data_offsets": [16, 20]}}).encode()  # fmt: skip
    raw = struct.pack("<Q", len(header)) + header + bytes(range(20))
    report = scan_bytes(mutate(data.draw, raw), "model.safetensors")
    assert accounted(report)


# --------------------------------------------------------------------------------------------------- GGUF

GGUF_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
BENIGN_TEMPLATE = b"{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
EVIL_TEMPLATE = b"{{ cycler.__init__.__globals__.os.popen('true').read() }}"


def _gstr(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


@st.composite
def gguf_kv(draw: Draw) -> tuple[bytes, list[tuple[int, int]]]:
    """One key-value pair (never a template) and where its key and value CONTENT bytes lie in it."""
    key = draw(
        st.sampled_from([b"general.name", b"general.architecture", b"llama.block_count", b"tok.tokens", b"x"])
    )
    out = _gstr(key)
    content = [(8, len(out))]
    kind = draw(st.sampled_from(["fixed", "string", "array", "strings"]))
    if kind == "fixed":
        t = draw(st.sampled_from(sorted(GGUF_FIXED)))
        out += struct.pack("<I", t)
        content.append((len(out), len(out) + GGUF_FIXED[t]))
        out += draw(st.binary(min_size=GGUF_FIXED[t], max_size=GGUF_FIXED[t]))
    elif kind == "string":
        s = draw(st.binary(max_size=24))
        out += struct.pack("<I", 8) + struct.pack("<Q", len(s))
        content.append((len(out), len(out) + len(s)))
        out += s
    elif kind == "array":
        t, n = draw(st.sampled_from(sorted(GGUF_FIXED))), draw(st.integers(0, 6))
        out += struct.pack("<IIQ", 9, t, n)
        content.append((len(out), len(out) + n * GGUF_FIXED[t]))
        out += draw(st.binary(min_size=n * GGUF_FIXED[t], max_size=n * GGUF_FIXED[t]))
    else:
        items = draw(st.lists(st.binary(max_size=8), max_size=4))
        out += struct.pack("<IIQ", 9, 8, len(items))
        for s in items:
            out += struct.pack("<Q", len(s))
            content.append((len(out), len(out) + len(s)))
            out += s
    return out, content


@st.composite
def gguf_file(draw: Draw, evil: bool | None = None) -> tuple[bytes, bool, list[tuple[int, int]]]:
    """A valid GGUF header: KV pairs then the chat template last. (bytes, evil?, content regions of other KVs)."""
    kvs = draw(st.lists(gguf_kv(), max_size=5))
    evil = draw(st.booleans()) if evil is None else evil
    out = b"GGUF" + struct.pack("<IQQ", draw(st.sampled_from([2, 3])), 0, len(kvs) + 1)  # no tensor table
    regions = []
    for kv, content in kvs:
        regions += [(len(out) + a, len(out) + b) for a, b in content]
        out += kv
    out += (
        _gstr(b"tokenizer.chat_template")
        + struct.pack("<I", 8)
        + _gstr(EVIL_TEMPLATE if evil else BENIGN_TEMPLATE)
    )
    return out, evil, regions


@FUZZ
@given(generated=gguf_file())
def test_generated_gguf(generated: tuple[bytes, bool, list[tuple[int, int]]]) -> None:
    raw, evil, _ = generated
    report = scan_bytes(raw, "m.gguf")
    if evil:
        assert [f.rule for f in report.findings] == ["gguf-template-escape"], report
    else:
        assert clean(report), report


@FUZZ
@given(generated=gguf_file(), data=st.data())
def test_mutated_gguf_gives_a_report_and_truncated_is_not_clean(
    generated: tuple[bytes, bool, list[tuple[int, int]]], data: st.DataObject
) -> None:
    raw, _, _ = generated
    assert accounted(scan_bytes(mutate(data.draw, raw), "m.gguf"))
    assert_not_clean(scan_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))], "m.gguf"))


@FUZZ
@given(generated=gguf_file(), data=st.data())
def test_gguf_with_lying_counts_lengths_and_types(
    generated: tuple[bytes, bool, list[tuple[int, int]]], data: st.DataObject
) -> None:
    """Header numbers rewritten with absurd or off-by-some values: a report, no hang; more KVs than present is an error."""
    raw = bytearray(generated[0])
    field = data.draw(st.sampled_from(["version", "tensors", "kv_count", "somewhere"]))
    big = st.sampled_from(
        [2**64 - 1, 2**63, 2**32, 10**6, 10**6 + 1, 5 * 10**7 + 1, 16 << 20, (16 << 20) + 1]
    )
    if field == "version":
        raw[4:8] = struct.pack("<I", data.draw(st.one_of(st.integers(0, 5), st.integers(0, 2**32 - 1))))
    elif field == "tensors":
        raw[8:16] = struct.pack("<Q", data.draw(st.one_of(big, st.integers(0, 2**64 - 1))))
    elif field == "kv_count":
        (kv,) = struct.unpack("<Q", raw[16:24])
        new = data.draw(st.one_of(big, st.integers(kv + 1, kv + 5)))
        raw[16:24] = struct.pack("<Q", new)
        assert_not_clean(scan_bytes(bytes(raw), "m.gguf"))  # more pairs announced than the file holds
    else:  # a u64 (string length, array count) or u32 (type) anywhere after the fixed header
        pos = data.draw(st.integers(24, max(24, len(raw) - 8)))
        width = data.draw(st.sampled_from([4, 8]))
        raw[pos : pos + width] = struct.pack(
            "<Q" if width == 8 else "<I", data.draw(big) % (1 << (8 * width))
        )
    assert accounted(scan_bytes(bytes(raw), "m.gguf"))


@FUZZ
@given(generated=gguf_file(evil=True), data=st.data())
def test_gguf_template_is_found_whatever_the_other_values(
    generated: tuple[bytes, bool, list[tuple[int, int]]], data: st.DataObject
) -> None:
    raw, _, regions = generated
    report = scan_bytes(overwrite_in(data.draw, raw, regions), "m.gguf")
    assert "gguf-template-escape" in [f.rule for f in report.findings], report


# --------------------------------------------------------------------------------------------------- protobuf


_ld, _vi = msg, num  # length-delimited and varint fields, written by hand (no onnx or tensorflow needed)


@st.composite
def unknown_field_list(draw: Draw) -> list[bytes]:
    """Fields no ONNX/TF reader here interprets (numbers 30-40 at every level): varints, fixed, bytes."""
    out = []
    for _ in range(draw(st.integers(0, 2))):
        num, wt = draw(st.integers(30, 40)), draw(st.sampled_from([0, 1, 2, 5]))
        if wt == 0:
            out.append(_vi(num, draw(st.integers(0, 2**64 - 1))))
        elif wt == 2:
            out.append(_ld(num, draw(st.binary(max_size=12))))
        else:
            size = 8 if wt == 1 else 4
            out.append(_varint(num << 3 | wt) + draw(st.binary(min_size=size, max_size=size)))
    return out


def unknown_fields() -> st.SearchStrategy[bytes]:
    return unknown_field_list().map(b"".join)


STANDARD_DOMAINS = ["", "ai.onnx", "ai.onnx.ml"]
LOCATIONS = [("weights.bin", False), ("sub/w.bin", False), ("../../etc/passwd", True), ("/etc/shadow", True),
             ("C:\\Windows\\x", True), ("a/../../b", True)]  # fmt: skip


@st.composite
def onnx_graph(draw: Draw, depth: int = 0) -> tuple[bytes, Counter[str]]:
    """An ONNX GraphProto with hypothesis-chosen nodes (ops, domains, subgraphs) and initializers; expected rules."""
    expected: Counter[str] = Counter()
    body = draw(unknown_fields())
    for _ in range(draw(st.integers(0, 3 if depth == 0 else 2))):
        op = draw(st.one_of(st.sampled_from(["Conv", "Relu", "Loop", "If"]), st.binary(max_size=8)))
        domain = draw(st.sampled_from([*STANDARD_DOMAINS, "com.evil", "custom.ops"]))
        node = _ld(4, op) + (_ld(7, domain) if domain else b"") + draw(unknown_fields())
        if depth < 2 and draw(st.integers(0, 3)) == 0:
            sub, sub_expected = draw(onnx_graph(depth + 1))
            node += _ld(5, _ld(1, "body") + _ld(6, sub))
            expected += sub_expected
        if domain not in STANDARD_DOMAINS:
            expected["onnx-custom-domain"] += 1
        body += _ld(1, node)
    for _ in range(draw(st.integers(0, 2))):
        location, escapes = draw(st.sampled_from(LOCATIONS))
        tensor = _ld(8, "w") + _ld(9, draw(st.binary(max_size=16)))
        if draw(st.booleans()):
            tensor += _ld(13, _ld(1, "location") + _ld(2, location)) + _vi(14, 1)
            expected["onnx-external-data-escape"] += escapes
        body += _ld(5, tensor)
    return body, expected


@st.composite
def onnx_model(draw: Draw) -> tuple[bytes, Counter[str], list[int]]:
    """(model bytes, expected finding rules, the byte offsets where its top-level fields start and end)."""
    graph, expected = draw(onnx_graph())
    fields = [
        _vi(1, 9),
        _ld(8, _ld(1, "") + _vi(2, 17)),
        _ld(2, "fuzz"),
        *draw(unknown_field_list()),
        _ld(7, graph),
    ]
    bounds = [sum(len(f) for f in fields[:i]) for i in range(len(fields) + 1)]
    return b"".join(fields), expected, bounds


DANGEROUS_TF = ["ReadFile", "WriteFile", "PyFunc", "EagerPyFunc", "MatchingFiles"]


@st.composite
def saved_model(draw: Draw) -> tuple[bytes, int]:
    """A SavedModel proto (meta graph -> graph def -> nodes and library functions); how many dangerous ops."""
    dangerous = 0

    def node() -> bytes:
        nonlocal dangerous
        op = draw(
            st.one_of(st.sampled_from(["Const", "MatMul", "Identity", *DANGEROUS_TF]), st.binary(max_size=8))
        )
        dangerous += op in DANGEROUS_TF
        return _ld(1, draw(st.binary(max_size=6))) + _ld(2, op) + draw(unknown_fields())

    graph = b"".join(_ld(1, node()) for _ in range(draw(st.integers(0, 3))))
    if draw(st.booleans()):
        functions = b"".join(
            _ld(1, _ld(1, b"sig") + b"".join(_ld(3, node()) for _ in range(draw(st.integers(0, 2)))))
            for _ in range(draw(st.integers(1, 2)))
        )
        graph += _ld(2, functions)
    meta = _ld(1, b"meta-info") + _ld(2, graph) + draw(unknown_fields())
    return _vi(1, 1) + _ld(2, meta), dangerous


@FUZZ
@given(model=onnx_model())
def test_generated_onnx(model: tuple[bytes, Counter[str], list[int]]) -> None:
    raw, expected, _ = model
    report = scan_bytes(raw, "m.onnx")
    assert not report.errors, report
    assert Counter(f.rule for f in report.findings) == expected


@FUZZ
@given(model=onnx_model(), data=st.data())
def test_mutated_onnx_gives_a_report_and_truncated_is_not_clean(
    model: tuple[bytes, Counter[str], list[int]], data: st.DataObject
) -> None:
    raw, _, bounds = model
    assert accounted(scan_bytes(mutate(data.draw, raw), "m.onnx"))
    cut = data.draw(st.integers(0, len(raw) - 1))
    report = scan_bytes(raw[:cut], "m.onnx")
    if cut not in bounds:  # inside a top-level field: its length runs past the end
        assert_not_clean(report)


@FUZZ
@given(model=saved_model())
def test_generated_saved_model(model: tuple[bytes, int]) -> None:
    raw, dangerous = model
    report = scan_bytes(raw, "saved_model.pb")
    assert not report.errors, report
    assert [f.rule for f in report.findings] == ["tf-dangerous-op"] * dangerous


@FUZZ
@given(model=saved_model(), data=st.data())
def test_mutated_saved_model_gives_a_report(model: tuple[bytes, int], data: st.DataObject) -> None:
    assert accounted(scan_bytes(mutate(data.draw, model[0]), "saved_model.pb"))


# --------------------------------------------------------------------------------------------------- Keras v3

KERAS_WEIGHTS = b"\x89HDF\r\n\x1a\n" + bytes(56)
LAMBDA_CONFIG = json.dumps(
    {"class_name": "Sequential", "config": {"layers": [{"class_name": "Lambda"}]}}
).encode()
_MODULES = [("keras.layers", None), ("keras", None), (None, None), ("os", "keras-dangerous-module"),
            ("my_pkg.layers", "keras-custom-module")]  # fmt: skip


@st.composite
def keras_config(draw: Draw, depth: int = 0) -> tuple[dict[str, Any], set[str]]:
    """A Sequential config with hypothesis-chosen layers (some nested models); the finding rules it must give."""
    layers: list[Any] = []
    rules: set[str] = set()
    for _ in range(draw(st.integers(0, 4))):
        if depth < 2 and draw(st.integers(0, 4)) == 0:
            sub, sub_rules = draw(keras_config(depth + 1))
            layers.append(sub)
            rules |= sub_rules
            continue
        cls = draw(st.sampled_from(["Dense", "Conv2D", "Dropout", "Flatten", "Lambda", "TFOpLambda"]))
        module, rule = draw(st.sampled_from(_MODULES))
        layers.append({"module": module, "class_name": cls, "registered_name": None,
                       "config": {"name": draw(st.text(max_size=6)), "units": draw(st.integers(0, 9))}})  # fmt: skip
        rules |= {"Lambda": {"keras-lambda-layer"}, "TFOpLambda": {"keras-tfoplambda-layer"}}.get(cls, set())
        rules |= {rule} if rule else set()
    config = {"module": "keras", "class_name": "Sequential", "registered_name": None,
              "config": {"name": "seq", "layers": layers}}  # fmt: skip
    return config, rules


def keras_zip(
    config: bytes, metadata: bytes = b'{"keras_version": "3.5.0"}', weights: bytes = KERAS_WEIGHTS
) -> bytes:
    return make_zip([("metadata.json", metadata), ("config.json", config), ("model.weights.h5", weights)])


def _has_lambda(node: Any) -> bool:
    if isinstance(node, list):
        return any(_has_lambda(x) for x in node)
    if isinstance(node, dict):
        return node.get("class_name") == "Lambda" or any(_has_lambda(v) for v in node.values())
    return False


@FUZZ
@given(config=keras_config())
def test_generated_keras_configs(config: tuple[dict[str, Any], set[str]]) -> None:
    cfg, rules = config
    report = scan_bytes(keras_zip(json.dumps(cfg).encode()), "m.keras")
    assert not report.errors, report
    assert {f.rule for f in report.findings} == rules


@FUZZ
@given(config=keras_config(), data=st.data())
def test_mutated_keras_config_json(config: tuple[dict[str, Any], set[str]], data: st.DataObject) -> None:
    text = mutate(data.draw, json.dumps(config[0]).encode())
    report = scan_bytes(keras_zip(text), "m.keras")
    assert accounted(report)
    try:
        parsed = json.loads(text)  # as Keras reads it
    except ValueError:
        assert "config.json" in [e.member for e in report.errors], report
        return
    if not isinstance(parsed, dict | list):
        assert report.errors, report
    elif _has_lambda(parsed):
        assert "keras-lambda-layer" in {f.rule for f in report.findings}, report


@FUZZ
@given(data=st.data())
def test_keras_lambda_is_found_whatever_happens_to_metadata_and_weights(data: st.DataObject) -> None:
    metadata = mutate(data.draw, b'{"keras_version": "3.5.0", "date_saved": "2025-01-01@00:00:00"}')
    weights = mutate(data.draw, KERAS_WEIGHTS)
    report = scan_bytes(keras_zip(LAMBDA_CONFIG, metadata, weights), "m.keras")
    assert "keras-lambda-layer" in {f.rule for f in report.findings}, report


# --------------------------------------------------------------------------------------------------- resources


def test_deeply_nested_gzips_hit_the_depth_limit() -> None:
    raw = EVIL
    for _ in range(Limits().max_depth + 4):
        raw = gzip.compress(raw, mtime=0)
    report = scan_bytes(raw, "deep.gz")
    assert any("nested deeper" in e.message for e in report.errors), report


def test_deeply_nested_zips_hit_the_depth_limit() -> None:
    raw = make_zip([("archive/data.pkl", EVIL)])
    for i in range(Limits().max_depth + 4):
        raw = make_zip([(f"level{i}.zip", raw)], zipfile.ZIP_DEFLATED if i % 2 else zipfile.ZIP_STORED)
    report = scan_bytes(raw, "deep.zip")
    assert any("nested deeper" in e.message for e in report.errors), report


def test_zip_bomb_is_an_error() -> None:
    raw = make_zip([("archive/data.pkl", bytes(20 << 20))], zipfile.ZIP_DEFLATED)
    assert len(raw) < 64 << 10
    report = scan_bytes(raw, "bomb.pt")
    assert any("ratio" in e.message for e in report.errors), report


def test_tar_with_thousands_of_members_hits_the_member_limit(tmp_path: Path) -> None:
    path = tmp_path / "many.tar"
    path.write_bytes(make_tar([(f"m{i}", b"") for i in range(3000)]))
    ctx = scan_file(str(path), limits=Limits(max_members=1000))
    assert any("more than 1000 archive members" in e.message for e in ctx.errors), ctx.errors
    assert not scan_file(str(path)).errors  # under the default limit: fine


def test_pickle_with_millions_of_opcodes_completes(tmp_path: Path) -> None:
    path = tmp_path / "big.pkl"
    path.write_bytes(b"\x80\x02" + b"N0" * 1_000_000 + b"N.")  # 2 million opcodes: NONE, POP, ...
    t = time.perf_counter()
    report = scan_path(str(path))
    elapsed = time.perf_counter() - t
    assert clean(report), report
    assert elapsed < 20, f"{elapsed:.1f} s for 2M opcodes"  # about 1 s here (0.5 us an opcode)
    ctx = scan_file(str(path), limits=Limits(max_opcodes=100_000))
    assert any("opcode limit" in e.message for e in ctx.errors), ctx.errors


# --------------------------------------------------------------------------------------------------- known bugs


@pytest.mark.parametrize(
    "header",
    [
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'descr': '|O'}",  # a dict literal: last key wins
        "{'descr': '\\x4f', 'fortran_order': False, 'shape': (1,), }",  # '\x4f' == 'O' once evaluated
        "{'descr': 'objec\\x74', 'fortran_order': False, 'shape': (1,), }",
        "{'fortran_order': False, 'shape': (1,), 'descr': '|O'}",  # regex needs descr first: error, pickle unscanned
    ],
    ids=["duplicate-key", "escaped-O", "escaped-object", "key-order"],
)
def test_npy_object_dtype_the_regex_misses(header: str) -> None:
    raw = npy_with_header(header, EVIL)
    _, _, dtype = np.lib.format.read_array_header_1_0(io.BytesIO(raw[8:]))
    assert dtype.hasobject  # numpy would unpickle the data with allow_pickle=True
    assert critical(scan_bytes(raw, "x.npy"))


def test_npy_header_regex_does_not_backtrack(tmp_path: Path) -> None:
    path = tmp_path / "slow.npy"
    # 3 KB: about 25 s today (2 KB 7 s, 8 KB 7 min); headers up to 1 MiB are accepted.
    h = b"{'descr': " + b" " * 3000
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h)
    code = "import sys; from dlsec.scan import scan_path; scan_path(sys.argv[1])"
    try:
        subprocess.run([sys.executable, "-c", code, str(path)], timeout=4, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail("scanning a 3 KB npy header took over 4 s")


def test_npy_header_cut_after_fortran_order_is_not_clean() -> None:
    raw = npy(np.arange(3.0))
    assert_not_clean(scan_bytes(raw[: raw.index(b"fortran_order") + 20], "x.npy"))


@pytest.mark.parametrize("damage", ["checksum", "cut"])
def test_tar_broken_later_header_is_not_clean(damage: str) -> None:
    raw = bytearray(make_tar([("a.bin", b"hello"), ("evil.pkl", EVIL)]))
    if damage == "checksum":
        raw[1024 + 148] ^= 1  # the second header's checksum: tarfile ends the archive there, evil.pkl unseen
    else:
        raw = raw[: 1024 + 100]
    assert_not_clean(scan_bytes(bytes(raw), "m.tar"))


def test_zlib_truncated_is_not_clean() -> None:
    # The adler32 is cut off: zlib.decompress (and joblib) fail on it.
    assert_not_clean(scan_bytes(zlib.compress(BENIGN)[:-4], "m.joblib"))


def test_safetensors_header_length_past_the_end_is_not_clean() -> None:
    assert_not_clean(scan_bytes(struct.pack("<Q", 1000) + b"{}", "m.safetensors"))


@pytest.mark.parametrize(
    "meta",
    [
        {"dtype": "F32", "shape": [-1, -4], "data_offsets": [0, 16]},
        {"dtype": "F32", "shape": ["2", "2"], "data_offsets": [0, 16]},
        {"dtype": "F32", "shape": [2.9, 2.2], "data_offsets": [0, 16]},
        {"dtype": "F32", "shape": [4], "data_offsets": [0.0, 16.0]},
    ],
    ids=["negative", "strings", "floats", "float-offsets"],
)
def test_safetensors_non_integer_or_negative_numbers_are_not_clean(meta: dict[str, Any]) -> None:
    header = json.dumps({"w": meta}).encode()
    assert_not_clean(scan_bytes(struct.pack("<Q", len(header)) + header + bytes(16), "m.safetensors"))


def test_gguf_array_past_the_end_is_not_clean() -> None:
    raw = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _gstr(b"tok.scores") + struct.pack("<IIQ", 9, 6, 1000)
    assert_not_clean(scan_bytes(raw, "m.gguf"))


def test_keras_duplicate_config_json() -> None:
    good = json.dumps({"class_name": "Sequential", "config": {"layers": []}}).encode()
    with pytest.warns(UserWarning, match="Duplicate name"):
        raw = make_zip([("config.json", good), ("config.json", LAMBDA_CONFIG), ("metadata.json", b"{}"),
                        ("model.weights.h5", KERAS_WEIGHTS)])  # fmt: skip
    assert "keras-lambda-layer" in {f.rule for f in scan_bytes(raw, "m.keras").findings}


@pytest.mark.parametrize(
    "others", [["metadata.json", "model.weights.npz"], []], ids=["npz-weights", "config-only"]
)
def test_keras_zip_without_h5_weights_is_still_analysed(others: list[str]) -> None:
    # Keras 3 saves weights as model.weights.npz too, and deserialises config.json before it looks for weights.
    raw = make_zip([("config.json", LAMBDA_CONFIG), *[(n, b"{}") for n in others]])
    assert "keras-lambda-layer" in {f.rule for f in scan_bytes(raw, "m.keras").findings}


def test_onnx_polyglot_sniffed_as_safetensors() -> None:
    # Bytes 0-8: field 9 (fixed64) whose last byte is '{'; so the first 8 bytes read as a safetensors header length
    # of 0x49 and the header is '{}' + JSON whitespace, which is also valid protobuf ('}' fixed32, '\r' fixed32,
    # '  ' varint fields 4 and 1, unknown or mistyped fields a protobuf parser skips). Then the real model.
    prefix = b"\x49" + bytes(7) + b"{" + b"}" + b"    " + b"\r    " + b"  " * 31
    graph = _ld(1, _ld(4, "Relu")) + _ld(
        5, _ld(8, "w") + _ld(13, _ld(1, "location") + _ld(2, "../../etc/passwd"))
    )
    model = _vi(1, 9) + _ld(8, _ld(1, "") + _vi(2, 17)) + _ld(7, graph)
    assert [f.rule for f in scan_bytes(model, "m.onnx").findings] == ["onnx-external-data-escape"]
    report = scan_bytes(prefix + model, "m.onnx")
    assert "onnx-external-data-escape" in [f.rule for f in report.findings], report


@pytest.mark.parametrize("damage", ["local-signature", "deflate-data"])
def test_one_broken_member_does_not_hide_the_pickle(damage: str) -> None:
    members = [("archive/notes.txt", b"hello world, " * 40), ("archive/data.pkl", EVIL)]
    raw = bytearray(make_zip(members, zipfile.ZIP_DEFLATED))
    h, s, e = zip_spans(bytes(raw))["archive/notes.txt"]
    if damage == "local-signature":
        raw[h] = ord("Q")
    else:
        raw[s : s + 4] = b"\xff\xff\xff\xff"  # an invalid deflate block: zlib.error while sniffing the member
    report = scan_bytes(bytes(raw), "model.pt")
    assert critical(report), report  # PyTorch reads data.pkl by name and would run it


def test_gzip_trailing_garbage_keeps_the_finding() -> None:
    # pickle.load(gzip.open(...)) reads the first member, runs the payload, and only then trips on the garbage.
    report = scan_bytes(gzip.compress(EVIL, mtime=0) + b"garbage!", "m.joblib")
    assert critical(report) and report.errors, report


@pytest.mark.parametrize("kind", sorted(COMPRESS))
def test_compressed_stream_of_a_non_model_is_not_clean(kind: str) -> None:
    # b"total garbage" alone is skipped ("not a recognised model format"); b"hello" gzipped is skipped too; but 't'
    # is a protocol-0 opcode, and a failed "pickle0" at depth > 1 is passed over silently, so this is clean.
    assert not clean(scan_bytes(b"total garbage", "x.bin"))
    assert_not_clean(scan_bytes(COMPRESS[kind](b"total garbage"), "x.bin"))


@pytest.mark.parametrize("container", ["gzip", "zip-lying-size"])
def test_compression_ratio_limit(tmp_path: Path, container: str) -> None:
    payload = b"\x80\x02" + b"N0" * 1_000_000 + b"N."  # 2 MB of opcodes (over the 1 MiB floor), ~700x smaller
    path = tmp_path / "bomb.bin"
    if container == "gzip":  # gzip, bz2, xz and zlib streams have no ratio limit at all
        path.write_bytes(gzip.compress(payload, mtime=0))
    else:  # a deflated member whose local header and central directory declare file_size == compress_size
        raw = bytearray(make_zip([("archive/data.pkl", payload)], zipfile.ZIP_DEFLATED))
        with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
            size = zf.infolist()[0].compress_size
        cd = raw.index(b"PK\x01\x02")
        raw[22:26] = raw[cd + 24 : cd + 28] = struct.pack("<I", size)
        path.write_bytes(bytes(raw))
    ctx = scan_file(str(path), limits=Limits(max_ratio=10.0))
    assert any("ratio" in e.message for e in ctx.errors), ctx.errors


def test_many_pickles_in_a_row_hit_the_opcode_limit(tmp_path: Path) -> None:
    # 3 opcodes a pickle, 60k pickles; at scale (or behind gzip) time and memory grow without bound (8 us and
    # ~120 bytes an analysis kept per pickle: a 400 KB .gz of 100M pickles takes ~15 min and ~12 GB).
    path = tmp_path / "many.pkl"
    path.write_bytes(b"\x80\x02N." * 60_000)
    ctx = scan_file(str(path), limits=Limits(max_opcodes=100_000))
    assert any("opcode limit" in e.message for e in ctx.errors), ctx.errors


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_in_a_folder_does_not_hang(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "ok.pkl").write_bytes(BENIGN)
    fifo = folder / "weights.bin"
    os.mkfifo(fifo)
    done: list[ScanReport] = []
    worker = threading.Thread(target=lambda: done.append(scan_path(str(folder))), daemon=True)
    worker.start()
    worker.join(2)
    hung = worker.is_alive()
    if hung:  # unblock the scanner's open(): a writer that closes at once gives it an empty stream
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
    assert not hung, "scan_path blocked on a FIFO"


@pytest.mark.skipif(not os.path.exists("/dev/zero") or sys.platform != "linux", reason="needs /dev/zero")
def test_a_symlink_to_dev_zero_is_not_read_forever(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink("/dev/zero", folder / "weights.bin")
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30));"
        "from dlsec.scan import scan_path; scan_path(sys.argv[1])"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-400:]
