"""The attack base class: what must always hold is enforced here, once.

Each attack is a frozen, keyword-only dataclass whose fields are its parameters, validated once by the base from
their declared bounds (see :func:`param`). It writes only :meth:`Attack.run`. :meth:`Attack.__call__` is final
and, around ``run``:

* validates the data (float inputs in [0, 1], integer labels in range, matching batch sizes, targets);
* puts the model in eval mode with its weights frozen, and restores both afterwards (weights are never changed);
* seeds a private ``torch.Generator`` so a run is deterministic given ``seed``;
* skips points that are already adversarial (per-sample early stopping before the first step) and splits the rest
  into batches of ``batch_size``; with ``early_stop=False`` (adversarial training) it attacks every point and
  :meth:`Context.is_adv` reports none as done, so an attack runs all its steps on every point;
* runs gradient-free attacks under ``torch.no_grad()`` so a black-box attack cannot use gradients;
* projects the output onto the ``eps`` ball and the box [0, 1], then re-checks success with a fresh forward pass;
* counts per-sample forward and backward passes and the wall time.
"""

from __future__ import annotations

import dataclasses
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from dlsec.attacks.ops import NORMS, clip_box, lp_norm, margin
from dlsec.data import validate
from dlsec.errors import ConfigError, InputError
from dlsec.models import QueryCounter, attack_mode, device_of

__all__ = ["MARGIN_TOL", "Attack", "AttackResult", "Context", "REGISTRY", "get_attack", "param"]

MARGIN_TOL = 1e-5
"""A minimum-norm attack records a point as adversarial only when it clears the boundary by this much, relative to
its largest logit: a point on the boundary itself could flip when the base re-checks it in a batch of another size
(float noise is about 1e-6)."""

REGISTRY: dict[str, type[Attack]] = {}
"""Every attack by its registered name."""


def param(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    choices: tuple[Any, ...] | None = None,
    doc: str = "",
) -> Any:
    """Declare an attack parameter with its bounds; the base validates them once, at construction."""
    return field(default=default, metadata={"ge": ge, "gt": gt, "le": le, "choices": choices, "doc": doc})


