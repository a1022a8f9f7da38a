"""What the attack base class enforces for every attack."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from dlsec.attacks import PGD, REGISTRY, Attack, Context, get_attack
from dlsec.errors import ConfigError, DataError, InputError


def test_registry_has_every_attack_by_name() -> None:
    for name in ("fgsm", "pgd", "apgd", "apgd-t", "fmn", "cw-l2", "deepfool", "square"):
        assert get_attack(name) is REGISTRY[name]
    with pytest.raises(ConfigError, match="unknown attack"):
        get_attack("no-such-attack")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": -0.1}, "eps must be >= 0"),
        ({"eps": 0.1, "norm": "l1"}, "norm must be one of"),
        ({}, "needs an epsilon"),
        ({"eps": 0.1, "steps": 0}, "steps must be >= 1"),
        ({"eps": 0.1, "step_size": 0.0}, "step_size must be > 0"),
        ({"eps": float("inf")}, "finite"),
    ],
)
def test_parameters_validated_once_at_construction(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PGD(**kwargs)


def test_subclass_cannot_override_call() -> None:
    with pytest.raises(TypeError, match="must not override"):

        @dataclass(frozen=True, kw_only=True)
        class Bad(Attack):
            def run(self, ctx, x, y, target):  # type: ignore[no-untyped-def]
                return x

            def __call__(self, *a, **k):  # type: ignore[no-untyped-def]
                return None


@dataclass(frozen=True, kw_only=True)
class _Overshoot(Attack):
    """Test attack that ignores its budget: returns a far-away point."""

    def run(self, ctx: Context, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return x + 5.0 * (2 * ctx.rand(*x.shape, like=x) - 1)


@dataclass(frozen=True, kw_only=True)
class _PeekGradients(Attack):
    """Test attack declared black-box that tries to use gradients."""

    gradient_free = True

    def run(self, ctx: Context, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        xa = x.clone().requires_grad_(True)
        out = ctx.model(xa).sum()
        assert not out.requires_grad  # the base runs black-box attacks under no_grad
        return x


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.5), ("linf", 0.0)])
def test_budget_and_bounds_enforced_whatever_run_returns(tiny_model, small_batch, norm: str, eps: float) -> None:
    x, y = small_batch
    res = _Overshoot(norm=norm, eps=eps)(tiny_model, x, y)
    assert float(res.norms.max()) <= eps + 1e-6
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    delta = (res.x_adv - x).reshape(len(x), -1)
    own = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert torch.allclose(own, res.norms, atol=1e-6)


def test_success_rechecked_with_fresh_forward(tiny_model, small_batch) -> None:
    x, y = small_batch
    res = PGD(norm="linf", eps=0.2, steps=20)(tiny_model, x, y)
    with torch.no_grad():
        pred = tiny_model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred != y)


def test_gradient_free_attacks_get_no_gradients(tiny_model, small_batch) -> None:
    x, y = small_batch
    res = _PeekGradients(norm="linf", eps=0.1)(tiny_model, x, y)
    assert res.backwards == 0


def test_weights_and_mode_untouched(tiny_model, small_batch) -> None:
    x, y = small_batch
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    tiny_model.train()
    tiny_model.net[0].eval()  # a mixed state must come back exactly
    modes = [m.training for m in tiny_model.modules()]
    grads = [p.requires_grad for p in tiny_model.parameters()]
    PGD(norm="linf", eps=0.1, steps=5)(tiny_model, x, y)
    assert [m.training for m in tiny_model.modules()] == modes
    assert [p.requires_grad for p in tiny_model.parameters()] == grads
    assert all(p.grad is None for p in tiny_model.parameters())
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_already_misclassified_points_cost_nothing(tiny_model, digits_test) -> None:
    x, y = digits_test.x, digits_test.y
    with torch.no_grad():
        wrong = tiny_model(x).argmax(1) != y
    assert wrong.any()
    res = PGD(norm="linf", eps=0.0, steps=3, random_start=False)(tiny_model, x, y)
    assert torch.equal(res.success, wrong)
    assert torch.equal(res.x_adv, x)
    # The first pass over all points, three steps plus a final check on the others, and the re-check.
    n_right = int((~wrong).sum())
    assert res.forwards == len(x) + 4 * n_right + len(x)
    assert res.backwards == 3 * n_right


@pytest.mark.parametrize(
    "x, y, err",
    [
        (torch.full((4, 1, 8, 8), 1.5), torch.zeros(4, dtype=torch.long), DataError),
        (torch.rand(4, 1, 8, 8), torch.zeros(3, dtype=torch.long), DataError),
        (torch.rand(4, 1, 8, 8), torch.full((4,), 10), InputError),
        (torch.rand(4, 1, 8, 8), torch.zeros(4), DataError),
        (torch.full((4, 1, 8, 8), float("nan")), torch.zeros(4, dtype=torch.long), DataError),
    ],
)
def test_bad_data_rejected(tiny_model, x: torch.Tensor, y: torch.Tensor, err: type[Exception]) -> None:
    with pytest.raises(err):
        PGD(eps=0.1)(tiny_model, x, y)


def test_targeted_needs_targets(tiny_model, small_batch) -> None:
    x, y = small_batch
    with pytest.raises(InputError, match="needs target"):
        PGD(eps=0.1, targeted=True)(tiny_model, x, y)
    with pytest.raises(InputError, match="untargeted"):
        PGD(eps=0.1)(tiny_model, x, y, target=y)


def test_norms_of_an_empty_batch() -> None:
    from dlsec.attacks.ops import lp_norm

    for norm in ("linf", "l2"):
        assert lp_norm(torch.zeros(0, 1, 8, 8), norm).shape == (0,)
