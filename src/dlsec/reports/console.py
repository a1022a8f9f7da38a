"""Rich tables for the terminal."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from dlsec.attacks import AttackResult
from dlsec.evaluation import EvalResult


def render_eval(result: EvalResult, console: Console) -> None:
    """The evaluation as a table of the cascade, the minimum-norm figure and the checks that fired."""
    table = Table(title=f"Robustness of {result.model} on {result.data} ({result.norm}, eps={result.eps:g})")
    table.add_column("stage")
    table.add_column("robust accuracy", justify="right")
    table.add_column("broken", justify="right")
    table.add_column("seconds", justify="right")
    table.add_row("clean", f"{result.clean_accuracy:.2%}", "", "")
    for s in result.attacks:
        table.add_row(s.name, f"{s.robust_accuracy:.2%}", f"{s.broken}/{s.attacked}", f"{s.seconds:.1f}")
    console.print(table)
    console.print(
        f"Robust accuracy [bold]{result.robust_accuracy:.2%}[/bold] of {result.n} points "
        f"(clean {result.clean_accuracy:.2%}) in {result.seconds:.1f} s"
    )
    if result.min_norm_attack:
        med = "inf" if not math.isfinite(result.median_distance) else f"{result.median_distance:.4g}"
        console.print(f"Median minimum {result.norm} distance ({result.min_norm_attack}): {med}")
    fired = [c for c in result.checks if c.fired]
    if not fired:
        console.print(f"[green]No sign of gradient masking[/green] ({len(result.checks)} checks passed)")
    for c in fired:
        console.print(f"[bold red]FLAG {c.name}[/bold red]: {c.detail}")
        console.print(f"  {c.meaning}\n  What to do: {c.advice}")


def render_attack(result: AttackResult, console: Console) -> None:
    """One attack's summary line."""
    finite = result.norms[result.success]
    med = f"{float(finite.median()):.4g}" if finite.numel() else "n/a"
    console.print(
        f"{result.attack} ({result.norm}, eps={result.eps if result.eps is not None else 'unbounded'}): "
        f"success {result.success_rate:.2%} of {len(result.success)} points, median norm of successes {med}, "
        f"{result.forwards} forwards, {result.backwards} backwards, {result.seconds:.1f} s"
    )
