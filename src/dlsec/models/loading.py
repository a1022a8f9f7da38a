"""Loading models without unpickling arbitrary objects.

Accepted forms:

* ``demo`` / ``demo:NAME``: a bundled demo model (see :mod:`dlsec.models.demo`).
* ``model.pt2``: a ``torch.export`` program saved with ``torch.export.save``. ``torch.export.load`` falls back to
  full unpickling for some payloads, so the archive is inspected first and refused if any payload is pickled or
  is a custom object; the load itself runs with ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``.
* ``model.ts`` / ``.pt`` / ``.pth`` / ``.jit``: a TorchScript archive (``torch.jit.save``). A plain pickled
  ``torch.save(model)`` file is refused.
* ``package.module:factory`` with ``weights``: the factory (the user's own code) builds the module, the weights
  come from safetensors or a torch file loaded with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import torch
from torch import nn

from dlsec.errors import ModelError
from dlsec.models.demo import DEFAULT_DEMO, load_demo

MAX_MODEL_BYTES = 4 << 30
"""Largest model file read (4 GiB), compressed or uncompressed."""

TORCHSCRIPT_SUFFIXES = {".ts", ".pt", ".pth", ".jit", ".torchscript"}


def load_model(spec: str, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """Load a classifier from a spec string (see module docstring); raises :class:`ModelError` on failure."""
    if spec == "demo" or spec.startswith("demo:"):
        return load_demo(spec.partition(":")[2] or DEFAULT_DEMO)
    path = Path(spec)
    if path.suffix == ".pt2":
        _check_file(path)
        return _load_exported(path)
    if path.suffix in TORCHSCRIPT_SUFFIXES:
        _check_file(path)
        return _load_torchscript(path)
    if ":" in spec and not path.exists():
        return _load_factory(spec, weights)
    if not path.exists():
        raise ModelError(f"model file not found: {spec}")
    raise ModelError(
        f"unrecognised model {spec!r}: give a .pt2 export, a TorchScript file, or package.module:factory"
    )


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelError(f"model file {path} is {size} bytes, over the {MAX_MODEL_BYTES}-byte limit")


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Force every ``torch.load`` inside to ``weights_only=True``, even where torch asks for less."""
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _tensor_prefix() -> str:
    try:
        from torch.export.pt2_archive.constants import TENSOR_CONSTANT_FILENAME_PREFIX

        return str(TENSOR_CONSTANT_FILENAME_PREFIX)
    except ImportError:  # pragma: no cover - older torch
        return "tensor_"


def inspect_pt2(path: Path | IO[bytes]) -> None:
    """Refuse a ``.pt2`` archive that would make ``torch.export.load`` unpickle or run native code.

    Raises :class:`ModelError` for: a file that is not a zip, an archive whose uncompressed size is over the
    limit, native code (``.so``, ``.dll``, ``.dylib``, AOTInductor sources), any payload stored as a pickle, and any
    constant that is a custom or opaque object (both are unpickled).
    """
    label = path if isinstance(path, Path) else getattr(path, "name", "the archive")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{label} is not a torch.export archive (not a zip file)") from exc
    prefix = _tensor_prefix()
    with zf:
        infos = zf.infolist()
        total = sum(i.file_size for i in infos)
        if total > MAX_MODEL_BYTES:
            raise ModelError(f"{label} unpacks to {total} bytes, over the {MAX_MODEL_BYTES}-byte limit")
        for info in infos:
            name = info.filename
            if name.endswith((".so", ".dll", ".dylib", ".cpp", ".pyd")):
                raise ModelError(f"{label} carries native code ({name}); refusing to load it")
            if not name.endswith("_config.json"):
                continue
            if info.file_size > 64 << 20:
                raise ModelError(f"{label}: {name} is too large")
            try:
                config = json.loads(zf.read(info)).get("config", {})
            except (ValueError, AttributeError) as exc:
                raise ModelError(f"{label}: {name} is not valid JSON") from exc
            if not isinstance(config, dict):
                raise ModelError(f"{label}: {name} has an unexpected layout")
            for fqn, meta in config.items():
                if not isinstance(meta, dict):
                    raise ModelError(f"{label}: {name} has an unexpected layout")
                if meta.get("use_pickle"):
                    raise ModelError(f"{label}: payload {fqn!r} is a pickle; refusing to unpickle it")
                if "constants" in name and not str(meta.get("path_name", "")).startswith(prefix):
                    raise ModelError(f"{label}: constant {fqn!r} is a custom object; refusing to unpickle it")


