"""Adversarial training: dlsec's trainer (standard, fgsm-rs, n-fgsm, pgd, trades) vs ART's AdversarialTrainerMadryPGD.

* digits (scikit-learn 8x8): ``cnn-small``, Linf eps 0.1, 30 epochs, Adam, batch 64, trained on the 1,257-image
  training split of ``dlsec.data.digits`` and judged on its 540-image test split;
* MNIST: ``cnn-mnist``, Linf eps 0.3, trained on the FIRST 8,000 images of the MNIST test set (the only MNIST split
  here), judged on the LAST 2,000 (see ``common.py``).

For each model: training wall time and process CPU time (both around the whole training call, dlsec's per-epoch
validation and checkpoints included), clean accuracy on the whole test split, robust accuracy under ``dlsec
evaluate``'s default protocol (``dlsec.evaluate``) and under AutoAttack ``standard`` (pyautoattack), re-judged here
from AutoAttack's adversarial inputs. On MNIST the two attacks run on fixed prefixes of the 2,000 test images
(``--eval-n``, ``--aa-n``): AutoAttack standard costs several seconds per robust point on this CPU.

ART's ``AdversarialTrainerMadryPGD`` trains the same architecture from the same initial weights on the same
training data (all of it: ART holds nothing out), same epochs, batch, optimizer, learning rate and eps, PGD 10 steps
of 2.5 * eps / 10 with one random start (its attack batch set to the training batch). ART has no learning-rate
schedule, epsilon warm-up, validation or weight averaging: its learning rate is constant.

One training run per model (no repeats: each takes tens of seconds to minutes); seeds fixed. Models run one after
another in one process, or split over processes with ``--methods``; results merge into
``benchmarks/results/train.json`` by model, and ``--report`` prints the Markdown of everything there.

    .venv-bench/bin/python benchmarks/train.py [--quick] [--dataset digits|mnist|all] [--methods ...] [--report]
"""

from __future__ import annotations

import contextlib
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

import common  # pins torch to one thread before any work runs

# The recipes. dlsec's settings beyond the fixed set-up (architecture, eps, epochs, Adam, batch) were chosen
# on the trainer's own validation split (10% of the training data), never on the test split; see README section 6:
# Adam's learning rate 3e-3 (validation robust accuracy 0.905 for TRADES against 0.865 at 1e-3), one-cycle schedule
# (the trainer's default), validation PGD of 10 steps (as Rice et al. 2020; the trainer's default is 20).
DATASETS: dict[str, dict[str, Any]] = {
    "digits": dict(
        arch="cnn-small", eps=0.1, epochs=30, batch=64, lr=3e-3, warmup=0.0, val_steps=10,
        eval_n=None, aa_n=None, quick_epochs=3, quick_n=60,
        methods=["standard", "fgsm-rs", "n-fgsm", "n-fgsm-val2", "pgd", "trades", "trades-all", "art-pgd"],
    ),
    "mnist": dict(
        arch="cnn-mnist", eps=0.3, epochs=5, batch=64, lr=3e-3, warmup=2.0, val_steps=10,
        eval_n=200, aa_n=100, quick_epochs=1, quick_n=20, quick_train=1600,
        methods=["standard", "fgsm-rs", "pgd", "trades", "art-pgd"],
    ),
}
METHODS = ["standard", "fgsm-rs", "n-fgsm", "n-fgsm-val2", "pgd", "trades", "trades-all", "art-pgd"]
"""``art-pgd`` is ART's AdversarialTrainerMadryPGD; the others are dlsec's methods."""
VARIANTS: dict[str, dict[str, Any]] = {
    "trades-all": dict(method="trades", val_fraction=0.0, select_best=False),
    "n-fgsm-val2": dict(method="n-fgsm", val_every=2),
}
"""Named variants: ``trades-all`` trains TRADES on all the training data (nothing held out) and keeps the last epoch;
``n-fgsm-val2`` is N-FGSM validated (selection, catastrophic-overfitting checks) after every second epoch only."""
BEST = "trades-all"
"""dlsec's best method, declared before the run (see README section 6); also run with ``--second-seed``."""
LABELS = {"art-pgd": "ART MadryPGD", "trades-all": "dlsec trades (all data)", "n-fgsm-val2": "dlsec n-fgsm (val every 2)"}


