"""Shared helpers for the peer benchmarks: models, data, timing, counting, tables and JSON.

Every benchmark imports this module first: it pins torch (and so every peer library, which all run on torch here)
to one intra-op and one inter-op thread, so that the libraries are compared on equal terms.

Models:

* ``digits-cnn`` / ``digits-cnn-at``: dlsec's bundled demo models (scikit-learn 8x8 digits; the second PGD
  adversarially trained at Linf 0.1).
* ``mnist-cnn`` / ``mnist-cnn-at``: a small CNN trained here on the FIRST 8,000 images of the MNIST test set
  (the only MNIST split available offline); all MNIST figures are measured on points from the LAST 2,000
  images. ``mnist-cnn-at`` is PGD-7 adversarially trained at Linf 0.3. Both are trained once and cached as
  safetensors under ``benchmarks/.cache/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

THREADS = 1
torch.set_num_threads(THREADS)
with contextlib.suppress(RuntimeError):  # already set (only possible before any parallel work)
    torch.set_num_interop_threads(THREADS)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
MNIST_NOTE = (
    "MNIST: CNN trained on the first 8,000 images of the MNIST test set; evaluated on points from the last 2,000"
)

if str(ROOT) not in sys.path:  # for tests/evaluation/masked.py
    sys.path.insert(0, str(ROOT))


def _src_hash() -> str:
    """A hash of dlsec's source as this process found it at start (the source changes while others work)."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted((ROOT / "src" / "dlsec").rglob("*.py")):
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


SRC_HASH = _src_hash()


# ----------------------------------------------------------------------------------------------------------------
# Data and models


