"""Conversion to an HE-friendly model: supported layers, refusals by name, accuracy kept, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dlsec.data import Dataset
from dlsec.errors import ConfigError, ModelError
from dlsec.he import HEModel, PolyActivation, convert, load_he_model, save_he_model
from dlsec.he.convert import fit_relu
from dlsec.he.ir import Quartic, Square, depth, lower, run_ir


def accuracy(model: nn.Module, data: Dataset) -> float:
    with torch.no_grad():
        return float((model(data.x).argmax(1) == data.y).float().mean())


def test_conversion_keeps_accuracy_w1(w1: nn.Module, w1_he: HEModel, digits_test: Dataset) -> None:
    """Stated bound: the degree-2 HE model, fine-tuned 3 epochs, is at most 1 point below the ReLU model."""
    base = accuracy(w1, digits_test)
    assert base > 0.95
    assert accuracy(w1_he, digits_test) >= base - 0.01
    assert len(w1_he.activations) == 1 and w1_he.activations[0].degree == 2
    fit = w1_he.fits[0]
    assert fit.lo < 0 < fit.hi and fit.max_error < 0.25 * (fit.hi - fit.lo)


def test_conversion_keeps_accuracy_cnn(cnn: nn.Module, digits_train: Dataset, digits_test: Dataset) -> None:
    base = accuracy(cnn, digits_test)
    he = convert(cnn, digits_train.x, activation="poly2", train=(digits_train.x, digits_train.y), epochs=3)
    assert accuracy(he, digits_test) >= base - 0.02
    # BatchNorm folded into conv1: no BatchNorm and no ChannelAffine left
    kinds = [type(m).__name__ for m in he.layers]
    assert kinds == ["Conv2d", "PolyActivation", "Conv2d", "AvgPool2d", "PolyActivation", "Flatten", "Linear"]
    assert he.names[0] == "conv1+bn1"


def test_without_finetune_the_fit_matches_relu_closely(w1: nn.Module, digits_train: Dataset, digits_test: Dataset) -> None:
    he4 = convert(w1, digits_train.x, activation="poly4")
    he2 = convert(w1, digits_train.x, activation="poly2")
    assert accuracy(he4, digits_test) >= accuracy(he2, digits_test) - 0.02
    assert accuracy(he4, digits_test) >= accuracy(w1, digits_test) - 0.05


def test_model_untouched_and_bn_folded_exactly(cnn: nn.Module, digits_test: Dataset) -> None:
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    he = convert(cnn, digits_test.x[:64], activation="square")
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    assert isinstance(he.layers[1], PolyActivation) and he.layers[1].coeffs.tolist() == [0.0, 0.0, 1.0]
    # folding: conv1 with bn folded reproduces bn1(conv1(x))
    with torch.no_grad():
        want = cnn.bn1(cnn.conv1(digits_test.x[:8]))
        got = he.layers[0](digits_test.x[:8])
    assert torch.allclose(want, got, atol=1e-5)


class WithMaxPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(18, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 64)
        self.b = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.b(x + self.a(x))


@pytest.mark.parametrize(
    ("model", "pattern"),
    [
        (WithMaxPool(), r"features\.2 \(MaxPool2d\)"),
        (nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Sigmoid()), r"layer 2 \(Sigmoid\)"),
        (nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.GELU(), nn.Linear(16, 10)), r"layer 2 \(GELU\)"),
        (Residual(), r"add"),
        (nn.Sequential(nn.Flatten(), nn.LayerNorm(64), nn.Linear(64, 10)), r"layer 1 \(LayerNorm\)"),
    ],
)
def test_unsupported_layers_refused_by_name(model: nn.Module, pattern: str, digits_test: Dataset) -> None:
    with pytest.raises(ModelError, match=pattern):
        convert(model.eval(), digits_test.x[:16])


def test_bad_options_refused(w1: nn.Module, digits_test: Dataset) -> None:
    with pytest.raises(ConfigError, match="unknown activation"):
        convert(w1, digits_test.x[:16], activation="relu6")
    with pytest.raises(ConfigError, match="margin"):
        convert(w1, digits_test.x[:16], margin=-1)
    with pytest.raises(ModelError):
        convert(torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(64, 10))), digits_test.x[:16])


def test_fit_relu_is_least_squares() -> None:
    c = fit_relu(-2.0, 2.0, 2)
    # symmetric range: odd part of ReLU is x/2, so c1 = 0.5 and the fit is even otherwise
    assert abs(c[1] - 0.5) < 1e-9 and c[2] > 0
    grid = np.linspace(-2, 2, 1001)
    err = np.abs(np.polynomial.polynomial.polyval(grid, c) - np.maximum(grid, 0)).max()
    err4 = np.abs(np.polynomial.polynomial.polyval(grid, fit_relu(-2.0, 2.0, 4)) - np.maximum(grid, 0)).max()
    assert err4 < err < 0.25
    with pytest.raises(ConfigError):
        fit_relu(1.0, 1.0, 2)


def test_save_load_round_trip(cnn: nn.Module, digits_test: Dataset, tmp_path: Path) -> None:
    he = convert(cnn, digits_test.x[:64], activation="poly4")
    save_he_model(he, tmp_path / "m.safetensors")
    back = load_he_model(tmp_path / "m.safetensors")
    with torch.no_grad():
        assert torch.equal(he(digits_test.x[:16]), back(digits_test.x[:16]))
    (tmp_path / "bad.safetensors").write_bytes(b"not a model")
    with pytest.raises(ModelError):
        load_he_model(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("activation", ["square", "poly2", "poly4"])
def test_lowering_equals_the_torch_model(cnn: nn.Module, digits_test: Dataset, activation: str) -> None:
    """Folding the activations' affine parts into the neighbouring maps changes nothing (float64)."""
    he = convert(cnn, digits_test.x[:64], activation=activation)
    ops = lower(he)
    kinds = {type(op) for op in ops[1::2]}
    assert kinds == ({Quartic} if activation == "poly4" else {Square})
    assert len(ops) == 5  # conv1+bn1, act, conv2+pool (one map), act, fc
    assert depth(ops) == (7 if activation == "poly4" else 5)
    with torch.no_grad():
        want = he.double()(digits_test.x[:32].double()).numpy()
    got = run_ir(ops, digits_test.x[:32].numpy())
    assert np.abs(want - got).max() < 1e-9 * max(1.0, np.abs(want).max())
