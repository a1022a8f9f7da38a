"""The inner maximisation: PGD with per-sample seeded starts, and PGD on TRADES's KL divergence."""

from __future__ import annotations

import pytest
import torch

from dlsec.attacks import PGD
from dlsec.attacks.ops import attack_loss, kl_loss
from dlsec.defenses.training import InnerPGD
from dlsec.errors import ConfigError


def _starts(model, x: torch.Tensor, y: torch.Tensor, seeds: tuple[int, ...], norm: str = "linf") -> torch.Tensor:
    """The random starts, read off a one-step attack whose step is negligible."""
    eps = 0.1 if norm == "linf" else 0.5
    atk = InnerPGD(norm=norm, eps=eps, steps=1, step_size=1e-7, early_stop=False, sample_seeds=seeds)
    return atk(model, x, y).x_adv


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_start_of_a_point_depends_only_on_its_seed(norm: str, tiny_model_session, small_batch) -> None:
    x, y = small_batch[0][:6], small_batch[1][:6]
    seeds = (11, 22, 33, 44, 55, 66)
    whole = _starts(tiny_model_session, x, y, seeds, norm)
    halves = torch.cat([_starts(tiny_model_session, x[:4], y[:4], seeds[:4], norm),
                        _starts(tiny_model_session, x[4:], y[4:], seeds[4:], norm)])  # fmt: skip
    assert torch.allclose(whole, halves, atol=1e-6)
    other = _starts(tiny_model_session, x, y, (1, 2, 3, 4, 5, 6), norm)
    assert ((other - whole).flatten(1).abs().amax(1) > 1e-3).all()  # the seeds do matter
    delta = (whole - x).flatten(1)
    norms = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (norms > 0).all() and float(norms.max()) <= (0.1 if norm == "linf" else 0.5) + 1e-6


def test_per_sample_seeds_need_every_point(tiny_model_session, small_batch) -> None:
    x, y = small_batch[0][:4], small_batch[1][:4]
    with pytest.raises(ConfigError, match="early_stop=False"):
        InnerPGD(eps=0.1, sample_seeds=(1, 2, 3, 4))
    with pytest.raises(ConfigError, match="one restart"):
        InnerPGD(eps=0.1, early_stop=False, restarts=2, sample_seeds=(1, 2, 3, 4))
    with pytest.raises(ConfigError, match="start_eps needs sample_seeds"):
        InnerPGD(eps=0.3, start_eps=0.2, early_stop=False)
    with pytest.raises(ConfigError, match="start_eps must be"):
        InnerPGD(eps=0.1, start_eps=0.2, early_stop=False, sample_seeds=(1, 2, 3, 4))
    with pytest.raises(RuntimeError, match="3 seeds for 4 points"):
        InnerPGD(eps=0.1, early_stop=False, sample_seeds=(1, 2, 3))(tiny_model_session, x, y)


def test_kl_pgd_ascends_the_kl_divergence(robust_model_session, digits_test) -> None:
    x, y = digits_test.x[:64], digits_test.y[:64]
    eps = 0.15
    with torch.no_grad():
        clean = robust_model_session(x)
    noise = PGD(eps=eps, steps=1, step_size=1e-7, loss="kl", early_stop=False, seed=1)(robust_model_session, x, y)
    res = PGD(eps=eps, steps=10, loss="kl", early_stop=False, seed=1)(robust_model_session, x, y)
    with torch.no_grad():
        kl_noise = kl_loss(robust_model_session(noise.x_adv), clean)
        kl_pgd = kl_loss(robust_model_session(res.x_adv), clean)
    assert float(res.norms.max()) <= eps * (1 + 1e-5) + 1e-7
    assert float(kl_pgd.mean()) > 5 * float(kl_noise.mean())  # a search, not a random point
    assert (kl_pgd >= 0).all()
    # The clean logits are computed once per call: one more forward pass per point than with cross-entropy.
    ce = PGD(eps=eps, steps=10, early_stop=False, seed=1)(robust_model_session, x, y)
    assert res.forwards == ce.forwards + len(x) and res.backwards == ce.backwards == 10 * len(x)


def test_kl_loss_needs_reference_and_random_start() -> None:
    logits = torch.randn(3, 10)
    assert torch.allclose(kl_loss(logits, logits), torch.zeros(3), atol=1e-6)
    p, q = torch.randn(3, 10), torch.randn(3, 10)
    want = torch.nn.functional.kl_div(q.log_softmax(1), p.log_softmax(1), log_target=True, reduction="none").sum(1)
    assert torch.allclose(attack_loss("kl", q, torch.zeros(3, dtype=torch.long), None, p), want, atol=1e-6)
    with pytest.raises(ValueError, match="reference"):
        attack_loss("kl", q, torch.zeros(3, dtype=torch.long), None)
    with pytest.raises(ConfigError, match="needs random_start"):
        PGD(eps=0.1, loss="kl", random_start=False)


def test_seeded_uniform_is_uniform_per_seed_and_batch_free() -> None:
    from dlsec.defenses.training.methods import seeded_uniform

    u = seeded_uniform(tuple(range(1000)), 64)
    assert u.shape == (1000, 64) and float(u.min()) > 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.std()) - (1 / 12) ** 0.5) < 0.01
    # neighbouring seeds and neighbouring positions are uncorrelated
    for a, b in ((u[:-1], u[1:]), (u[:, :-1], u[:, 1:])):
        assert abs(float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])) < 0.02
    # a row depends on its own seed only, large seeds included
    seeds = (2**62 - 1, 2**40 + 5, 7)
    assert torch.equal(seeded_uniform(seeds, 5)[1], seeded_uniform(seeds[1:2], 5)[0])
    assert not torch.equal(seeded_uniform((2**32,), 5), seeded_uniform((0,), 5))
