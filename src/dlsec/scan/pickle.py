"""Static analysis of pickle streams, without unpickling.

A pickle is a program for a small stack machine; the only way it can run code is by importing a callable
(``GLOBAL``, ``STACK_GLOBAL``, ``INST``, the ``EXT*`` extension codes) and calling it (``REDUCE``, ``OBJ``,
``NEWOBJ``, ``BUILD`` ...). This module reads the opcodes one by one from a binary file object, models the
stack and the memo just enough to resolve *which* callables get imported, and classifies each one as
``"safe"`` (on an allowlist of what ordinary model files use), ``"dangerous"`` (can run commands, read or
write files, reach the network, load further pickles or reach arbitrary attributes) or ``"unknown"``.

Nothing here calls :func:`pickle.load` or :func:`pickletools.genops`. Memory stays bounded: byte payloads
are skipped (seeking when the file allows it, else reading in chunks), strings longer than
:data:`MAX_STRING` are skipped too, and the opcode count, the stack depth and the memo have limits; hitting a
limit ends the analysis with ``error`` set, keeping what was found before it.

A result with ``error`` set must not be read as "clean": the scan stopped early or the stream is malformed.
"""

from __future__ import annotations

import codecs
import contextlib
import copyreg
import functools
import re
from dataclasses import dataclass
from typing import BinaryIO

__all__ = [
    "MAX_STRING",
    "Analyses",
    "PickleAnalysis",
    "PickleCall",
    "analyze_pickle",
    "analyze_pickles",
    "classify",
]

MAX_STRING = 64 * 1024  # strings up to this many bytes are kept (module and function names live there)
_CHUNK = 64 * 1024  # read-ahead buffer
_SKIP_CHUNK = 1 << 20  # chunk size when skipping a payload of a file that cannot seek
_MAX_STACK = 1_000_000  # entries on the current stack, and (separately) kept under MARKs
_MAX_MARKS = 100_000  # MARK nesting depth
_MAX_MEMO_STR = 2_000_000  # memo entries whose string value is remembered (beyond: read back as unknown)
_MAX_MEMO_SPARSE = 1_000_000  # memo keys that are not in one dense run 0..n-1
_HIGHEST_PROTOCOL = 5
_KEEP_CLEAN = 1000  # pickles of one stream kept in full even without imports or errors

SAFE, UNKNOWN, DANGEROUS = "safe", "unknown", "dangerous"
_RANK = {SAFE: 0, UNKNOWN: 1, DANGEROUS: 2}


@dataclass(frozen=True)
class PickleCall:
    """One callable (class or function) that the pickle imports."""

    module: str
    name: str
    offset: int  # byte offset of the importing opcode, relative to the start of this pickle
    opcode: str  # GLOBAL, STACK_GLOBAL, INST, EXT1, EXT2, EXT4
    verdict: str  # "safe" | "dangerous" | "unknown"
    reason: str


@dataclass(frozen=True)
class PickleAnalysis:
    """What one pickle imports. ``error``: why parsing stopped early (or the stream is malformed)."""

    calls: tuple[PickleCall, ...]
    error: str | None
    end_offset: int  # offset just after STOP (or where parsing stopped), relative to the start of this pickle
    protocol: int | None
    opcodes: int  # opcodes read


# --------------------------------------------------------------------------------------------- classify

def _names(*items: str) -> frozenset[str]:
    return frozenset(items)


_TORCH_REBUILD = [
    "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
    "_rebuild_parameter_with_state", "_rebuild_device_tensor_from_numpy",
    "_rebuild_device_tensor_from_cpu_tensor", "_rebuild_qtensor", "_rebuild_sparse_tensor",
    "_rebuild_nested_tensor", "_rebuild_meta_tensor_no_storage", "_rebuild_wrapper_subclass",
]
_TORCH_DTYPES = [
    "float32", "float", "float64", "double", "float16", "half", "bfloat16", "complex32", "complex64",
    "complex128", "cfloat", "cdouble", "chalf", "uint8", "uint16", "uint32", "uint64", "int8", "int16",
    "short", "int32", "int", "int64", "long", "bool", "qint8", "quint8", "qint32", "quint4x2", "quint2x4",
    "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
    "float4_e2m1fn_x2", "bits1x8", "bits2x4", "bits4x2", "bits8", "bits16",
    *[f"uint{i}" for i in range(1, 8)], *[f"int{i}" for i in range(1, 8)],
    "per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric",
    "per_channel_affine_float_qparams", "strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr",
    "sparse_bsc", "_mkldnn", "contiguous_format", "channels_last", "channels_last_3d", "preserve_format",
]
_NUMPY_CORE = ["numpy.core", "numpy._core"]

