"""``dlsec train``: adversarial training from the command line, also under ``torchrun``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import torch

from dlsec.cli.common import console, err_console, parse_eps, parse_norm
from dlsec.errors import ConfigError

_TYPES: dict[str, Any] = {"step_fraction": float, "patience": int, "ema": float}
"""Option types of config fields whose default is None."""

_OWN = {"norm", "seed", "select_best"}
_REQUIRED = {"eps"}
"""Config fields with options of their own below."""


def _config_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """One option per :class:`TrainConfig` field, defaulting to the config's own default (so the two agree)."""
    from dlsec.defenses.training.config import TrainConfig

    for fld in reversed(dataclasses.fields(TrainConfig)):
        if fld.name in _OWN:
            continue
        kind = _TYPES.get(fld.name, type(fld.default))
        default = "" if fld.default is None else f"  [default: {fld.default}]"
        if fld.name in _REQUIRED:
            default = "  [required]"
        f = click.option(
            f"--{fld.name.replace('_', '-')}", fld.name, type=kind, default=None, help=fld.metadata["doc"] + default
        )(f)
    return f


@click.command()
@click.option("--data", "data_spec", default="digits", show_default=True, help="training data: digits, npz:PATH, idx:DIR, torchvision:NAME:ROOT (train split)")
@click.option("--limit", type=int, help="use only the first N training points")
@click.option("--arch", help="architecture: cnn-small (1x8x8), cnn-mnist (1x28x28), preact-resnet18 (3x32x32)")
@click.option("--model", "model_spec", help="your own model instead of --arch: package.module:factory")
@click.option("--width", type=int, help="channel width of --arch (default: the architecture's own)")
@click.option("--norm", default="linf", show_default=True, help="threat model: linf or l2")
@_config_options
@click.option("--last", is_flag=True, help="keep the last epoch instead of the best validation robust accuracy")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of initialisation, split, data order, attacks")
@click.option("--out", "out_dir", default="dlsec-train", show_default=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--resume", is_flag=True, help="continue from OUT/checkpoint.pt")
@click.option("--test-data", "test_spec", help="after training, clean and PGD robust accuracy on this data (digits: its test split)")
@click.option("--device", default="cpu", show_default=True, help="torch device (cuda: one GPU per process under torchrun)")
@click.option("--threads", type=int, help="torch CPU threads per process")
@click.option("--no-export", is_flag=True, help="skip model.pt2 and curves.png (the weights are still written)")
@click.option("--quiet", is_flag=True, help="no progress bar or per-epoch lines")
def train(
    data_spec: str,
    limit: int | None,
    arch: str | None,
    model_spec: str | None,
    width: int | None,
    norm: str,
    last: bool,
    seed: int,
    out_dir: str,
    resume: bool,
    test_spec: str | None,
    device: str,
    threads: int | None,
    no_export: bool,
    quiet: bool,
    **options: Any,
) -> None:
    """Train a model to resist adversarial examples (standard, fgsm-rs, pgd or trades).

    Writes OUT/model.safetensors, OUT/model.pt2 (for `dlsec evaluate --model`), OUT/metrics.jsonl, OUT/curves.png,
    OUT/summary.json and a checkpoint after every epoch. Under `torchrun --nproc_per_node=N -m dlsec train ...`
    each process trains on its share of every batch (DistributedDataParallel).
    """
    from dlsec.data import load_data
    from dlsec.defenses.training import AdversarialTrainer, TrainConfig
    from dlsec.defenses.training.distributed import current, init_from_env, shutdown

    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be positive, got {threads}")
        torch.set_num_threads(threads)
    given = {k: v for k, v in options.items() if v is not None}
    given["eps"] = parse_eps(given.get("eps"))
    cfg = TrainConfig(norm=parse_norm(norm), seed=seed, select_best=not last, **given)
    if (arch is None) == (model_spec is None):
        raise ConfigError("give one of --arch NAME or --model package.module:factory")
    if width is not None and arch is None:
        raise ConfigError("--width applies to --arch only")
    data = load_data(data_spec, split="train").head(limit)
    test = load_data(test_spec) if test_spec else None
    out = Path(out_dir)
    if resume and not (out / "checkpoint.pt").is_file():
        raise ConfigError(f"cannot resume: no checkpoint at {out / 'checkpoint.pt'}")
    started, device = init_from_env(device)
    try:
        model = _build(arch, model_spec, width, data.x, data.num_classes, seed, device)
        dist = current()
        show = dist.main and not quiet
        with _progress(show and err_console.is_terminal, cfg.epochs) as on_step:
            trainer = AdversarialTrainer(
                cfg, model, out=out, on_step=on_step, on_epoch=(lambda r: _epoch_line(r, cfg.epochs)) if show else None
            )
            result = trainer.fit(data.x, data.y, resume=resume, export=not no_export)
        if dist.main:
            test_figures = _test(result.model, test, cfg) if test is not None else None
            if test_figures is not None:
                summary_path = out / "summary.json"
                summary = json.loads(summary_path.read_text(encoding="utf-8"))
                summary["test"] = test_figures
                from dlsec.defenses.training.outputs import write_json

                write_json(summary_path, summary)
            _report(result, test_figures, out, quiet)
    finally:
        if started:
            shutdown()


def _build(
    arch: str | None, model_spec: str | None, width: int | None, x: torch.Tensor, classes: int, seed: int, device: str
) -> torch.nn.Module:
    from dlsec.models import check_classifier, load_model, to_device
    from dlsec.models.architectures import get_architecture

    if device.startswith("cuda"):
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(seed)
    if arch is not None:
        spec = get_architecture(arch)
        spec.check_data(x)
        model = spec.build(classes, width)
    else:
        assert model_spec is not None
        if ":" not in model_spec:
            raise ConfigError(f"--model must be package.module:factory, got {model_spec!r}")
        model = load_model(model_spec)
        check_classifier(model, x, classes)
    return to_device(model.train(), device)


@contextmanager
def _progress(enabled: bool, epochs: int) -> Iterator[Callable[[int, int, int], None] | None]:
    """A rich progress bar per epoch (on a terminal only); yields the ``on_step`` callback or None."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True,
    ) as bar:  # fmt: skip
        tasks: dict[int, Any] = {}

        def on_step(epoch: int, step: int, steps: int) -> None:
            if epoch not in tasks:
                for t in tasks.values():
                    bar.remove_task(t)
                tasks.clear()
                tasks[epoch] = bar.add_task(f"epoch {epoch}/{epochs}", total=steps)
            bar.update(tasks[epoch], completed=step)

        yield on_step


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _epoch_line(rec: dict[str, Any], epochs: int) -> None:
    flags = " ".join(rec["flags"])
    fgsm = f" fgsm {_fmt(rec['val_fgsm_acc'])}" if rec.get("val_fgsm_acc") is not None else ""
    console.print(
        f"epoch {rec['epoch']:>3}/{epochs}  lr {rec['lr']:.2e}  eps {rec['eps']:.3f}  loss {rec['train_loss']:.3f}  "
        f"train acc {rec['train_acc']:.3f}  val clean {_fmt(rec['val_clean_acc'])} robust "
        f"{_fmt(rec['val_robust_acc'])}{fgsm}  {rec['seconds'] + rec['val_seconds']:.1f} s  {flags}",
        highlight=False,
        soft_wrap=True,
    )


def _test(model: torch.nn.Module, test: Any, cfg: Any) -> dict[str, Any]:
    """Clean and PGD robust accuracy of the kept model on the test data (same PGD as validation)."""
    from dlsec.defenses.training import robust_accuracy
    from dlsec.models import check_classifier

    check_classifier(model, test.x, test.num_classes)
    g = torch.Generator().manual_seed(cfg.seed + 99)
    seeds = tuple(torch.randint(0, 2**62, (len(test.x),), generator=g).tolist())
    counts = robust_accuracy(model, test.x, test.y, norm=cfg.norm, eps=cfg.eps, steps=cfg.val_steps, seeds=seeds)
    n = float(counts[3])
    return {
        "data": test.name,
        "n": int(n),
        "clean_acc": float(counts[0]) / n,
        "robust_acc": float(counts[1]) / n,
        "attack": f"pgd-{cfg.val_steps} {cfg.norm} eps {cfg.eps}",
    }


def _report(result: Any, test: dict[str, Any] | None, out: Path, quiet: bool) -> None:
    for w in result.warnings:
        err_console.print(f"warning: {w}", highlight=False, soft_wrap=True)
    if quiet:
        return
    sel = result.selected
    val = ""
    if sel.get("val_robust_acc") is not None:
        val = f": validation clean {sel['val_clean_acc']:.3f}, PGD robust {sel['val_robust_acc']:.3f}"
    console.print(f"Stopped: {result.stop_reason}. Kept epoch {result.selected_epoch}{val}", highlight=False, soft_wrap=True)
    if test is not None:
        console.print(
            f"Test ({test['data']}, {test['n']} points): clean {test['clean_acc']:.3f}, "
            f"{test['attack']} robust {test['robust_acc']:.3f}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"Written to {out}/: {', '.join(p.name for p in result.files)}", highlight=False, soft_wrap=True)
