"""APGD and APGD-T: budget, strength against PGD, determinism, model untouched, few classes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlsec.attacks.apgd import APGD, APGDT, apgd_loss, checkpoints
from dlsec.attacks.base import REGISTRY
from dlsec.attacks.ops import dlr_loss, lp_norm
from dlsec.attacks.pgd import PGD
from dlsec.errors import ConfigError

EPS = {"linf": 0.1, "l2": 0.5}
GENEROUS = {"linf": 0.3, "l2": 3.0}


class FirstLogits(nn.Module):
    """A ``k``-class classifier made of the first ``k`` logits of another."""

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.model, self.k = model, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, : self.k]


def test_registered() -> None:
    assert REGISTRY["apgd"] is APGD
    assert REGISTRY["apgd-t"] is APGDT
    assert not APGDT.supports_targets
    with pytest.raises(ConfigError):
        APGDT(eps=0.1, targeted=True)
    with pytest.raises(ConfigError):
        APGD(eps=0.1, loss="margin")


def test_checkpoints_follow_the_paper() -> None:
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (steps of max(previous - 0.03, 0.06))
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(200) == [44, 82, 114, 140, 160, 174, 186, 198]
    assert checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]  # ceil, merged where they coincide
    assert checkpoints(1) == [1]


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("cls", [APGD, APGDT])
def test_budget_respected(cls, norm, robust_model, small_batch) -> None:
    x, y = small_batch
    extra = {"n_target_classes": 2} if cls is APGDT else {}
    result = cls(norm=norm, eps=EPS[norm], steps=20, **extra)(robust_model, x, y)
    assert 0 < result.success_rate < 1  # both adversarial iterates and best iterates are checked
    assert (lp_norm(result.x_adv - x, norm) <= EPS[norm] + 1e-5).all()
    assert (result.norms <= EPS[norm] + 1e-5).all()
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_fools_tiny_model_at_generous_eps(norm, loss, tiny_model, small_batch) -> None:
    x, y = small_batch
    result = APGD(norm=norm, eps=GENEROUS[norm], loss=loss)(tiny_model, x, y)
    assert result.success_rate == 1.0
    result = APGDT(norm=norm, eps=GENEROUS[norm], steps=20, n_target_classes=3)(tiny_model, x, y)
    assert result.success_rate == 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_apgd_at_least_as_strong_as_pgd(seed, robust_model, small_batch) -> None:
    # Seen on these 64 points, seeds 0-3 and 20/50/100 steps: PGD 78-81%, APGD-CE 75-78%, never worse.
    x, y = small_batch
    pgd = PGD(norm="linf", eps=0.1, steps=50, seed=seed)(robust_model, x, y)
    apgd = APGD(norm="linf", eps=0.1, steps=50, seed=seed)(robust_model, x, y)
    assert apgd.robust_accuracy <= pgd.robust_accuracy
    assert apgd.robust_accuracy < 0.9  # the attack does something on a model robust at 0.1


def test_apgd_t_not_weaker_than_apgd_ce(robust_model, small_batch) -> None:
    # Seen: APGD-CE 76.6%, APGD-T 75.0% (seeds 0-2).
    x, y = small_batch
    ce = APGD(norm="linf", eps=0.1)(robust_model, x, y)
    t = APGDT(norm="linf", eps=0.1)(robust_model, x, y)
    assert t.robust_accuracy <= ce.robust_accuracy


def test_counts_and_early_stopping(robust_model, tiny_model, small_batch) -> None:
    x, y = small_batch
    n, steps = len(x), 30
    result = APGD(norm="linf", eps=0.1, steps=steps)(robust_model, x, y)
    # A gradient at the start and after every step but the last; forwards add the base's two checks.
    assert result.backwards <= n * steps
    assert result.forwards <= n * (steps + 3)
    easy = APGD(norm="linf", eps=0.3, steps=steps)(tiny_model, x, y)
    assert easy.backwards < n * steps // 4  # fooled points leave the active set


def test_targeted_reaches_target(tiny_model, small_batch) -> None:
    x, y = small_batch
    target = (y + 1) % 10
    for norm, loss in [("linf", "ce"), ("linf", "dlr"), ("l2", "ce")]:
        result = APGD(norm=norm, eps=GENEROUS[norm], loss=loss, targeted=True)(tiny_model, x, y, target=target)
        with torch.no_grad():
            hit = tiny_model(result.x_adv).argmax(1) == target
        assert torch.equal(hit, result.success)
        assert result.success_rate >= 0.95


@pytest.mark.parametrize("cls", [APGD, APGDT])
def test_deterministic_given_seed(cls, robust_model, small_batch) -> None:
    x, y = small_batch
    extra = {"n_target_classes": 2} if cls is APGDT else {}
    a = cls(norm="linf", eps=0.1, steps=20, seed=3, **extra)(robust_model, x, y)
    b = cls(norm="linf", eps=0.1, steps=20, seed=3, **extra)(robust_model, x, y)
    c = cls(norm="linf", eps=0.1, steps=20, seed=4, **extra)(robust_model, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    assert not torch.equal(a.x_adv, c.x_adv)  # the random start depends on the seed


def test_dlr_usable_with_few_classes(tiny_model, digits_test) -> None:
    for k in (2, 3):
        model = FirstLogits(tiny_model, k)
        with torch.no_grad():
            keep = (digits_test.y < k) & (model(digits_test.x).argmax(1) == digits_test.y)
        x, y = digits_test.x[keep][:32], digits_test.y[keep][:32]
        xr = x.clone().requires_grad_(True)
        logits = model(xr)
        target = logits.detach().scatter(1, y[:, None], float("inf")).argmin(1)  # the lowest class
        (g,) = torch.autograd.grad(apgd_loss("dlr", logits, y, target).sum(), xr)
        assert (g.flatten(1).abs().amax(1) > 0).all()
        if k == 3:
            # The plain targeted DLR is a constant -1 here (true class first, target last): no gradient.
            (g0,) = torch.autograd.grad(dlr_loss(model(xr), y, target).sum(), xr)
            assert float(g0.abs().max()) == 0.0
        targeted = APGD(eps=0.3, loss="dlr", targeted=True, steps=30)(model, x, y, target=target)
        assert targeted.success_rate >= 0.9
        untargeted = APGDT(eps=0.3, steps=30)(model, x, y)  # n_target_classes capped at k - 1
        assert untargeted.success_rate >= 0.9
