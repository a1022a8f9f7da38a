"""Attacks: one file each, all built on :class:`dlsec.attacks.base.Attack`, registered by name.

>>> from dlsec.attacks import PGD
>>> result = PGD(norm="linf", eps=0.1, steps=50)(model, x, y)  # doctest: +SKIP
"""

from __future__ import annotations

from dlsec.attacks.base import REGISTRY, Attack, AttackResult, Context, get_attack, param
from dlsec.attacks.fgsm import FGSM
from dlsec.attacks.pgd import PGD

__all__ = [
    "REGISTRY",
    "Attack",
    "AttackResult",
    "Context",
    "FGSM",
    "PGD",
    "get_attack",
    "param",
]
