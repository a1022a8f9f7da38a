"""The training configuration: one frozen dataclass, validated once at construction.

Bounds are declared with :func:`dlsec.attacks.param`, as for attacks; a bad value raises :class:`ConfigError` naming
the field. Everything that changes the result is here, so a checkpoint can refuse to resume under another config.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from dlsec.attacks import param
from dlsec.attacks.base import _check_param
from dlsec.attacks.ops import NORMS
from dlsec.errors import ConfigError

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainConfig"]

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Hyper-parameters of an adversarial-training run (see ``docs/training.md``).

    Example::

        TrainConfig(method="trades", eps=0.1, epochs=30, beta=6.0)
    """

    method: str = param("pgd", doc="standard, fgsm-rs, n-fgsm, pgd or trades")
    norm: str = param("linf", choices=NORMS, doc="threat model: linf or l2")
    eps: float = param(0.1, gt=0.0, doc="training and validation budget (linf: at most 1)")
    epochs: int = param(10, ge=1, doc="passes over the training split")
    batch_size: int = param(64, ge=1, doc="global batch size (split across processes)")
    lr: float = param(1e-3, gt=0.0, doc="peak learning rate")
    optimizer: str = param("adam", choices=OPTIMIZERS, doc="adam or sgd")
    momentum: float = param(0.9, ge=0.0, le=1.0, doc="SGD momentum (Nesterov off)")
    weight_decay: float = param(0.0, ge=0.0, doc="L2 weight decay (Adam: coupled, as torch.optim.Adam)")
    schedule: str = param("onecycle", choices=SCHEDULES, doc="learning-rate schedule over all steps")
    warmup_epochs: float = param(0.0, ge=0.0, doc="epsilon rises linearly from 0 to eps over these epochs")
    attack_steps: int = param(10, ge=1, doc="PGD / TRADES inner steps")
    step_fraction: float | None = param(None, gt=0.0, doc="inner step as a fraction of eps; default 2.5 / steps")
    fgsm_step: float = param(1.25, gt=0.0, doc="FGSM-RS step as a multiple of eps (Wong et al. 2020: 1.25)")
    nfgsm_noise: float = param(2.0, ge=0.0, doc="N-FGSM noise radius as a multiple of eps (de Jorge et al. 2022: 2)")
    beta: float = param(6.0, ge=0.0, doc="TRADES weight of the KL term")
    clean_weight: float = param(0.0, ge=0.0, le=1.0, doc="fgsm-rs / n-fgsm / pgd: weight of the clean loss in each batch")
    val_fraction: float = param(0.1, ge=0.0, le=0.5, doc="held-out share of the training data (stratified)")
    val_steps: int = param(20, ge=1, doc="PGD steps for validation robust accuracy")
    val_every: int = param(
        1, ge=1, doc="validate after every Nth epoch and the last only (selection, overfitting checks: those epochs)"
    )
    select_best: bool = param(True, doc="keep the epoch with the best validation robust accuracy, not the last")
    patience: int | None = param(None, ge=1, doc="stop after this many epochs without a better robust accuracy")
    co_drop: float = param(0.3, gt=0.0, le=1.0, doc="catastrophic overfitting: robust accuracy drop from the best")
    co_gap: float = param(0.4, gt=0.0, le=1.0, doc="catastrophic overfitting: FGSM minus PGD accuracy")
    ema: float | None = param(
        None, gt=0.0, doc="decay of an exponential moving average of the weights; validated, selected and saved"
    )
    seed: int = param(0, ge=0, doc="seed of the model's initialisation, the split, the data order and the attacks")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_param(type(self).__name__, f, getattr(self, f.name))
        from dlsec.defenses.training.methods import get_method

        method = get_method(self.method)
        if not math.isfinite(self.eps):
            raise ConfigError(f"eps must be finite, got {self.eps}")
        if self.ema is not None and not self.ema < 1.0:
            raise ConfigError(f"TrainConfig: ema must be < 1, got {self.ema}")
        if self.norm == "linf" and self.eps > 1.0:
            raise ConfigError(f"linf eps must be in (0, 1] for inputs in [0, 1], got {self.eps}")
        if self.clean_weight > 0 and not method.mixes_clean:
            raise ConfigError(f"clean_weight applies to fgsm-rs, n-fgsm and pgd, not {self.method}")
        if self.val_fraction == 0:
            if self.patience is not None:
                raise ConfigError("patience needs a validation split (val_fraction > 0)")
            if method.detects_overfitting:
                raise ConfigError(
                    f"{self.method} needs a validation split (val_fraction > 0) to detect catastrophic overfitting"
                )

    @property
    def step(self) -> float:
        """The PGD / TRADES inner step as a fraction of eps."""
        return self.step_fraction if self.step_fraction is not None else 2.5 / self.attack_steps

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as stored in checkpoints and ``summary.json``."""
        return dataclasses.asdict(self)

    def differences(self, other: dict[str, Any]) -> list[str]:
        """``name: stored -> self`` for each field where ``other`` (a stored config) differs."""
        mine = self.to_dict()
        keys = sorted(set(mine) | set(other))
        return [f"{k}: {other.get(k)!r} -> {mine.get(k)!r}" for k in keys if mine.get(k) != other.get(k)]
