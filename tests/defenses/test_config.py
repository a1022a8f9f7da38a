"""Configuration, registries, schedules, the split and the overfitting rule: the parts without a training loop."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from dlsec.defenses import METHODS, TrainConfig, get_method
from dlsec.defenses.training import overfitting_signal, split_indices
from dlsec.defenses.training.distributed import Dist
from dlsec.defenses.training.schedules import eps_at, lr_factor
from dlsec.errors import ConfigError, DataError
from dlsec.models.architectures import ARCHITECTURES, get_architecture


def test_methods_registered_by_name() -> None:
    assert set(METHODS) >= {"standard", "fgsm-rs", "pgd", "trades"}
    assert get_method("trades").name == "trades"
    assert get_method("fgsm-rs").detects_overfitting and not get_method("pgd").detects_overfitting
    with pytest.raises(ConfigError, match="unknown training method 'madry'; known: standard"):
        get_method("madry")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "madry"}, "unknown training method"),
        ({"eps": 0.0}, "eps must be > 0"),
        ({"eps": -0.1}, "eps must be > 0"),
        ({"eps": 1.5}, r"linf eps must be in \(0, 1\]"),
        ({"eps": math.inf, "norm": "l2"}, "finite"),
        ({"norm": "l1"}, "norm must be one of"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of adam, sgd"),
        ({"schedule": "step"}, "schedule must be one of cosine, onecycle, constant"),
        ({"warmup_epochs": -1.0}, "warmup_epochs must be >= 0"),
        ({"attack_steps": 0}, "attack_steps must be >= 1"),
        ({"step_fraction": 0.0}, "step_fraction must be > 0"),
        ({"beta": -1.0}, "beta must be >= 0"),
        ({"clean_weight": 1.5}, "clean_weight must be <= 1"),
        ({"method": "trades", "clean_weight": 0.5}, "clean_weight applies to fgsm-rs, n-fgsm and pgd"),
        ({"val_fraction": 0.9}, "val_fraction must be <= 0.5"),
        ({"val_fraction": 0.0, "patience": 3}, "patience needs a validation split"),
        ({"val_fraction": 0.0, "method": "fgsm-rs"}, "catastrophic overfitting"),
        ({"patience": 0}, "patience must be >= 1"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_bad_config_is_refused_at_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)


def test_config_is_frozen_and_round_trips() -> None:
    cfg = TrainConfig(method="trades", eps=0.3, beta=3.0)
    with pytest.raises(AttributeError):
        cfg.eps = 0.5  # type: ignore[misc]
    assert TrainConfig(**cfg.to_dict()) == cfg
    assert cfg.differences(cfg.to_dict()) == []
    assert cfg.differences({**cfg.to_dict(), "beta": 6.0}) == ["beta: 6.0 -> 3.0"]
    assert TrainConfig(attack_steps=10).step == pytest.approx(0.25)
    assert TrainConfig(attack_steps=10, step_fraction=0.1).step == 0.1


def test_architectures_and_their_input_shapes() -> None:
    assert list(ARCHITECTURES) == ["cnn-small", "cnn-mnist", "preact-resnet18"]
    for arch, shape in [("cnn-small", (1, 8, 8)), ("cnn-mnist", (1, 28, 28)), ("preact-resnet18", (3, 32, 32))]:
        spec = get_architecture(arch)
        assert spec.input_shape == shape
        model = spec.build(7, width=4)
        assert model(torch.rand(3, *shape)).shape == (3, 7)
    small = get_architecture("cnn-small").build(10)
    # The reference layout: conv 3x3 32, conv 3x3 64, max-pool, dense 128, 10 classes.
    assert sum(p.numel() for p in small.parameters()) == (9 * 32 + 32) + (9 * 32 * 64 + 64) + (256 * 128 + 128) + (
        128 * 10 + 10
    )
    with pytest.raises(DataError, match="cnn-small takes 1x8x8 inputs .* but the data is 1x28x28"):
        get_architecture("cnn-small").check_data(torch.rand(2, 1, 28, 28))
    with pytest.raises(DataError, match="preact-resnet18 takes 3x32x32"):
        get_architecture("preact-resnet18").check_data(torch.rand(2, 1, 32, 32))
    with pytest.raises(ConfigError, match="unknown architecture 'vgg'"):
        get_architecture("vgg")
    with pytest.raises(ConfigError, match="at least 2 classes"):
        get_architecture("cnn-small").build(1)


def test_schedules() -> None:
    total = 100
    assert [lr_factor("constant", s, total) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    cos = [lr_factor("cosine", s, total) for s in range(total)]
    assert cos[0] == 1.0 and cos[50] == pytest.approx(0.5) and all(a > b for a, b in zip(cos, cos[1:], strict=False))
    assert 0 < cos[-1] < 0.01
    one = [lr_factor("onecycle", s, total) for s in range(total)]
    assert one[0] == pytest.approx(0.04) and one[30] == pytest.approx(1.0) and max(one) == pytest.approx(1.0)
    assert all(a < b for a, b in zip(one[:30], one[1:31], strict=True)) and 0 < one[-1] < 0.01
    # epsilon warm-up: linear over the first warmup_epochs epochs, then flat
    assert [eps_at(0.1, s, 2, 5) for s in (0, 4, 9, 10, 50)] == pytest.approx([0.01, 0.05, 0.1, 0.1, 0.1])
    assert eps_at(0.1, 0, 0, 5) == 0.1


def test_split_is_stratified_disjoint_and_fixed_by_seed() -> None:
    y = torch.arange(10).repeat_interleave(torch.arange(10, 110, 10))  # class c has 10 * (c + 1) points
    train, val = split_indices(y, 0.1, seed=3)
    assert len(set(train.tolist()) | set(val.tolist())) == len(y) and not set(train.tolist()) & set(val.tolist())
    assert torch.bincount(y[val], minlength=10).tolist() == list(range(1, 11))  # 10% of each class
    again, val2 = split_indices(y, 0.1, seed=3)
    assert torch.equal(val, val2) and torch.equal(train, again)
    assert not torch.equal(val, split_indices(y, 0.1, seed=4)[1])
    assert len(split_indices(y, 0.0, seed=3)[1]) == 0


def test_shards_cover_a_batch_in_order() -> None:
    for n, world in [(64, 2), (63, 2), (10, 3), (2, 4)]:
        parts = [list(range(n))[Dist(r, world).shard(n)] for r in range(world)]
        assert sum(parts, []) == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_overfitting_rule() -> None:
    # Honest figures: PGD a little below FGSM, near the best so far.
    assert overfitting_signal(0.80, 0.83, 0.82, 0.3, 0.4) is None
    assert overfitting_signal(0.10, 0.12, None, 0.3, 0.4) is None  # first epoch, nothing learnt yet
    # Robust accuracy collapsing from its best.
    assert overfitting_signal(0.05, 0.30, 0.60, 0.3, 0.4) == "robust_drop"
    # FGSM accuracy far above PGD accuracy on the same points: the single step is defeated.
    assert overfitting_signal(0.02, 0.90, 0.03, 0.3, 0.4) == "fgsm_gap"
    assert overfitting_signal(0.50, 0.89, 0.50, 0.3, 0.4) is None  # gap 0.39: within the default
