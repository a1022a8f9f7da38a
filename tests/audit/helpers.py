"""Shared test helpers: fake site-packages, OSV records and zips, and a CLI runner."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from dlsec.cli import COMMANDS, main


def site_packages(root: Path, dists: dict[str, str], egg: bool = False) -> Path:
    """A fake site-packages folder: one ``name-version.dist-info/METADATA`` per distribution."""
    root.mkdir(parents=True, exist_ok=True)
    for name, version in dists.items():
        if egg:
            d = root / f"{name.replace('-', '_')}-{version}-py3.11.egg-info"
            d.mkdir()
            (d / "PKG-INFO").write_text(f"Metadata-Version: 1.2\nName: {name}\nVersion: {version}\n")
        else:
            d = root / f"{name.replace('-', '_')}-{version}.dist-info"
            d.mkdir()
            (d / "METADATA").write_text(
                f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test\n\nLong text\nName: decoy\n"
            )
    return root


def record(rid: str, name: str, events: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    """A minimal OSV record for one PyPI package with one ECOSYSTEM range."""
    rec: dict[str, Any] = {
        "id": rid,
        "summary": f"summary of {rid}",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": name},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
            }
        ],
    }
    rec.update(extra)
    return rec


def osv_zip(path: Path, records: list[Any], raw: dict[str, bytes] | None = None) -> Path:
    """A zip laid out like OSV's PyPI/all.zip: one ``ID.json`` per record (plus ``raw`` members as given)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for rec in records:
            zf.writestr(f"{rec['id']}.json", json.dumps(rec))
        for name, data in (raw or {}).items():
            zf.writestr(name, data)
    return path


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """``dlsec audit ARGS`` through the real entry point: (exit status, stdout, stderr)."""
    monkeypatch.setitem(COMMANDS, "audit", "dlsec.cli.audit:audit")
    with pytest.raises(SystemExit) as exc:
        main(["audit", *args])
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), out, err
