"""Shared fixtures: tiny models trained here on scikit-learn's digits, once per session."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlsec.data import Dataset, digits

torch.set_num_threads(1)  # tiny models: one thread is fastest and keeps timings steady on 2 cores


class TinyCNN(nn.Module):
    """A 4k-parameter CNN for 1x8x8 digits: fast enough to attack hundreds of times in a test run."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_tiny(epochs: int = 20, seed: int = 0, adv_eps: float = 0.0) -> nn.Module:
    """Train :class:`TinyCNN` on the digits train split; with ``adv_eps`` use FGSM-RS adversarial training."""
    torch.manual_seed(seed)
    data = digits("train")
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(data.x), generator=g)
        for i in range(0, len(perm), 64):
            xb, yb = data.x[perm[i : i + 64]], data.y[perm[i : i + 64]]
            if adv_eps > 0:
                delta = (torch.rand(xb.shape, generator=g) * 2 - 1) * adv_eps
                xa = (xb + delta).clamp(0, 1).requires_grad_(True)
                (gx,) = torch.autograd.grad(nn.functional.cross_entropy(model(xa), yb), xa)
                xb = (xb + (delta + 1.25 * adv_eps * gx.sign()).clamp(-adv_eps, adv_eps)).clamp(0, 1).detach()
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def digits_test() -> Dataset:
    """The digits test split (540 points)."""
    return digits("test")


@pytest.fixture(scope="session")
def small_batch(digits_test: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """64 test points: enough to see a batched attack's behaviour, small enough to be quick."""
    return digits_test.x[:64], digits_test.y[:64]


@pytest.fixture(scope="session")
def _tiny_state() -> dict[str, torch.Tensor]:
    return train_tiny().state_dict()


def fresh(state: dict[str, torch.Tensor]) -> nn.Module:
    """A new :class:`TinyCNN` with a copy of ``state``, in eval mode."""
    model = TinyCNN()
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture()
def tiny_model(_tiny_state: dict[str, torch.Tensor]) -> nn.Module:
    """A fresh copy of the standard tiny CNN (about 97% clean accuracy), in eval mode."""
    return fresh(_tiny_state)


@pytest.fixture(scope="session")
def _robust_state() -> dict[str, torch.Tensor]:
    return train_tiny(epochs=30, adv_eps=0.1).state_dict()


@pytest.fixture()
def robust_model(_robust_state: dict[str, torch.Tensor]) -> nn.Module:
    """A fresh copy of a tiny CNN adversarially trained (FGSM-RS, Linf 0.1), in eval mode."""
    return fresh(_robust_state)


@pytest.fixture(scope="session")
def tiny_model_session(_tiny_state: dict[str, torch.Tensor]) -> nn.Module:
    """One shared copy of the standard tiny CNN, for property tests that run many examples (read-only)."""
    return fresh(_tiny_state)


@pytest.fixture(scope="session")
def robust_model_session(_robust_state: dict[str, torch.Tensor]) -> nn.Module:
    """One shared copy of the adversarially trained tiny CNN (read-only use)."""
    return fresh(_robust_state)