@dataclass(frozen=True)
class AttackResult:
    """What an attack returns, per sample and in total.

    ``success`` is True where ``x_adv`` is adversarial (misclassified, or classified as the target when targeted)
    and within the budget; points already misclassified count as successes at distance 0 and cost nothing.
    ``norms`` is ``||x_adv - x||`` in the attack's norm. ``forwards``/``backwards`` count per-sample passes.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    norms: torch.Tensor
    attack: str
    norm: str
    eps: float | None
    forwards: int
    backwards: int
    seconds: float

    @property
    def success_rate(self) -> float:
        """Fraction of points for which an adversarial example was found."""
        return float(self.success.float().mean()) if len(self.success) else 0.0

    @property
    def robust_accuracy(self) -> float:
        """Fraction of points still correctly classified (untargeted attacks)."""
        return 1.0 - self.success_rate

    def distances(self) -> torch.Tensor:
        """Per-sample distance to the adversarial example found, ``inf`` where none was found."""
        return torch.where(self.success, self.norms, torch.full_like(self.norms, math.inf))


@dataclass
class Context:
    """What ``run`` gets besides the data: the counting model, the generator and the success criterion."""

    model: QueryCounter
    generator: torch.Generator
    targeted: bool
    num_classes: int
    early_stop: bool = True

    def is_adv(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Whether each point is done: adversarial (:meth:`succeeds`), or never with ``early_stop=False``."""
        if not self.early_stop:
            return torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
        return self.succeeds(logits, y, target)

    def succeeds(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Success per sample: classified as ``target`` when targeted, anything but ``y`` otherwise."""
        if target is not None and self.targeted:
            return logits.argmax(1) == target
        return logits.argmax(1) != y

    def adv_margin(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """A margin that is negative exactly when the point is adversarial."""
        if target is not None and self.targeted:
            return -margin(logits, target)
        return margin(logits, y)

    def clearly_adv(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Adversarial by more than float noise: the margin is below ``-MARGIN_TOL * (1 + max_j |z_j|)``."""
        tol = MARGIN_TOL * (1 + logits.abs().amax(dim=1))
        return self.is_adv(logits, y, target) & (self.adv_margin(logits, y, target) < -tol)

    def rand(self, *shape: int, like: torch.Tensor) -> torch.Tensor:
        """Uniform [0, 1) noise from the attack's own generator."""
        return torch.rand(*shape, generator=self.generator, device=self.generator.device, dtype=like.dtype).to(
            like.device
        )

    def randn(self, *shape: int, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise from the attack's own generator."""
        return torch.randn(*shape, generator=self.generator, device=self.generator.device, dtype=like.dtype).to(
            like.device
        )


@dataclass(frozen=True, kw_only=True)
class Attack(ABC):
    """Base of every attack. Subclasses set ``name`` and write :meth:`run`; see the module docstring."""

    name: ClassVar[str] = ""
    norms: ClassVar[tuple[str, ...]] = NORMS
    minimum_norm: ClassVar[bool] = False
    """A minimum-norm attack needs no ``eps``; with one, success also requires ``norm <= eps``."""
    gradient_free: ClassVar[bool] = False
    """Run under ``torch.no_grad()``: a score-based black-box attack."""
    supports_targets: ClassVar[bool] = True

    norm: str = param("linf", choices=NORMS, doc="threat model: linf or l2")
    eps: float | None = param(None, ge=0.0, doc="perturbation budget in the attack's norm")
    targeted: bool = param(False, doc="aim for a given target class instead of any wrong class")
    seed: int = param(0, doc="seed of the attack's own random generator")
    batch_size: int = param(1024, ge=1, doc="points attacked at once")
    early_stop: bool = param(
        True, doc="stop on a point once it is adversarial; False (adversarial training) runs every step on every point"
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            raise TypeError(f"{cls.__name__} must not override Attack.__call__; write run() instead")
        if cls.__dict__.get("name"):
            if cls.name in REGISTRY and REGISTRY[cls.name].__qualname__ != cls.__qualname__:
                raise TypeError(f"attack name {cls.name!r} is already registered by {REGISTRY[cls.name]}")
            REGISTRY[cls.name] = cls

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_param(type(self).__name__, f, getattr(self, f.name))
        if self.norm not in self.norms:
            raise ConfigError(f"{self.name} supports norms {', '.join(self.norms)}, not {self.norm!r}")
        if self.eps is None and not self.minimum_norm:
            raise ConfigError(f"{self.name} needs an epsilon (eps)")
        if self.eps is not None and not math.isfinite(self.eps):
            raise ConfigError(f"eps must be finite, got {self.eps}")
        if self.targeted and not self.supports_targets:
            raise ConfigError(f"{self.name} has no targeted version")
        if self.minimum_norm and not self.early_stop:
            raise ConfigError(f"{self.name} is a minimum-norm attack: it needs early_stop to find the boundary")

    @classmethod
    def describe(cls) -> str:
        """The first line of the attack's docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @abstractmethod
    def run(self, ctx: Context, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Return candidate adversarial inputs for a batch of points that are not yet adversarial.

        ``x`` is on the model's device; the base projects the result and re-checks it, so ``run`` only needs to
        search. Attacks should stop working on a point once :meth:`Context.is_adv` reports it done.
        """

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None
    ) -> AttackResult:
        """Attack ``model`` at inputs ``x`` with labels ``y`` (and ``target`` classes when targeted)."""
        start = time.perf_counter()
        validate(x, y)
        if self.targeted:
            if target is None:
                raise InputError(f"{self.name}: a targeted attack needs target classes")
            if target.shape != y.shape:
                raise InputError(f"targets must have shape {tuple(y.shape)}, got {tuple(target.shape)}")
        elif target is not None:
            raise InputError(f"{self.name}: target classes given to an untargeted attack")
        home = x.device
        with attack_mode(model):
            dev = device_of(model)
            counter = QueryCounter(model)
            xd, yd = x.detach().to(dev), y.to(dev)
            td = target.to(dev) if target is not None else None
            with torch.no_grad():
                # Without early stopping no point is skipped: one row tells the number of classes.
                logits = counter(xd if self.early_stop else xd[:1])
            if logits.dim() != 2:
                raise InputError(f"the model is not a classifier: logits of shape {tuple(logits.shape)}")
            k = int(logits.shape[1])
            if int(yd.max()) >= k or (td is not None and (int(td.max()) >= k or int(td.min()) < 0)):
                raise InputError(f"labels or targets out of range for a model with {k} classes")
            gen = torch.Generator(device=dev if dev.type != "mps" else "cpu").manual_seed(self.seed)
            ctx = Context(
                model=counter, generator=gen, targeted=self.targeted, num_classes=k, early_stop=self.early_stop
            )
            x_adv = xd.clone()
            if self.early_stop:
                todo = (~ctx.is_adv(logits, yd, td)).nonzero().squeeze(1)
            else:
                todo = torch.arange(len(xd), device=dev)
            for chunk in todo.split(self.batch_size) if todo.numel() else ():
                tc = td[chunk] if td is not None else None
                with torch.set_grad_enabled(not self.gradient_free):
                    out = self.run(ctx, xd[chunk], yd[chunk], tc)
                x_adv[chunk] = out.detach().to(xd.dtype)
            if self.eps is not None:
                x_adv = clip_box(x_adv, xd, self.norm, self.eps)
            else:
                x_adv = x_adv.clamp(0.0, 1.0)
            with torch.no_grad():
                success = ctx.succeeds(counter(x_adv), yd, td)
            norms = lp_norm(x_adv - xd, self.norm)
            if self.eps is not None:
                # Float rounding in the projection must not turn a point that is in budget into a failure.
                success &= norms <= self.eps * (1 + 1e-5) + 1e-7
            forwards, backwards = counter.forwards, counter.backwards
        return AttackResult(
            x_adv=x_adv.to(home),
            success=success.to(home),
            norms=norms.to(home),
            attack=self.name,
            norm=self.norm,
            eps=self.eps,
            forwards=forwards,
            backwards=backwards,
            seconds=time.perf_counter() - start,
        )


def _check_param(owner: str, f: dataclasses.Field[Any], value: Any) -> None:
    meta = f.metadata
    if not meta:
        return
    if meta.get("choices") is not None and value not in meta["choices"]:
        choices = ", ".join(map(str, meta["choices"]))
        raise ConfigError(f"{owner}: {f.name} must be one of {choices}, got {value!r}")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        if meta.get("ge") is not None and not value >= meta["ge"]:
            raise ConfigError(f"{owner}: {f.name} must be >= {meta['ge']}, got {value}")
        if meta.get("gt") is not None and not value > meta["gt"]:
            raise ConfigError(f"{owner}: {f.name} must be > {meta['gt']}, got {value}")
        if meta.get("le") is not None and not value <= meta["le"]:
            raise ConfigError(f"{owner}: {f.name} must be <= {meta['le']}, got {value}")


def get_attack(name: str) -> type[Attack]:
    """The attack class registered as ``name``; :class:`ConfigError` naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown attack {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