def data(name: str, quick: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if name == "digits":
        from dlsec.data import digits

        tr, te = digits("train"), digits("test")
        return tr.x, tr.y, te.x, te.y
    xtr, ytr, xte, yte = common.mnist_split()
    if quick:
        n = DATASETS[name]["quick_train"]
        xtr, ytr = xtr[:n], ytr[:n]
    return xtr, ytr, xte, yte


def build(arch: str, seed: int) -> torch.nn.Module:
    """The architecture as ``dlsec train`` builds it: torch seeded with ``seed`` just before."""
    from dlsec.models.architectures import get_architecture

    torch.manual_seed(seed)
    return get_architecture(arch).build(10, None).train()


def train_dlsec(st: dict[str, Any], method: str, seed: int, epochs: int, x: torch.Tensor, y: torch.Tensor):
    from dlsec.defenses import AdversarialTrainer, TrainConfig

    kw = {"method": method, **VARIANTS.get(method, {})}
    cfg = TrainConfig(
        norm="linf", eps=st["eps"], epochs=epochs, batch_size=st["batch"], lr=st["lr"], val_steps=st["val_steps"],
        warmup_epochs=st["warmup"] if method != "standard" else 0.0, seed=seed, **kw,
    )
    model = build(st["arch"], seed)
    with tempfile.TemporaryDirectory() as out:  # checkpoints every epoch, as `dlsec train` writes them
        t0, c0 = time.perf_counter(), time.process_time()
        res = AdversarialTrainer(cfg, model, out=out).fit(x, y, export=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    info = {
        "config": cfg.to_dict(),
        "selected_epoch": res.selected_epoch,
        "stop_reason": res.stop_reason,
        "val_seconds": sum(r["val_seconds"] for r in res.history),
        "selected": res.selected,
        "history": list(res.history),
    }
    return res.model, wall, cpu, info


def train_art(st: dict[str, Any], seed: int, epochs: int, x: torch.Tensor, y: torch.Tensor):
    from art.defences.trainer import AdversarialTrainerMadryPGD
    from art.estimators.classification import PyTorchClassifier

    model = build(st["arch"], seed)
    np.random.seed(seed)  # ART draws its data order and random starts from numpy's global generator
    clf = PyTorchClassifier(
        model=model,
        loss=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.Adam(model.parameters(), lr=st["lr"]),
        input_shape=tuple(x.shape[1:]),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    eps = st["eps"]
    trainer = AdversarialTrainerMadryPGD(
        clf, nb_epochs=epochs, batch_size=st["batch"], eps=eps, eps_step=2.5 * eps / 10, max_iter=10,
        num_random_init=1,
    )
    trainer.attack.set_params(batch_size=st["batch"])  # one attack call per training batch, as dlsec
    xn, yn = x.numpy(), y.numpy()
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit(xn, yn)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    model.eval()
    info = {
        "config": {"eps": eps, "eps_step": 2.5 * eps / 10, "max_iter": 10, "num_random_init": 1, "epochs": epochs,
                   "batch_size": st["batch"], "lr": st["lr"], "optimizer": "adam (constant lr)",
                   "attack_batch_size": trainer.attack.batch_size, "ratio": 1.0},
    }
    return model, wall, cpu, info


def run_autoattack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> tuple[float, float]:
    from pyautoattack import AutoAttack

    log = logging.getLogger("auto-attack")
    log.setLevel(logging.WARNING)
    adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", device="cpu", seed=0)
    t0 = time.perf_counter()
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
    wall = time.perf_counter() - t0
    return common.robust_acc(model, x, y, x_adv, "linf", eps), wall


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    import fcntl

    common.CACHE.mkdir(parents=True, exist_ok=True)
    with open(common.CACHE / "train.lock", "w") as f:  # benchmarks/.cache/ is git-ignored
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cache(name: str, label: str, quick: bool) -> tuple[Any, Any]:
    stem = f"train-{name}-{label.replace(' ', '_').replace('(', '').replace(')', '')}{'-quick' if quick else ''}"
    return common.CACHE / f"{stem}.safetensors", common.CACHE / f"{stem}.json"


def train_one(name: str, label: str, method: str, seed: int, args: Any) -> None:
    """Train one model; its weights and training figures go to benchmarks/.cache/ for :func:`measure`."""
    from safetensors.torch import save_file

    st = DATASETS[name]
    epochs = st["quick_epochs"] if args.quick else st["epochs"]
    xtr, ytr, _, _ = data(name, args.quick)
    print(f"\n### {name} / {label}: training ({epochs} epochs, {len(xtr)} points)", flush=True)
    if method == "art-pgd":
        model, wall, cpu, info = train_art(st, seed, epochs, xtr, ytr)
    else:
        model, wall, cpu, info = train_dlsec(st, method, seed, epochs, xtr, ytr)
    print(f"trained in {wall:.1f}s wall, {cpu:.1f}s CPU", flush=True)
    wpath, jpath = _cache(name, label, args.quick)
    common.CACHE.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(wpath))
    jpath.write_text(json.dumps({"wall": wall, "cpu": cpu, "epochs": epochs, "train_points": len(xtr),
                                 "info": info, "machine": common.machine_note()}))


def retime(name: str, jobs: list[tuple[str, str, int]], args: Any) -> None:
    """Train every model of ``jobs`` again ``--repeats`` times, in a rotating order, for median training times.

    The seeds are fixed, so each run must give the weights already evaluated (checked, bit for bit); the rows in
    ``train.json`` then get the median wall and CPU times and every run's times.
    """
    from safetensors.torch import load_file

    st = DATASETS[name]
    epochs = st["quick_epochs"] if args.quick else st["epochs"]
    xtr, ytr, _, _ = data(name, args.quick)
    times: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in jobs}
    same: dict[str, bool] = {label: True for label, _, _ in jobs}
    for r in range(args.repeats):
        for label, method, seed in jobs[r % len(jobs):] + jobs[: r % len(jobs)]:
            if method == "art-pgd":
                model, wall, cpu, _ = train_art(st, seed, epochs, xtr, ytr)
            else:
                model, wall, cpu, _ = train_dlsec(st, method, seed, epochs, xtr, ytr)
            cached = load_file(str(_cache(name, label, args.quick)[0]))
            same[label] &= all(torch.equal(cached[k], v) for k, v in model.state_dict().items())
            times[label].append((wall, cpu))
            print(f"{name} / {label}, repeat {r + 1}: {wall:.1f}s wall, {cpu:.1f}s CPU, same weights {same[label]}",
                  flush=True)
    with _locked():
        _update_times(name, times, same, args)


def _update_times(name: str, times: dict[str, list[tuple[float, float]]], same: dict[str, bool], args: Any) -> None:
    path = common.RESULTS / ("train.quick.json" if args.quick else "train.json")
    doc = json.loads(path.read_text())
    for row in doc["rows"]:
        if row["dataset"] == name and row["label"] in times:
            t = times[row["label"]]
            row.update({
                "train_wall_s": statistics.median(w for w, _ in t), "train_cpu_s": statistics.median(c for _, c in t),
                "train_wall_all": [w for w, _ in t], "train_cpu_all": [c for _, c in t],
                "first_run_wall_s": row.get("first_run_wall_s", row["train_wall_s"]),
                "first_run_cpu_s": row.get("first_run_cpu_s", row["train_cpu_s"]),
                "repeats_same_weights": same[row["label"]],
            })
    doc.setdefault("retimed", {})[name] = {"command": " ".join([".venv-bench/bin/python", *__import__("sys").argv]),
                                           "machine": common.machine_note(), "repeats": args.repeats}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nupdated {path.relative_to(common.ROOT)}")


CHOICES = [
    ("trades, lr 1e-3", dict(method="trades", lr=1e-3)),
    ("trades, lr 3e-3", dict(method="trades", lr=3e-3)),
    ("trades, lr 3e-3, ema 0.99", dict(method="trades", lr=3e-3, ema=0.99)),
    ("pgd, lr 3e-3", dict(method="pgd", lr=3e-3)),
]
"""The digits settings compared on the validation split (``--phase choose``)."""


def choose(args: Any) -> None:
    """Digits: the settings of :data:`CHOICES` judged on the trainer's held-out 10% only (no test data)."""
    from dlsec.data import digits
    from dlsec.defenses import AdversarialTrainer, TrainConfig

    st = DATASETS["digits"]
    tr = digits("train")
    epochs = st["quick_epochs"] if args.quick else st["epochs"]
    rows = []
    for label, kw in CHOICES:
        cfg = TrainConfig(eps=st["eps"], epochs=epochs, batch_size=st["batch"], val_steps=st["val_steps"], **kw)
        res = AdversarialTrainer(cfg, build(st["arch"], 0)).fit(tr.x, tr.y, export=False)
        h = res.history
        rows.append({
            "setting": label,
            "best_epoch": res.selected_epoch,
            "best_val_clean": res.selected["val_clean_acc"], "best_val_robust": res.selected["val_robust_acc"],
            "last_val_clean": h[-1]["val_clean_acc"], "last_val_robust": h[-1]["val_robust_acc"],
            "mean_last5_val_robust": statistics.mean(r["val_robust_acc"] for r in h[-5:]),
            "history": [{k: r[k] for k in ("epoch", "val_clean_acc", "val_robust_acc")} for r in h],
        })
        print(f"{label}: best epoch {res.selected_epoch}", flush=True)
    from dlsec.defenses.training import split_indices

    n_val = len(split_indices(tr.y, 0.1, 0)[1])
    for r in rows:
        r["val_points"] = n_val
    print(f"\n## digits: settings judged on the validation split ({n_val} held-out training points, PGD-"
          f"{st['val_steps']} at eps {st['eps']}, {epochs} epochs)\n")
    print(common.table(rows, ["setting", "best_epoch", "best_val_clean", "best_val_robust", "last_val_clean",
                              "last_val_robust", "mean_last5_val_robust"], 3))
    common.save("train_choice", {"rows": rows}, args.quick)


def measure(name: str, label: str, method: str, seed: int, args: Any) -> dict[str, Any]:
    """Evaluate a model trained by :func:`train_one` and save its row."""
    from safetensors.torch import load_file

    from dlsec.evaluation import evaluate

    st = DATASETS[name]
    _, _, xte, yte = data(name, args.quick)
    wpath, jpath = _cache(name, label, args.quick)
    trained = json.loads(jpath.read_text())
    wall, cpu, epochs, info = trained["wall"], trained["cpu"], trained["epochs"], trained["info"]
    model = build(st["arch"], seed)
    model.load_state_dict(load_file(str(wpath)))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    clean = common.clean_accuracy(model, xte, yte)
    print(f"\n### {name} / {label}: trained in {wall:.1f}s wall, {cpu:.1f}s CPU; clean {clean:.4f} on {len(xte)}",
          flush=True)

    n_eval = st["quick_n"] if args.quick else (args.eval_n or st["eval_n"] or len(xte))
    n_aa = st["quick_n"] if args.quick else (args.aa_n or st["aa_n"] or len(xte))
    t0 = time.perf_counter()
    ev = evaluate(model, xte[:n_eval], yte[:n_eval], norm="linf", eps=st["eps"])
    ev_s = time.perf_counter() - t0
    print(f"dlsec evaluate on {n_eval}: robust {ev.robust_accuracy:.4f} ({ev_s:.0f}s, flags {list(ev.flags)})",
          flush=True)
    aa, aa_s = run_autoattack(model, xte[:n_aa], yte[:n_aa], st["eps"])
    print(f"AutoAttack standard on {n_aa}: robust {aa:.4f} ({aa_s:.0f}s)", flush=True)
    row = {
        "model": f"{name}/{label}", "dataset": name, "label": label, "method": method, "seed": seed,
        "library": "ART" if method == "art-pgd" else "dlsec", "epochs": epochs,
        "train_points": trained["train_points"], "val_fraction": info.get("config", {}).get("val_fraction"),
        "train_wall_s": wall, "train_cpu_s": cpu, "val_s": info.get("val_seconds"),
        "selected_epoch": info.get("selected_epoch"), "stop_reason": info.get("stop_reason"),
        "clean": clean, "clean_n": len(xte),
        "dlsec_robust": ev.robust_accuracy, "dlsec_clean_on_eval": ev.clean_accuracy, "eval_n": n_eval,
        "dlsec_eval_s": ev_s, "dlsec_flags": ",".join(ev.flags) or "none",
        "aa_robust": aa, "aa_n": n_aa, "aa_s": aa_s,
    }
    details = {"train": info, "train_machine": trained["machine"], "dlsec_stages": [
        {"name": s.name, "robust_accuracy": s.robust_accuracy, "broken": s.broken, "attacked": s.attacked}
        for s in ev.attacks
    ]}
    with _locked():  # several processes may merge rows into the same file
        common.save("train", {"rows": [row], "details": {row["model"]: details}}, args.quick, merge=True)
    return row


# ----------------------------------------------------------------------------------------------------------------
# Report


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def report(quick: bool) -> None:
    path = common.RESULTS / ("train.quick.json" if quick else "train.json")
    if not path.exists():
        print(f"\n(no results yet in {path.relative_to(common.ROOT)})")
        return
    doc = json.loads(path.read_text())
    rows = doc["rows"]
    m = doc["machine"]
    print(f"\nversions: dlsec {m.get('dlsec')} (commit {m.get('dlsec_commit')}, src changed: "
          f"{m.get('dlsec_src_dirty')}), torch {m['torch']}, ART {m.get('art')}, pyautoattack "
          f"{m.get('pyautoattack')}, numpy {m['numpy']}, Python {m['python']}; {m['threads']} torch thread")
    for name, info in doc.get("retimed", {}).items():
        print(f"{name}: training times are medians of {info['repeats']} runs ({info['command']}, "
              f"{info['machine']['date']})")
    choice = common.RESULTS / ("train_choice.quick.json" if quick else "train_choice.json")
    if choice.exists():
        c = json.loads(choice.read_text())
        r0 = c["rows"][0]
        print(f"\n## digits: settings judged on the validation split only ({r0['val_points']} held-out training "
              f"points, PGD-{DATASETS['digits']['val_steps']}, {len(r0['history'])} epochs)\n")
        print("| setting | best epoch | val clean at best | val robust at best | val robust, last epoch | "
              "val robust, mean of last 5 |")
        print("|---|---|---|---|---|---|")
        for r in c["rows"]:
            print(f"| {r['setting']} | {r['best_epoch']} | {_pct(r['best_val_clean'])} | "
                  f"{_pct(r['best_val_robust'])} | {_pct(r['last_val_robust'])} | "
                  f"{_pct(r['mean_last5_val_robust'])} |")
    for name in DATASETS:
        rs = [r for r in rows if r["dataset"] == name]
        if not rs:
            continue
        order = {m: i for i, m in enumerate(METHODS)}
        rs.sort(key=lambda r: (order.get(r["method"], 99), r["seed"]))
        st = DATASETS[name]
        print(f"\n## {name}: Linf eps {st['eps']}, {rs[0]['epochs']} epochs, {rs[0]['train_points']} training points\n")
        print("| model | held out | train wall s | CPU s | validation s (first run) | kept epoch | clean "
              f"[{rs[0]['clean_n']}] | dlsec evaluate robust [n] | AutoAttack robust [n] | evaluate s | "
              "AutoAttack s | dlsec flags |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rs:
            val = "-" if r["val_s"] is None else f"{r['val_s']:.1f}"
            kept = "-" if r["selected_epoch"] is None else f"{r['selected_epoch']} ({r['stop_reason']})"
            held = "-" if r.get("val_fraction") is None else f"{100 * r['val_fraction']:.0f}%"
            print(f"| {r['label']} | {held} | {r['train_wall_s']:.1f} | {r['train_cpu_s']:.1f} | {val} | {kept} | "
                  f"{_pct(r['clean'])} | {_pct(r['dlsec_robust'])} [{r['eval_n']}] | "
                  f"{_pct(r['aa_robust'])} [{r['aa_n']}] | {r['dlsec_eval_s']:.0f} | {r['aa_s']:.0f} | {r['dlsec_flags']} |")
        by = {r["label"]: r for r in rs}
        pg, tr, art = (by.get(k) for k in ("dlsec pgd", LABELS[BEST], "ART MadryPGD"))
        print()
        for fast in ("fgsm-rs", "n-fgsm", "n-fgsm (val every 2)"):
            fg = by.get(f"dlsec {fast}")
            if fg and pg:
                print(f"- {fast} / pgd training wall time: {fg['train_wall_s'] / pg['train_wall_s']:.2f} "
                      f"(CPU {fg['train_cpu_s'] / pg['train_cpu_s']:.2f}); AutoAttack robust {fast} - pgd: "
                      f"{100 * (fg['aa_robust'] - pg['aa_robust']):+.1f} points")
        if art:
            for mine in (pg, by.get("dlsec trades"), tr):
                if mine:
                    print(f"- {mine['label']} vs ART: wall time ratio {mine['train_wall_s'] / art['train_wall_s']:.2f} "
                          f"(CPU {mine['train_cpu_s'] / art['train_cpu_s']:.2f}), "
                          f"AutoAttack robust {100 * (mine['aa_robust'] - art['aa_robust']):+.1f} points, "
                          f"dlsec-evaluate robust {100 * (mine['dlsec_robust'] - art['dlsec_robust']):+.1f} points")
        seeds = [r for r in rs if r["method"] == BEST]
        if len(seeds) > 1:
            print(f"- {LABELS.get(BEST, BEST)} over seeds {[r['seed'] for r in seeds]}: AutoAttack robust "
                  f"{[_pct(r['aa_robust']) for r in seeds]} (median {_pct(statistics.median(r['aa_robust'] for r in seeds))}), "
                  f"clean {[_pct(r['clean']) for r in seeds]}")
        if name == "digits":
            targets(by, seeds)


def targets(by: dict[str, dict[str, Any]], seeds: list[dict[str, Any]]) -> None:
    best = by.get(LABELS[BEST])  # declared before the run, not picked from these results
    if best is None:
        return
    ok = best["aa_robust"] >= 0.89 and best["clean"] >= 0.985
    print(f"\nTargets (digits):\n\n- best method ({best['label']}, seed 0): {_pct(best['aa_robust'])} under "
          f"AutoAttack, {_pct(best['clean'])} clean (target >= 89.0% and >= 98.5%): {'met' if ok else 'NOT met'}")
    for r in seeds:
        if r["seed"] != 0:
            ok2 = r["aa_robust"] >= 0.89 and r["clean"] >= 0.985
            print(f"  - second seed ({r['seed']}): {_pct(r['aa_robust'])} / {_pct(r['clean'])}: "
                  f"{'met' if ok2 else 'NOT met'}")
    pg, art = by.get("dlsec pgd"), by.get("ART MadryPGD")
    for fast in ("fgsm-rs", "n-fgsm", "n-fgsm (val every 2)"):
        fg = by.get(f"dlsec {fast}")
        if fg and pg:
            gap = 100 * (pg["aa_robust"] - fg["aa_robust"])
            ratio = fg["train_wall_s"] / pg["train_wall_s"]
            print(f"- {fast} within 1 point of pgd under AutoAttack ({_pct(fg['aa_robust'])} vs "
                  f"{_pct(pg['aa_robust'])}, {gap:+.1f} points behind): {'met' if gap <= 1.0 + 1e-9 else 'NOT met'}; "
                  f"in at most a third of its time ({ratio:.2f}): {'met' if ratio <= 1 / 3 else 'NOT met'}")
    if art:
        for r in (pg, best):
            if r:
                ok3 = r["aa_robust"] > art["aa_robust"] and r["train_wall_s"] < art["train_wall_s"]
                print(f"- {r['label']} vs ART MadryPGD: robust {_pct(r['aa_robust'])} vs {_pct(art['aa_robust'])}, "
                      f"time {r['train_wall_s']:.1f}s vs {art['train_wall_s']:.1f}s: {'met' if ok3 else 'NOT met'}")


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--dataset", choices=["digits", "mnist", "all"], default="all")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=None, help="default: all of the dataset's")
    p.add_argument("--phase", choices=["train", "eval", "all", "time", "choose"], default="all",
                   help="train (weights to benchmarks/.cache/), eval (from there), both, or time: train the "
                        "evaluated models --repeats times again for median training times")
    p.add_argument("--repeats", type=int, default=3, help="--phase time: runs per model")
    p.add_argument("--second-seed", type=int, default=None, help=f"also train {BEST} with this seed")
    p.add_argument("--only-second-seed", action="store_true", help="train only the second seed's model")
    p.add_argument("--eval-n", type=int, default=None, help="MNIST: test points for dlsec evaluate (default 200)")
    p.add_argument("--aa-n", type=int, default=None, help="MNIST: test points for AutoAttack (default 100)")
    p.add_argument("--report", action="store_true", help="only print the Markdown from the results file")
    args = p.parse_args()
    if args.phase == "choose":
        choose(args)
        return
    if not args.report:
        names = list(DATASETS) if args.dataset == "all" else [args.dataset]
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports torch._dynamo: not timed
        for name in names:
            methods = args.methods or DATASETS[name]["methods"]
            jobs = [] if args.only_second_seed else [(m, 0) for m in methods]
            if args.second_seed is not None:
                jobs.append((BEST, args.second_seed))
            labelled = []
            for method, seed in jobs:
                label = LABELS.get(method, f"dlsec {method}")
                if seed != 0:
                    label += f" seed {seed}"
                labelled.append((label, method, seed))
            if args.phase == "time":
                retime(name, labelled, args)
                continue
            for label, method, seed in labelled:
                if args.phase in ("train", "all"):
                    train_one(name, label, method, seed, args)
                if args.phase in ("eval", "all"):
                    measure(name, label, method, seed, args)
    report(args.quick)


if __name__ == "__main__":
    main()
