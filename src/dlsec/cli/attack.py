"""``dlsec attack`` and ``dlsec attacks``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click
import numpy as np

from dlsec.attacks import REGISTRY, get_attack
from dlsec.cli.common import console, err_console, load_inputs, model_options, parse_eps, parse_norm
from dlsec.errors import ConfigError
from dlsec.evaluation import STAGES
from dlsec.reports import render_attack


@click.command()
@model_options
@click.option("--attack", "attack_name", required=True, help="attack name (see `dlsec attacks`)")
@click.option("--norm", default="linf", show_default=True, help="threat model: linf or l2")
@click.option("--eps", type=float, help="perturbation budget (optional for minimum-norm attacks)")
@click.option("--steps", type=int, help="iterations, for attacks that take steps")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="write x_adv, y, success, norms here (.npz)")
def attack(
    model_spec: str | None,
    weights: str | None,
    data_spec: str,
    limit: int | None,
    seed: int,
    device: str,
    threads: int | None,
    attack_name: str,
    norm: str,
    eps: float | None,
    steps: int | None,
    out: str,
) -> None:
    """Run one attack and save the adversarial examples."""
    cls = get_attack(attack_name)
    params: dict[str, object] = {"norm": parse_norm(norm), "eps": parse_eps(eps, required=not cls.minimum_norm), "seed": seed}
    if steps is not None:
        if "steps" not in {f.name for f in dataclasses.fields(cls)}:
            raise ConfigError(f"{attack_name} takes no --steps")
        params["steps"] = steps
    atk = cls(**params)  # type: ignore[arg-type]
    model, data = load_inputs(model_spec, weights, data_spec, limit, device, threads)
    with err_console.status(f"{attack_name} on {len(data.x)} points"):
        result = atk(model, data.x, data.y)
    np.savez(
        out,
        x_adv=result.x_adv.cpu().numpy(),
        y=data.y.cpu().numpy(),
        success=result.success.cpu().numpy(),
        norms=result.norms.cpu().numpy(),
    )
    render_attack(result, console)
    console.print(f"Saved to {Path(out)}")


@click.command()
def attacks() -> None:
    """List the registered attacks and their parameters."""
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        kind = "minimum-norm" if cls.minimum_norm else ("black-box" if cls.gradient_free else "budget")
        console.print(f"[bold]{name}[/bold] ({kind}; norms {', '.join(cls.norms)}): {cls.describe()}")
        for f in dataclasses.fields(cls):
            if f.name in ("norm", "eps", "targeted", "seed", "batch_size", "early_stop"):
                continue
            default = f.default if f.default is not dataclasses.MISSING else ""
            console.print(f"    {f.name}={default!r}  {f.metadata.get('doc', '')}", highlight=False)
    presets = ", ".join(STAGES)
    console.print(f"Cascade stages for `dlsec evaluate --attacks` (presets, besides every name above): {presets}")
