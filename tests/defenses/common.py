"""What the training tests share: a small digits subset, narrow models, short configs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dlsec.data import Dataset, digits
from dlsec.defenses import AdversarialTrainer, TrainConfig, TrainResult
from dlsec.models.architectures import build

WIDTH = 8
"""cnn-small at a quarter of its width: a few seconds per run on one thread."""

FAST: dict[str, Any] = {
    "eps": 0.1,
    "epochs": 2,
    "batch_size": 32,
    "lr": 1e-2,
    "schedule": "constant",
    "attack_steps": 3,
    "val_steps": 5,
}
"""A short run that still moves the weights a long way from their initialisation."""


def subset(n: int = 800) -> Dataset:
    """The first ``n`` points of the digits training split."""
    return digits("train").head(n)


def model(seed: int = 0, width: int = WIDTH) -> nn.Module:
    """cnn-small built as ``dlsec train`` builds it (torch seeded with the run's seed first)."""
    torch.manual_seed(seed)
    return build("cnn-small", 10, width=width)


def train(data: Dataset | None = None, out: Any = None, **overrides: Any) -> TrainResult:
    """Train a fresh model with :data:`FAST` updated by ``overrides`` (no export: it takes seconds)."""
    data = data if data is not None else subset()
    cfg = TrainConfig(**{**FAST, **overrides})
    return AdversarialTrainer(cfg, model(cfg.seed), out=out).fit(data.x, data.y, export=False)


def weights(result: TrainResult) -> dict[str, torch.Tensor]:
    """A copy of the trained weights."""
    return {k: v.detach().clone() for k, v in result.model.state_dict().items()}