# Full dotted paths that are safe. Checked first, so they may carve exceptions out of a denied module.
_SAFE_EXACT = _names(
    *[f"torch._utils.{n}" for n in _TORCH_REBUILD],
    "torch._tensor._rebuild_from_type_v2", "torch._tensor.Tensor", "torch.Tensor",
    "torch.serialization._get_layout", "torch.device", "torch.Size", "torch.dtype", "torch.layout",
    "torch.memory_format", "torch.storage.TypedStorage", "torch.storage.UntypedStorage",
    "torch.storage._TypedStorage", "torch.nn.parameter.Parameter", "torch.nn.parameter.Buffer",
    "torch.nn.parameter.UninitializedParameter", "torch.nn.parameter.UninitializedBuffer",
    *[f"torch.{n}" for n in _TORCH_DTYPES],
    "collections.OrderedDict", "collections.defaultdict", "collections.Counter", "collections.deque",
    *[f"builtins.{n}" for n in (
        "dict", "list", "set", "frozenset", "tuple", "int", "float", "complex", "bool", "str", "bytes",
        "bytearray", "slice", "range", "object", "NoneType", "Ellipsis", "NotImplemented", "True", "False",
        "None",
    )],
    "copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__",
    "_codecs.encode",
    *[f"{c}.multiarray._reconstruct" for c in _NUMPY_CORE],
    *[f"{c}.multiarray.scalar" for c in _NUMPY_CORE],
    *[f"{c}.numeric._frombuffer" for c in _NUMPY_CORE],
    "numpy.ndarray", "numpy.dtype", "numpy.ma.core._mareconstruct", "numpy.ma.core.MaskedArray",
    "numpy.random._pickle.__randomstate_ctor", "numpy.random._pickle.__bit_generator_ctor",
    "numpy.random._pickle.__generator_ctor", "numpy.random.__RandomState_ctor",
    "numpy.random.bit_generator.__pyx_unpickle_SeedSequence", "numpy.random.bit_generator.SeedSequence",
    "joblib.numpy_pickle.NumpyArrayWrapper", "joblib.numpy_pickle_compat.NDArrayWrapper",
    "sklearn.tree._tree.Tree", "argparse.Namespace", "types.SimpleNamespace",
    "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePath", "pathlib.PurePosixPath",
    "pathlib.PureWindowsPath",
    *[f"datetime.{n}" for n in ("datetime", "date", "time", "timedelta", "timezone", "tzinfo")],
    "decimal.Decimal", "fractions.Fraction", "uuid.UUID", "enum.Enum",
)

# Module prefixes (a path equal to one, or under it) whose callables are dangerous.
_DANGEROUS_PREFIXES = _names(
    "os", "posix", "nt", "_posixsubprocess", "subprocess", "pty", "shutil", "sys", "socket", "_socket",
    "ssl", "select", "selectors", "ctypes", "_ctypes", "cffi", "importlib", "imp", "zipimport", "pkgutil",
    "runpy", "code", "codeop", "compileall", "py_compile", "pickle", "_pickle", "cPickle", "pickletools",
    "dill", "cloudpickle", "marshal", "shelve", "dbm", "webbrowser", "urllib", "urllib2", "urllib3",
    "requests", "httpx", "aiohttp", "http", "httplib", "ftplib", "smtplib", "telnetlib", "poplib",
    "imaplib", "nntplib", "xmlrpc", "xmlrpclib", "socketserver", "asyncio", "multiprocessing",
    "_multiprocessing", "concurrent", "threading", "_thread", "thread", "signal", "tempfile", "glob",
    "_io", "io.open", "io.open_code", "io.FileIO", "fileinput", "pydoc", "bdb", "pdb", "timeit",
    "cProfile", "profile", "trace", "distutils", "setuptools", "pip", "ensurepip", "venv", "sysconfig",
    "platform.popen", "gc", "logging.config", "commands", "popen2", "sqlite3", "_sqlite3", "mmap",
    "resource", "fcntl", "termios", "tty", "syslog", "pwd", "grp", "crypt", "spwd", "builtins.eval",
    "builtins.exec", "builtins.execfile", "builtins.compile", "builtins.open", "builtins.file",
    "builtins.__import__", "builtins.getattr", "builtins.setattr", "builtins.delattr", "builtins.globals",
    "builtins.locals", "builtins.vars", "builtins.input", "builtins.raw_input", "builtins.breakpoint",
    "builtins.help", "builtins.exit", "builtins.quit", "builtins.apply", "builtins.reload",
    "builtins.__loader__", "builtins.__spec__", "builtins.__builtins__",
    "types.CodeType", "types.FunctionType", "types.LambdaType", "types.MethodType", "types.ModuleType",
    "operator.attrgetter", "operator.methodcaller", "functools.partial", "functools.partialmethod",
    "functools.reduce", "torch.load", "torch.serialization", "torch.hub", "torch.jit", "torch.package",
    "torch.classes", "torch.ops", "torch._ops", "torch.utils.cpp_extension", "torch.storage._load_from_bytes",
    "torch._C._jit_pass", "torch.compile", "torch._dynamo", "torch._inductor",
    "numpy.load", "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile", "numpy.memmap", "numpy.lib.npyio",
    "numpy.lib._npyio_impl", "numpy.lib.format", "numpy.ctypeslib", "numpy.testing", "numpy.f2py",
    "numpy.distutils", "joblib.load", "joblib.numpy_pickle.load", "joblib.parallel", "joblib.Parallel",
    "pandas.read_pickle", "pandas.io.pickle", "yaml.load", "yaml.unsafe_load",
    # Modules that open, create or delete files when a class is constructed or a method is reached through a
    # dotted name (pathlib.Path.write_text); the plain classes allowed above stay allowed.
    "pathlib", "zipfile", "tarfile", "gzip", "bz2", "lzma", "codecs.open", "linecache", "joblib",
    "sklearn.utils.parallel", "sklearn.utils._joblib", "sklearn.externals",
)

