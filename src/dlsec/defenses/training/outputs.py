"""What a training run leaves in its output folder, besides the checkpoint.

* ``model.safetensors``: the selected weights (state dict).
* ``model.pt2``: the selected model as a ``torch.export`` program with a dynamic batch dimension, which
  ``dlsec evaluate --model DIR/model.pt2`` loads after its safety inspection.
* ``metrics.jsonl``: one JSON object per epoch (see :data:`METRIC_KEYS`).
* ``curves.png``: clean and robust accuracy and the training loss per epoch.
* ``summary.json``: the config, the selected epoch, why training stopped, the final figures.

Every file is written atomically (temporary file, fsync, ``os.replace``).
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlsec.defenses.training.checkpoint import atomic_write_bytes
from dlsec.errors import ModelError

__all__ = ["METRIC_KEYS", "export_program", "plot_curves", "write_json", "write_metrics", "write_weights"]

METRIC_KEYS = (
    "epoch",
    "lr",
    "eps",
    "train_loss",
    "train_acc",
    "val_clean_acc",
    "val_robust_acc",
    "val_fgsm_acc",
    "seconds",
    "val_seconds",
    "flags",
)
"""Keys of each ``metrics.jsonl`` line: ``epoch`` (1-based), ``lr`` (at the epoch's last step), ``eps`` (training
budget at its last step), ``train_loss`` and ``train_acc`` (on the examples trained on: adversarial for adversarial
methods), ``val_clean_acc``, ``val_robust_acc`` (PGD at the full eps), ``val_fgsm_acc`` (FGSM at the full eps,
fgsm-rs only; else null), ``seconds`` (training), ``val_seconds`` and ``flags`` (``best``, ``early_stopping``,
``catastrophic_overfitting``). Validation figures are null without a validation split."""


def write_metrics(path: Path, history: Sequence[dict[str, Any]]) -> None:
    """Write ``metrics.jsonl``: one line per epoch of ``history``."""
    text = "".join(json.dumps({k: rec.get(k) for k in METRIC_KEYS}) + "\n" for rec in history)
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def write_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Write a state dict as safetensors."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write_bytes(path, save(tensors))


def export_program(path: Path, model: nn.Module, example: torch.Tensor) -> None:
    """Export ``model`` (copied to the CPU, in eval mode) with ``torch.export`` and a dynamic batch dimension.

    Raises :class:`ModelError` when torch cannot export it.
    """
    cpu = copy.deepcopy(model).cpu().eval()
    x = example[:2].detach().cpu()
    if len(x) < 2:
        x = torch.cat([x, x])
    try:
        program = torch.export.export(cpu, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        buf = io.BytesIO()
        torch.export.save(program, buf)
    except Exception as exc:
        first = str(exc).strip().splitlines()
        raise ModelError(f"torch.export failed: {first[0] if first else type(exc).__name__}") from exc
    atomic_write_bytes(path, buf.getvalue())


def plot_curves(path: Path, history: Sequence[dict[str, Any]], title: str = "") -> None:
    """Plot accuracy (train, validation clean and robust) and training loss per epoch to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [rec["epoch"] for rec in history]
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        acc.plot(epochs, [rec["train_acc"] for rec in history], label="train (trained-on examples)", ls="--")
        for key, label in (("val_clean_acc", "validation clean"), ("val_robust_acc", "validation PGD robust")):
            pts = [(e, rec[key]) for e, rec in zip(epochs, history, strict=True) if rec.get(key) is not None]
            if pts:
                acc.plot(*zip(*pts, strict=True), label=label, marker="o", ms=3)
        for e, rec in zip(epochs, history, strict=True):
            if "catastrophic_overfitting" in rec.get("flags", ()):
                acc.axvline(e, color="red", ls=":", label="catastrophic overfitting")
        acc.set_xlabel("epoch")
        acc.set_ylabel("accuracy")
        acc.set_ylim(0, 1)
        acc.legend(fontsize=8)
        loss.plot(epochs, [rec["train_loss"] for rec in history], color="black")
        loss.set_xlabel("epoch")
        loss.set_ylabel("training loss")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
