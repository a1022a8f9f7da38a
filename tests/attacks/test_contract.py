"""The contract every registered attack keeps, checked for each one by name (foolbox-style property tests).

Budget and bounds, success re-checked, weights and mode untouched, determinism given a seed, and — for the
deterministic attacks — a batch gives the same result as its rows one by one. A new attack is covered by adding
its settings to ``SETTINGS``; the first test fails until it is.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dlsec.attacks import REGISTRY, Attack, get_attack
from dlsec.errors import ConfigError

SETTINGS: dict[str, dict[str, Any]] = {
    "fgsm": {},
    "pgd": {"steps": 10},
    "apgd": {"steps": 10},
    "apgd-t": {"steps": 10, "n_target_classes": 2},
    "square": {"queries": 100},
    "fmn": {"steps": 30},
    "ddn": {"steps": 30},
    "cw-l2": {"steps": 20, "binary_search_steps": 3},
    "deepfool": {"steps": 20},
}
"""Small but real budgets for each registered attack."""

BATCH_EQUALS_ROWS: dict[str, tuple[dict[str, Any], float]] = {
    "fgsm": ({}, 1e-5),
    "pgd": ({"random_start": False}, 1e-5),
    "fmn": ({}, 5e-3),
    "ddn": ({}, 1e-4),
    "cw-l2": ({"initial_const": 1.0, "steps": 100, "binary_search_steps": 2}, 1e-3),
    "deepfool": ({}, 1e-4),
}
"""Deterministic attacks, with the x_adv tolerance between batched and row-by-row runs. FMN and C&W keep the
closest adversarial iterate, and float sums differ with the batch size, so they may keep a different but equally
close point; success must match exactly for all."""

EPS = {"linf": 0.1, "l2": 0.8}
CASES = [(name, norm) for name in sorted(SETTINGS) for norm in get_attack(name).norms]


def make(name: str, norm: str, **extra: Any) -> Attack:
    cls: Any = get_attack(name)
    return cls(**{"norm": norm, "eps": EPS[norm], **SETTINGS[name], **extra})


def test_every_registered_attack_is_covered() -> None:
    assert set(SETTINGS) == set(REGISTRY)


@pytest.mark.parametrize("name, norm", CASES)
def test_budget_bounds_and_fresh_success(name: str, norm: str, robust_model_session, small_batch) -> None:
    x, y = small_batch[0][:32], small_batch[1][:32]
    res = make(name, norm)(robust_model_session, x, y)
    assert res.x_adv.shape == x.shape and res.success.dtype == torch.bool
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    assert float(res.norms.max()) <= EPS[norm] * (1 + 1e-5) + 1e-6
    with torch.no_grad():
        pred = robust_model_session(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred != y)
    assert res.forwards > 0 and res.seconds > 0


@pytest.mark.parametrize("name, norm", CASES)
def test_weights_mode_and_grads_untouched(name: str, norm: str, tiny_model, small_batch) -> None:
    x, y = small_batch[0][:16], small_batch[1][:16]
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    tiny_model.train()
    modes = [m.training for m in tiny_model.modules()]
    make(name, norm)(tiny_model, x, y)
    assert [m.training for m in tiny_model.modules()] == modes
    assert all(p.requires_grad and p.grad is None for p in tiny_model.parameters())
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("name, norm", CASES)
def test_deterministic_given_seed(name: str, norm: str, robust_model_session, small_batch) -> None:
    x, y = small_batch[0][:16], small_batch[1][:16]
    a = make(name, norm, seed=7)(robust_model_session, x, y)
    b = make(name, norm, seed=7)(robust_model_session, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)


@pytest.mark.parametrize("name, norm", [(n, m) for n, m in CASES if n in BATCH_EQUALS_ROWS])
def test_batch_equals_rows(name: str, norm: str, tiny_model_session, small_batch) -> None:
    extra, atol = BATCH_EQUALS_ROWS[name]
    x, y = small_batch[0][:8], small_batch[1][:8]
    attack = make(name, norm, **extra)
    batch = attack(tiny_model_session, x, y)
    rows = [attack(tiny_model_session, x[i : i + 1], y[i : i + 1]) for i in range(len(x))]
    assert batch.success.any() and not batch.success.all()  # neither side of the comparison is vacuous
    assert torch.equal(batch.success, torch.cat([r.success for r in rows]))
    assert torch.allclose(batch.x_adv, torch.cat([r.x_adv for r in rows]), atol=atol)


NO_EARLY_STOP = [(name, norm) for name, norm in CASES if not get_attack(name).minimum_norm]
"""The budget attacks, which take ``early_stop=False`` (adversarial training's inner maximisation)."""


@pytest.mark.parametrize("name, norm", NO_EARLY_STOP)
def test_without_early_stop_budget_and_fresh_success(name: str, norm: str, tiny_model_session, small_batch) -> None:
    x, y = small_batch[0][:32], small_batch[1][:32]
    res = make(name, norm, early_stop=False, eps=0.3 if norm == "linf" else 2.0)(tiny_model_session, x, y)
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    assert float(res.norms.max()) <= (0.3 if norm == "linf" else 2.0) * (1 + 1e-5) + 1e-6
    with torch.no_grad():
        pred = tiny_model_session(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred != y)  # the real criterion, though no point was ever reported done
    assert res.success.any()


@pytest.mark.parametrize("name, norm", NO_EARLY_STOP)
def test_without_early_stop_every_point_is_attacked(name: str, norm: str, tiny_model_session, small_batch) -> None:
    x, y = small_batch[0][:32], small_batch[1][:32]
    stop = make(name, norm, eps=0.3 if norm == "linf" else 2.0)(tiny_model_session, x, y)
    full = make(name, norm, early_stop=False, eps=0.3 if norm == "linf" else 2.0)(tiny_model_session, x, y)
    assert stop.success.sum() >= 8
    with torch.no_grad():
        already = tiny_model_session(x).argmax(1) != y  # adversarial before any step
    assert bool(already.any())
    assert bool((stop.norms[already] == 0).all())  # early stopping skips them
    assert bool((full.norms > 0).all())  # without it, already-fooled points are moved too


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_without_early_stop_runs_every_step_on_every_point(norm: str, tiny_model_session, digits_test) -> None:
    x, y = digits_test.x[:40], digits_test.y[:40]
    steps = 4
    eps = EPS[norm] * 3
    res = get_attack("pgd")(norm=norm, eps=eps, steps=steps, early_stop=False)(tiny_model_session, x, y)  # type: ignore[call-arg]
    assert res.success.any()  # some points become adversarial early and are still attacked to the end
    # a clean pass on one row (the number of classes), steps forwards and backwards per point (no forward at the
    # last iterate: nothing is checked there), and the fresh re-check
    assert res.forwards == 1 + len(x) * (steps + 1)
    assert res.backwards == len(x) * steps
    assert float(res.norms.max()) <= eps * (1 + 1e-5) + 1e-6


@pytest.mark.parametrize("name", sorted(n for n in SETTINGS if get_attack(n).minimum_norm))
def test_minimum_norm_attacks_refuse_no_early_stop(name: str) -> None:
    with pytest.raises(ConfigError, match="minimum-norm"):
        get_attack(name)(norm="l2", early_stop=False)  # type: ignore[call-arg]
