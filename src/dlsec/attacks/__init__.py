"""Attacks: one file each, all built on :class:`dlsec.attacks.base.Attack`, registered by name.

>>> from dlsec.attacks import PGD
>>> result = PGD(norm="linf", eps=0.1, steps=50)(model, x, y)  # doctest: +SKIP
"""

from __future__ import annotations

from dlsec.attacks.apgd import APGD, APGDT
from dlsec.attacks.base import REGISTRY, Attack, AttackResult, Context, get_attack, param
from dlsec.attacks.cw import CarliniWagnerL2
from dlsec.attacks.ddn import DDN
from dlsec.attacks.deepfool import DeepFool
from dlsec.attacks.fgsm import FGSM
from dlsec.attacks.fmn import FMN
from dlsec.attacks.pgd import PGD
from dlsec.attacks.square import Square

__all__ = [
    "APGD",
    "APGDT",
    "DDN",
    "CarliniWagnerL2",
    "DeepFool",
    "FGSM",
    "FMN",
    "PGD",
    "REGISTRY",
    "Attack",
    "AttackResult",
    "Context",
    "Square",
    "get_attack",
    "param",
]
