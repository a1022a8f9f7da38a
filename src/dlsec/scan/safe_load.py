"""``dlsec.safe_load``: load a torch checkpoint only after a clean scan, and then only with ``weights_only=True``."""

from __future__ import annotations

import os
from typing import Any

from dlsec.errors import DlsecError


class UnsafeModelError(DlsecError):
    """The file did not scan clean: a finding, an error or an unsupported format."""

    exit_code = 1


def safe_load(path: str | os.PathLike[str], map_location: Any = None, *, strict: bool = False) -> Any:
    """Scan ``path``; if nothing at all was found, ``torch.load(path, weights_only=True)``.

    Raises :class:`UnsafeModelError` naming the first finding, error or skip otherwise.
    """
    import torch

    from dlsec.scan import scan_path

    report = scan_path(path, strict=strict)
    if report.findings:
        f = max(report.findings, key=lambda f: f.severity)
        where = f.member + (f" @ byte {f.offset}" if f.offset is not None else "")
        raise UnsafeModelError(f"refusing to load {path}: {f.severity.name.lower()} finding in {where}: {f.message}")
    if report.errors:
        e = report.errors[0]
        raise UnsafeModelError(f"refusing to load {path}: it could not be fully scanned ({e.message})")
    if not report.scanned:
        reason = report.skipped[0].reason if report.skipped else "nothing to scan"
        raise UnsafeModelError(f"refusing to load {path}: {reason}")
    return torch.load(os.fspath(path), map_location=map_location, weights_only=True)
