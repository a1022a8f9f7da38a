"""Keras model configs: Lambda layers and references to code outside Keras, found without loading the model.

Loading a Keras model rebuilds every layer from its JSON config. A ``Lambda`` layer carries Python bytecode (or names
a function to look up), and any ``module`` reference is imported by the loader, so both run code on load. Two places
hold such a config: ``config.json`` inside a Keras 3 ``.keras`` zip (see :func:`scan_keras_zip`) and the root
attribute ``model_config`` of a Keras 2 HDF5 file (see :class:`KerasHdf5Scanner`, which needs the optional
``h5py``). Nothing is ever deserialised beyond the JSON itself.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from typing import Any

from dlsec.scan.engine import Context, ScanLimitError, Scanner
from dlsec.scan.identify import Stream
from dlsec.scan.results import Severity, Skipped

__all__ = ["KerasHdf5Scanner", "analyze_keras_config", "scan_keras_zip"]

MAX_DEPTH = 200
"""Deepest nesting of dicts and lists walked in a config; deeper raises :class:`ScanLimitError`."""

MAX_CONFIG_BYTES = 64 << 20
"""Largest config (``config.json`` or an HDF5 attribute) read."""

SAFE_MODULE_ROOTS = ("keras", "tensorflow.keras", "tf_keras", "keras_hub", "keras_nlp", "keras_cv")
"""Modules a config may reference without a finding: these, and their submodules."""

DANGEROUS_MODULES = frozenset(
    {"os", "posix", "nt", "subprocess", "builtins", "__builtin__", "sys", "importlib", "socket", "shutil", "pickle",
     "_pickle", "marshal", "ctypes", "runpy", "code", "codeop", "pty", "commands", "webbrowser", "types", "io",
     "pathlib", "tempfile", "multiprocessing", "threading", "asyncio", "urllib", "http", "requests", "dill",
     "cloudpickle", "joblib", "numpy.f2py", "operator", "functools", "inspect", "gc", "signal", "platform"}
)  # fmt: skip
"""Modules (or their submodules) whose reference is CRITICAL: they run commands, load code or touch files."""

_MODULE_KEYS = (
    "module",
    "output_shape_module",
)  # Keras 2 Lambda also looks its output_shape function up by module


def _is_safe_module(module: str) -> bool:
    return any(module == root or module.startswith(root + ".") for root in SAFE_MODULE_ROOTS)


def _is_dangerous_module(module: str) -> bool:
    return any(module == bad or module.startswith(bad + ".") for bad in DANGEROUS_MODULES)


def _walk(node: Any, path: str, depth: int) -> Iterator[tuple[str, str, Severity, str]]:
    """(path, message, severity, rule) for everything worth reporting at and under ``node``."""
    if depth > MAX_DEPTH:
        raise ScanLimitError(f"Keras config nested deeper than {MAX_DEPTH} levels at {path or '$'}")
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, f"{path}[{i}]", depth + 1)
        return
    if not isinstance(node, dict):
        return
    here = path or "$"
    class_name = node.get("class_name")
    if class_name == "Lambda":
        yield here, "Lambda layer runs arbitrary Python when loaded", Severity.CRITICAL, "keras-lambda-layer"
    elif class_name == "__lambda__":  # Keras 3's serialised lambda function (bytecode), e.g. an activation
        yield (
            here,
            "serialised Python lambda (bytecode) runs when loaded",
            Severity.CRITICAL,
            "keras-lambda-layer",
        )
    elif class_name == "TFOpLambda":
        yield (
            here,
            "TFOpLambda layer calls a TensorFlow function by name",
            Severity.MEDIUM,
            "keras-tfoplambda-layer",
        )
    module_reported = False
    for key in _MODULE_KEYS:
        module = node.get(key)
        if not isinstance(module, str) or not module or _is_safe_module(module):
            continue
        module_reported = True
        target = f"{module}.{class_name}" if isinstance(class_name, str) and key == "module" else module
        if isinstance(node.get("config"), str) and class_name == "function":  # Keras 3 function reference
            target = f"{module}.{node['config']}"
        elif isinstance(node.get("function"), str):  # Keras 2 Lambda with function_type "function"
            target = f"{module}.{node['function']}"
        if _is_dangerous_module(module):
            yield (
                here,
                f"references {target}: module {module!r} is imported when loaded",
                Severity.CRITICAL,
                "keras-dangerous-module",
            )
        else:
            yield (
                here,
                f"references {target}: custom module {module!r} is imported when loaded",
                Severity.HIGH,
                "keras-custom-module",
            )
    registered = node.get("registered_name")
    if not module_reported and isinstance(registered, str) and ">" in registered:
        package = registered.split(">", 1)[0]
        if not _is_safe_module(package):
            message = f"custom registered object {registered!r}: its code comes from outside Keras"
            yield here, message, Severity.HIGH, "keras-custom-module"
    for key, value in node.items():
        if isinstance(value, dict | list):
            yield from _walk(value, f"{path}.{key}" if path else str(key), depth + 1)


def _analyze(config: Any, root: str = "") -> list[tuple[str, str, Severity, str]]:
    return list(_walk(config, root, 0))


def analyze_keras_config(config: dict[str, Any] | list[Any]) -> list[tuple[str, str, Severity]]:
    """(path in the config, message, severity) for each Lambda layer and each reference to code outside Keras.

    Handles Keras 3 ``config.json`` and Keras 2 ``model_config`` alike, nested models included. Raises
    :class:`ScanLimitError` when the config nests deeper than :data:`MAX_DEPTH`.
    """
    return [(p, m, s) for p, m, s, _ in _analyze(config)]


def _report(ctx: Context, member: str, config: Any, root: str) -> None:
    for path, message, severity, rule in _analyze(config, root):
        ctx.finding(member, None, severity, rule, f"{path}: {message}")


def _decode(raw: Any, what: str) -> Any:
    """A JSON config from an HDF5 attribute value or a zip member's bytes, bounded in size."""
    if hasattr(raw, "tobytes") and not isinstance(raw, bytes | str):  # a numpy scalar or 0-d array
        raw = raw.item() if getattr(raw, "shape", None) == () else raw.tobytes()
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if not isinstance(raw, bytes):
        raise ValueError(f"{what} is not a string but {type(raw).__name__}")
    if len(raw) > MAX_CONFIG_BYTES:
        raise ScanLimitError(f"{what} larger than {MAX_CONFIG_BYTES} bytes")
    return json.loads(raw)


