"""``dlsec evaluate`` and ``dlsec checks``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dlsec.cli.common import console, err_console, load_inputs, model_options, parse_eps, parse_norm
from dlsec.errors import ConfigError
from dlsec.evaluation import CHECKS, DEFAULT_CASCADE
from dlsec.evaluation import evaluate as run_evaluation
from dlsec.models import DEFAULT_DEMO
from dlsec.reports import dumps, render_eval, write_report

DEMO_EPS = 0.1
DEMO_LIMIT = 200


@click.command()
@model_options
@click.option("--norm", default="linf", show_default=True, help="threat model: linf or l2")
@click.option("--eps", type=float, help="perturbation budget")
@click.option("--attacks", "attack_list", help=f"comma-separated cascade (default {','.join(DEFAULT_CASCADE)})")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="write the JSON result here ('-' for stdout)")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="write a report folder (plots, Markdown, HTML)")
@click.option("--demo", is_flag=True, help=f"the bundled demo: demo model on digits, linf eps {DEMO_EPS}, {DEMO_LIMIT} points")
def evaluate(
    model_spec: str | None,
    weights: str | None,
    data_spec: str,
    limit: int | None,
    seed: int,
    device: str,
    threads: int | None,
    norm: str,
    eps: float | None,
    attack_list: str | None,
    json_out: str | None,
    report_dir: str | None,
    demo: bool,
) -> None:
    """Measure clean and robust accuracy under a cascade of attacks, with gradient-masking checks."""
    if demo:
        model_spec = model_spec or f"demo:{DEFAULT_DEMO}"
        eps = DEMO_EPS if eps is None else eps
        limit = DEMO_LIMIT if limit is None else limit
    norm = parse_norm(norm)
    eps_value = parse_eps(eps)
    assert eps_value is not None
    cascade = tuple(a.strip() for a in attack_list.split(",") if a.strip()) if attack_list else DEFAULT_CASCADE
    if not cascade:
        raise ConfigError("--attacks is empty")
    model, data = load_inputs(model_spec, weights, data_spec, limit, device, threads)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err_console, transient=True
    ) as bar:
        phases = ["clean accuracy", *cascade, "distances", "sanity checks"]
        task = bar.add_task("evaluating", total=len(phases))

        done = [0]

        def step(phase: str) -> None:
            bar.update(task, description=f"evaluating: {phase}", completed=done[0])
            done[0] += 1

        result = run_evaluation(
            model,
            data.x,
            data.y,
            norm=norm,
            eps=eps_value,
            seed=seed,
            attacks=cascade,
            model_name=model_spec or "model",
            data_name=data.name,
            progress=step,
        )
    if json_out == "-":
        click.echo(dumps(result))
    else:
        render_eval(result, console)
        if json_out:
            Path(json_out).write_text(dumps(result) + "\n", encoding="utf-8")
            console.print(f"JSON written to {json_out}")
    if report_dir:
        files = write_report(result, Path(report_dir))
        (console if json_out != "-" else err_console).print(f"Report written to {report_dir}/ ({len(files)} files)")


@click.command()
def checks() -> None:
    """List the gradient-masking checks: what each flag means and what to do."""
    for c in CHECKS.values():
        console.print(f"[bold]{c.name}[/bold]\n  {c.meaning}\n  What to do: {c.advice}")
