"""Sanity checks that flag an evaluation likely fooled by gradient masking.

Each check has a name, what it means when it fires, and what to do; ``docs/flags.md`` documents the same text.
The checks follow Carlini et al., "On Evaluating Adversarial Robustness" (2019), Athalye et al., "Obfuscated
Gradients Give a False Sense of Security" (ICML 2018) and AutoAttack's ``checks.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dlsec.evaluation.results import CheckResult, CurvePoint, StageResult
from dlsec.models import attack_mode, device_of


@dataclass(frozen=True)
class Check:
    """A sanity check's documentation."""

    name: str
    meaning: str
    advice: str

    def result(self, fired: bool, detail: str) -> CheckResult:
        """This check's outcome."""
        return CheckResult(self.name, fired, detail, self.meaning, self.advice)


CHECKS: dict[str, Check] = {
    c.name: c
    for c in (
        Check(
            "non_deterministic_forward",
            "The model gives different outputs for the same input: randomness in the forward pass (noise, "
            "dropout left on, random transforms) makes single gradients misleading.",
            "Evaluate with Expectation over Transformation (average gradients over many forward passes) or "
            "remove the randomness; put dropout and batch norm in eval mode before exporting.",
        ),
        Check(
            "non_finite",
            "The model's outputs or input gradients contain NaN or infinity, so gradient attacks cannot move.",
            "Find the operation that overflows (a log of zero, a division) and make it numerically safe, or "
            "attack a numerically stable surrogate of the model.",
        ),
        Check(
            "probability_outputs",
            "The model returns probabilities (non-negative rows summing to 1), not logits: attacks that "
            "apply a softmax again see flat, saturated losses.",
            "Export the model without its final softmax, or wrap it to return log-probabilities.",
        ),
        Check(
            "zero_gradients",
            "The loss gradient with respect to the input is exactly zero or missing for many points: "
            "quantisation, a non-differentiable step or saturated logits hide the direction to the boundary.",
            "Use BPDA (approximate the non-differentiable step by the identity on the backward pass), attack "
            "the logits with a scale-invariant loss (DLR), or remove the step; trust the black-box result.",
        ),
        Check(
            "black_box_beats_white_box",
            "A score-based black-box attack broke points that the white-box gradient attacks could not: the "
            "gradients point the wrong way.",
            "Treat the white-box figure as an overestimate; look for masking (see the other flags) and "
            "attack with BPDA, EOT or a stronger black-box budget.",
        ),
        Check(
            "accuracy_rises_with_eps",
            "Robust accuracy under a fixed-budget attack went up when epsilon went up, which a working "
            "attack cannot do: a larger ball contains the smaller one.",
            "The attack is failing to optimise; add restarts and steps, change the loss, and look for masking.",
        ),
        Check(
            "unbounded_attack_fails",
            "An attack with no budget (minimum-norm) did not reach 100% success, although any input can be "
            "changed into one of another class.",
            "The gradients are unusable: look for masking, attack with BPDA or a black-box attack, and do not "
            "trust the robust accuracy reported.",
        ),
    )
}


def check_forward(model: nn.Module, x: torch.Tensor) -> list[CheckResult]:
    """Determinism of the forward pass, finite outputs, and outputs that look like probabilities."""
    with attack_mode(model), torch.no_grad():
        xd = x.to(device_of(model))
        a, b = model(xd), model(xd)
    diff = float((a - b).abs().max())
    scale = float(a.abs().max()) + 1e-12
    nondet = diff > 1e-5 * max(1.0, scale)
    finite = bool(torch.isfinite(a).all())
    sums = a.sum(dim=1)
    probs = finite and bool((a >= 0).all()) and bool(((sums - 1).abs() < 1e-3).all())
    return [
        CHECKS["non_deterministic_forward"].result(
            nondet, f"max difference between two identical forward passes: {diff:.3g}"
        ),
        CHECKS["non_finite"].result(not finite, "non-finite logits" if not finite else "logits are finite"),
        CHECKS["probability_outputs"].result(
            probs, "every output row is non-negative and sums to 1" if probs else "outputs are logits"
        ),
    ]


