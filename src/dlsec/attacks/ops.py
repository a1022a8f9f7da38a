"""Tensor helpers shared by the attacks: norms, projections, margins. Batched, torch only."""

from __future__ import annotations

import torch

NORMS = ("linf", "l2")


def flat(t: torch.Tensor) -> torch.Tensor:
    """``(N, ...)`` to ``(N, D)`` without copying where possible (also for ``N = 0``)."""
    return t.flatten(1) if t.dim() > 1 else t.reshape(-1, 1)


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample Linf or L2 norm of ``delta``; shape ``(N,)``."""
    f = flat(delta)
    if norm == "linf":
        return f.abs().amax(dim=1) if f.shape[1] else f.new_zeros(f.shape[0])
    return f.norm(p=2, dim=1)


def expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample ``(N,)`` tensor to broadcast against ``like`` ``(N, ...)``."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def project(delta: torch.Tensor, norm: str, eps: float | torch.Tensor) -> torch.Tensor:
    """Project each perturbation onto the ``norm`` ball of radius ``eps`` (a float or per-sample ``(N,)``)."""
    if norm == "linf":
        if isinstance(eps, torch.Tensor):
            e = expand(eps, delta)
            return torch.maximum(torch.minimum(delta, e), -e)
        return delta.clamp(-eps, eps)
    n = lp_norm(delta, "l2")
    e = eps if isinstance(eps, torch.Tensor) else torch.full_like(n, float(eps))
    factor = torch.where(n > e, e / n.clamp_min(1e-12), torch.ones_like(n))
    return delta * expand(factor, delta)


def normalize(g: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit ``norm``: the sign for Linf, ``g / ||g||_2`` for L2."""
    if norm == "linf":
        return g.sign()
    return g / expand(lp_norm(g, "l2").clamp_min(1e-12), g)


def clip_box(x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float | torch.Tensor) -> torch.Tensor:
    """Project ``x_adv`` onto the ``eps`` ball around ``x`` and the box [0, 1]."""
    return (x + project(x_adv - x, norm, eps)).clamp(0.0, 1.0)


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per sample: negative means misclassified."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    return true - other


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """The difference-of-logits-ratio loss of Croce & Hein (2020), per sample, to be maximised.

    Untargeted: ``-(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3)``; targeted: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2)``
    with ``z_pi`` the sorted logits. Invariant to shifting and scaling the logits.
    """
    srt = logits.sort(dim=1, descending=True).values
    k = logits.shape[1]
    third, fourth = srt[:, min(2, k - 1)], srt[:, min(3, k - 1)]
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    if target is None:
        other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
        return -(z_y - other) / (srt[:, 0] - third + 1e-12)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (srt[:, 0] - 0.5 * (third + fourth) + 1e-12)


LOSSES = ("ce", "dlr", "margin")

REFERENCE_LOSSES = ("kl",)
"""Losses measured against a reference prediction (the clean logits) instead of the labels."""


def kl_loss(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(reference) || softmax(logits))`` per sample: TRADES's inner objective (Zhang et al. 2019)."""
    log_q = torch.nn.functional.log_softmax(logits, dim=1)
    log_p = torch.nn.functional.log_softmax(reference, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def attack_loss(
    kind: str,
    logits: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample loss that the attack maximises: ``ce``, ``dlr``, ``margin`` (Carlini-Wagner's f6) or ``kl``.

    With ``target`` the loss rewards moving towards the target class instead of away from ``y``. ``kl`` ignores the
    labels and needs ``reference``, the clean logits of the same points (see :func:`kl_loss`).
    """
    if kind == "kl":
        if reference is None:
            raise ValueError("the kl loss needs the clean logits as reference")
        return kl_loss(logits, reference)
    if kind == "ce":
        if target is None:
            return torch.nn.functional.cross_entropy(logits, y, reduction="none")
        return -torch.nn.functional.cross_entropy(logits, target, reduction="none")
    if kind == "dlr":
        return dlr_loss(logits, y, target)
    if target is None:
        return -margin(logits, y)
    return margin(logits, target)
