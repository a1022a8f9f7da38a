"""The adversarial trainer: one loop for every method, resumable, identical on one process or several.

What it does, per epoch: shuffle the training split (a generator seeded from ``seed``), cut it into global batches
of ``batch_size`` (the last partial batch is dropped, so every step sees exactly ``batch_size`` points), give each
process its contiguous share of each batch, ask the method for the per-sample loss, and step the optimizer and the
learning-rate schedule. Then it measures clean and PGD robust accuracy on the held-out validation split, keeps the
best epoch by robust accuracy (Rice et al. 2020), watches for catastrophic overfitting (fgsm-rs), applies early
stopping, and writes a checkpoint and ``metrics.jsonl``.

Same result on N processes as on one (within float rounding):

* the data order and the attack seeds are drawn for the global batch by every process from the same generators,
  and each process takes its slice, so nothing depends on the number of processes;
* the inner attack's random start is seeded per sample (:class:`~dlsec.defenses.training.methods.InnerPGD`);
* each process's loss is ``sum(per-sample losses) * world / batch_size``, and DistributedDataParallel averages the
  gradients over processes: the gradient of the global batch's mean loss, even when the batch does not split evenly;
* figures are summed over processes before any decision, so every process stops at the same epoch.

BatchNorm statistics are per process under DDP (wrap the model in ``SyncBatchNorm`` for the exact global ones on
GPUs), and dropout draws from each process's own torch RNG: for models with either, N processes match one only in
distribution.

Catastrophic overfitting (fgsm-rs; Wong et al. 2020): after each epoch, with ``pgd`` the validation PGD robust
accuracy and ``best`` the best one so far, the run is flagged when ``best - pgd > co_drop`` (robust accuracy
collapsed; default 0.3) or ``fgsm - pgd > co_gap`` (plain FGSM accuracy far above PGD accuracy on the same points:
the model defeats the single step only; default 0.4). Training then stops, the epoch is recorded with the
``catastrophic_overfitting`` flag, and the best epoch before the collapse is the one kept (whatever
``select_best`` says); see :func:`overfitting_signal`.

Weight averaging (``ema``; Gowal et al. 2020, Rebuffi et al. 2021): a copy of the model holds an exponential moving
average of the weights, updated after every optimizer step with decay ``min(ema, (1 + t) / (10 + t))`` at update
``t`` (the usual ramp, so the early average is not dominated by the initialisation); buffers (BatchNorm statistics)
are copied, not averaged. Validation, best-epoch selection, catastrophic-overfitting detection, the checkpoint's
best weights and the saved model all use the averaged weights; the optimizer keeps stepping the raw ones.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlsec.attacks import FGSM
from dlsec.data import validate
from dlsec.defenses.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from dlsec.defenses.training.config import TrainConfig
from dlsec.defenses.training.distributed import Dist, current
from dlsec.defenses.training.methods import Batch, InnerPGD, Method, get_method
from dlsec.defenses.training.outputs import (
    export_program,
    plot_curves,
    write_json,
    write_metrics,
    write_weights,
)
from dlsec.defenses.training.schedules import eps_at, lr_factor
from dlsec.errors import ConfigError, DataError, DlsecError, InputError
from dlsec.models import check_classifier, device_of

__all__ = ["AdversarialTrainer", "TrainResult", "overfitting_signal", "robust_accuracy", "split_indices"]

SEED_BOUND = 2**62
"""Per-sample attack seeds are drawn below this."""

EVAL_BATCH = 256
"""Points attacked at once during validation (at least the training batch size)."""


@dataclass(frozen=True)
class TrainResult:
    """What :meth:`AdversarialTrainer.fit` returns.

    ``model`` carries the selected weights (the best validation epoch, or the last), in eval mode; ``history`` one
    record per epoch (the ``metrics.jsonl`` lines); ``selected_epoch`` the epoch whose weights ``model`` holds;
    ``stop_reason`` is ``completed``, ``early_stopping`` or ``catastrophic_overfitting``; ``files`` what was
    written to the output folder; ``warnings`` anything the caller should report (an export that failed).
    """

    model: nn.Module
    history: tuple[dict[str, Any], ...]
    selected_epoch: int
    stop_reason: str
    files: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def selected(self) -> dict[str, Any]:
        """The metrics record of the selected epoch."""
        return self.history[self.selected_epoch - 1]


def split_indices(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified split: ``round(fraction * n_c)`` points of each class ``c`` held out, chosen by ``seed``.

    Returns ``(train, val)`` index tensors, each sorted.
    """
    if fraction <= 0:
        return torch.arange(len(y)), torch.zeros(0, dtype=torch.long)
    g = torch.Generator().manual_seed(_derive(seed, 1))
    val = []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().squeeze(1)
        k = int(round(fraction * len(idx)))
        val.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    held = torch.cat(val).sort().values
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[held] = False
    return mask.nonzero().squeeze(1), held


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    eps: float,
    steps: int,
    seeds: tuple[int, ...],
    fgsm: bool = False,
) -> torch.Tensor:
    """Counts ``[clean correct, PGD robust, FGSM robust, n]`` on ``x``, ``y`` (a float tensor, for summing).

    PGD: ``steps`` steps of ``2.5 * eps / steps`` from a random start seeded per point by ``seeds``, every point
    attacked for every step; a point is robust when it is classified correctly both clean and at the final
    iterate. FGSM (when ``fgsm``) is the plain one-step attack from the clean point; else its count is 0.
    """
    dev = device_of(model)
    counts = torch.zeros(4, dtype=torch.float64)
    for lo in range(0, len(x), EVAL_BATCH):
        xb, yb = x[lo : lo + EVAL_BATCH].to(dev), y[lo : lo + EVAL_BATCH].to(dev)
        sb = seeds[lo : lo + EVAL_BATCH]
        was = model.training
        model.eval()
        with torch.no_grad():
            clean = model(xb).argmax(1) == yb
        model.train(was)
        pgd = InnerPGD(
            norm=norm,
            eps=eps,
            steps=steps,
            step_size=2.5 * eps / steps,
            early_stop=False,
            batch_size=len(xb),
            sample_seeds=sb,
        )
        robust = clean & ~pgd(model, xb, yb).success
        counts[0] += float(clean.sum())
        counts[1] += float(robust.sum())
        if fgsm:
            counts[2] += float((clean & ~FGSM(norm=norm, eps=eps, early_stop=False)(model, xb, yb).success).sum())
        counts[3] += len(xb)
    return counts