def digits_test(n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` points of dlsec's digits test split (540 points, 1x8x8 in [0, 1])."""
    from dlsec.data import digits

    te = digits("test")
    return te.x[:n], te.y[:n]


def mnist_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): the first 8,000 and the last 2,000 images of the MNIST test set."""
    from dlsec.data import load_data

    ds = load_data(f"idx:{MNIST_DIR}")
    assert len(ds.x) == 10_000, len(ds.x)
    return ds.x[:8000], ds.y[:8000], ds.x[8000:], ds.y[8000:]


def mnist_test(n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` of the last 2,000 MNIST test images (never seen in training)."""
    _, _, x, y = mnist_split()
    return x[:n], y[:n]


class MnistCNN(nn.Module):
    """A small MNIST CNN (about 0.2M parameters): two strided convolutions and two linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 7x7
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _pgd_train_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """Plain PGD (random start, step 2.5 * eps / steps) for adversarial training; model in eval mode."""
    alpha = 2.5 * eps / steps
    model.eval()
    adv = (x + (2 * torch.rand_like(x) - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        adv = torch.min(torch.max(adv.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    model.train()
    return adv.detach()


def train_mnist(adv_eps: float = 0.0, epochs: int = 10, seed: int = 0, log: bool = True) -> nn.Module:
    """Train :class:`MnistCNN` on the first 8,000 MNIST test images; PGD-7 adversarial training if adv_eps > 0.

    Adversarial training ramps eps linearly from 0 to adv_eps over the first half of the epochs (after one clean
    epoch), the usual trick that keeps a small model from collapsing at MNIST's eps 0.3.
    """
    torch.manual_seed(seed)
    xtr, ytr, xte, yte = mnist_split()
    model = MnistCNN()
    bs = 100
    steps_per_epoch = math.ceil(len(xtr) / bs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(perm), bs):
            xb, yb = xtr[perm[i : i + bs]], ytr[perm[i : i + bs]]
            if adv_eps > 0 and epoch >= 1:
                eps = adv_eps * min(1.0, epoch / max(1, epochs // 2))
                xb = _pgd_train_batch(model, xb, yb, eps, steps=7)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if log:
            model.eval()
            with torch.no_grad():
                acc = (model(xte).argmax(1) == yte).float().mean().item()
            print(f"  epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, held-out clean acc {acc:.4f} "
                  f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


MNIST_MODELS = {"mnist-cnn": (0.0, 8), "mnist-cnn-at": (0.3, 10)}
"""Name to (adversarial-training eps, epochs)."""


def load_model(name: str) -> nn.Module:
    """A benchmark model by name, in eval mode with frozen weights (MNIST ones trained on first use, cached)."""
    if name.startswith("digits"):
        from dlsec.models import load_demo

        model = load_demo(name)
    elif name in MNIST_MODELS:
        from safetensors.torch import load_file, save_file

        path = CACHE / f"{name}.safetensors"
        if path.exists():
            model = MnistCNN()
            model.load_state_dict(load_file(str(path)))
        else:
            eps, epochs = MNIST_MODELS[name]
            print(f"training {name} (eps {eps}, {epochs} epochs, 1 thread); cached at {path}", file=sys.stderr)
            model = train_mnist(eps, epochs)
            CACHE.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:
        raise KeyError(name)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def clean_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# ----------------------------------------------------------------------------------------------------------------
# Measuring


class Counting(nn.Module):
    """Wraps a model for the peers: counts per-sample forward passes and per-sample gradients reaching the input."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model
        self.eval()
        self.reset()

    def reset(self) -> None:
        self.forwards = 0
        self.backwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        self.forwards += n
        if x.requires_grad and torch.is_grad_enabled():

            def hook(grad: torch.Tensor, n: int = n) -> None:
                self.backwards += n

            x.register_hook(hook)
        return self.m(x)


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[Any, float, list[float]]:
    """Run ``fn`` ``repeats`` times; return (last result, median seconds, all seconds)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times), times


def l2(a: Any, b: Any) -> torch.Tensor:
    return (torch.as_tensor(a) - torch.as_tensor(b)).flatten(1).norm(dim=1)


def linf(a: Any, b: Any) -> torch.Tensor:
    return (torch.as_tensor(a) - torch.as_tensor(b)).flatten(1).abs().amax(dim=1)


def robust_acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: Any, norm: str, eps: float) -> float:
    """Robust accuracy judged independently of the library: correct on x_adv OR x_adv outside the budget.

    A point counts as broken only if x_adv is misclassified, lies in [0, 1] and within eps (1e-5 slack).
    """
    xa = torch.as_tensor(x_adv, dtype=x.dtype)
    d = linf(xa, x) if norm == "linf" else l2(xa, x)
    ok_box = (xa >= -1e-6).flatten(1).all(1) & (xa <= 1 + 1e-6).flatten(1).all(1)
    with torch.no_grad():
        wrong = model(xa.clamp(0, 1)).argmax(1) != y
    broken = wrong & ok_box & (d <= eps * (1 + 1e-5) + 1e-7)
    return 1.0 - broken.float().mean().item()


# ----------------------------------------------------------------------------------------------------------------
# Output


def parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few points, one repeat: a smoke run")
    return p


def machine_note() -> dict[str, Any]:
    import numpy

    info: dict[str, Any] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "note": "shared 2-core machine, no GPU; timings noisy, compare rows of the same run",
    }
    for mod in ("dlsec", "torchattacks", "foolbox", "art", "pyautoattack"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - missing peers are reported, not fatal
            info[mod] = None
    try:
        import subprocess

        info["dlsec_commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "src"], capture_output=True, text=True
        ).stdout.strip()
        info["dlsec_src_dirty"] = bool(dirty)
        info["dlsec_src_sha256_at_start"] = SRC_HASH
    except OSError:
        pass
    return info


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        if math.isnan(v):
            return "-"
        return f"{v:.{digits}f}"
    return str(v)


def table(rows: list[dict[str, Any]], cols: list[str], digits: int = 3) -> str:
    """A Markdown table of ``rows`` restricted to ``cols``."""
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * len(cols)) + "|"]
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(c), digits) for c in cols) + " |")
    return "\n".join(out)


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def save(name: str, payload: dict[str, Any], quick: bool, merge: bool = False) -> Path:
    """Write ``benchmarks/results/NAME.json`` (``NAME.quick.json`` for a quick run).

    With ``merge``, results of models not in this run are kept from the existing file: ``rows`` entries whose
    ``model`` this run did not measure, and the other models' keys of the dict-valued fields (keyed by model).
    The command and machine note of each model's run are kept per model under ``runs``.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / (f"{name}.quick.json" if quick else f"{name}.json")
    command = " ".join([".venv-bench/bin/python", *sys.argv])
    note = machine_note()
    payload = {"benchmark": name, "quick": quick, "command": command, "machine": note, **payload}
    if merge:
        models = {r["model"] for r in payload.get("rows", [])}
        old = json.loads(path.read_text()) if path.exists() else {}
        runs = {k: v for k, v in old.get("runs", {}).items() if k not in models}
        runs.update({m: {"command": command, "machine": note} for m in models})
        payload["runs"] = runs
        payload["rows"] = [r for r in old.get("rows", []) if r.get("model") not in models] + payload["rows"]
        for key, val in list(payload.items()):
            if isinstance(val, dict) and key not in ("machine", "runs") and isinstance(old.get(key), dict):
                payload[key] = {**{k: v for k, v in old[key].items() if k not in models}, **val}
    path.write_text(json.dumps(_json_safe(payload), indent=2) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")
    return path


if __name__ == "__main__":
    # Train and cache the MNIST models; print their accuracies.
    from dlsec.attacks import PGD

    _, _, xte, yte = mnist_split()
    for name in MNIST_MODELS:
        t0 = time.perf_counter()
        m = load_model(name)
        x, y = xte[:500], yte[:500]
        r = PGD(norm="linf", eps=0.3, steps=50)(m, x, y)
        print(f"{name}: clean {clean_accuracy(m, xte, yte):.4f} on the last 2,000; PGD-50 Linf 0.3 robust "
              f"{r.robust_accuracy:.3f} on 500 ({time.perf_counter() - t0:.0f}s)")
