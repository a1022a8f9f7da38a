"""FMN: minimum-norm success, budgets, batching, determinism, targets, and strength against DDN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlsec.attacks.base import get_attack
from dlsec.attacks.ddn import DDN
from dlsec.attacks.fmn import FMN
from dlsec.attacks.ops import lp_norm
from dlsec.errors import ConfigError


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_unbounded_success_and_box(tiny_model, small_batch, norm):
    x, y = small_batch
    res = FMN(norm=norm)(tiny_model, x, y)
    assert res.success.all()  # every point of the 64, at 100 steps
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert torch.allclose(res.norms, lp_norm(res.x_adv - x, norm))
    with torch.no_grad():
        pred = tiny_model(res.x_adv).argmax(1)
        clean = tiny_model(x).argmax(1)
    assert (pred != y).all()
    wrong = clean != y  # already misclassified: untouched, at distance 0
    assert torch.equal(res.x_adv[wrong], x[wrong]) and (res.norms[wrong] == 0).all()
    assert (res.norms[~wrong] > 0).all()


@pytest.mark.parametrize(("norm", "eps"), [("l2", 0.45), ("linf", 0.09)])
def test_eps_only_bounds_the_result(tiny_model, small_batch, norm, eps):
    x, y = small_batch
    free = FMN(norm=norm)(tiny_model, x, y)
    bounded = FMN(norm=norm, eps=eps)(tiny_model, x, y)
    assert (bounded.norms <= eps * (1 + 1e-5) + 1e-7).all()
    assert (bounded.norms[bounded.success] <= eps * (1 + 1e-5)).all()
    # eps does not steer the search: a minimum-norm example within eps is kept, one beyond it is projected.
    within = free.distances() <= eps
    assert 0 < int(within.sum()) < len(x)
    assert (bounded.success >= within).all()
    assert torch.equal(bounded.x_adv[within], free.x_adv[within])


def test_batch_size_does_not_matter(tiny_model, small_batch):
    x, y = small_batch
    a = FMN(norm="l2", steps=30)(tiny_model, x, y)
    b = FMN(norm="l2", steps=30, batch_size=16)(tiny_model, x, y)
    assert torch.equal(a.success, b.success)
    assert torch.allclose(a.norms, b.norms, rtol=1e-2)


def test_deterministic(tiny_model, small_batch):
    x, y = small_batch
    a = FMN(norm="l2", steps=30)(tiny_model, x, y)
    b = FMN(norm="l2", steps=30)(tiny_model, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)


def test_every_point_runs_all_steps(tiny_model, small_batch):
    x, y = small_batch
    with torch.no_grad():
        todo = int((tiny_model(x).argmax(1) == y).sum())
    res = FMN(norm="l2", steps=40)(tiny_model, x, y)
    assert res.backwards == 40 * todo  # one gradient per step and point, none for misclassified points
    assert res.forwards == len(x) + 41 * todo + len(x)  # base check, 40 steps + a last check, base re-check


def test_targeted_reaches_targets(tiny_model, small_batch):
    x, y = small_batch
    target = (y + 1 + torch.arange(len(y)) % 9) % 10  # every wrong class, in turn
    res = FMN(norm="l2", targeted=True)(tiny_model, x, y, target=target)
    assert res.success.all()
    with torch.no_grad():
        assert torch.equal(tiny_model(res.x_adv).argmax(1), target)
    untargeted = FMN(norm="l2")(tiny_model, x, y)
    assert res.distances().median() > untargeted.distances().median()  # a given class is further away


def test_targeted_linf(tiny_model, small_batch):
    x, y = small_batch[0][:32], small_batch[1][:32]
    target = (y + 3) % 10
    res = FMN(norm="linf", targeted=True)(tiny_model, x, y, target=target)
    assert res.success.all()


def test_median_l2_not_above_ddn(tiny_model, digits_test):
    # Measured on the 540 test points at 100 steps: FMN 0.4888, DDN 0.4910; per point FMN is 0.6% closer on
    # average. The paper's settings (margin loss, no initial overshoot, gamma 0.05) give 0.4941.
    x, y = digits_test.x, digits_test.y
    fmn = FMN(norm="l2", steps=100)(tiny_model, x, y)
    ddn = DDN(steps=100)(tiny_model, x, y)
    assert fmn.success.all() and ddn.success.all()
    assert fmn.backwards == ddn.backwards  # the same gradient budget
    assert fmn.distances().median() <= ddn.distances().median()
    moved = ddn.norms > 0
    assert (fmn.norms[moved] / ddn.norms[moved]).mean() < 1.0


def test_paper_settings_still_succeed(tiny_model, small_batch):
    # The paper's boundary estimate stalls short of the boundary when many pixels sit at 0 or 1 unless the
    # gradient components that leave the box are dropped; with them dropped it succeeds everywhere.
    x, y = small_batch
    res = FMN(norm="l2", loss="margin", init_scale=None, gamma_init=0.05)(tiny_model, x, y)
    assert res.success.all()


def test_config():
    assert get_attack("fmn") is FMN
    assert FMN.minimum_norm and FMN().eps is None
    with pytest.raises(ConfigError):
        FMN(gamma_init=1.0)
    with pytest.raises(ConfigError):
        FMN(loss="ce")
    with pytest.raises(ConfigError):
        FMN(steps=0)
    with pytest.raises(ConfigError):
        FMN(init_scale=0.5)
