"""Training methods, registered by name; each writes only its per-sample loss for a batch.

* ``standard``: cross-entropy on clean inputs.
* ``fgsm-rs``: "fast" adversarial training (Wong, Rice & Kolter, ICLR 2020): one FGSM step of ``1.25 * eps`` from a
  uniform random start, projected back onto the ball.
* ``n-fgsm``: N-FGSM (de Jorge et al., NeurIPS 2022): one FGSM step of ``eps`` from a uniform start of radius
  ``nfgsm_noise * eps`` (2), NOT projected back onto the eps ball (only clipped to [0, 1]): the training
  perturbation reaches ``(nfgsm_noise + 1) * eps``. It avoids catastrophic overfitting at the cost of FGSM-RS.
* ``pgd``: PGD adversarial training (Madry et al., ICLR 2018): ``attack_steps`` steps of ``2.5 * eps / steps``
  from a random start.
* ``trades``: TRADES (Zhang et al., ICML 2019): cross-entropy on the clean input plus ``beta`` times
  ``KL(f(x) || f(x'))``, with ``x'`` from PGD on that KL divergence.

The inner attack is :class:`dlsec.attacks.PGD` with ``early_stop=False``: every point gets every step, including
points already misclassified (Madry's training objective). Its random start is seeded per sample (see
:class:`InnerPGD`) so that the result does not depend on how a batch is split across processes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from dlsec.attacks import PGD, Context
from dlsec.attacks.ops import kl_loss, project
from dlsec.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from dlsec.defenses.training.config import TrainConfig

__all__ = ["METHODS", "Batch", "InnerPGD", "Method", "get_method", "seeded_uniform"]

METHODS: dict[str, type[Method]] = {}
"""Every training method by its registered name."""


@dataclass(frozen=True, kw_only=True)
class InnerPGD(PGD):
    """PGD whose random start for row ``i`` depends only on ``sample_seeds[i]`` (see :func:`seeded_uniform`).

    The start of a point then depends on its own seed only, not on which other points share its batch, so a batch
    split across processes gets the same starts as on one process. Everything else is :class:`PGD` as registered
    (this class is not registered). The seeds must cover every point of a call, in order: use it with
    ``early_stop=False``, one restart and ``batch_size`` at least the number of points.
    """

    sample_seeds: tuple[int, ...] = ()
    start_eps: float | None = None
    """Radius of the random start, at most ``eps`` (default ``eps``); needs ``sample_seeds``. N-FGSM uses a start of
    radius ``k * e`` inside a ball of ``eps = (k + 1) * e``, so that one step of ``e`` is never projected back."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sample_seeds and (self.early_stop or self.restarts != 1):
            raise ConfigError("per-sample seeds need early_stop=False and one restart")
        if self.start_eps is not None:
            if not self.sample_seeds:
                raise ConfigError("start_eps needs sample_seeds")
            if not (self.start_eps >= 0 and self.eps is not None and self.start_eps <= self.eps):
                raise ConfigError(f"start_eps must be in [0, eps={self.eps}], got {self.start_eps}")

    def _start(self, ctx: Context, x0: torch.Tensor) -> torch.Tensor:
        if not self.sample_seeds:
            return super()._start(ctx, x0)
        if len(self.sample_seeds) != len(x0):
            raise RuntimeError(f"{len(self.sample_seeds)} seeds for {len(x0)} points; raise batch_size")
        assert self.eps is not None
        r = self.eps if self.start_eps is None else self.start_eps
        m = x0[0].numel()
        if self.norm == "linf":
            u = seeded_uniform(self.sample_seeds, m)
            delta = (2 * u - 1) * r
        else:  # a random direction (Box-Muller normals) and a radius uniform in [0, r], as PGD's own start
            u = seeded_uniform(self.sample_seeds, 2 * m + 1)
            d = torch.sqrt(-2 * torch.log(u[:, :m])) * torch.cos(2 * math.pi * u[:, m : 2 * m])
            delta = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12) * (u[:, 2 * m :] * r)
        delta = delta.to(device=x0.device, dtype=x0.dtype).reshape(x0.shape)
        return (x0 + project(delta, self.norm, r)).clamp(0.0, 1.0)


