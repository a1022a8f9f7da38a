"""Runs in other processes: a run killed with SIGKILL and resumed, and two processes under torchrun.

Both compare with an uninterrupted one-process run of ``dlsec train`` in this process (one torch thread here and
there, so the arithmetic is the same).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dlsec.cli import main
from dlsec.models.architectures import build

ROOT = Path(__file__).resolve().parents[2]

ARGS = ["--data", "digits", "--limit", "800", "--arch", "cnn-small", "--width", "8", "--eps", "0.1",
        "--batch-size", "32", "--lr", "0.01", "--attack-steps", "3", "--val-steps", "5", "--threads", "1",
        "--quiet", "--no-export"]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("DLSEC_DEBUG", None)
    return env


def _cli(*args: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    assert exc.value.code in (0, None)


def _metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        del r["seconds"], r["val_seconds"]  # wall times differ; everything else must not
    return rows


def test_killed_and_resumed_run_ends_bit_identical(tmp_path: Path) -> None:
    args = [*ARGS, "--method", "pgd", "--epochs", "4", "--warmup-epochs", "1.5"]  # one-cycle schedule, eps ramp
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlsec", "train", *args, "--out", str(killed)],
        env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (killed / "metrics.jsonl").exists():  # written right after the epoch-1 checkpoint
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.01)
        time.sleep(0.1)  # into the second epoch
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert 1 <= state["epoch"] < 4  # killed mid-run: the resume below has epochs left to train
    assert not (killed / "model.safetensors").exists()

    _cli("train", *args, "--out", str(killed), "--resume")
    whole = tmp_path / "whole"
    _cli("train", *args, "--out", str(whole))
    a, b = load_file(str(killed / "model.safetensors")), load_file(str(whole / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(killed) == _metrics(whole)
    last = load_file(str(whole / "model.safetensors"))
    torch.manual_seed(0)
    init = build("cnn-small", 10, width=8).state_dict()
    assert max(float((last[k] - init[k]).abs().max()) for k in init) > 0.05  # not a vacuous comparison


def test_two_processes_match_one(tmp_path: Path) -> None:
    args = [*ARGS, "--method", "pgd", "--epochs", "2"]
    two = tmp_path / "two"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "dlsec", "train", *args, "--out", str(two)],
        env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    one = tmp_path / "one"
    _cli("train", *args, "--out", str(one))
    a, b = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    torch.manual_seed(0)
    init = build("cnn-small", 10, width=8).state_dict()
    assert max(float((a[k] - init[k]).abs().max()) for k in init) > 0.05  # training moved the weights far ...
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=0) for k in a)  # ... and both runs the same way
    m1, m2 = _metrics(one), _metrics(two)
    assert [r["flags"] for r in m1] == [r["flags"] for r in m2]
    for r1, r2 in zip(m1, m2, strict=True):
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], abs=1e-5)
        assert r1["val_robust_acc"] == pytest.approx(r2["val_robust_acc"], abs=0.02)  # at most a point or two
    summary = json.loads((two / "summary.json").read_text())
    assert summary["processes"] == 2
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())  # rank 0 wrote once
