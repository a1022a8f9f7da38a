"""APGD and APGD-T: Auto-PGD, the step-size-free PGD of AutoAttack, Linf and L2.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks",
ICML 2020, https://arxiv.org/abs/2003.01690 (Algorithm 1).

APGD is PGD with momentum 0.75 whose step size starts at ``2 * eps`` and is halved at checkpoints
``w_j = ceil(p_j * steps)`` with ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``.
At a checkpoint a point's step size is halved, and the point restarts from its best iterate so far, when

1. the loss went up in fewer than ``rho * (w_j - w_{j-1})`` of the steps since the last checkpoint, or
2. the step size was not halved at the last checkpoint and the best loss has not improved since.

Each point keeps its best loss and best iterate. A point stops (frozen at that iterate) as soon as an iterate is
adversarial; later restarts run only on points still robust. Points never fooled return their best iterate.
The start is ``x + eps * t`` with ``t`` uniform noise scaled to Linf norm 1 (Linf) or a unit-L2 Gaussian (L2).
Where AutoAttack's code departs from the paper, this follows the paper: condition 1 is a strict inequality
(AutoAttack: ``<=``), condition 2 may already hold at the first checkpoint, and a point restarted from its best
iterate counts that iterate's loss as the last one. Robust accuracies match those of AutoAttack's code on the
test models (e.g. 70.5% for APGD-CE and 69.5% for APGD-T on 200 digits at Linf 0.1, seeds 0 and 1).

:class:`APGD` ascends cross-entropy or DLR (untargeted or, with ``targeted=True``, towards given targets).
:class:`APGDT` is AutoAttack's APGD-T: an untargeted attack that runs targeted-DLR APGD towards each of the
``n_target_classes`` highest-scoring wrong classes of the clean input in turn, on the points still robust.

Shapes: ``x`` (N, C, H, W) in [0, 1], ``y`` (N,). Example::

    result = APGD(norm="linf", eps=8 / 255, loss="ce")(model, x, y)
    result = APGDT(norm="l2", eps=0.5)(model, x, y)
    result.x_adv, result.success, result.norms
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from dlsec.attacks.base import Attack, Context, param
from dlsec.attacks.ops import attack_loss, clip_box, expand, lp_norm, normalize

__all__ = ["APGD", "APGDT", "apgd_loss", "checkpoints"]

MOMENTUM = 0.75
"""Weight of the new step against the previous one (``alpha`` in the paper)."""

LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
SuccessFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j = ceil(p_j * steps)``, ``1 <= w_j <= steps``, at which step sizes are checked.

    The ``p_j`` are kept in hundredths so that the schedule is exact (``0.22 * 100`` is not 22 in floats).
    Coinciding checkpoints (few steps) are merged.
    """
    marks: list[int] = []
    prev, cur = 0, 22
    while True:
        w = -(-cur * steps // 100)
        if w > steps:
            return marks
        if not marks or w > marks[-1]:
            marks.append(w)
        prev, cur = cur, cur + max(cur - prev - 3, 6)


def apgd_loss(kind: str, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per-sample loss to maximise: ``ce`` or ``dlr`` as in :func:`dlsec.attacks.ops.attack_loss`.

    DLR divides by a difference of sorted logits and needs enough classes for that not to cancel the numerator.
    Targeted DLR needs 4: with 3, a point whose true class ranks first and whose target ranks last has loss
    ``-(z_y - z_t) / (z_pi1 - z_pi3) = -1`` whatever the input, so its gradient is zero; untargeted DLR needs 3:
    with 2 it is a constant +-1. With fewer classes DLR falls back to the plain logit margin (Carlini & Wagner's,
    ``z_t - max_{j!=t} z_j`` targeted, ``max_{j!=y} z_j - z_y`` untargeted): not scale-invariant, but APGD only
    uses the gradient's direction and compares a point's losses with each other, so that does not matter.
    """
    k = logits.shape[1]
    if kind == "dlr" and (k < 3 or (k < 4 and target is not None)):
        return attack_loss("margin", logits, y, target)
    return attack_loss(kind, logits, y, target)


def random_start(ctx: Context, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """AutoAttack's start: ``x + eps * t / ||t||`` with ``t`` uniform in [-1, 1] (Linf) or Gaussian (L2)."""
    t = 2 * ctx.rand(*x.shape, like=x) - 1 if norm == "linf" else ctx.randn(*x.shape, like=x)
    t = t / expand(lp_norm(t, norm).clamp_min(1e-12), t)
    return (x + eps * t).clamp(0.0, 1.0)


def _evaluate(
    ctx: Context,
    xk: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    loss_fn: LossFn,
    grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Logits, per-sample loss and (when ``grad``) the loss gradient at ``xk``, all detached."""
    if not grad:
        with torch.no_grad():
            logits = ctx.model(xk)
            return logits, loss_fn(logits, y, target), None
    xr = xk.detach().requires_grad_(True)
    logits = ctx.model(xr)
    loss = loss_fn(logits, y, target)
    (g,) = torch.autograd.grad(loss.sum(), xr)
    return logits.detach(), loss.detach(), torch.nan_to_num(g.detach(), nan=0.0, posinf=0.0, neginf=0.0)


def apgd_run(
    ctx: Context,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    *,
    norm: str,
    eps: float,
    steps: int,
    rho: float,
    loss_fn: LossFn,
    success_fn: SuccessFn,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APGD run (Algorithm 1) from a random start on a batch.

    Returns ``x_out`` (the first adversarial iterate where one was found, the best iterate otherwise),
    ``found`` (N,) bool, and the best loss (N,) (``inf`` where found). ``target`` is passed to ``loss_fn``
    and ``success_fn`` as they are; the active set is compacted as points succeed.
    """
    n = len(x)
    out = x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    best_loss = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)

    xk = random_start(ctx, x, norm, eps)
    logits, f, g = _evaluate(ctx, xk, y, target, loss_fn, grad=True)
    assert g is not None
    s: dict[str, torch.Tensor] = {
        "idx": torch.arange(n, device=x.device),
        "x0": x,
        "y": y,
        "xk": xk,  # current iterate x^(k)
        "xprev": xk,  # previous iterate x^(k-1), for the momentum term
        "g": g,  # gradient at x^(k)
        "f": f,  # loss at x^(k)
        "eta": torch.full((n,), 2.0 * eps, dtype=x.dtype, device=x.device),
        "fbest": f,
        "xbest": xk,
        "gbest": g,
        "fcheck": f,  # best loss at the last checkpoint
        "reduced": torch.zeros(n, dtype=torch.bool, device=x.device),  # step halved at the last checkpoint
        "ups": torch.zeros(n, dtype=x.dtype, device=x.device),  # loss increases since the last checkpoint
    }
    if target is not None:
        s["t"] = target

    def freeze(s: dict[str, torch.Tensor], done: torch.Tensor) -> dict[str, torch.Tensor]:
        out[s["idx"][done]] = s["xk"][done]
        found[s["idx"][done]] = True
        keep = ~done
        return {k: v[keep] for k, v in s.items()}

    done = success_fn(logits, y, target)
    if done.any():
        s = freeze(s, done)
    marks = set(checkpoints(steps))
    last_mark = 0
    for k in range(steps):
        if s["idx"].numel() == 0:
            break
        a = 1.0 if k == 0 else MOMENTUM
        x0, xk, xprev = s["x0"], s["xk"], s["xprev"]
        z = clip_box(xk + expand(s["eta"], xk) * normalize(s["g"], norm), x0, norm, eps)
        xnew = clip_box(xk + a * (z - xk) + (1 - a) * (xk - xprev), x0, norm, eps)
        final = k + 1 == steps
        logits, f, g = _evaluate(ctx, xnew, s["y"], s.get("t"), loss_fn, grad=not final)
        s["ups"] = s["ups"] + (f > s["f"]).to(x.dtype)
        better = f > s["fbest"]
        s["xprev"], s["xk"], s["f"] = xk, xnew, f
        s["fbest"] = torch.where(better, f, s["fbest"])
        s["xbest"] = torch.where(expand(better, xnew), xnew, s["xbest"])
        if g is not None:
            s["g"] = g
            s["gbest"] = torch.where(expand(better, g), g, s["gbest"])
        done = success_fn(logits, s["y"], s.get("t"))
        if done.any():
            s = freeze(s, done)
        if k + 1 in marks and not final and s["idx"].numel():
            cond1 = s["ups"] < rho * (k + 1 - last_mark)
            cond2 = ~s["reduced"] & (s["fbest"] <= s["fcheck"])
            halve = cond1 | cond2
            s["eta"] = torch.where(halve, s["eta"] / 2, s["eta"])
            h = expand(halve, s["xk"])
            s["xk"] = torch.where(h, s["xbest"], s["xk"])
            s["g"] = torch.where(h, s["gbest"], s["g"])
            s["f"] = torch.where(halve, s["fbest"], s["f"])
            s["reduced"] = halve
            s["fcheck"] = s["fbest"]
            s["ups"] = torch.zeros_like(s["ups"])
            last_mark = k + 1
    out[s["idx"]] = s["xbest"]
    best_loss[s["idx"]] = s["fbest"]
    return out, found, best_loss


@dataclass(frozen=True, kw_only=True)
class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020): PGD with momentum and an adaptive step size, Linf or L2, CE or DLR loss."""

    name = "apgd"

    steps: int = param(100, ge=1, doc="iterations per restart")
    restarts: int = param(1, ge=1, doc="runs from fresh random starts; later ones only on points still robust")
    loss: str = param("ce", choices=("ce", "dlr"), doc="loss to ascend: cross-entropy or DLR")
    rho: float = param(0.75, ge=0.0, le=1.0, doc="halve the step when the loss rose in fewer than this fraction")

    def run(self, ctx: Context, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        assert self.eps is not None
        out = x.clone()
        if ctx.num_classes < 2:
            return out
        best = torch.full((len(x),), float("-inf"), dtype=x.dtype, device=x.device)
        todo = torch.arange(len(x), device=x.device)
        for _ in range(self.restarts):
            if todo.numel() == 0:
                break
            xr, found, fbest = apgd_run(
                ctx,
                x[todo],
                y[todo],
                target[todo] if target is not None else None,
                norm=self.norm,
                eps=self.eps,
                steps=self.steps,
                rho=self.rho,
                loss_fn=partial(apgd_loss, self.loss),
                success_fn=ctx.is_adv,
            )
            keep = found | (fbest > best[todo])
            out[todo[keep]] = xr[keep]
            best[todo[keep]] = fbest[keep]
            todo = todo[~found]
        return out


@dataclass(frozen=True, kw_only=True)
class APGDT(Attack):
    """APGD-T (Croce & Hein 2020): targeted-DLR APGD towards each top wrong class in turn; untargeted success."""

    name = "apgd-t"
    supports_targets = False

    steps: int = param(100, ge=1, doc="iterations per target class and restart")
    restarts: int = param(1, ge=1, doc="runs per target class; later ones only on points still robust")
    n_target_classes: int = param(9, ge=1, doc="wrong classes tried, by clean logit; capped at classes - 1")
    rho: float = param(0.75, ge=0.0, le=1.0, doc="halve the step when the loss rose in fewer than this fraction")

    def run(self, ctx: Context, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        assert self.eps is not None
        out = x.clone()
        n_targets = min(self.n_target_classes, ctx.num_classes - 1)
        if n_targets < 1:
            return out
        with torch.no_grad():
            logits = ctx.model(x)
        # Wrong classes by decreasing clean logit (the true class is put last).
        order = logits.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)

        def misclassified(lg: torch.Tensor, yy: torch.Tensor, _t: torch.Tensor | None) -> torch.Tensor:
            return ctx.is_adv(lg, yy, None)  # untargeted: any wrong class counts, not only the target

        best = torch.full((len(x),), float("-inf"), dtype=x.dtype, device=x.device)
        todo = torch.arange(len(x), device=x.device)
        for rank in range(n_targets):
            for _ in range(self.restarts):
                if todo.numel() == 0:
                    return out
                xr, found, fbest = apgd_run(
                    ctx,
                    x[todo],
                    y[todo],
                    order[todo, rank],
                    norm=self.norm,
                    eps=self.eps,
                    steps=self.steps,
                    rho=self.rho,
                    loss_fn=partial(apgd_loss, "dlr"),
                    success_fn=misclassified,
                )
                # Failures keep the iterate with the highest targeted DLR over all targets tried.
                keep = found | (fbest > best[todo])
                out[todo[keep]] = xr[keep]
                best[todo[keep]] = fbest[keep]
                todo = todo[~found]
        return out
