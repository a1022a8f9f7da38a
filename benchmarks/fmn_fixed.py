"""foolbox 3.3.4's L2FMNAttack with its L2 projection fixed (used by bench_minnorm.py, labelled PATCHED).

In foolbox 3.3.4, ``L2FMNAttack.project`` computes ``factor = min(1, norms / norms)``, which is always 1: the
perturbation is never projected onto the epsilon ball, so the attack's norm constraint does nothing and its
results are far from minimal. This subclass projects correctly; everything else is foolbox's code.
"""

from __future__ import annotations

import eagerpy as ep
import foolbox as fb
from foolbox.devutils import atleast_kd, flatten


class L2FMNAttackFixed(fb.attacks.L2FMNAttack):
    """L2FMNAttack with a correct projection onto the L2 ball of radius ``epsilon`` around ``x0``."""

    def project(self, x, x0, epsilon):  # type: ignore[no-untyped-def]
        norms = ep.maximum(flatten(x - x0).norms.l2(axis=-1), 1e-12)
        factor = atleast_kd(ep.minimum(1, epsilon / norms), x.ndim)
        return x0 + (x - x0) * factor