# Attribute names whose presence anywhere in a path reaches interpreter internals.
_DANGEROUS_ATTRS = _names(
    "__globals__", "__builtins__", "__subclasses__", "__code__", "__import__", "__getattribute__",
    "__getattr__", "__setattr__", "__delattr__", "__bases__", "__base__", "__mro__", "__dict__",
    "__closure__", "__func__", "__self__", "__loader__", "__spec__", "__reduce__", "__reduce_ex__",
    "__class__", "__init_subclass__", "func_globals", "f_globals", "f_locals", "f_builtins", "f_back",
    "gi_frame", "cr_frame", "ag_frame", "tb_frame", "tb_next",
)

_CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9_]*\Z")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Modules whose public classes (CamelCase, no dotted name) are data containers of ordinary models.
_SAFE_CLASS_MODULES = ("torch.nn.modules", "torch.nn", "torch.optim", "torch.ao.nn", "sklearn",
                       "numpy.random")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def _denied(path: str) -> str | None:
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        p = ".".join(parts[:i])
        if p in _DANGEROUS_PREFIXES:
            return p
    return None


def _classify_one(module: str, name: str) -> tuple[str, str]:
    full = f"{module}.{name}"
    parts = full.split(".")
    if "" in parts or not all(_IDENT.match(p) for p in parts):
        bad = {p for p in parts if p in _DANGEROUS_ATTRS}
        if bad:
            return DANGEROUS, f"{full}: reaches {sorted(bad)[0]}"
        return UNKNOWN, f"{full}: not a plain dotted name"
    if full in _SAFE_EXACT:
        return SAFE, f"{full}: on the allowlist of ordinary model files"
    hit = _denied(full)
    if hit is not None:
        return DANGEROUS, f"{full}: {hit} can run code, touch files or the network, or load pickles"
    attrs = [p for p in parts if p in _DANGEROUS_ATTRS]
    if attrs:
        return DANGEROUS, f"{full}: reaches {attrs[0]} through an attribute chain"
    name_parts = name.split(".")
    if len(name_parts) > 1:
        # Protocol >= 4 resolves a dotted name as getattr chain: a denied module reached as an attribute
        # (e.g. torch.os.system) counts as that module.
        for i in range(len(name_parts)):
            hit = _denied(".".join(name_parts[i:]))
            if hit is not None:
                return DANGEROUS, f"{full}: reaches {hit} through an attribute chain"
        return UNKNOWN, f"{full}: dotted name (attribute chain) not on the allowlist"
    if module == "torch" and re.fullmatch(r"(cuda\.)?[A-Za-z0-9]*Storage", name):
        return SAFE, f"{full}: a torch storage class"
    if re.fullmatch(r"torch(\.cuda)?(\.sparse)?", module) and re.fullmatch(r"[A-Z][a-z0-9]*Tensor", name):
        return SAFE, f"{full}: a torch tensor class"
    if re.fullmatch(r"torch\.cuda", module) and re.fullmatch(r"[A-Za-z0-9]*Storage", name):
        return SAFE, f"{full}: a torch storage class"
    if _CLASS_NAME.match(name) and any(_under(module, m) for m in _SAFE_CLASS_MODULES):
        return SAFE, f"{full}: a class of {module.split('.')[0]} (model/estimator data)"
    return UNKNOWN, f"{full}: not on the allowlist"


def _worse(a: tuple[str, str], b: tuple[str, str]) -> tuple[str, str]:
    return b if _RANK[b[0]] > _RANK[a[0]] else a


@functools.lru_cache(maxsize=4096)
def classify(module: str, name: str) -> tuple[str, str]:
    """Judge the callable ``module``.``name`` (``name`` may be dotted): ``(verdict, reason)``.

    Python 2 spellings (``__builtin__``, ``copy_reg``, ``commands`` ...) are judged both as written and as
    Python 3 maps them when loading protocol < 3 pickles; the worse verdict wins.
    """
    import _compat_pickle

    result = _classify_one(module, name)
    mapped = _compat_pickle.NAME_MAPPING.get((module, name))
    if mapped is None and module in _compat_pickle.IMPORT_MAPPING:
        mapped = (_compat_pickle.IMPORT_MAPPING[module], name)
    if mapped is not None and mapped != (module, name):
        m = _classify_one(*mapped)
        # e.g. __builtin__.set is only a Python 2 spelling of builtins.set: the mapped verdict stands
        result = m if result[0] == UNKNOWN and m[0] == SAFE else _worse(result, m)
    return result


