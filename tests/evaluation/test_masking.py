"""The masking checks flag each deliberately masked model and no honest one."""

from __future__ import annotations

import pytest
import torch

from dlsec.evaluation import CHECKS, Protocol, evaluate
from dlsec.evaluation.masking import check_curve
from dlsec.evaluation.results import CurvePoint
from tests.evaluation.masked import MASKED

FAST = Protocol(norm="linf", eps=0.1, attacks=("apgd-ce", "square"), min_norm_steps=50, check_points=60)


@pytest.mark.parametrize("name", list(MASKED))
def test_each_masked_model_is_flagged(robust_model, digits_test, name: str) -> None:
    wrapper, expected = MASKED[name]
    x, y = digits_test.x[:60], digits_test.y[:60]
    result = evaluate(wrapper(robust_model), x, y, protocol=FAST)
    assert expected in result.flags, (name, result.flags)


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_honest_robust_model_is_not_flagged(robust_model, digits_test, norm: str, eps: float) -> None:
    x, y = digits_test.x[:80], digits_test.y[:80]
    result = evaluate(robust_model, x, y, norm=norm, eps=eps)
    assert result.flags == (), [c.detail for c in result.checks if c.fired]
    assert {c.name for c in result.checks} == set(CHECKS)


def test_curve_check_fires_only_on_a_rise() -> None:
    falling = [CurvePoint(0.1, 0.8, "a"), CurvePoint(0.2, 0.5, "a"), CurvePoint(0.4, 0.0, "a")]
    assert not check_curve(falling, 100).fired
    rising = [CurvePoint(0.1, 0.5, "a"), CurvePoint(0.2, 0.6, "a")]
    assert check_curve(rising, 100).fired
    within_one_point = [CurvePoint(0.1, 0.50, "a"), CurvePoint(0.2, 0.51, "a")]
    assert not check_curve(within_one_point, 100).fired


def test_every_flag_is_documented() -> None:
    with open("docs/flags.md", encoding="utf-8") as f:
        doc = f.read()
    for name in CHECKS:
        assert f"## {name}" in doc and f"`{name}`" in doc


def test_cut_graph_gives_zero_gradient_not_a_crash(robust_model, small_batch) -> None:
    from dlsec.attacks import PGD

    wrapper, _ = MASKED["non-differentiable"]
    x, y = small_batch
    res = PGD(norm="linf", eps=0.1, steps=5, random_start=False)(wrapper(robust_model), x, y)
    assert torch.equal(res.x_adv[~res.success], x[~res.success])  # zero gradient: no move