def _load_exported(path: Path) -> nn.Module:
    with open(path, "rb") as f:
        return load_exported(f, str(path))


def load_exported(f: IO[bytes], name: str) -> nn.Module:
    """A ``torch.export`` program from an open stream (a file, or bytes decrypted in memory), inspected first."""
    inspect_pt2(f)
    f.seek(0)
    try:
        with _weights_only_loads():
            program = torch.export.load(f)
        return program.module()
    except Exception as exc:  # torch raises many types for a bad archive
        raise ModelError(f"cannot load torch.export program {name}: {_first_line(exc)}") from exc


def is_pt2(f: IO[bytes]) -> bool:
    """Whether a zip stream is a ``torch.export`` archive (it has an ``archive_format`` member saying pt2)."""
    try:
        with zipfile.ZipFile(f) as zf:
            names = [n for n in zf.namelist() if n.endswith("archive_format")]
            return bool(names) and zf.getinfo(names[0]).file_size < 64 and zf.read(names[0]).strip() == b"pt2"
    except (zipfile.BadZipFile, OSError, KeyError):
        return False
    finally:
        f.seek(0)


def weights_from_bytes(data: bytes, name: str) -> dict[str, torch.Tensor]:
    """A state dict from safetensors bytes held in memory (validated by the safetensors library)."""
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"{name} is not a valid safetensors file: {_first_line(exc)}") from exc


def weights_from_file(f: IO[bytes], name: str) -> dict[str, torch.Tensor]:
    """A state dict from an open safetensors file (an in-memory ``memfd``, say), validated by the library.

    A real file descriptor is opened by the library itself (memory-mapped, no extra copy); anything else is read.
    """
    from safetensors import safe_open

    try:
        fd = f.fileno()
    except (OSError, AttributeError, io.UnsupportedOperation):
        fd = -1
    if fd < 0 or not os.path.exists(f"/proc/self/fd/{fd}"):
        f.seek(0)
        return weights_from_bytes(f.read(), name)
    try:
        with safe_open(f"/proc/self/fd/{fd}", framework="pt", device="cpu") as st:  # type: ignore[no-untyped-call]
            return {k: st.get_tensor(k) for k in st.keys()}  # noqa: SIM118 - safe_open has keys(), no iteration
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"{name} is not a valid safetensors file: {_first_line(exc)}") from exc


def torch_load_file(f: IO[bytes], name: str, map_location: object = "cpu") -> object:
    """``torch.load(weights_only=True)`` of an open checkpoint (the caller has scanned it)."""
    f.seek(0)
    try:
        with _weights_only_loads():
            return torch.load(f, map_location=map_location, weights_only=True)  # type: ignore[arg-type]
    except Exception as exc:  # torch raises many types for a bad archive
        raise ModelError(f"cannot load {name} with weights_only=True: {_first_line(exc)}") from exc


def _load_torchscript(path: Path) -> nn.Module:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelError(
            f"cannot load {path} as TorchScript ({_first_line(exc)}); dlsec never unpickles whole models: "
            "save with torch.jit.save or torch.export.save, or use --model package.module:factory --weights FILE"
        ) from exc


def load_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a torch file loaded with ``weights_only=True``."""
    p = Path(path)
    _check_file(p)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        with _weights_only_loads():
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read weights {p}: {_first_line(exc)}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"weights file {p} does not hold a state dict of tensors")
    return state


def _load_factory(spec: str, weights: str | os.PathLike[str] | None) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like uvicorn: the user's own package, from where they run dlsec
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"cannot import {module_name!r} for model {spec!r}: {_first_line(exc)}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"{spec!r}: {attr!r} is not a callable in {module_name}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec!r} did not return a torch.nn.Module")
    if weights is not None:
        state = load_weights(weights)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelError(f"weights {weights} do not fit {spec}: {_first_line(exc)}") from exc
    return model.eval()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