def _classify_partial(module: str | None, name: str | None) -> tuple[str, str]:
    """A STACK_GLOBAL whose module and/or name could not be resolved."""
    if module is not None:
        hit = _denied(module)
        if hit is not None:
            return DANGEROUS, f"{module}.?: {hit} is dangerous whatever the (unresolved) name"
    if name is not None and any(p in _DANGEROUS_ATTRS for p in name.split(".")):
        return DANGEROUS, f"?.{name}: reaches interpreter internals"
    return UNKNOWN, "STACK_GLOBAL operands are not string constants this scan can resolve"


# ----------------------------------------------------------------------------------------------- reader

class _Truncated(Exception):
    pass


class _Reader:
    """Buffered, bounded reads over a binary file object; ``pos`` counts bytes consumed."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.buf = b""
        self.i = 0
        self.consumed = 0  # bytes taken from the file so far (the buffer's end)
        try:
            self.seekable = bool(f.seekable())
        except Exception:
            self.seekable = False
        self.base = 0
        if self.seekable:
            try:
                self.base = f.tell()
            except Exception:
                self.seekable = False
        self._size: int | None = None

    @property
    def pos(self) -> int:
        return self.consumed - (len(self.buf) - self.i)

    def _raw_read(self, n: int) -> bytes:
        data = self.f.read(n)
        if not data:
            return b""
        self.consumed += len(data)
        return bytes(data)

    def _fill(self, n: int) -> bool:
        """Make ``n`` bytes available in the buffer (n <= MAX_STRING-ish); False at EOF."""
        avail = len(self.buf) - self.i
        if avail >= n:
            return True
        parts = [self.buf[self.i:]]
        while avail < n:
            data = self._raw_read(max(_CHUNK, n - avail))
            if not data:
                break
            parts.append(data)
            avail += len(data)
        self.buf = b"".join(parts)
        self.i = 0
        return avail >= n

    def peek1(self) -> int | None:
        if not self._fill(1):
            return None
        return self.buf[self.i]

    def byte(self) -> int:
        if self.i >= len(self.buf) and not self._fill(1):
            raise _Truncated
        b = self.buf[self.i]
        self.i += 1
        return b

    def read(self, n: int) -> bytes:
        if not self._fill(n):
            self.i = len(self.buf)
            raise _Truncated
        out = self.buf[self.i:self.i + n]
        self.i += n
        return out

    def skip(self, n: int) -> None:
        avail = len(self.buf) - self.i
        if n <= avail:
            self.i += n
            return
        n -= avail
        self.buf, self.i = b"", 0
        if self.seekable:
            try:
                if self._size is None:
                    here = self.f.tell()
                    self._size = self.f.seek(0, 2)
                    self.f.seek(here)
                here = self.base + self.consumed
                target = min(here + n, self._size)
                self.f.seek(target)
                self.consumed += target - here
                if target - here < n:
                    raise _Truncated
                return
            except _Truncated:
                raise
            except Exception:
                self.seekable = False  # fall back to reading
        while n > 0:
            data = self._raw_read(min(n, _SKIP_CHUNK))
            if not data:
                raise _Truncated
            n -= len(data)
        if n < 0:  # read more than asked (a misbehaving file object): keep the excess
            self.buf, self.i = data[len(data) + n:], 0

    def readline(self) -> bytes | None:
        """Bytes up to (not including) the next newline; None when longer than MAX_STRING (skipped)."""
        kept: list[bytes] = []
        total = 0
        while True:
            j = self.buf.find(b"\n", self.i)
            if j >= 0:
                piece = self.buf[self.i:j]
                self.i = j + 1
                total += len(piece)
                if total > MAX_STRING:
                    return None
                kept.append(piece)
                return b"".join(kept)
            piece = self.buf[self.i:]
            total += len(piece)
            if total <= MAX_STRING:
                kept.append(piece)
            else:
                kept = []
            self.buf, self.i = b"", 0
            if not self._fill(1):
                raise _Truncated

    def sync(self) -> None:
        """Put the file's position at ``pos`` (where the analysis stopped), when it can seek."""
        if self.seekable:
            with contextlib.suppress(Exception):
                self.f.seek(self.base + self.pos)


# ---------------------------------------------------------------------------------------------- opcodes

