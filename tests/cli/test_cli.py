"""The command line: outputs, and one clear line with exit status 2 for every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file

from dlsec.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture()
def weights(tiny_model, tmp_path: Path) -> str:
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(path))
    return str(path)


def _npz(tmp_path: Path, x: np.ndarray, y: np.ndarray) -> str:
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    return f"npz:{path}"


def test_help_lists_subcommands(capsys) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for sub in ("evaluate", "attack", "attacks", "checks"):
        assert sub in out


def test_attacks_and_checks_are_listed(capsys) -> None:
    code, out, _ = run(capsys, "attacks")
    assert code == 0 and "apgd-t" in out and "square" in out and "fmn" in out and "apgd-t9" in out
    code, out, _ = run(capsys, "checks")
    assert code == 0 and "black_box_beats_white_box" in out


def test_attack_writes_npz(capsys, weights: str, tmp_path: Path) -> None:
    out_path = tmp_path / "adv.npz"
    code, out, err = run(
        capsys, "attack", "--model", "tests.models.factories:tiny", "--weights", weights, "--data", "digits",
        "--attack", "pgd", "--norm", "linf", "--eps", "0.3", "--steps", "10", "--limit", "20", "--out", str(out_path),
    )  # fmt: skip
    assert code == 0, err
    with np.load(out_path) as f:
        assert f["x_adv"].shape == (20, 1, 8, 8) and f["y"].shape == (20,) and f["success"].dtype == bool
        assert f["x_adv"].min() >= 0 and f["x_adv"].max() <= 1
        assert f["success"].mean() > 0.9
        assert f["norms"].max() <= 0.3 + 1e-6


def test_minimum_norm_attack_needs_no_eps(capsys, weights: str, tmp_path: Path) -> None:
    code, _, err = run(
        capsys, "attack", "--model", "tests.models.factories:tiny", "--weights", weights, "--attack", "fmn",
        "--norm", "l2", "--steps", "20", "--limit", "10", "--out", str(tmp_path / "a.npz"),
    )  # fmt: skip
    assert code == 0, err


def test_evaluate_json_keys(capsys, weights: str, tmp_path: Path) -> None:
    out_json = tmp_path / "r.json"
    code, out, err = run(
        capsys, "evaluate", "--model", "tests.models.factories:tiny", "--weights", weights, "--norm", "linf",
        "--eps", "0.1", "--limit", "30", "--attacks", "pgd,square", "--json", str(out_json),
        "--report", str(tmp_path / "rep"),
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out_json.read_text())
    for key in ("clean_accuracy", "robust_accuracy", "n", "eps", "norm", "seconds", "attacks", "flags"):
        assert key in doc
    assert [a["name"] for a in doc["attacks"]] == ["pgd", "square"]
    assert all({"name", "robust_accuracy", "seconds"} <= set(a) for a in doc["attacks"])
    assert doc["n"] == 30 and doc["eps"] == 0.1 and doc["norm"] == "linf"
    assert doc["robust_accuracy"] <= doc["clean_accuracy"]
    assert (tmp_path / "rep" / "summary.md").exists() and (tmp_path / "rep" / "curve.png").exists()


def test_evaluate_json_to_stdout_is_pure_json(capsys, weights: str) -> None:
    code, out, err = run(
        capsys, "evaluate", "--model", "tests.models.factories:tiny", "--weights", weights, "--eps", "0.05",
        "--limit", "10", "--attacks", "fgsm", "--json", "-",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["attacks"][0]["name"] == "fgsm"


BAD = [
    (["--model", "missing.pt2", "--eps", "0.1"], "not found"),
    (["--model", "tests.models.factories:not_a_classifier", "--eps", "0.1"], "not a classifier"),
    (["--model", "demo", "--eps", "-0.1"], "non-negative"),
    (["--model", "demo", "--eps", "0.1", "--norm", "l7"], "linf or l2"),
    (["--model", "demo", "--eps", "0.1", "--attacks", "nope"], "unknown attack"),
    (["--model", "demo", "--eps", "0.1", "--data", "npz:/no/such.npz"], "not found"),
    (["--model", "demo", "--eps", "0.1", "--limit", "0"], "positive"),
    (["--eps", "0.1"], "--model is required"),
    (["--model", "demo"], "--eps is required"),
]


@pytest.mark.parametrize("args, match", BAD)
def test_bad_input_one_line_exit_2(capsys, args: list[str], match: str) -> None:
    code, out, err = run(capsys, "evaluate", *args)
    assert code == 2
    assert match in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.full((4, 1, 8, 8), 3.0, np.float32), np.zeros(4, np.int64), "[0, 1]"),
        (np.zeros((4, 1, 5, 5), np.float32), np.zeros(4, np.int64), "failed on inputs"),
        (np.zeros((4, 1, 8, 8), np.float32), np.full(4, 12, np.int64), "classes"),
    ],
)
def test_bad_data_one_line_exit_2(capsys, tmp_path: Path, x: np.ndarray, y: np.ndarray, match: str) -> None:
    code, _, err = run(capsys, "evaluate", "--model", "demo", "--eps", "0.1", "--data", _npz(tmp_path, x, y))
    assert code == 2
    assert match in err and len(err.strip().splitlines()) == 1


def test_attack_bad_parameters(capsys, tmp_path: Path) -> None:
    out = str(tmp_path / "a.npz")
    code, _, err = run(capsys, "attack", "--model", "demo", "--attack", "pgd", "--eps", "0.1", "--steps", "0", "--out", out)
    assert code == 2 and "steps must be >= 1" in err
    code, _, err = run(capsys, "attack", "--model", "demo", "--attack", "pgd", "--out", out)
    assert code == 2 and "--eps is required" in err
    code, _, err = run(capsys, "attack", "--model", "demo", "--attack", "square", "--eps", "0.1", "--steps", "3", "--out", out)
    assert code == 2 and "takes no --steps" in err


def test_usage_error_is_exit_2(capsys) -> None:
    code, _, err = run(capsys, "evaluate", "--eps", "abc")
    assert code == 2 and "Traceback" not in err


def test_module_entry_point_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dlsec", "evaluate", "--model", str(tmp_path / "x.pt2"), "--eps", "0.1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"dlsec: error: model file not found: {tmp_path / 'x.pt2'}"
