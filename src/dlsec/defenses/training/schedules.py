"""Learning-rate and epsilon schedules: pure functions of the optimizer step, so a resumed run continues exactly.

* ``constant``: the learning rate throughout.
* ``cosine``: from the learning rate towards 0 along a half cosine (Loshchilov & Hutter 2017).
* ``onecycle``: a linear rise from 4% to 100% over the first 30% of the steps, then a cosine fall towards 0 (Smith 2018;
  the shape of ``torch.optim.lr_scheduler.OneCycleLR`` with its defaults, without momentum cycling).

Epsilon warm-up: ``eps * min(1, (t + 1) / (warmup_epochs * steps_per_epoch))`` at step ``t`` (0-based), a linear
rise over the first ``warmup_epochs`` epochs; the full ``eps`` when there is no warm-up.
"""

from __future__ import annotations

import math

__all__ = ["ONECYCLE_START", "ONECYCLE_WARM", "eps_at", "lr_factor"]

ONECYCLE_WARM = 0.3
"""Share of the steps over which one-cycle rises."""

ONECYCLE_START = 0.04
"""One-cycle's first learning rate as a share of the peak (``OneCycleLR``'s ``div_factor`` of 25)."""


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The learning rate at ``step`` (0-based) of ``total`` as a share of the peak."""
    t = min(max(step, 0), total) / max(total, 1)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if t < ONECYCLE_WARM:
        return ONECYCLE_START + (1.0 - ONECYCLE_START) * t / ONECYCLE_WARM
    return 0.5 * (1.0 + math.cos(math.pi * (t - ONECYCLE_WARM) / (1.0 - ONECYCLE_WARM)))


def eps_at(eps: float, step: int, warmup_epochs: float, steps_per_epoch: int) -> float:
    """The training budget at ``step`` (0-based) under a linear warm-up of ``warmup_epochs`` epochs."""
    ramp = warmup_epochs * steps_per_epoch
    if ramp <= 0:
        return eps
    return eps * min(1.0, (step + 1) / ramp)
