"""FGSM: the fast gradient sign method (one step).

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
https://arxiv.org/abs/1412.6572. For L2 this is the fast gradient method: one step of length ``eps`` along the
normalised gradient.

Shapes: ``x`` (N, C, H, W) in [0, 1], ``y`` (N,). Example::

    result = FGSM(norm="linf", eps=0.1)(model, x, y)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlsec.attacks.base import Attack, Context, param
from dlsec.attacks.ops import LOSSES, attack_loss, normalize


@dataclass(frozen=True, kw_only=True)
class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al. 2015): one gradient step of size eps."""

    name = "fgsm"

    loss: str = param("ce", choices=LOSSES, doc="loss to ascend")

    def run(self, ctx: Context, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        assert self.eps is not None
        xa = x.clone().requires_grad_(True)
        loss = attack_loss(self.loss, ctx.model(xa), y, target).sum()
        (grad,) = torch.autograd.grad(loss, xa)
        return x + self.eps * normalize(grad, self.norm)
