"""DeepFool: minimum-norm success in L2 and Linf, early stopping, budgets, batching, determinism."""

from __future__ import annotations

import pytest
import torch

from dlsec.attacks.base import get_attack
from dlsec.attacks.deepfool import DeepFool
from dlsec.attacks.ops import lp_norm
from dlsec.errors import ConfigError


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_unbounded_success_and_box(tiny_model, small_batch, norm):
    x, y = small_batch
    res = DeepFool(norm=norm)(tiny_model, x, y)
    assert res.success.all()
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert torch.allclose(res.norms, lp_norm(res.x_adv - x, norm))
    with torch.no_grad():
        clean = tiny_model(x).argmax(1)
        assert (tiny_model(res.x_adv).argmax(1) != y).all()
    assert (res.norms[clean == y] > 0).all()


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_per_sample_early_stopping(tiny_model, small_batch, norm):
    x, y = small_batch
    with torch.no_grad():
        todo = int((tiny_model(x).argmax(1) == y).sum())
    res = DeepFool(norm=norm)(tiny_model, x, y)
    # A point stops once it crosses: a few steps of 9 gradients each, far below 50 steps.
    assert res.backwards <= 9 * 10 * todo
    assert res.backwards % 9 == 0


def test_fewer_candidates(tiny_model, small_batch):
    x, y = small_batch
    res = DeepFool(norm="l2", candidates=3)(tiny_model, x, y)
    assert res.success.float().mean() >= 0.95
    assert res.backwards % 2 == 0  # two candidate classes besides the label: two gradients per step


@pytest.mark.parametrize(("norm", "eps"), [("l2", 0.45), ("linf", 0.09)])
def test_eps_only_bounds_the_result(tiny_model, small_batch, norm, eps):
    x, y = small_batch
    free = DeepFool(norm=norm)(tiny_model, x, y)
    bounded = DeepFool(norm=norm, eps=eps)(tiny_model, x, y)
    assert (bounded.norms <= eps * (1 + 1e-5) + 1e-7).all()
    assert (bounded.norms[bounded.success] <= eps * (1 + 1e-5)).all()
    within = free.distances() <= eps
    assert 0 < int(within.sum()) < len(x)
    assert (bounded.success >= within).all()


def test_robust_model_needs_larger_perturbations(tiny_model, robust_model, small_batch):
    x, y = small_batch
    plain = DeepFool(norm="linf")(tiny_model, x, y)
    robust = DeepFool(norm="linf")(robust_model, x, y)
    assert robust.success.float().mean() >= 0.95
    assert robust.distances().median() > plain.distances().median()


def test_config():
    assert get_attack("deepfool") is DeepFool
    with pytest.raises(ConfigError):
        DeepFool(targeted=True)
    with pytest.raises(ConfigError):
        DeepFool(candidates=1)
    with pytest.raises(ConfigError):
        DeepFool(overshoot=-0.1)