_OPNAMES = {
    0x28: "MARK", 0x2E: "STOP", 0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x46: "FLOAT", 0x49: "INT",
    0x4A: "BININT", 0x4B: "BININT1", 0x4C: "LONG", 0x4D: "BININT2", 0x4E: "NONE", 0x50: "PERSID",
    0x51: "BINPERSID", 0x52: "REDUCE", 0x53: "STRING", 0x54: "BINSTRING", 0x55: "SHORT_BINSTRING",
    0x56: "UNICODE", 0x58: "BINUNICODE", 0x61: "APPEND", 0x62: "BUILD", 0x63: "GLOBAL", 0x64: "DICT",
    0x7D: "EMPTY_DICT", 0x65: "APPENDS", 0x67: "GET", 0x68: "BINGET", 0x69: "INST", 0x6A: "LONG_BINGET",
    0x6C: "LIST", 0x5D: "EMPTY_LIST", 0x6F: "OBJ", 0x70: "PUT", 0x71: "BINPUT", 0x72: "LONG_BINPUT",
    0x73: "SETITEM", 0x74: "TUPLE", 0x29: "EMPTY_TUPLE", 0x75: "SETITEMS", 0x47: "BINFLOAT",
    0x80: "PROTO", 0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x85: "TUPLE1",
    0x86: "TUPLE2", 0x87: "TUPLE3", 0x88: "NEWTRUE", 0x89: "NEWFALSE", 0x8A: "LONG1", 0x8B: "LONG4",
    0x42: "BINBYTES", 0x43: "SHORT_BINBYTES", 0x8C: "SHORT_BINUNICODE", 0x8D: "BINUNICODE8",
    0x8E: "BINBYTES8", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET", 0x92: "NEWOBJ_EX",
    0x93: "STACK_GLOBAL", 0x94: "MEMOIZE", 0x95: "FRAME", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER",
    0x98: "READONLY_BUFFER",
}
# Opcodes a protocol 0/1 pickle can start with (used to decide whether bytes after a STOP are another pickle).
_START_OPS = frozenset(
    ord(c) for c in "(NIJKLMFGPSTUVX]})cgh" "ijlpqrd"
) | {0x80}


class _Unknown:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<?>"


_U = _Unknown()  # any value the scan does not track (strings, small ints, tuples and dicts are tracked)


class _Global:
    """An imported callable on the symbolic stack."""

    __slots__ = ("module", "name")

    def __init__(self, module: str | None, name: str | None) -> None:
        self.module, self.name = module, name

    def key(self) -> str:
        return f"{self.module}.{self.name}"


class _DType:
    """``numpy.dtype(descr)`` on the symbolic stack."""

    __slots__ = ("descr",)

    def __init__(self, descr: str) -> None:
        self.descr = descr


class _ArrayWrapper:
    """joblib's ``NumpyArrayWrapper``: after its BUILD, joblib reads the array bytes raw from the stream."""

    __slots__ = ()


_JOBLIB_WRAPPERS = {"joblib.numpy_pickle.NumpyArrayWrapper", "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper"}
_MAX_RAW_ARRAY = 1 << 40


def _joblib_array_bytes(state: dict[str, object]) -> tuple[int, bool] | None:
    """Bytes of raw array data that follow a NumpyArrayWrapper's BUILD, and whether a padding byte precedes them.

    ``None`` when the state is not fully known (then parsing goes on and fails loudly if raw bytes follow), or when
    the dtype holds objects (joblib then writes a nested pickle, which the walker reads as opcodes).
    """
    import numpy as np

    dtype, shape = state.get("dtype"), state.get("shape")
    if not isinstance(dtype, _DType) or not isinstance(shape, tuple) or not all(isinstance(d, int) for d in shape):
        return None
    try:
        dt = np.dtype(dtype.descr)
    except (TypeError, ValueError):
        return None
    if dt.hasobject:
        return None
    count = 1
    for d in shape:
        count *= d
    return count * dt.itemsize, isinstance(state.get("numpy_array_alignment_bytes"), int)


def _le(b: bytes) -> int:
    return int.from_bytes(b, "little")


