"""Adversarial training: standard, FGSM-RS, PGD-AT and TRADES, resumable and distributed.

>>> from dlsec.defenses import AdversarialTrainer, TrainConfig
>>> result = AdversarialTrainer(TrainConfig(method="pgd", eps=0.1), model, out="run").fit(x, y)  # doctest: +SKIP
"""

from __future__ import annotations

from dlsec.defenses.training.config import OPTIMIZERS, SCHEDULES, TrainConfig
from dlsec.defenses.training.methods import METHODS, Batch, InnerPGD, Method, get_method
from dlsec.defenses.training.trainer import (
    AdversarialTrainer,
    TrainResult,
    overfitting_signal,
    robust_accuracy,
    split_indices,
)

__all__ = [
    "METHODS",
    "OPTIMIZERS",
    "SCHEDULES",
    "AdversarialTrainer",
    "Batch",
    "InnerPGD",
    "Method",
    "TrainConfig",
    "TrainResult",
    "get_method",
    "overfitting_signal",
    "robust_accuracy",
    "split_indices",
]
