"""``dlsec scan``: exit codes 0/1/2/3, formats (text, JSON, SARIF), --strict and --fail-on."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from tests.cli.test_cli import run
from tests.scan.test_engine import evil, torch_zip


class _Unknown:
    """Pickles as a reference to this test module: an import on no allowlist (unknown, not dangerous)."""


def test_exit_codes(capsys, tmp_path: Path) -> None:
    import torch

    good = tmp_path / "good.pt"
    good.write_bytes(torch_zip({"w": torch.zeros(2)}))
    bad = tmp_path / "bad.bin"
    bad.write_bytes(evil())
    text = tmp_path / "readme.txt"
    text.write_text("Hello\n")
    assert run(capsys, "scan", str(good))[0] == 0
    code, out, _ = run(capsys, "scan", str(bad))
    assert code == 1 and "CRITICAL" in out
    assert run(capsys, "scan", str(text))[0] == 3
    assert run(capsys, "scan", str(tmp_path / "missing.pt"))[0] == 2


def test_strict_and_fail_on(capsys, tmp_path: Path) -> None:
    p = tmp_path / "unknown.pkl"
    p.write_bytes(pickle.dumps(_Unknown(), protocol=4))
    assert run(capsys, "scan", str(p))[0] == 0  # unknown import: medium, below the default threshold
    assert run(capsys, "scan", "--fail-on", "medium", str(p))[0] == 1
    assert run(capsys, "scan", "--strict", str(p))[0] == 1
    code, _, err = run(capsys, "scan", "--fail-on", "severe", str(p))
    assert code == 2 and "severity must be" in err


def test_json_and_sarif(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(evil())
    code, out, _ = run(capsys, "scan", "--format", "json", str(bad))
    doc = json.loads(out)
    assert code == 1 and doc["findings"][0]["severity"] == "critical" and doc["scanned"] == [str(bad)]
    code, out, _ = run(capsys, "scan", "--format", "sarif", str(bad))
    log = json.loads(out)
    assert code == 1 and log["version"] == "2.1.0"
    result = log["runs"][0]["results"][0]
    assert result["level"] == "error" and result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == str(bad)


@pytest.mark.parametrize("fmt", ["text", "json", "sarif"])
def test_every_format_renders_errors(capsys, tmp_path: Path, fmt: str) -> None:
    data = evil()
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(data[:-3])
    code, out, _ = run(capsys, "scan", "--format", fmt, str(cut))
    assert code == 1 and ("parse" in out or "scan-error" in out)


def test_scan_does_not_import_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    p = tmp_path / "a.pkl"
    p.write_bytes(pickle.dumps({"a": 1}))
    code = (
        "import sys; from dlsec.cli import cli; cli.main(['scan', sys.argv[1]], standalone_mode=False); "
        "print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "False False", out.stdout + out.stderr
