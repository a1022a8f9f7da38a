"""Architectures that ``dlsec train`` builds by name, each with the input shape it expects.

* ``cnn-small`` (1x8x8, scikit-learn's digits): two 3x3 convolutions of 32 and 64 channels (no padding), a 2x2
  max-pool, a 128-unit dense layer and the class layer; about 53k parameters. The reference architecture of the
  adversarial-training issue (the Keras MNIST example's layout, without dropout).
* ``cnn-mnist`` (1x28x28): the same layout with a max-pool after each convolution (padding 1); about 420k parameters.
* ``preact-resnet18`` (3x32x32): the pre-activation ResNet-18 of He et al. (ECCV 2016) as used by Rice, Wong & Kolter
  (ICML 2020) for adversarial training on CIFAR-10; about 11M parameters.

``width`` scales the channel counts (the default is the published one); tests use narrow models. Any other model
comes from the user's code through ``package.module:factory`` (:func:`dlsec.models.load_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dlsec.errors import ConfigError, DataError

__all__ = ["ARCHITECTURES", "Architecture", "CNNMnist", "CNNSmall", "PreActResNet18", "build", "get_architecture"]


class CNNSmall(nn.Module):
    """Two 3x3 convolutions (``width``, ``2 * width``), max-pool, a ``4 * width``-unit dense layer; 1x8x8 inputs."""

    def __init__(self, classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 2 * 2, 4 * width), nn.ReLU(), nn.Linear(4 * width, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, classes)`` for inputs ``(N, 1, 8, 8)``."""
        return self.head(self.features(x))


class CNNMnist(nn.Module):
    """Two 3x3 convolutions (``width``, ``2 * width``) each followed by a max-pool, a dense layer; 1x28x28 inputs."""

    def __init__(self, classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, 4 * width), nn.ReLU(), nn.Linear(4 * width, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, classes)`` for inputs ``(N, 1, 28, 28)``."""
        return self.head(self.features(x))


class _PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    """Pre-activation ResNet-18 (He et al. 2016) for 3x32x32 inputs; ``width`` is the first stage's channels."""

    def __init__(self, classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        layers: list[nn.Module] = []
        cin = width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2**i
            layers += [_PreActBlock(cin, cout, stride), _PreActBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.linear = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, classes)`` for inputs ``(N, 3, 32, 32)``."""
        out = self.layers(self.conv1(x))
        out = torch.relu(self.bn(out))
        out = nn.functional.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


@dataclass(frozen=True)
class Architecture:
    """A named architecture: its factory, the input shape ``(C, H, W)`` it takes and its default width."""

    name: str
    factory: Callable[[int, int], nn.Module]
    input_shape: tuple[int, int, int]
    width: int
    doc: str

    def build(self, classes: int, width: int | None = None) -> nn.Module:
        """A freshly initialised model (torch's global RNG) with ``classes`` outputs."""
        if classes < 2:
            raise ConfigError(f"{self.name} needs at least 2 classes, the data has {classes}")
        w = self.width if width is None else width
        if w < 1:
            raise ConfigError(f"width must be positive, got {w}")
        return self.factory(classes, w)

    def check_data(self, x: torch.Tensor) -> None:
        """Raise :class:`DataError` in one line when inputs ``x`` (N, C, H, W) do not fit the architecture."""
        shape = tuple(int(s) for s in x.shape[1:])
        if shape != self.input_shape:
            want = "x".join(map(str, self.input_shape))
            got = "x".join(map(str, shape))
            raise DataError(f"architecture {self.name} takes {want} inputs (CxHxW), but the data is {got}")


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("cnn-small", CNNSmall, (1, 8, 8), 32, "small CNN for 8x8 digits (2 conv, max-pool, dense 128)"),
        Architecture("cnn-mnist", CNNMnist, (1, 28, 28), 32, "small CNN for 28x28 images (2 conv + pool, dense 128)"),
        Architecture("preact-resnet18", PreActResNet18, (3, 32, 32), 64, "PreAct ResNet-18 for 32x32 RGB images"),
    )
}
"""Every architecture by name."""


def get_architecture(name: str) -> Architecture:
    """The architecture registered as ``name``; :class:`ConfigError` naming the known ones otherwise."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}") from None


def build(name: str, classes: int = 10, width: int | None = None) -> nn.Module:
    """Build the architecture ``name`` with ``classes`` outputs."""
    return get_architecture(name).build(classes, width)