def scan_keras_zip(ctx: Context, zf: zipfile.ZipFile, member_prefix: str) -> None:
    """Analyse the ``config.json`` of a Keras 3 archive; any failure is an error for it (fail closed).

    Keras reads ``config.json`` at the archive's root (the last entry of that name, as :mod:`zipfile` does); every
    root entry of that name is analysed, so a duplicate cannot hide one.
    """
    roots = [i for i in zf.infolist() if i.filename == "config.json"]
    if not roots:
        ctx.error(member_prefix, "Keras v3 archive without a config.json at its root")
        return
    for info in roots:
        member = f"{member_prefix}/{info.filename}" if member_prefix else info.filename
        try:
            if info.file_size > MAX_CONFIG_BYTES:
                raise ScanLimitError(f"config.json larger than {MAX_CONFIG_BYTES} bytes")
            with zf.open(info) as m:
                raw = m.read(MAX_CONFIG_BYTES + 1)
            config = _decode(raw, "config.json")
            if not isinstance(config, dict | list):
                raise ValueError(f"config.json holds a {type(config).__name__}, not a model config")
            _report(ctx, member, config, "")
        except ScanLimitError as exc:
            ctx.error(member, f"limit hit: {exc}")
        except Exception as exc:  # a hostile config must not stop the rest of the archive being scanned
            ctx.error(member, f"Keras config not analysed: {type(exc).__name__}: {exc}")


class KerasHdf5Scanner(Scanner):
    """HDF5 (Keras 2 ``.h5`` models): the ``model_config`` and ``training_config`` root attributes are analysed.

    Needs ``h5py``; without it the file is skipped, never reported clean. An HDF5 file without a model config
    (weights only, or not Keras at all) has nothing that runs code when loaded, so it gets no finding.
    """

    formats = ("hdf5",)

    def scan(self, ctx: Context, f: Stream, member: str) -> None:
        try:
            import h5py
        except ImportError:
            ctx.skipped.append(Skipped(ctx.path, "HDF5 needs h5py (pip install h5py): not scanned"))
            return
        with self._file_like(ctx, f) as fobj, h5py.File(fobj, "r") as h5:
            for attr in ("model_config", "training_config"):
                if attr not in h5.attrs:
                    continue
                aid = h5.attrs.get_id(attr)
                if aid.get_storage_size() > MAX_CONFIG_BYTES:
                    raise ScanLimitError(f"attribute {attr} larger than {MAX_CONFIG_BYTES} bytes")
                config = _decode(h5.attrs[attr], f"attribute {attr}")
                if config is None:
                    continue
                if not isinstance(config, dict | list):
                    raise ValueError(f"attribute {attr} holds a {type(config).__name__}, not a config")
                _report(ctx, member, config, attr)

    @staticmethod
    def _file_like(ctx: Context, f: Stream) -> Any:
        """``f`` itself when it is a real file; otherwise (an archive member) a temporary copy h5py can seek in."""
        try:
            f.fileno()
            f.seek(0)
            return _NoClose(f)
        except (OSError, AttributeError, io.UnsupportedOperation):
            pass
        tmp = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the caller's with)
        f.seek(0)
        shutil.copyfileobj(f, tmp, 1 << 20)  # type: ignore[misc]  # the stream's size is bounded by its reader
        tmp.seek(0)
        return tmp


class _NoClose:
    """A context manager handing back a stream without closing it (the caller owns it)."""

    def __init__(self, f: Stream) -> None:
        self.f = f

    def __enter__(self) -> Stream:
        return self.f

    def __exit__(self, *exc: object) -> None:
        return None
