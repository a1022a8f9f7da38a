"""Defences: adversarial training (:mod:`dlsec.defenses.training`).

>>> from dlsec.defenses import AdversarialTrainer, TrainConfig
"""

from __future__ import annotations

from dlsec.defenses.training import METHODS, AdversarialTrainer, TrainConfig, TrainResult, get_method

__all__ = ["METHODS", "AdversarialTrainer", "TrainConfig", "TrainResult", "get_method"]
