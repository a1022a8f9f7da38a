"""Loaders by name: which framework call opens a file of each format, and how a file's loader is picked.

The loaders themselves run in the child (:mod:`dlsec.sandbox.child`); this module only describes them and picks one
for a file, by file name first (the call a user of that file would make) and by content (magic bytes) otherwise.
"""

from __future__ import annotations

import importlib.util
import zipfile
from dataclasses import dataclass
from pathlib import Path

from dlsec.errors import InputError
from dlsec.scan.identify import sniff


@dataclass(frozen=True)
class Loader:
    """A framework load call: ``requires`` are the modules it needs, ``suffixes`` the file names it is picked for."""

    name: str
    call: str
    requires: tuple[str, ...]
    suffixes: tuple[str, ...]

    def available(self) -> bool:
        """Whether every module the loader needs is installed (in this interpreter, which the child reuses)."""
        return all(importlib.util.find_spec(m) is not None for m in self.requires)


LOADERS: dict[str, Loader] = {
    ld.name: ld
    for ld in (
        Loader("torch", "torch.load(path, map_location='cpu', weights_only=False)", ("torch",),
               (".pt", ".pth", ".bin", ".ckpt", ".tar")),
        Loader("torchscript", "torch.jit.load(path, map_location='cpu')", ("torch",), (".ptl", ".torchscript")),
        Loader("pickle", "pickle.load(open(path, 'rb'))", (), (".pkl", ".pickle", ".p", ".dat")),
        Loader("joblib", "joblib.load(path)", ("joblib",), (".joblib", ".jbl", ".gz", ".bz2", ".xz", ".lzma", ".z",
                                                            ".lz4")),
        Loader("numpy", "numpy.load(path, allow_pickle=True), every member of an .npz read", ("numpy",),
               (".npy", ".npz")),
        Loader("keras", "keras.models.load_model(path)", ("keras",), (".keras", ".h5", ".hdf5")),
        Loader("safetensors", "safetensors.numpy.load_file(path)", ("safetensors", "numpy"), (".safetensors",)),
    )
}  # fmt: skip
"""The registry: ``dlsec sandbox --loader NAME`` picks one by name."""

MAX_HEAD = 512


def get_loader(name: str) -> Loader:
    """The loader called ``name``; an :class:`InputError` names the known ones otherwise."""
    try:
        return LOADERS[name]
    except KeyError:
        raise InputError(f"unknown loader {name!r}; known: {', '.join(LOADERS)}") from None


def pick_loader(path: str | Path) -> Loader:
    """The loader for ``path``: by suffix where the loader is installed, else by content; InputError if none fits."""
    p = Path(path)
    suffix = p.suffix.lower()
    for ld in LOADERS.values():
        if suffix in ld.suffixes and ld.available():
            return ld
    with open(p, "rb") as f:
        head = f.read(MAX_HEAD)
    fmt = sniff(head)
    by_content = {"npy": "numpy", "pickle": "pickle", "pickle0": "pickle", "hdf5": "keras", "tar": "torch",
                  "safetensors": "safetensors"}  # fmt: skip
    name = by_content.get(fmt)
    if fmt in ("gzip", "bz2", "xz", "zlib", "lz4"):
        name = "joblib"  # joblib.load opens compressed pickles of every one of these
    elif fmt == "zip":
        name = _zip_loader(p)
    if name is None or not LOADERS[name].available():
        why = f"needs {', '.join(LOADERS[name].requires)}, not installed" if name else f"content is {fmt}"
        raise InputError(f"{p}: no loader for this file ({why}); pass --loader NAME (one of {', '.join(LOADERS)})")
    return LOADERS[name]


def _zip_loader(p: Path) -> str | None:
    """PyTorch checkpoints hold ``<folder>/data.pkl``; npz archives hold ``.npy`` members; TorchScript ``code/``."""
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()[:100_000]
    except (zipfile.BadZipFile, OSError, ValueError):
        return "torch"  # torch's own zip reader accepts archives that zipfile refuses
    if any(n.count("/") == 1 and n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return "torch"
    if names and all(n.endswith(".npy") for n in names):
        return "numpy"
    if "config.json" in names and "model.weights.h5" in names:
        return "keras"
    return None
