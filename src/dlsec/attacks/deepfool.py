"""DeepFool: iterated linearisation of the decision boundary, L2 and Linf.

Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool deep neural networks",
CVPR 2016, https://arxiv.org/abs/1511.04599.

The ``candidates`` classes ranked highest at the clean point (the label first) are fixed at the start. At each
step, for every candidate class ``k`` the attack linearises ``f_k = z_k - z_y`` (one backward pass per class), takes
the class whose linearised boundary is closest, ``|f_k| / ||grad f_k||_*`` (``*`` the dual norm: L2 for L2, L1
for Linf), and adds the minimal step that reaches it (along ``grad f_k`` for L2, along its sign for Linf) to the
total perturbation. The iterate is ``x + (1 + overshoot) * total``, clipped to [0, 1]. A point stops as soon as it
is misclassified; the others run at most ``steps`` steps. Untargeted only.

Shapes: ``x`` (N, C, H, W) in [0, 1], ``y`` (N,). Example::

    result = DeepFool(norm="l2")(model, x, y)      # minimum-norm: eps may be None
    result.distances().median()
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlsec.attacks.base import Attack, Context, param
from dlsec.attacks.ops import expand, flat, lp_norm


@dataclass(frozen=True, kw_only=True)
class DeepFool(Attack):
    """DeepFool (Moosavi-Dezfooli et al. 2016): minimal steps to the nearest linearised boundary, L2 or Linf."""

    name = "deepfool"
    minimum_norm = True
    supports_targets = False

    steps: int = param(50, ge=1, doc="largest number of linearisation steps per point")
    overshoot: float = param(0.02, ge=0.0, doc="the total perturbation is scaled by 1 + overshoot")
    candidates: int = param(10, ge=2, doc="classes considered: the label and the highest-ranked others")

    def run(self, ctx: Context, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if len(x) == 0:  # every point was already adversarial
            return x.clone()
        k = min(self.candidates, ctx.num_classes)
        dual = "l2" if self.norm == "l2" else "l1"
        x_adv = x.clone()
        total = torch.zeros_like(x)
        active = torch.arange(len(x), device=x.device)  # points not yet adversarial
        classes: torch.Tensor | None = None
        for _ in range(self.steps):
            xa = x_adv[active].requires_grad_(True)
            logits = ctx.model(xa)
            if classes is None:  # the candidate classes, ranked at the clean point: the label, then the others
                others = logits.detach().scatter(1, y[:, None], float("-inf")).topk(k - 1, dim=1).indices
                classes = torch.cat([y[:, None], others], dim=1)
            # Stop once misclassified by more than float noise (see base.MARGIN_TOL), so the base's re-check agrees.
            keep = ~ctx.clearly_adv(logits.detach(), y[active], None)
            if not bool(keep.any()):
                break
            cls = classes[active]
            z_label = logits.gather(1, cls[:, :1])
            diffs = logits.gather(1, cls[:, 1:]) - z_label  # (m, k - 1), negative while not adversarial
            grads = []
            for j in range(k - 1):
                (g,) = torch.autograd.grad(diffs[:, j].sum(), xa, retain_graph=j < k - 2)
                grads.append(g[keep])
            w = torch.stack(grads, dim=1)  # (m', k - 1, *shape)
            f = diffs.detach()[keep]
            active = active[keep]
            wf = flat(w.reshape(-1, *w.shape[2:])).reshape(len(active), k - 1, -1)
            w_norm = wf.norm(p=2 if dual == "l2" else 1, dim=2)
            dist = f.abs() / (w_norm + 1e-8)
            best = dist.argmin(dim=1)
            rows = torch.arange(len(active), device=x.device)
            d = dist[rows, best] + 1e-4  # a hair past the linearised boundary, for numerical stability
            g = w[rows, best]
            if self.norm == "l2":
                step = expand(d, g) * g / expand(lp_norm(g, "l2") + 1e-8, g)
            else:
                step = expand(d, g) * g.sign()
            total[active] += step
            x_adv[active] = (x[active] + (1 + self.overshoot) * total[active]).clamp(0.0, 1.0)
        return x_adv
