"""PGD: projected gradient descent with random start and restarts, Linf and L2.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial Attacks",
ICLR 2018, https://arxiv.org/abs/1706.06083.

Each step moves along the steepest-ascent direction of the loss for the norm (the gradient's sign for Linf, the
normalised gradient for L2) by ``step_size`` (default ``2.5 * eps / steps``), then projects onto the ``eps`` ball
and [0, 1]. A point stops as soon as an iterate is adversarial, and later restarts run only on points still robust.
With ``loss="kl"`` it ascends the KL divergence from the model's prediction on the clean input (computed once per
call, without gradient): TRADES's inner maximisation (Zhang et al., ICML 2019); it needs the random start, since
the KL gradient is zero at the clean input.

Shapes: ``x`` (N, C, H, W) in [0, 1], ``y`` (N,). Example::

    result = PGD(norm="linf", eps=0.1, steps=50)(model, x, y)
    result.x_adv, result.success, result.norms
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlsec.attacks.base import Attack, Context, param
from dlsec.attacks.ops import (
    LOSSES,
    REFERENCE_LOSSES,
    attack_loss,
    clip_box,
    expand,
    lp_norm,
    normalize,
    project,
)
from dlsec.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018), Linf or L2, with random start and restarts."""

    name = "pgd"

    steps: int = param(50, ge=1, doc="gradient steps per restart")
    step_size: float | None = param(None, gt=0.0, doc="step length; default 2.5 * eps / steps")
    random_start: bool = param(True, doc="start from a uniform random point in the eps ball")
    restarts: int = param(1, ge=1, doc="independent runs; later ones only on points still robust")
    loss: str = param("ce", choices=LOSSES + REFERENCE_LOSSES, doc="loss to ascend (kl: TRADES)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss in REFERENCE_LOSSES and not self.random_start:
            raise ConfigError(f"pgd with loss {self.loss!r} needs random_start: its gradient is zero at the input")

    def run(self, ctx: Context, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        assert self.eps is not None
        eps = self.eps
        alpha = self.step_size if self.step_size is not None else 2.5 * eps / self.steps
        best = x.clone()
        todo = torch.arange(len(x), device=x.device)
        ref = None
        if self.loss in REFERENCE_LOSSES:
            with torch.no_grad():
                ref = ctx.model(x).detach()
        for _ in range(self.restarts):
            if todo.numel() == 0:
                break
            x0, y0 = x[todo], y[todo]
            t0 = target[todo] if target is not None else None
            r0 = ref[todo] if ref is not None else None
            adv = self._start(ctx, x0) if self.random_start else x0.clone()
            idx = torch.arange(len(todo), device=x.device)  # positions in this restart still active
            hit = torch.zeros(len(todo), dtype=torch.bool, device=x.device)
            for step in range(self.steps + 1):
                if step == self.steps and not ctx.early_stop:
                    best[todo[idx]] = adv.detach()  # every point ends at its last iterate: no forward needed
                    break
                xa = adv.requires_grad_(True)
                logits = ctx.model(xa)
                done = ctx.is_adv(logits.detach(), y0, t0)
                last = step == self.steps
                if last or done.any():
                    # Freeze finished points (and, at the end, every point) at their current iterate.
                    keep = ~done if not last else torch.zeros_like(done)
                    best[todo[idx[~keep]]] = adv.detach()[~keep]
                    hit[idx[done]] = True
                    if not keep.any():
                        break
                loss = attack_loss(self.loss, logits, y0, t0, r0).sum()
                (grad,) = torch.autograd.grad(loss, xa)
                adv = adv.detach()
                if done.any():
                    keep = ~done
                    adv, grad, x0, y0, idx = adv[keep], grad[keep], x0[keep], y0[keep], idx[keep]
                    t0 = t0[keep] if t0 is not None else None
                    r0 = r0[keep] if r0 is not None else None
                adv = clip_box(adv + alpha * normalize(grad, self.norm), x0, self.norm, eps)
            todo = todo[~hit]  # points still robust go to the next restart
        return best

    def _start(self, ctx: Context, x0: torch.Tensor) -> torch.Tensor:
        assert self.eps is not None
        if self.norm == "linf":
            delta = (2 * ctx.rand(*x0.shape, like=x0) - 1) * self.eps
        else:
            d = ctx.randn(*x0.shape, like=x0)
            d = d / expand(lp_norm(d, "l2").clamp_min(1e-12), d)
            delta = d * expand(ctx.rand(len(x0), like=x0) * self.eps, d)
        return (x0 + project(delta, self.norm, self.eps)).clamp(0.0, 1.0)
