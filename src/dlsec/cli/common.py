"""What the subcommands share: consoles, model and data options, threads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import torch

from dlsec.cli.console import console, err_console
from dlsec.data import Dataset, load_data
from dlsec.errors import ConfigError
from dlsec.models import check_classifier, load_model, to_device

__all__ = ["console", "err_console", "load_inputs", "model_options", "parse_eps", "parse_norm"]


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--model``, ``--weights``, ``--data``, ``--limit``, ``--seed``, ``--device``, ``--threads``."""
    for opt in reversed(
        [
            click.option("--model", "model_spec", help="model: FILE.pt2, TorchScript FILE, package.module:factory, or demo"),
            click.option("--weights", type=click.Path(dir_okay=False), help="weights for a factory model (safetensors or torch file)"),
            click.option("--data", "data_spec", default="digits", show_default=True, help="digits, npz:PATH, idx:DIR, torchvision:NAME:ROOT"),
            click.option("--limit", type=int, help="use only the first N points"),
            click.option("--seed", type=int, default=0, show_default=True, help="random seed"),
            click.option("--device", default="cpu", show_default=True, help="torch device for the model"),
            click.option("--threads", type=int, help="torch CPU threads (default: torch's choice)"),
        ]
    ):
        f = opt(f)
    return f


def load_inputs(
    model_spec: str | None, weights: str | None, data_spec: str, limit: int | None, device: str, threads: int | None
) -> tuple[torch.nn.Module, Dataset]:
    """Load and check the model and data given on the command line."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be positive, got {threads}")
        torch.set_num_threads(threads)
    if not model_spec:
        raise ConfigError("--model is required (or use --demo)")
    data = load_data(data_spec).head(limit)
    model = to_device(load_model(model_spec, weights), device)
    check_classifier(model, data.x, data.num_classes)
    return model, data


def parse_norm(norm: str) -> str:
    """``linf``/``l2`` (also ``Linf``, ``inf``, ``L2``)."""
    n = norm.lower()
    n = {"inf": "linf", "l_inf": "linf", "l_2": "l2"}.get(n, n)
    if n not in ("linf", "l2"):
        raise ConfigError(f"--norm must be linf or l2, got {norm!r}")
    return n


def parse_eps(eps: float | None, required: bool = True) -> float | None:
    """Epsilon must be a finite non-negative number."""
    if eps is None:
        if required:
            raise ConfigError("--eps is required")
        return None
    if not eps >= 0 or eps == float("inf"):
        raise ConfigError(f"--eps must be a non-negative number, got {eps}")
    return float(eps)
