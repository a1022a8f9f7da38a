"""FMN: the fast minimum-norm attack, L2 and Linf.

Pintor, Roli, Brendel & Biggio, "Fast Minimum-norm Adversarial Attacks through Adaptive Norm Constraints",
NeurIPS 2021, https://arxiv.org/abs/2102.12827.

FMN searches for the smallest perturbation that changes the decision by alternating two updates per step:

* the norm budget ``epsilon`` (per sample) shrinks by a factor ``1 - gamma`` while the iterate is adversarial
  (never above the smallest adversarial norm found so far), grows by ``1 + gamma`` once an adversarial point has
  been found but the iterate is not adversarial, and, before any is found, jumps to the linear estimate of the
  distance to the boundary ``||delta|| + |loss| / ||grad||_*`` (``*`` the dual norm);
* the perturbation ``delta`` takes a step of length ``alpha`` along the L2-normalised gradient of the logit
  margin, then is projected onto the ``epsilon`` ball and the box [0, 1].

Both step sizes follow a cosine annealing schedule, from ``alpha_init`` to ``alpha_final`` and from ``gamma_init``
to ``gamma_final``. Every point runs all ``steps`` (a minimum-norm search keeps shrinking once adversarial) and
the attack returns, per sample, the smallest-norm adversarial iterate it has seen. ``eps``, when given, does not
steer the search: it only bounds the result (the base counts success only where the norm is at most ``eps``).

Beyond the paper, the first step jumps straight to the linear estimate of the boundary (the step length is the
estimated distance times ``1 + overshoot``, capped at ``alpha_init``), which saves the first few steps of the
budget that the fixed-length first steps spend on reaching the boundary; set ``overshoot=None`` for the paper's
plain first step.

Shapes: ``x`` (N, C, H, W) in [0, 1], ``y`` (N,), ``target`` (N,) when targeted. Example::

    result = FMN(norm="l2", steps=100)(model, x, y)        # minimum-norm: eps may be None
    result.norms[result.success].median()
    FMN(norm="linf", eps=0.1)(model, x, y).robust_accuracy  # success only where ||delta|| <= eps
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dlsec.attacks.base import Attack, Context, param
from dlsec.errors import ConfigError
from dlsec.attacks.ops import expand, lp_norm, normalize, project


@dataclass(frozen=True, kw_only=True)
class FMN(Attack):
    """Fast minimum-norm attack (Pintor et al. 2021): adaptive norm budget, L2 or Linf, targeted or not."""

    name = "fmn"
    minimum_norm = True

    steps: int = param(100, ge=1, doc="gradient steps (every point runs all of them)")
    alpha_init: float = param(1.0, gt=0.0, doc="initial step length (L2 length of the step on delta)")
    alpha_final: float | None = param(None, gt=0.0, doc="final step length; default alpha_init / 100")
    gamma_init: float = param(0.05, gt=0.0, le=1.0, doc="initial relative change of the norm budget per step")
    gamma_final: float = param(0.001, gt=0.0, le=1.0, doc="final relative change of the norm budget per step")
    overshoot: float | None = param(
        None, ge=0.0, doc="first step: jump to the estimated boundary times 1 + overshoot; None: plain step"
    )

    box_aware: bool = param(True, doc="x")
    grow: bool = param(False, doc="x")
    loss: str = param("margin", doc="x")

    def __post_init__(self) -> None:
        super().__post_init__()
        for f in ("gamma_init", "gamma_final"):
            if getattr(self, f) >= 1.0:
                raise ConfigError(f"FMN: {f} must be < 1, got {getattr(self, f)}")

    def run(self, ctx: Context, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        n = len(x)
        dual = "l2" if self.norm == "l2" else "l1"
        a0 = self.alpha_init
        a1 = self.alpha_final if self.alpha_final is not None else a0 / 100
        g0, g1 = self.gamma_init, self.gamma_final

        delta = torch.zeros_like(x)
        epsilon = torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
        worst = lp_norm(torch.maximum(x, 1 - x), self.norm)
        best_norm = torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
        best = x.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x.device)

        for i in range(self.steps + 1):
            xa = (x + delta).requires_grad_(i < self.steps)
            logits = ctx.model(xa)
            is_adv = ctx.is_adv(logits.detach(), y, target)
            d_norm = lp_norm(delta, self.norm)
            better = is_adv & (d_norm < best_norm)
            best_norm = torch.where(better, d_norm, best_norm)
            best = torch.where(expand(better, x), xa.detach(), best)
            found |= is_adv
            if i == self.steps:  # a last forward pass to check the final iterate; no gradient
                break

            # Ascend the negative margin: positive once adversarial, zero on the boundary.
            if self.loss == "lse":
                loss = -_lse_margin(logits, target if (target is not None and self.targeted) else y)
                if target is not None and self.targeted:
                    loss = -loss
            else:
                loss = -ctx.adv_margin(logits, y, target)
            (grad,) = torch.autograd.grad(loss.sum(), xa)
            loss = loss.detach()
            if self.box_aware:
                # Components that would push a pixel out of [0, 1] cannot be followed: drop them from the
                # step and from the boundary estimate (otherwise the estimate stalls short of the boundary).
                xd = xa.detach()
                grad = torch.where(((xd <= 0) & (grad < 0)) | ((xd >= 1) & (grad > 0)), 0.0, grad)

            cosine = (1 + math.cos(math.pi * i / self.steps)) / 2
            alpha = a1 + (a0 - a1) * cosine
            gamma = g1 + (g0 - g1) * cosine

            to_boundary = loss.abs() / lp_norm(grad, dual).clamp_min(1e-12)
            grow = d_norm + to_boundary
            if self.grow and i > 0:
                grow = torch.maximum(grow, epsilon * (1 + gamma))
            epsilon = torch.where(
                is_adv,
                torch.minimum(epsilon * (1 - gamma), best_norm),
                torch.where(found, epsilon * (1 + gamma), grow),
            )
            epsilon = torch.minimum(epsilon, worst)

            direction = normalize(grad, "l2")
            if i == 0 and self.overshoot is not None:
                # Linear estimate of the boundary along the gradient, in L2 since the step is an L2 step.
                reach = loss.abs() / lp_norm(grad, "l2").clamp_min(1e-12) * (1 + self.overshoot)
                step = expand(torch.clamp(reach, max=alpha), x)
            else:
                step = alpha
            delta = project(delta + step * direction, self.norm, epsilon)
            delta = (x + delta).clamp(0.0, 1.0) - x
        return best


def _lse_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).logsumexp(dim=1)
    return true - other