def _analyze(r: _Reader, max_opcodes: int) -> PickleAnalysis:
    start = r.pos
    calls: list[PickleCall] = []
    stack: list[object] = []
    metastack: list[list[object]] = []
    saved = 0  # entries kept under MARKs
    memo_str: dict[int, object] = {}  # strings, imported callables and dtypes, by memo key
    memo_dense = 0  # memo keys 0..memo_dense-1 all exist
    memo_sparse: set[int] = set()
    protocol: int | None = None
    n = 0
    error: str | None = None
    anomaly: str | None = None
    off = 0
    op = 0

    def note(msg: str) -> None:
        nonlocal anomaly
        if anomaly is None:
            anomaly = f"malformed pickle: {msg} at offset {off} ({_OPNAMES.get(op, hex(op))})"

    def pop() -> object:
        if stack:
            return stack.pop()
        note("stack underflow")
        return _U

    def pop_mark() -> list[object]:
        nonlocal stack, saved
        items = stack
        if metastack:
            stack = metastack.pop()
            saved -= len(stack)
        else:
            note("no MARK on the stack")
            stack = []
        return items

    def memo_put(idx: int, value: object) -> None:
        nonlocal memo_dense
        if idx == memo_dense:
            memo_dense += 1
            while memo_sparse and memo_dense in memo_sparse:
                memo_sparse.discard(memo_dense)
                memo_dense += 1
        elif idx > memo_dense and idx not in memo_sparse:
            if len(memo_sparse) >= _MAX_MEMO_SPARSE:
                raise _Limit(f"memo limit ({_MAX_MEMO_SPARSE} sparse keys) hit")
            memo_sparse.add(idx)
        if isinstance(value, (str, _Global, _DType)):  # names, callables and dtypes reused through the memo
            if idx in memo_str or len(memo_str) < _MAX_MEMO_STR:
                memo_str[idx] = value
        else:
            memo_str.pop(idx, None)

    def memo_get(idx: int) -> object:
        if idx in memo_str:
            return memo_str[idx]
        if not (idx < memo_dense or idx in memo_sparse):
            note(f"memo key {idx} not found")
        return _U

    def add_call(module: str | None, name: str | None, opname: str) -> None:
        if module is None or name is None:
            verdict, reason = _classify_partial(module, name)
        else:
            verdict, reason = classify(module, name)
        calls.append(PickleCall(module if module is not None else "?", name if name is not None else "?",
                                off, opname, verdict, reason))

    def text(line: bytes | None) -> str | None:
        if line is None:
            return None
        return line.decode("utf-8", "backslashreplace")

    def line_int(line: bytes | None) -> int:
        try:
            if line is None:
                raise ValueError
            return int(line)
        except ValueError:
            raise _Bad(f"bad integer argument {line[:40]!r}" if line is not None else "over-long line") \
                from None

    try:
        while True:
            if n >= max_opcodes:
                error = f"opcode limit ({max_opcodes}) hit at offset {r.pos - start}"
                break
            buf, i = r.buf, r.i
            if i < len(buf):  # the common case inlined: this loop runs once per opcode
                off = r.consumed - len(buf) + i - start
                op = buf[i]
                r.i = i + 1
            else:
                off = r.pos - start
                op = r.byte()
            n += 1
            if len(stack) > _MAX_STACK:
                raise _Limit(f"stack limit ({_MAX_STACK}) hit")
            if op == 0x2E:  # STOP
                break
            elif op == 0x94:  # MEMOIZE
                memo_put(memo_dense + len(memo_sparse), stack[-1] if stack else pop())
            elif op == 0x8C:  # SHORT_BINUNICODE
                stack.append(r.read(r.byte()).decode("utf-8", "surrogatepass"))
            elif op in (0x58, 0x8D, 0x54, 0x55):  # BINUNICODE, BINUNICODE8, BINSTRING, SHORT_BINSTRING
                if op == 0x55:
                    size = r.byte()
                elif op == 0x8D:
                    size = _le(r.read(8))
                elif op == 0x54:
                    size = int.from_bytes(r.read(4), "little", signed=True)
                    if size < 0:
                        raise _Bad("negative BINSTRING length")
                else:
                    size = _le(r.read(4))
                if size > MAX_STRING:
                    r.skip(size)
                    stack.append(_U)
                else:
                    raw = r.read(size)
                    stack.append(raw.decode("latin-1") if op in (0x54, 0x55)
                                 else raw.decode("utf-8", "surrogatepass"))
            elif op in (0x42, 0x43, 0x8E, 0x96, 0x8A, 0x8B):  # bytes payloads and long ints: skipped
                if op in (0x43, 0x8A):
                    size = r.byte()
                elif op in (0x42, 0x8B):
                    size = int.from_bytes(r.read(4), "little", signed=(op == 0x8B))
                    if size < 0:
                        raise _Bad("negative LONG4 length")
                else:
                    size = _le(r.read(8))
                r.skip(size)
                stack.append(_U)
            elif op in (0x71, 0x72, 0x70):  # BINPUT, LONG_BINPUT, PUT
                idx = r.byte() if op == 0x71 else _le(r.read(4)) if op == 0x72 else line_int(r.readline())
                if idx < 0:
                    raise _Bad("negative PUT argument")
                memo_put(idx, stack[-1] if stack else pop())
            elif op in (0x68, 0x6A, 0x67):  # BINGET, LONG_BINGET, GET
                idx = r.byte() if op == 0x68 else _le(r.read(4)) if op == 0x6A else line_int(r.readline())
                stack.append(memo_get(idx))
            elif op == 0x93:  # STACK_GLOBAL
                name, module = pop(), pop()
                add_call(module if isinstance(module, str) else None,
                         name if isinstance(name, str) else None, "STACK_GLOBAL")
                stack.append(_Global(module if isinstance(module, str) else None,
                                     name if isinstance(name, str) else None))
            elif op in (0x63, 0x69):  # GLOBAL, INST
                module_s, name_s = text(r.readline()), text(r.readline())
                add_call(module_s, name_s, "GLOBAL" if op == 0x63 else "INST")
                if op == 0x69:
                    pop_mark()
                stack.append(_Global(module_s, name_s) if op == 0x63 else _U)
            elif op in (0x82, 0x83, 0x84):  # EXT1, EXT2, EXT4
                code = r.byte() if op == 0x82 else _le(r.read(2 if op == 0x83 else 4))
                opname = _OPNAMES[op]
                target = getattr(copyreg, "_inverted_registry", {}).get(code)
                if target is not None:
                    verdict, reason = classify(*target)
                    if verdict == SAFE:
                        verdict = UNKNOWN
                    calls.append(PickleCall(target[0], target[1], off, opname, verdict,
                                            f"extension code {code}, registered here as {reason}; the "
                                            "loading process's copyreg registry decides"))
                else:
                    calls.append(PickleCall("copyreg", f"extension {code}", off, opname, UNKNOWN,
                                            f"copyreg extension {code}: resolved at load time through "
                                            "copyreg._extension_registry, which a static scan cannot see"))
                stack.append(_U)
            elif op == 0x28:  # MARK
                if len(metastack) >= _MAX_MARKS:
                    raise _Limit(f"MARK nesting limit ({_MAX_MARKS}) hit")
                saved += len(stack)
                if saved > _MAX_STACK:
                    raise _Limit(f"stack limit ({_MAX_STACK}) hit")
                metastack.append(stack)
                stack = []
            elif op == 0x7D:  # EMPTY_DICT: tracked, for joblib's array states
                stack.append({})
            elif op == 0x29:  # EMPTY_TUPLE
                stack.append(())
            elif op in (0x4E, 0x88, 0x89, 0x5D, 0x8F, 0x97):  # pushes of untracked values
                stack.append(_U)
            elif op in (0x4B, 0x4D, 0x4A):  # BININT1, BININT2, BININT
                raw = r.read({0x4B: 1, 0x4D: 2, 0x4A: 4}[op])
                stack.append(int.from_bytes(raw, "little", signed=op == 0x4A))
            elif op == 0x47:  # BINFLOAT
                r.read(8)
                stack.append(_U)
            elif op in (0x49, 0x4C, 0x46, 0x50):  # INT, LONG, FLOAT, PERSID: text line
                r.readline()
                stack.append(_U)
            elif op == 0x53:  # STRING: quoted, escaped text
                line = r.readline()
                if line is None:
                    stack.append(_U)
                elif len(line) >= 2 and line[:1] == line[-1:] and line[:1] in (b'"', b"'"):
                    try:
                        stack.append(codecs.escape_decode(line[1:-1])[0].decode("latin-1"))
                    except Exception:
                        stack.append(_U)
                else:
                    raise _Bad("the STRING opcode argument must be quoted")
            elif op == 0x56:  # UNICODE: raw-unicode-escape text
                line = r.readline()
                try:
                    stack.append(line.decode("raw-unicode-escape") if line is not None else _U)
                except Exception:
                    stack.append(_U)
            elif op == 0x62:  # BUILD: pop the state, keep the object
                state = pop()
                obj = stack[-1] if stack else _U
                if isinstance(obj, _ArrayWrapper) and isinstance(state, dict):
                    raw_array = _joblib_array_bytes(state)
                    if raw_array is not None:
                        nbytes, padded = raw_array
                        if nbytes > _MAX_RAW_ARRAY:
                            raise _Limit(f"joblib array of {nbytes} bytes")
                        if padded:
                            r.skip(r.byte())
                        r.skip(nbytes)  # the array's bytes sit raw in the stream: joblib reads them here
                    elif isinstance(state.get("dtype"), _DType):
                        # An object array: joblib writes it as a separate pickle, read by a fresh unpickler (its
                        # own memo), right here in the stream.
                        nested = _analyze(r, max(max_opcodes - n, 1))
                        calls.extend(nested.calls)
                        n += nested.opcodes
                        if nested.error:
                            raise _Bad(f"in a joblib object array: {nested.error}")
                    stack[-1] = _U
            elif op in (0x61, 0x30):  # APPEND, POP
                if op == 0x30 and not stack and metastack:
                    pop_mark()  # as the unpickler does: POP on an empty stack drops the MARK
                else:
                    pop()
            elif op == 0x75:  # SETITEMS
                items = pop_mark()
                if stack and isinstance(stack[-1], dict):
                    for k, v in zip(items[::2], items[1::2], strict=False):
                        if isinstance(k, str):
                            stack[-1][k] = v
            elif op in (0x65, 0x90, 0x31):  # APPENDS, ADDITEMS, POP_MARK
                pop_mark()
            elif op == 0x74:  # TUPLE
                items = pop_mark()  # first: pop_mark rebinds `stack`
                stack.append(tuple(items))
            elif op == 0x64:  # DICT
                items = pop_mark()
                stack.append({k: v for k, v in zip(items[::2], items[1::2], strict=False) if isinstance(k, str)})
            elif op in (0x6C, 0x91, 0x6F):  # LIST, FROZENSET, OBJ
                pop_mark()
                stack.append(_U)
            elif op in (0x85, 0x86, 0x87):  # TUPLE1..3
                items = [pop() for _ in range(op - 0x84)]
                stack.append(tuple(reversed(items)))
            elif op in (0x52, 0x81):  # REDUCE, NEWOBJ: callable + args -> result
                args, func = pop(), pop()
                func_key = func.key() if isinstance(func, _Global) else ""
                if op == 0x81 and func_key in _JOBLIB_WRAPPERS:
                    stack.append(_ArrayWrapper())
                elif func_key in ("numpy.dtype", "numpy.core.multiarray.dtype") and isinstance(args, tuple) and args \
                        and isinstance(args[0], str):
                    stack.append(_DType(args[0]))
                else:
                    stack.append(_U)
            elif op == 0x92:  # NEWOBJ_EX: cls, args, kwargs -> obj
                pop()
                pop()
                pop()
                stack.append(_U)
            elif op == 0x73:  # SETITEM
                item, dict_key = pop(), pop()
                if stack and isinstance(stack[-1], dict) and isinstance(dict_key, str):
                    stack[-1][dict_key] = item
            elif op == 0x32:  # DUP
                stack.append(stack[-1] if stack else pop())
            elif op == 0x51:  # BINPERSID
                pop()
                stack.append(_U)
            elif op == 0x98:  # READONLY_BUFFER
                if not stack:
                    note("stack underflow")
            elif op == 0x80:  # PROTO
                p = r.byte()
                if p > _HIGHEST_PROTOCOL:
                    raise _Bad(f"unsupported pickle protocol {p}")
                if protocol is None:
                    protocol = p
            elif op == 0x95:  # FRAME: only a length marker; its contents are opcodes
                r.read(8)
            else:
                raise _Bad(f"invalid opcode 0x{op:02x}")
    except _Truncated:
        error = f"truncated: pickle data ends inside {_OPNAMES.get(op, hex(op))} at offset {off}"
    except (_Bad, _Limit) as e:
        error = f"{e} at offset {off}"
    except UnicodeDecodeError:
        error = f"undecodable string at offset {off}"
    except OSError:
        raise  # an I/O error is not a property of the pickle
    except Exception as e:  # a last guard: the analysis itself must never raise on hostile input
        error = f"internal error ({type(e).__name__}: {e}) at offset {off}"
    if error is None and anomaly is not None:
        error = anomaly
    return PickleAnalysis(tuple(calls), error, r.pos - start, protocol, n)


