"""Square Attack: budget, black-box (no gradients), query limit, determinism, model untouched, image shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlsec.attacks.base import REGISTRY
from dlsec.attacks.ops import lp_norm
from dlsec.attacks.square import Square, p_selection, pseudo_gaussian
from dlsec.errors import InputError

EPS = {"linf": 0.1, "l2": 0.5}
GENEROUS = {"linf": 0.3, "l2": 3.0}


def test_registered() -> None:
    assert REGISTRY["square"] is Square
    assert Square.gradient_free


def test_p_schedule() -> None:
    # AutoAttack's schedule over 10000 iterations, rescaled to the query budget.
    assert p_selection(0.8, 0, 10000) == 0.8
    assert p_selection(0.8, 10, 10000) == 0.8
    assert p_selection(0.8, 11, 10000) == 0.4
    assert p_selection(0.8, 500, 10000) == 0.1
    assert p_selection(0.8, 501, 10000) == 0.05
    assert p_selection(0.8, 9999, 10000) == 0.8 / 512
    assert p_selection(0.8, 1, 1000) == 0.8 and p_selection(0.8, 2, 1000) == 0.4
    assert p_selection(0.8, 999, 1000) == 0.8 / 512


def test_pseudo_gaussian_update() -> None:
    for s in (1, 3, 5, 7, 11):
        d = pseudo_gaussian(s)
        assert d.shape == (s, s)
        assert torch.isclose(d.norm(), torch.tensor(1.0, dtype=d.dtype))
    d = pseudo_gaussian(5)
    assert (d[:2] > 0).all() and (d[2:] < 0).all()  # two halves of opposite signs
    assert d[1, 2] == d.max() and d[3, 2] == d.min()  # each half peaks at its centre
    assert torch.allclose(d, d.flip(1))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_budget_respected(norm, robust_model, small_batch) -> None:
    x, y = small_batch
    result = Square(norm=norm, eps=EPS[norm], queries=200)(robust_model, x, y)
    assert 0 < result.success_rate < 1
    assert (lp_norm(result.x_adv - x, norm) <= EPS[norm] + 1e-5).all()
    assert (result.norms <= EPS[norm] + 1e-5).all()
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fools_tiny_model_at_generous_eps(norm, tiny_model, small_batch) -> None:
    x, y = small_batch
    result = Square(norm=norm, eps=GENEROUS[norm], queries=300)(tiny_model, x, y)
    assert result.success_rate == 1.0


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_no_gradients_and_query_limit(norm, robust_model, tiny_model, small_batch) -> None:
    x, y = small_batch
    n, queries = len(x), 100
    result = Square(norm=norm, eps=EPS[norm], queries=queries)(robust_model, x, y)
    assert result.backwards == 0
    assert result.forwards <= n * (queries + 2)  # plus the base's clean pass and final check
    assert all(p.grad is None for p in robust_model.parameters())
    # Only points not yet fooled are queried: at a generous eps most stop within a few queries.
    easy = Square(norm=norm, eps=GENEROUS[norm], queries=queries)(tiny_model, x, y)
    assert easy.forwards < n * (queries + 2) // 4


def test_queries_one_is_just_the_start(robust_model, small_batch) -> None:
    x, y = small_batch
    result = Square(norm="linf", eps=0.1, queries=1)(robust_model, x, y)
    assert result.forwards <= 3 * len(x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_deterministic_given_seed(norm, robust_model, small_batch) -> None:
    x, y = small_batch
    a = Square(norm=norm, eps=EPS[norm], queries=100, seed=5)(robust_model, x, y)
    b = Square(norm=norm, eps=EPS[norm], queries=100, seed=5)(robust_model, x, y)
    c = Square(norm=norm, eps=EPS[norm], queries=100, seed=6)(robust_model, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    assert a.forwards == b.forwards
    assert not torch.equal(a.x_adv, c.x_adv)


def test_stronger_with_more_queries(robust_model, small_batch) -> None:
    x, y = small_batch
    few = Square(norm="linf", eps=0.1, queries=20)(robust_model, x, y)
    many = Square(norm="linf", eps=0.1, queries=500)(robust_model, x, y)
    assert many.success_rate > few.success_rate


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 12), (2, 4, 4)])
def test_image_shapes(norm, shape) -> None:
    torch.manual_seed(0)
    c, h, w = shape
    model = nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * h * w, 10)).eval()
    x = torch.rand(16, *shape)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 0.05 if norm == "linf" else 0.5
    result = Square(norm=norm, eps=eps, queries=50)(model, x, y)
    assert result.x_adv.shape == x.shape
    assert (lp_norm(result.x_adv - x, norm) <= eps + 1e-5).all()
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert torch.isfinite(result.x_adv).all()


def test_needs_images(small_batch) -> None:
    x, y = small_batch
    model = nn.Sequential(nn.Linear(64, 10))
    with pytest.raises(InputError):
        Square(eps=0.1, queries=10)(model, x.flatten(1), y)
