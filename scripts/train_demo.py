"""Train the bundled demo models on scikit-learn's digits and write their weights as safetensors.

    python scripts/train_demo.py            # writes src/dlsec/models/weights/digits_cnn{,_at}.safetensors

``digits-cnn`` is trained normally; ``digits-cnn-at`` with PGD adversarial training (Madry et al. 2018), Linf
eps 0.1, 10 steps, after a short warm-up. Deterministic given the seeds below; takes a couple of minutes on 2 cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from dlsec.attacks import PGD
from dlsec.data import digits
from dlsec.models.demo import DEMO_MODELS, DigitsCNN

OUT = Path(__file__).resolve().parents[1] / "src" / "dlsec" / "models" / "weights"


def train(adv_eps: float, epochs: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    data = digits("train")
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(data.x) + 63) // 64))
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(data.x), generator=g)
        for i in range(0, len(perm), 64):
            xb, yb = data.x[perm[i : i + 64]], data.y[perm[i : i + 64]]
            if adv_eps > 0 and epoch >= 3:
                eps = adv_eps * min(1.0, (epoch - 2) / 5)  # ramp the budget up over five epochs
                xb = PGD(norm="linf", eps=eps, steps=10, seed=epoch * 1000 + i)(model, xb, yb).x_adv
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    test = digits("test")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, eps, epochs in (("digits-cnn", 0.0, 20), ("digits-cnn-at", 0.1, 40)):
        model = train(eps, epochs)
        with torch.no_grad():
            acc = (model(test.x).argmax(1) == test.y).float().mean().item()
        robust = PGD(norm="linf", eps=0.1, steps=50)(model, test.x, test.y).robust_accuracy
        path = args.out / DEMO_MODELS[name]
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        print(f"{name}: clean {acc:.4f}, PGD-50 Linf 0.1 robust {robust:.4f} -> {path}")


if __name__ == "__main__":
    main()
