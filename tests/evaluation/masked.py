"""Deliberately masked toy models: each hides its gradients in one classic way (Athalye et al. 2018).

Used by the masking tests and by ``benchmarks/bench_masking.py``. Each wraps an honest classifier.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class SoftmaxOutput(nn.Module):
    """Returns probabilities instead of logits."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x).softmax(dim=1)


class QuantisedInput(nn.Module):
    """Rounds the input to ``levels`` grey levels: the gradient of rounding is zero almost everywhere."""

    def __init__(self, base: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.base, self.levels = base, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(torch.round(x * self.levels) / self.levels)


class NoisyForward(nn.Module):
    """Adds Gaussian noise to the input on every forward pass."""

    def __init__(self, base: nn.Module, std: float = 0.1) -> None:
        super().__init__()
        self.base, self.std = base, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base((x + self.std * torch.randn_like(x)).clamp(0, 1))


class NonDifferentiable(nn.Module):
    """Preprocesses through NumPy (a median-style clip): the graph is cut, the input gets no gradient."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.clip(x.detach().cpu().numpy(), 0.05, 0.95)
        return self.base(torch.from_numpy(arr).to(x.device))


class ScaledLogits(nn.Module):
    """Multiplies the logits by a huge factor: softmax saturates and cross-entropy gradients vanish."""

    def __init__(self, base: nn.Module, scale: float = 1e4) -> None:
        super().__init__()
        self.base, self.scale = base, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) * self.scale


MASKED = {
    "softmax-outputs": (SoftmaxOutput, "probability_outputs"),
    "quantised-inputs": (QuantisedInput, "zero_gradients"),
    "noisy-forward": (NoisyForward, "non_deterministic_forward"),
    "non-differentiable": (NonDifferentiable, "zero_gradients"),
    "scaled-logits": (ScaledLogits, "zero_gradients"),
}
"""Name to (wrapper, the flag that must fire)."""