def overfitting_signal(pgd: float, fgsm: float | None, best: float | None, drop: float, gap: float) -> str | None:
    """Which sign of catastrophic overfitting an epoch shows, if any (validation accuracies in [0, 1]).

    ``robust_drop`` when PGD robust accuracy fell more than ``drop`` below the best so far (``best``); ``fgsm_gap``
    when FGSM accuracy exceeds PGD accuracy on the same points by more than ``gap``. ``None`` otherwise.
    """
    if best is not None and best - pgd > drop:
        return "robust_drop"
    if fgsm is not None and fgsm - pgd > gap:
        return "fgsm_gap"
    return None


class AdversarialTrainer:
    """Train a classifier with a registered method (``standard``, ``fgsm-rs``, ``pgd``, ``trades``).

    Example::

        trainer = AdversarialTrainer(TrainConfig(method="pgd", eps=0.1, epochs=30), model, out="runs/pgd")
        result = trainer.fit(x, y)          # x (N, C, H, W) in [0, 1], y (N,) int64
        result.model, result.history, result.selected_epoch

    ``model`` is trained in place (on its device) and finally loaded with the selected weights. With ``out``, a
    checkpoint is written after every epoch and ``fit(..., resume=True)`` continues from it. When a process group
    is initialised (``torchrun``), training is distributed over it with DistributedDataParallel; only rank 0
    writes files and calls ``on_step``/``on_epoch``. ``on_step(epoch, step, steps)`` is called after each
    optimizer step, ``on_epoch(record)`` after each epoch, for progress display. ``fit`` seeds torch's and Python's
    global generators from the config's seed, for whatever a model draws itself (dropout); the model's
    initialisation is the caller's (``dlsec train`` seeds torch with ``seed`` before building it).
    """

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        *,
        out: str | Path | None = None,
        on_step: Callable[[int, int, int], None] | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.out = Path(out) if out is not None else None
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.method: Method = get_method(config.method)(config)

    def fit(self, x: torch.Tensor, y: torch.Tensor, *, resume: bool = False, export: bool = True) -> TrainResult:
        """Train on ``x``, ``y`` (the held-out validation split is taken from them); see the class docstring.

        ``export=False`` skips ``model.pt2`` and ``curves.png`` (faster when only weights are needed).
        """
        cfg = self.config
        validate(x, y)
        classes = int(y.max()) + 1
        check_classifier(self.model, x, classes)
        run = _Run(cfg, self.model, current(), x, y)
        ckpt_path = self.out / CHECKPOINT if self.out is not None else None
        if resume:
            if ckpt_path is None:
                raise ConfigError("cannot resume without an output folder")
            run.restore(load_checkpoint(ckpt_path))
        elif ckpt_path is not None and ckpt_path.exists():
            raise ConfigError(f"{ckpt_path} exists: resume it (--resume) or choose another output folder")
        while run.stop_reason is None and run.epoch < cfg.epochs:
            record = run.train_epoch(self.method, self.on_step if run.dist.main else None)
            run.end_epoch(record, self.method)
            if run.dist.main:
                if self.out is not None and ckpt_path is not None:
                    save_checkpoint(ckpt_path, run.state())
                    write_metrics(self.out / "metrics.jsonl", run.history)
                if self.on_epoch is not None:
                    self.on_epoch(record)
        return run.finish(self.out, export)


