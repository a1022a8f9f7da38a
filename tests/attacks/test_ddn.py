"""DDN: minimum-norm L2 success, budgets, batching, determinism and targets."""

from __future__ import annotations

import pytest
import torch

from dlsec.attacks.base import get_attack
from dlsec.attacks.ddn import DDN
from dlsec.attacks.ops import lp_norm
from dlsec.errors import ConfigError


def test_unbounded_success_and_box(tiny_model, small_batch):
    x, y = small_batch
    res = DDN()(tiny_model, x, y)
    assert res.norm == "l2" and res.success.all()
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert torch.allclose(res.norms, lp_norm(res.x_adv - x, "l2"))
    with torch.no_grad():
        assert (tiny_model(res.x_adv).argmax(1) != y).all()
    # The same 100 steps as foolbox's DDNAttack, which gives the same distances on this model (0.4805 median
    # on the first 200 test points).
    assert 0.3 < float(res.distances().median()) < 0.7


def test_eps_only_bounds_the_result(tiny_model, small_batch):
    x, y = small_batch
    free = DDN(steps=50)(tiny_model, x, y)
    bounded = DDN(steps=50, eps=0.45)(tiny_model, x, y)
    assert (bounded.norms <= 0.45 * (1 + 1e-5) + 1e-7).all()
    within = free.distances() <= 0.45
    assert 0 < int(within.sum()) < len(x)
    assert (bounded.success >= within).all()
    assert (bounded.norms[bounded.success] <= 0.45 * (1 + 1e-5)).all()


def test_targeted(tiny_model, small_batch):
    x, y = small_batch
    target = (y + 5) % 10
    res = DDN(targeted=True)(tiny_model, x, y, target=target)
    assert res.success.all()
    with torch.no_grad():
        assert torch.equal(tiny_model(res.x_adv).argmax(1), target)


def test_config():
    assert get_attack("ddn") is DDN
    assert DDN().norm == "l2"
    with pytest.raises(ConfigError):
        DDN(norm="linf")
    with pytest.raises(ConfigError):
        DDN(gamma=1.0)
