"""ONNX and TensorFlow SavedModel: protobuf files walked by a small wire-format reader (no onnx/tensorflow needed).

Only the fields that matter are decoded; everything else, tensor data included, is skipped by length without being
read, so memory stays bounded (the file is memory-mapped). ONNX: external-data locations that leave the model's
folder (absolute paths, ``..``) and operators from non-standard domains. SavedModel: operations that read or write
files or call back into Python (ReadFile, WriteFile, PyFunc, ...).
"""

from __future__ import annotations

import mmap
import os
import posixpath
from collections.abc import Iterator

from dlsec.scan.engine import Context
from dlsec.scan.results import Severity

MAX_NESTING = 64
STANDARD_ONNX_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training"}
DANGEROUS_TF_OPS = {
    "ReadFile": "reads any file", "WriteFile": "writes any file", "MatchingFiles": "lists files",
    "PyFunc": "calls Python", "PyFuncStateless": "calls Python", "EagerPyFunc": "calls Python",
    "DeleteFile": "deletes files", "SaveSlices": "writes files", "ImmutableConst": "maps a file into memory",
}  # fmt: skip


class ProtoError(ValueError):
    """Malformed protobuf."""


def _varint(buf: memoryview | mmap.mmap, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ProtoError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def fields(buf: memoryview | mmap.mmap, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(field number, wire type, value or start, end)`` for each field of the message in ``buf[start:end]``.

    For length-delimited fields (wire type 2) the value is the payload's start and ``end`` its end; for the others
    the value is the number itself and ``end`` the position after it.
    """
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = _varint(buf, pos, end)
            yield num, wt, v, pos
        elif wt == 1:
            pos += 8
            yield num, wt, 0, pos
        elif wt == 5:
            pos += 4
            yield num, wt, 0, pos
        elif wt == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise ProtoError("length-delimited field runs past its message")
            yield num, wt, pos, pos + n
            pos += n
        else:
            raise ProtoError(f"unsupported wire type {wt}")
        if pos > end:
            raise ProtoError("field runs past its message")


def _text(buf: memoryview | mmap.mmap, a: int, b: int) -> str:
    return bytes(buf[a:b]).decode("utf-8", errors="replace")


class _Walker:
    def __init__(self, ctx: Context, buf: mmap.mmap, member: str) -> None:
        self.ctx, self.buf, self.member = ctx, buf, member

    def sub(self, depth: int) -> int:
        if depth > MAX_NESTING:
            raise ProtoError(f"messages nested deeper than {MAX_NESTING}")
        return depth + 1

    # ONNX: ModelProto graph=7, opset_import=8, functions=25; GraphProto node=1, initializer=5, sparse_initializer=15;
    # NodeProto op_type=4, domain=7, attribute=5; AttributeProto t=5, g=6, tensors=9, graphs=10;
    # TensorProto external_data=13, data_location=14; StringStringEntryProto key=1, value=2; FunctionProto node=7.
    def onnx_model(self, a: int, b: int) -> None:
        for num, wt, s, e in fields(self.buf, a, b):
            if wt != 2:
                continue
            if num == 7:
                self.onnx_graph(s, e, 1)
            elif num == 8:
                self.onnx_domain(s, e, opset=True)
            elif num == 25:
                for n2, w2, s2, e2 in fields(self.buf, s, e):
                    if n2 == 7 and w2 == 2:
                        self.onnx_node(s2, e2, 2)

    def onnx_domain(self, a: int, b: int, opset: bool = False) -> None:
        for num, wt, s, e in fields(self.buf, a, b):
            if num == 1 and wt == 2:
                d = _text(self.buf, s, e)
                if d not in STANDARD_ONNX_DOMAINS:
                    self.ctx.finding(self.member, s, Severity.MEDIUM, "onnx-custom-domain",
                                     f"operator set from non-standard domain {d!r}: needs a custom (native) op library")  # fmt: skip

    def onnx_graph(self, a: int, b: int, depth: int) -> None:
        depth = self.sub(depth)
        for num, wt, s, e in fields(self.buf, a, b):
            if wt != 2:
                continue
            if num == 1:
                self.onnx_node(s, e, depth)
            elif num in (5, 15):
                self.onnx_tensor(s, e)

    def onnx_node(self, a: int, b: int, depth: int) -> None:
        depth = self.sub(depth)
        op, domain = "", ""
        for num, wt, s, e in fields(self.buf, a, b):
            if wt != 2:
                continue
            if num == 4:
                op = _text(self.buf, s, e)
            elif num == 7:
                domain = _text(self.buf, s, e)
            elif num == 5:
                for n2, w2, s2, e2 in fields(self.buf, s, e):
                    if w2 != 2:
                        continue
                    if n2 in (6, 10):
                        self.onnx_graph(s2, e2, depth)
                    elif n2 in (5, 9):
                        self.onnx_tensor(s2, e2)
        if domain not in STANDARD_ONNX_DOMAINS:
            self.ctx.finding(self.member, a, Severity.MEDIUM, "onnx-custom-domain",
                             f"operator {op!r} from non-standard domain {domain!r}")  # fmt: skip

    def onnx_tensor(self, a: int, b: int) -> None:
        for num, wt, s, e in fields(self.buf, a, b):
            if num == 13 and wt == 2:
                key = value = ""
                for n2, w2, s2, e2 in fields(self.buf, s, e):
                    if w2 == 2 and n2 == 1:
                        key = _text(self.buf, s2, e2)
                    elif w2 == 2 and n2 == 2:
                        value = _text(self.buf, s2, e2)
                if key == "location":
                    norm = posixpath.normpath(value.replace("\\", "/"))
                    if value.startswith(("/", "\\")) or (len(value) > 1 and value[1] == ":") or norm.startswith(".."):
                        self.ctx.finding(self.member, s, Severity.HIGH, "onnx-external-data-escape",
                                         f"external data location {value!r} leaves the model's folder")  # fmt: skip

    # SavedModel: SavedModel meta_graphs=2; MetaGraphDef graph_def=2; GraphDef node=1, library=2;
    # FunctionDefLibrary function=1; FunctionDef node_def=3; NodeDef op=2.
    def saved_model(self, a: int, b: int) -> None:
        for num, wt, s, e in fields(self.buf, a, b):
            if num == 2 and wt == 2:
                for n2, w2, s2, e2 in fields(self.buf, s, e):
                    if n2 == 2 and w2 == 2:
                        self.tf_graph(s2, e2)

    def tf_graph(self, a: int, b: int) -> None:
        for num, wt, s, e in fields(self.buf, a, b):
            if wt != 2:
                continue
            if num == 1:
                self.tf_node(s, e)
            elif num == 2:
                for n2, w2, s2, e2 in fields(self.buf, s, e):
                    if n2 == 1 and w2 == 2:
                        for n3, w3, s3, e3 in fields(self.buf, s2, e2):
                            if n3 == 3 and w3 == 2:
                                self.tf_node(s3, e3)

    def tf_node(self, a: int, b: int) -> None:
        for num, wt, s, e in fields(self.buf, a, b):
            if num == 2 and wt == 2:
                op = _text(self.buf, s, e)
                if op in DANGEROUS_TF_OPS:
                    self.ctx.finding(self.member, s, Severity.CRITICAL, "tf-dangerous-op",
                                     f"operation {op} {DANGEROUS_TF_OPS[op]} when the graph runs")  # fmt: skip


def scan_protobuf(ctx: Context, path: str, kind: str) -> None:
    """Scan an ONNX model (``kind='onnx'``) or a SavedModel ``saved_model.pb`` (``kind='savedmodel'``)."""
    size = os.path.getsize(path)
    if size == 0:
        ctx.error("", "empty file")
        return
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        walker = _Walker(ctx, buf, "")
        try:
            if kind == "onnx":
                walker.onnx_model(0, size)
            else:
                walker.saved_model(0, size)
        except ProtoError as exc:
            ctx.error("", f"malformed protobuf: {exc}")
