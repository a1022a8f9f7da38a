"""Fixtures for encrypted inference: tiny models trained on scikit-learn's digits, once per session."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlsec.data import Dataset, digits


def train(model: nn.Module, data: Dataset, epochs: int, seed: int = 0, lr: float = 3e-3) -> nn.Module:
    """Adam on the digits train split, deterministic (:func:`dlsec.he.convert.finetune`, the loop the package uses)."""
    from dlsec.he.convert import finetune

    return finetune(model, data.x, data.y, epochs=epochs, lr=lr, seed=seed)


def mlp() -> nn.Module:
    """W1 of the issue: 64-32-10 MLP on 8x8 digits."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


class SmallCNN(nn.Module):
    """Strided, padded, stacked convolutions with BatchNorm and an average pool (custom forward)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(self.conv2(x)).relu()
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="session")
def digits_train() -> Dataset:
    return digits("train")


@pytest.fixture(scope="session")
def digits_test() -> Dataset:
    return digits("test")


@pytest.fixture(scope="session")
def w1(digits_train: Dataset) -> nn.Module:
    """The trained ReLU MLP (about 97% test accuracy)."""
    return train(mlp(), digits_train, epochs=20)


@pytest.fixture(scope="session")
def w1_he(w1: nn.Module, digits_train: Dataset) -> nn.Module:
    """W1 made HE-friendly: degree-2 fit of ReLU, 3 epochs of fine-tuning."""
    from dlsec.he import convert

    return convert(w1, digits_train.x, activation="poly2", train=(digits_train.x, digits_train.y), epochs=3)


@pytest.fixture(scope="session")
def cnn(digits_train: Dataset) -> nn.Module:
    """The trained small CNN; its BatchNorm has running statistics."""
    return train(SmallCNN(), digits_train, epochs=8)


@pytest.fixture(scope="session")
def single(w1_he: nn.Module, digits_test: Dataset):  # -> dlsec.he.Plan (tenseal imported lazily)
    """W1 compiled for one sample per query (checked on 4 samples), with keys."""
    pytest.importorskip("tenseal")
    from dlsec.he import compile

    plan = compile(w1_he, digits_test.x[:128], mode="single", check_samples=4)
    plan.keygen()
    return plan


@pytest.fixture(scope="session")
def batch(w1_he: nn.Module, digits_test: Dataset):
    """W1 compiled for queries of the whole test split (540 samples: 4 features per ciphertext), with keys."""
    pytest.importorskip("tenseal")
    from dlsec.he import compile

    plan = compile(w1_he, digits_test.x, mode="batch", batch_size=len(digits_test.x))
    plan.keygen()
    return plan
