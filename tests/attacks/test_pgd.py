"""PGD and FGSM: budget, strength, determinism, batch equals per-row."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dlsec.attacks import FGSM, PGD


@settings(max_examples=15, deadline=None)
@given(
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.floats(0.0, 2.0),
    steps=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_pgd_budget_and_bounds(tiny_model_session, small_batch, norm: str, eps: float, steps: int, seed: int) -> None:
    x, y = small_batch
    res = PGD(norm=norm, eps=eps, steps=steps, seed=seed)(tiny_model_session, x, y)
    assert float(res.norms.max()) <= eps * (1 + 1e-5) + 1e-6
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1


@pytest.mark.parametrize("attack", [PGD(norm="linf", eps=0.3, steps=20), PGD(norm="l2", eps=3.0, steps=20)])
def test_pgd_breaks_undefended_model_at_generous_eps(tiny_model, digits_test, attack: PGD) -> None:
    res = attack(tiny_model, digits_test.x, digits_test.y)
    assert res.success_rate >= 0.99


def test_pgd_stronger_with_more_steps_and_restarts(robust_model, digits_test) -> None:
    x, y = digits_test.x[:200], digits_test.y[:200]
    weak = FGSM(norm="linf", eps=0.1)(robust_model, x, y)
    strong = PGD(norm="linf", eps=0.1, steps=40, restarts=2)(robust_model, x, y)
    assert strong.success_rate > weak.success_rate
    assert bool((strong.success | ~weak.success).float().mean() >= 0.97)


def test_pgd_deterministic_given_seed(robust_model, small_batch) -> None:
    x, y = small_batch
    a = PGD(norm="linf", eps=0.1, steps=10, seed=3)(robust_model, x, y)
    b = PGD(norm="linf", eps=0.1, steps=10, seed=3)(robust_model, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    c = PGD(norm="linf", eps=0.1, steps=10, seed=4)(robust_model, x, y)
    assert not torch.equal(a.x_adv, c.x_adv)


@pytest.mark.parametrize("attack", [PGD(norm="linf", eps=0.1, steps=10, random_start=False), FGSM(norm="l2", eps=1.0)])
def test_batch_equals_per_row(robust_model, small_batch, attack) -> None:
    x, y = small_batch[0][:12], small_batch[1][:12]
    batch = attack(robust_model, x, y)
    rows = [attack(robust_model, x[i : i + 1], y[i : i + 1]) for i in range(len(x))]
    assert torch.equal(batch.success, torch.cat([r.success for r in rows]))
    assert torch.allclose(batch.x_adv, torch.cat([r.x_adv for r in rows]), atol=1e-5)


def test_batch_size_does_not_change_result(robust_model, small_batch) -> None:
    x, y = small_batch
    a = PGD(norm="l2", eps=1.0, steps=10, random_start=False)(robust_model, x, y)
    b = PGD(norm="l2", eps=1.0, steps=10, random_start=False, batch_size=7)(robust_model, x, y)
    assert torch.equal(a.success, b.success)
    assert torch.allclose(a.x_adv, b.x_adv, atol=1e-5)


def test_early_stopping_spends_less_on_weak_model(tiny_model, robust_model, digits_test) -> None:
    x, y = digits_test.x[:100], digits_test.y[:100]
    weak = PGD(norm="linf", eps=0.2, steps=30)(tiny_model, x, y)
    hard = PGD(norm="linf", eps=0.2, steps=30)(robust_model, x, y)
    assert weak.backwards < hard.backwards
    assert weak.backwards < 30 * 100 * 0.6  # most points fall within a few steps


def test_targeted_pgd_reaches_targets(tiny_model, small_batch) -> None:
    x, y = small_batch
    target = (y + 1) % 10
    res = PGD(norm="linf", eps=0.4, steps=40, targeted=True)(tiny_model, x, y, target=target)
    with torch.no_grad():
        pred = tiny_model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred == target)
    assert res.success_rate >= 0.95