def _derive(seed: int, stream: int) -> int:
    """A seed for one of the run's random streams (data order, split, attacks), from the run's seed."""
    return (seed * 1_000_003 + stream * 7_919 + 12_345) % 2**63


@dataclass(eq=False)
class _Run:
    """The mutable state of one training run: everything a checkpoint saves."""

    cfg: TrainConfig
    model: nn.Module
    dist: Dist
    x: torch.Tensor
    y: torch.Tensor
    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    stop_reason: str | None = None
    ema_updates: int = 0

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.device = device_of(self.model)
        self.train_idx, self.val_idx = split_indices(self.y, cfg.val_fraction, cfg.seed)
        if len(self.train_idx) < cfg.batch_size:
            raise DataError(
                f"batch size {cfg.batch_size} is larger than the training split ({len(self.train_idx)} points)"
            )
        if cfg.val_fraction > 0 and len(self.val_idx) == 0:
            raise DataError("the validation split is empty: raise val_fraction or give more data")
        self.steps_per_epoch = len(self.train_idx) // cfg.batch_size
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.data_gen = torch.Generator().manual_seed(_derive(cfg.seed, 2))
        self.attack_gen = torch.Generator().manual_seed(_derive(cfg.seed, 3))
        val_gen = torch.Generator().manual_seed(_derive(cfg.seed, 4))
        self.val_seeds = tuple(torch.randint(0, SEED_BOUND, (len(self.val_idx),), generator=val_gen).tolist())
        torch.manual_seed(_derive(cfg.seed, 5))  # dropout and anything else a user model draws
        random.seed(_derive(cfg.seed, 6))
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise InputError("the model has no trainable parameters")
        if cfg.optimizer == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        total = self.total_steps
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(cfg.schedule, s, total))
        self.ema_model: nn.Module | None = None
        if cfg.ema is not None:
            self.ema_model = copy.deepcopy(self.model)
            for p in self.ema_model.parameters():
                p.requires_grad_(False)
        self.net: nn.Module = self.model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)

    # -- one epoch -------------------------------------------------------------------------------------------
    def train_epoch(self, method: Method, on_step: Callable[[int, int, int], None] | None) -> dict[str, Any]:
        cfg, dist = self.cfg, self.dist
        start = time.perf_counter()
        self.model.train()
        perm = self.train_idx[torch.randperm(len(self.train_idx), generator=self.data_gen)]
        mine = dist.shard(cfg.batch_size)
        totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, points
        eps, lr = cfg.eps, cfg.lr
        for b in range(self.steps_per_epoch):
            rows = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            seeds = torch.randint(0, SEED_BOUND, (cfg.batch_size,), generator=self.attack_gen)
            idx = rows[mine]
            eps = eps_at(cfg.eps, self.step, cfg.warmup_epochs, self.steps_per_epoch)
            batch = Batch(
                x=self.x[idx].to(self.device),
                y=self.y[idx].to(self.device),
                eps=eps,
                seeds=tuple(seeds[mine].tolist()),
            )
            per_sample, correct = method.loss(self.net, self.model, batch)
            loss = per_sample.sum() * (dist.world / cfg.batch_size)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            lr = float(self.opt.param_groups[0]["lr"])
            self.opt.step()
            self.sched.step()
            self._update_ema()
            self.step += 1
            totals += torch.tensor(
                [float(per_sample.detach().sum()), float(correct.sum()), float(len(idx))], dtype=torch.float64
            )
            if on_step is not None:
                on_step(self.epoch + 1, b + 1, self.steps_per_epoch)
        totals = self._sum(totals)
        if not math.isfinite(float(totals[0])):
            raise DlsecError(f"the training loss diverged in epoch {self.epoch + 1}: lower the learning rate")
        return {
            "epoch": self.epoch + 1,
            "lr": lr,
            "eps": eps,
            "train_loss": float(totals[0] / totals[2]),
            "train_acc": float(totals[1] / totals[2]),
            "seconds": time.perf_counter() - start,
        }

    @property
    def judged(self) -> nn.Module:
        """The model validated, selected and saved: the weight average with ``ema``, else the trained model."""
        return self.ema_model if self.ema_model is not None else self.model

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema_model is None or self.cfg.ema is None:
            return
        decay = min(self.cfg.ema, (1 + self.ema_updates) / (10 + self.ema_updates))
        self.ema_updates += 1
        avg = dict(self.ema_model.named_parameters())
        for name, p in self.model.named_parameters():
            avg[name].lerp_(p.detach(), 1.0 - decay)
        buffers = dict(self.ema_model.named_buffers())
        for name, b in self.model.named_buffers():
            buffers[name].copy_(b)

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.dist.world == 1:
            return t
        dev = self.device if self.device.type == "cuda" else torch.device("cpu")
        return self.dist.sum(t.to(dev)).cpu()

    def validate(self, fgsm: bool) -> dict[str, Any]:
        """Validation figures at the full eps, each process on its share of the split, summed."""
        start = time.perf_counter()
        share = self.dist.shard(len(self.val_idx))
        idx = self.val_idx[share]
        counts = robust_accuracy(
            self.judged,
            self.x[idx],
            self.y[idx],
            norm=self.cfg.norm,
            eps=self.cfg.eps,
            steps=self.cfg.val_steps,
            seeds=self.val_seeds[share],
            fgsm=fgsm,
        )
        counts = self._sum(counts)
        n = float(counts[3])
        return {
            "val_clean_acc": float(counts[0]) / n,
            "val_robust_acc": float(counts[1]) / n,
            "val_fgsm_acc": float(counts[2]) / n if fgsm else None,
            "val_seconds": time.perf_counter() - start,
        }

    def end_epoch(self, record: dict[str, Any], method: Method) -> None:
        """Validate, pick the best epoch, check for catastrophic overfitting and early stopping."""
        cfg = self.cfg
        self.epoch += 1
        flags: list[str] = []
        if len(self.val_idx) and (self.epoch % cfg.val_every == 0 or self.epoch == cfg.epochs):
            record.update(self.validate(fgsm=method.detects_overfitting))
            robust, clean = record["val_robust_acc"], record["val_clean_acc"]
            signal = None
            if method.detects_overfitting:
                best = self.best["robust"] if self.best is not None else None
                signal = overfitting_signal(robust, record["val_fgsm_acc"], best, cfg.co_drop, cfg.co_gap)
            if signal is not None:
                flags.append("catastrophic_overfitting")
                self.stop_reason = "catastrophic_overfitting"
            elif self.best is None or (robust, clean) > (self.best["robust"], self.best["clean"]):
                flags.append("best")
                self.best = {
                    "epoch": self.epoch,
                    "robust": robust,
                    "clean": clean,
                    "model": {k: v.detach().clone() for k, v in self.judged.state_dict().items()},
                }
            elif cfg.patience is not None and self.epoch - self.best["epoch"] >= cfg.patience:
                flags.append("early_stopping")
                self.stop_reason = "early_stopping"
        else:
            record.update({"val_clean_acc": None, "val_robust_acc": None, "val_fgsm_acc": None, "val_seconds": 0.0})
        record["flags"] = flags
        self.history.append(record)

    # -- checkpoint ------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to continue: weights, optimizer, schedule, every random state, history, best."""
        return {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": {
                "data": self.data_gen.get_state(),
                "attack": self.attack_gen.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": random.getstate(),
            },
            "history": self.history,
            "best": self.best,
            "stop_reason": self.stop_reason,
            "ema": self.ema_model.state_dict() if self.ema_model is not None else None,
            "ema_updates": self.ema_updates,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`state` under the same config."""
        diff = self.cfg.differences(state.get("config", {}))
        if diff:
            raise ConfigError(f"cannot resume under another config ({'; '.join(diff)})")
        try:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            rng = state["rng"]
            self.data_gen.set_state(rng["data"])
            self.attack_gen.set_state(rng["attack"])
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            random.setstate(rng["python"])
            self.epoch, self.step = int(state["epoch"]), int(state["step"])
            self.history = list(state["history"])
            self.best = state["best"]
            self.stop_reason = state["stop_reason"]
            if self.ema_model is not None:
                self.ema_model.load_state_dict(state["ema"])
                self.ema_updates = int(state["ema_updates"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()
            raise InputError(f"the checkpoint does not fit this run: {first[0] if first else exc!r}") from exc
        if self.best is not None:
            self.best["model"] = {k: v.to(self.device) for k, v in self.best["model"].items()}

    # -- the end ---------------------------------------------------------------------------------------------
    def finish(self, out: Path | None, export: bool) -> TrainResult:
        """Load the selected weights and, on rank 0, write the outputs."""
        cfg = self.cfg
        use_best = self.best is not None and (cfg.select_best or self.stop_reason == "catastrophic_overfitting")
        if use_best:
            assert self.best is not None
            self.model.load_state_dict(self.best["model"])
            selected = int(self.best["epoch"])
        else:
            if self.ema_model is not None:
                self.model.load_state_dict(self.ema_model.state_dict())
            selected = self.epoch
        self.model.eval()
        files: list[Path] = []
        warnings: list[str] = []
        if self.stop_reason == "catastrophic_overfitting" and not use_best:
            warnings.append("catastrophic overfitting in the first epoch: the model kept is the collapsed one")
        if out is not None and self.dist.main:
            weights = out / "model.safetensors"
            write_weights(weights, self.model.state_dict())
            files.append(weights)
            write_metrics(out / "metrics.jsonl", self.history)
            files.append(out / "metrics.jsonl")
            if export:
                try:
                    export_program(out / "model.pt2", self.model, self.x[:2])
                    files.append(out / "model.pt2")
                except DlsecError as exc:
                    warnings.append(f"model.pt2 not written: {exc}")
                plot_curves(out / "curves.png", self.history, f"{cfg.method}, {cfg.norm} eps {cfg.eps}")
                files.append(out / "curves.png")
            summary = {
                "config": cfg.to_dict(),
                "selected_epoch": selected,
                "stop_reason": self.stop_reason or "completed",
                "epochs_run": self.epoch,
                "train_points": len(self.train_idx),
                "val_points": len(self.val_idx),
                "processes": self.dist.world,
                "selected": self.history[selected - 1] if self.history else None,
                "train_seconds": sum(r["seconds"] for r in self.history),
                "val_seconds": sum(r["val_seconds"] for r in self.history),
            }
            write_json(out / "summary.json", summary)
            files.append(out / "summary.json")
        return TrainResult(
            model=self.model,
            history=tuple(self.history),
            selected_epoch=selected,
            stop_reason=self.stop_reason or "completed",
            files=tuple(files),
            warnings=tuple(warnings),
        )
