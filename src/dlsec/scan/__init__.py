"""Model-file scanning: finds code-execution payloads without loading the files.

    from dlsec.scan import scan_path
    report = scan_path("model.pt")          # ScanReport(findings, errors, skipped, scanned)

Formats are identified by content. Pickle streams (raw, inside PyTorch zip archives, several in a row, inside gzip,
bz2, xz or zlib streams, tar archives, npy object arrays) are walked opcode by opcode and every imported callable is
judged against an allowlist. Keras configs, ONNX and SavedModel graphs, safetensors and GGUF headers are checked too.
A file that cannot be parsed, or a format that needs a missing extra (Keras HDF5 without h5py), is reported as an
error or as skipped, never as clean.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from dlsec.scan import formats as _formats  # noqa: F401  (registers the tar and GGUF scanners)
from dlsec.scan import keras as _keras  # noqa: F401  (registers the HDF5 scanner)
from dlsec.scan.engine import SCANNERS, Limits, scan_file, scan_stream
from dlsec.scan.results import Finding, ScanError, ScanReport, Severity, Skipped

__all__ = [
    "SCANNERS", "Finding", "Limits", "ScanError", "ScanReport", "Severity", "Skipped", "scan_bytes", "scan_open_file", "scan_path",
]  # fmt: skip


def _files(paths: list[str]) -> tuple[list[str], list[ScanError], list[Skipped]]:
    """Regular files under ``paths`` (symlinks followed to regular files only); FIFOs and devices are skipped."""
    out, missing, others = [], [], []
    candidates: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                candidates += [os.path.join(root, n) for n in sorted(names)]
        elif os.path.lexists(p):
            candidates.append(p)
        else:
            missing.append(ScanError(p, "", "no such file or directory"))
    for c in candidates:
        try:
            regular = stat.S_ISREG(os.stat(c).st_mode)
        except OSError as exc:
            missing.append(ScanError(c, "", f"cannot read: {exc.strerror or exc}"))
            continue
        if regular:
            out.append(c)
        else:
            others.append(Skipped(c, "not a regular file (a FIFO, device or socket): not opened"))
    return out, missing, others


def _one(path: str, strict: bool) -> ScanReport:
    ctx = scan_file(path, strict=strict)
    scanned = () if ctx.skipped and not ctx.findings and not ctx.errors else (path,)
    return ScanReport(tuple(ctx.findings), tuple(ctx.errors), tuple(ctx.skipped), scanned)


def scan_bytes(data: bytes, name: str, *, strict: bool = False) -> ScanReport:
    """Scan bytes held in memory (a model decrypted in memory, say) as a file named ``name``."""
    import io

    return scan_open_file(io.BytesIO(data), name, strict=strict)


def scan_open_file(f: BinaryIO, name: str, *, strict: bool = False) -> ScanReport:
    """Scan an open, seekable binary file (an in-memory file, say) as a file named ``name``."""
    f.seek(0)
    ctx = scan_stream(f, name, strict=strict)
    scanned = () if ctx.skipped and not ctx.findings and not ctx.errors else (name,)
    return ScanReport(tuple(ctx.findings), tuple(ctx.errors), tuple(ctx.skipped), scanned)


PARALLEL_FROM = 64
"""With ``jobs=0`` (automatic), this many files or more are scanned in parallel processes."""


def scan_path(*paths: str | os.PathLike[str], strict: bool = False, jobs: int = 1) -> ScanReport:
    """Scan files and directories (recursively).

    ``jobs`` > 1 scans files in that many parallel processes; ``jobs=0`` uses one per CPU (at most 8) once there
    are :data:`PARALLEL_FROM` files or more, where the pool's start-up cost is repaid.
    """
    files, missing, others = _files([str(Path(p)) for p in paths])
    report = ScanReport(errors=tuple(missing), skipped=tuple(others))
    if jobs == 0:
        jobs = min(8, os.cpu_count() or 1) if len(files) >= PARALLEL_FROM else 1
    if jobs > 1 and len(files) > 1:
        from concurrent.futures import ProcessPoolExecutor  # imported only when used: it costs start-up time

        with ProcessPoolExecutor(max_workers=jobs) as pool:
            parts = list(pool.map(_one, files, [strict] * len(files), chunksize=8))
    else:
        parts = [_one(f, strict) for f in files]
    for part in parts:
        report = report.merge(part)
    return report