class _Bad(Exception):
    pass


class _Limit(Exception):
    pass


def analyze_pickle(f: BinaryIO, *, max_opcodes: int = 50_000_000, start: int | None = None) -> PickleAnalysis:
    """Analyse ONE pickle, from the file's current position (or ``start``) up to its STOP.

    Offsets in the result are relative to where the pickle starts. When the file can seek, it is left
    positioned just after the STOP (or wherever parsing stopped).
    """
    if start is not None:
        f.seek(start)
    r = _Reader(f)
    result = _analyze(r, max_opcodes)
    r.sync()
    return result


class Analyses(list[PickleAnalysis]):
    """The analyses of one stream of pickles, with ``opcodes``: the opcodes read in all of them."""

    opcodes: int = 0


def analyze_pickles(f: BinaryIO, *, max_opcodes: int = 50_000_000, start: int | None = None,
                    max_pickles: int | None = None) -> Analyses:
    """Analyse pickles stored one after another (the legacy ``torch.save`` format).

    After each STOP, keeps going while more bytes follow that start with a plausible pickle opcode (PROTO or
    a protocol 0/1 opcode); stops at EOF, at an implausible byte, after a pickle that ended in an error, or
    after ``max_pickles``. Each analysis has offsets relative to its own start; pickle k+1 starts at the
    ``end_offset`` of pickle k. ``max_opcodes`` applies to all the pickles together. (A legacy torch file holds
    5 pickles followed by raw storage bytes, which can look like opcodes: pass ``max_pickles=5`` there.)
    Beyond the first :data:`_KEEP_CLEAN` pickles, those with no import and no error are counted but not kept, so
    millions of tiny pickles in a row do not fill memory.
    """
    if start is not None:
        f.seek(start)
    r = _Reader(f)
    out = Analyses()
    count = used = 0
    while max_pickles is None or count < max_pickles:
        if count:
            nxt = r.peek1()
            if nxt is None or nxt not in _START_OPS:
                break
        result = _analyze(r, max_opcodes - used)
        count += 1
        used += result.opcodes
        if count <= _KEEP_CLEAN or result.calls or result.error is not None:
            out.append(result)
        if result.error is not None and not result.error.startswith("malformed"):
            break  # parsing stopped inside this pickle (or the opcode budget is spent): not at an opcode boundary
    r.sync()
    out.opcodes = used
    return out
