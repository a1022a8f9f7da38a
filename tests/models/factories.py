"""Model factories for the ``package.module:factory`` loading tests."""

from __future__ import annotations

import torch
from torch import nn

from tests.conftest import TinyCNN


def tiny() -> nn.Module:
    """An untrained tiny CNN (weights come from --weights)."""
    return TinyCNN()


class _Scalar(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), -1).sum(1)


def not_a_classifier() -> nn.Module:
    """Returns one number per input: not a classifier."""
    return _Scalar()


def not_a_module() -> object:
    """Returns something that is not a module."""
    return object()