def input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """Gradients of the cross-entropy loss with respect to the inputs; ``None`` if the input gets none."""
    with attack_mode(model):
        dev = device_of(model)
        xa = x.detach().to(dev).requires_grad_(True)
        with torch.enable_grad():
            out = model(xa)
            if not out.requires_grad:
                return None
            loss = nn.functional.cross_entropy(out, y.to(dev), reduction="sum")
            (grad,) = torch.autograd.grad(loss, xa, allow_unused=True)
    return grad


def check_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, threshold: float = 0.1
) -> list[CheckResult]:
    """Zero, missing or non-finite input gradients on (correctly classified) points.

    ``zero_gradients`` fires when more than ``threshold`` of the points have an all-zero gradient, or when the
    input gets no gradient at all.
    """
    zero = CHECKS["zero_gradients"]
    nonfinite = CHECKS["non_finite"]
    try:
        grad = input_gradients(model, x, y)
    except RuntimeError as exc:
        grad = None
        why = f"the input gradient cannot be computed ({str(exc).splitlines()[0]})"
    else:
        why = "the input gets no gradient: a step in the forward pass is not differentiable"
    if grad is None:
        return [zero.result(True, why)]
    flat = grad.reshape(len(grad), -1)
    finite = torch.isfinite(flat).all(dim=1)
    zero_frac = float((flat.abs().amax(dim=1) == 0).float().mean())
    return [
        zero.result(
            zero_frac > threshold, f"{zero_frac:.0%} of {len(flat)} points have an all-zero input gradient"
        ),
        nonfinite.result(
            not bool(finite.all()), f"{int((~finite).sum())} of {len(flat)} points have non-finite gradients"
        ),
    ]


def check_black_box(stages: Sequence[StageResult], gradient_free: set[str], n: int) -> CheckResult:
    """Fires when a gradient-free stage that ran after the white-box ones broke any further point."""
    broke = [(s.name, s.broken) for s in stages if s.name in gradient_free and s.broken > 0]
    if not [s for s in stages if s.name in gradient_free]:
        return CHECKS["black_box_beats_white_box"].result(False, "no black-box attack in the cascade")
    detail = (
        ", ".join(f"{name} broke {k} of {n} points after the white-box attacks" for name, k in broke)
        or "the black-box attack broke no point the white-box attacks left"
    )
    return CHECKS["black_box_beats_white_box"].result(bool(broke), detail)


def check_curve(points: Sequence[CurvePoint], n: int) -> CheckResult:
    """Fires when a fixed-budget attack's robust accuracy rises with epsilon by more than one point's worth."""
    pts = sorted(points, key=lambda p: p.eps)
    tol = 1.0 / max(n, 1) + 1e-9
    rises = [(a, b) for a, b in zip(pts, pts[1:], strict=False) if b.robust_accuracy > a.robust_accuracy + tol]
    detail = (
        "; ".join(
            f"{a.robust_accuracy:.1%} at eps {a.eps:.4g} but {b.robust_accuracy:.1%} at eps {b.eps:.4g}"
            for a, b in rises
        )
        or "robust accuracy falls monotonically with epsilon"
    )
    return CHECKS["accuracy_rises_with_eps"].result(bool(rises), detail)


def check_unbounded(success: torch.Tensor, attack: str, threshold: float = 0.99) -> CheckResult:
    """Fires when the unbounded minimum-norm attack succeeds on fewer than ``threshold`` of the points."""
    rate = float(success.float().mean()) if len(success) else 1.0
    return CHECKS["unbounded_attack_fails"].result(
        rate < threshold, f"{attack} with no budget succeeded on {rate:.1%} of {len(success)} points"
    )
