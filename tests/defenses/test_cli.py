"""``dlsec train``: its outputs, the .pt2 that ``dlsec evaluate`` takes, and one clear line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dlsec.cli import main
from dlsec.models import load_model
from dlsec.models.architectures import build

SMALL = ["--data", "digits", "--limit", "300", "--arch", "cnn-small", "--width", "4", "--eps", "0.1",
         "--epochs", "2", "--batch-size", "32", "--attack-steps", "2", "--val-steps", "3", "--threads", "1"]  # fmt: skip


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_train_writes_every_output_and_evaluate_takes_the_pt2(capsys, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", *SMALL, "--method", "trades", "--out", str(out), "--test-data", "digits")
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    assert names == {"checkpoint.pt", "model.safetensors", "model.pt2", "metrics.jsonl", "curves.png", "summary.json"}
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert set(lines[0]) == {"epoch", "lr", "eps", "train_loss", "train_acc", "val_clean_acc", "val_robust_acc",
                             "val_fgsm_acc", "seconds", "val_seconds", "flags"}  # fmt: skip
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["method"] == "trades" and summary["test"]["n"] == 540
    assert "epoch   1/2" in stdout and "Test (digits:test, 540 points)" in stdout
    # The safetensors weights and the exported program are the same model; dlsec's loader accepts the program.
    model = build("cnn-small", 10, width=4)
    model.load_state_dict(load_file(str(out / "model.safetensors")))
    program = load_model(str(out / "model.pt2"))
    x = torch.rand(5, 1, 8, 8)
    assert torch.allclose(program(x), model.eval()(x), atol=1e-5)
    code, stdout, err = run(capsys, "evaluate", "--model", str(out / "model.pt2"), "--data", "digits", "--eps", "0.1",
                            "--limit", "20", "--attacks", "apgd-ce", "--json", "-")  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["n"] == 20


def test_quiet_prints_nothing_and_user_factories_train(capsys, tmp_path: Path) -> None:
    args = [a for a in SMALL if a not in ("--arch", "cnn-small", "--width", "4")]
    code, stdout, err = run(capsys, "train", *args, "--model", "tests.models.factories:tiny", "--method", "fgsm-rs",
                            "--out", str(tmp_path), "--quiet", "--no-export")  # fmt: skip
    assert code == 0, err
    assert stdout == "" and err == ""
    assert (tmp_path / "model.safetensors").exists() and not (tmp_path / "model.pt2").exists()
    state = load_file(str(tmp_path / "model.safetensors"))
    assert "net.0.weight" in state  # the user's TinyCNN


def small(**over: str) -> list[str]:
    """:data:`SMALL` with some options replaced (``batch_size="8"`` for ``--batch-size 8``)."""
    opts = dict(zip(SMALL[::2], SMALL[1::2], strict=True))
    opts.update({f"--{k.replace('_', '-')}": v for k, v in over.items()})
    return [a for pair in opts.items() for a in pair]


@pytest.mark.parametrize(
    "over, extra, message",
    [
        ({"method": "madry"}, [], "unknown training method 'madry'"),
        ({"eps": "2"}, [], "linf eps must be in (0, 1]"),
        ({"eps": "-0.1"}, [], "--eps must be a non-negative number"),
        ({"eps": "0"}, [], "eps must be > 0"),
        ({"norm": "l1"}, [], "--norm must be linf or l2"),
        ({"arch": "cnn-mnist"}, [], "architecture cnn-mnist takes 1x28x28 inputs (CxHxW), but the data is 1x8x8"),
        ({"arch": "resnet"}, [], "unknown architecture 'resnet'"),
        ({}, ["--model", "tests.models.factories:tiny"], "give one of --arch NAME or --model"),
        ({}, ["--resume"], "cannot resume: no checkpoint at"),
        ({"epochs": "0"}, [], "epochs must be >= 1"),
        ({"optimizer": "lbfgs"}, [], "optimizer must be one of adam, sgd"),
        ({"data": "npz:/nonexistent.npz"}, [], "data file not found"),
        ({"batch_size": "1000"}, [], "batch size 1000 is larger than the training split"),
        ({"method": "trades", "clean_weight": "0.5"}, [], "clean_weight applies to fgsm-rs, n-fgsm and pgd"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys, tmp_path: Path, over: dict[str, str], extra: list[str], message: str
) -> None:
    code, _, err = run(capsys, "train", *small(**over), *extra, "--out", str(tmp_path / "o"), "--quiet")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("dlsec: error: ") and message in err, err
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


def test_eps_is_required(capsys, tmp_path: Path) -> None:
    args = [a for a in small() if a not in ("--eps", "0.1")]
    code, _, err = run(capsys, "train", *args, "--out", str(tmp_path))
    assert code == 2 and err == "dlsec: error: --eps is required\n"


def test_model_factory_that_does_not_fit_the_data(capsys, tmp_path: Path) -> None:
    path = tmp_path / "rgb.npz"
    np.savez(path, x=np.random.rand(40, 3, 32, 32).astype(np.float32), y=np.arange(40) % 10)
    code, _, err = run(capsys, "train", "--data", f"npz:{path}", "--model", "tests.models.factories:tiny",
                       "--eps", "0.1", "--out", str(tmp_path / "o"))  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "the model failed on inputs of shape (3, 32, 32)" in err
    code, _, err = run(capsys, "train", "--data", f"npz:{path}", "--arch", "cnn-small", "--eps", "0.1",
                       "--out", str(tmp_path / "o"))  # fmt: skip
    assert code == 2 and "cnn-small takes 1x8x8 inputs" in err