_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` below ``2**32``, in two 16-bit halves so nothing overflows int64."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _MASK32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash with good avalanche (C. Wellons's "lowbias32"), on int64 tensors below ``2**32``."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def seeded_uniform(seeds: tuple[int, ...], count: int) -> torch.Tensor:
    """``(len(seeds), count)`` float64 numbers uniform in (0, 1); row ``i`` depends only on ``seeds[i]``.

    A counter-based generator (a hash of the seed and the position), computed for all rows at once: the same
    numbers on every device and process, whatever rows share the call. Seeds are non-negative and below ``2**63``.
    """
    s = torch.tensor(seeds, dtype=torch.int64)
    lo, hi = s & _MASK32, (s >> 32) & _MASK32
    key = _hash32(lo ^ _hash32(hi ^ 0x9E3779B9))
    j = torch.arange(count, dtype=torch.int64)
    h = _hash32(_hash32(j[None, :] ^ key[:, None]) ^ hi[:, None])
    return (h.double() + 0.5) / 2.0**32


@dataclass(frozen=True)
class Batch:
    """One process's share of a training batch.

    ``x`` (n, C, H, W) and ``y`` (n,) on the model's device; ``eps`` the budget at this step (after warm-up);
    ``seeds`` one attack seed per point, drawn for the global batch and sliced, so they do not depend on the number
    of processes.
    """

    x: torch.Tensor
    y: torch.Tensor
    eps: float
    seeds: tuple[int, ...]


class Method(ABC):
    """A training method: :meth:`loss` returns the per-sample loss of a batch; the trainer does the rest.

    ``net`` is the model to differentiate (wrapped in DistributedDataParallel when distributed, in train mode);
    ``model`` is the bare module, which the inner attack uses (in eval mode, weights frozen, by the attack base).
    """

    name: ClassVar[str] = ""
    adversarial: ClassVar[bool] = True
    """Whether the method trains on adversarial examples (the standard one does not)."""
    mixes_clean: ClassVar[bool] = False
    """Whether ``clean_weight`` applies: the loss mixes clean and adversarial cross-entropy."""
    detects_overfitting: ClassVar[bool] = False
    """Whether catastrophic overfitting is watched for (single-step methods)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            METHODS[cls.name] = cls

    @classmethod
    def describe(cls) -> str:
        """The first line of the method's docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @abstractmethod
    def loss(self, net: nn.Module, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample loss ``(n,)`` with gradient, and per-sample correctness ``(n,)`` of the trained prediction."""

    def attack(self, batch: Batch, steps: int, step: float, loss: str = "ce") -> InnerPGD:
        """The inner PGD for ``batch``: ``steps`` steps of ``step * eps`` from a per-sample seeded random start."""
        return InnerPGD(
            norm=self.config.norm,
            eps=batch.eps,
            steps=steps,
            step_size=step * batch.eps,
            random_start=True,
            loss=loss,
            early_stop=False,
            batch_size=max(1, len(batch.x)),
            sample_seeds=batch.seeds,
        )

    def _mixed(self, net: nn.Module, batch: Batch, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.config.clean_weight
        logits_adv = net(x_adv)
        loss = F.cross_entropy(logits_adv, batch.y, reduction="none")
        if w > 0:
            loss = w * F.cross_entropy(net(batch.x), batch.y, reduction="none") + (1 - w) * loss
        return loss, logits_adv.detach().argmax(1) == batch.y


class Standard(Method):
    """Standard training: cross-entropy on clean inputs."""

    name = "standard"
    adversarial = False

    def loss(self, net: nn.Module, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = net(batch.x)
        return F.cross_entropy(logits, batch.y, reduction="none"), logits.detach().argmax(1) == batch.y


class FGSMRS(Method):
    """FGSM with random start, "fast" adversarial training (Wong et al. 2020); watched for catastrophic overfitting."""

    name = "fgsm-rs"
    mixes_clean = True
    detects_overfitting = True

    def loss(self, net: nn.Module, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self.attack(batch, 1, self.config.fgsm_step)(model, batch.x, batch.y).x_adv
        return self._mixed(net, batch, x_adv)


class NFGSM(Method):
    """N-FGSM (de Jorge et al. 2022): one FGSM step of eps from noise of radius 2 * eps, not projected back.

    The inner attack is :class:`InnerPGD` with one step of ``eps``, a seeded uniform start of radius
    ``nfgsm_noise * eps`` and a ball of ``(nfgsm_noise + 1) * eps``, which that step cannot leave: the perturbation is
    only clipped to [0, 1], never projected onto the eps ball, as in the paper. Validation still attacks at ``eps``.
    """

    name = "n-fgsm"
    mixes_clean = True
    detects_overfitting = True

    def loss(self, net: nn.Module, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.config.nfgsm_noise
        atk = InnerPGD(
            norm=self.config.norm,
            eps=(k + 1) * batch.eps,
            start_eps=k * batch.eps,
            steps=1,
            step_size=batch.eps,
            random_start=True,
            early_stop=False,
            batch_size=max(1, len(batch.x)),
            sample_seeds=batch.seeds,
        )
        return self._mixed(net, batch, atk(model, batch.x, batch.y).x_adv)


class PGDAT(Method):
    """PGD adversarial training (Madry et al. 2018): cross-entropy on multi-step PGD examples."""

    name = "pgd"
    mixes_clean = True

    def loss(self, net: nn.Module, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self.attack(batch, self.config.attack_steps, self.config.step)(model, batch.x, batch.y).x_adv
        return self._mixed(net, batch, x_adv)


class TRADES(Method):
    """TRADES (Zhang et al. 2019): clean cross-entropy plus beta * KL(f(x) || f(x')), x' maximising the KL."""

    name = "trades"

    def loss(self, net: nn.Module, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        atk = self.attack(batch, self.config.attack_steps, self.config.step, loss="kl")
        x_adv = atk(model, batch.x, batch.y).x_adv
        logits = net(batch.x)
        logits_adv = net(x_adv)
        loss = F.cross_entropy(logits, batch.y, reduction="none") + self.config.beta * kl_loss(logits_adv, logits)
        return loss, logits_adv.detach().argmax(1) == batch.y


def get_method(name: str) -> type[Method]:
    """The method registered as ``name``; :class:`ConfigError` naming the known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown training method {name!r}; known: {', '.join(METHODS)}") from None
