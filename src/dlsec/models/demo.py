"""The bundled demo models: small CNNs on scikit-learn's 8x8 digits, shipped as safetensors.

``scripts/train_demo.py`` trains them; the package ships only their weights (181 kB each), so the demo needs
no training and no download.
"""

from __future__ import annotations

from importlib import resources

import torch
from safetensors.torch import load_file
from torch import nn

DEMO_MODELS = {
    "digits-cnn": "digits_cnn.safetensors",
    "digits-cnn-at": "digits_cnn_at.safetensors",
}
"""Name to weights file. ``digits-cnn`` is trained normally; ``digits-cnn-at`` with PGD adversarial training
(Linf, eps 0.1)."""

DEFAULT_DEMO = "digits-cnn-at"


class DigitsCNN(nn.Module):
    """A small CNN for 1x8x8 inputs in [0, 1] and 10 classes (about 20k parameters)."""

    def __init__(self, width: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 4, 64), nn.ReLU(), nn.Linear(64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_demo(name: str = DEFAULT_DEMO) -> nn.Module:
    """Build a demo model with its shipped weights, in eval mode."""
    from dlsec.errors import ModelError

    if name not in DEMO_MODELS:
        raise ModelError(f"unknown demo model {name!r}; choose from {', '.join(DEMO_MODELS)}")
    ref = resources.files("dlsec.models").joinpath("weights").joinpath(DEMO_MODELS[name])
    with resources.as_file(ref) as path:
        state = load_file(str(path))
    model = DigitsCNN()
    model.load_state_dict(state)
    return model.eval()
