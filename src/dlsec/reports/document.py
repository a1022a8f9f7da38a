"""The report folder: PNG plots (robustness curve, clean-versus-adversarial grid), summary.md and summary.html."""

from __future__ import annotations

import html
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dlsec.evaluation import EvalResult  # noqa: E402


def write_report(result: EvalResult, out: Path) -> list[Path]:
    """Write the report folder ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = [_curve_plot(result, out / "curve.png")]
    if result.examples is not None:
        files.append(_grid_plot(result, out / "examples.png"))
    md = _markdown(result, [f.name for f in files])
    (out / "summary.md").write_text(md, encoding="utf-8")
    (out / "summary.html").write_text(_html(result, [f.name for f in files]), encoding="utf-8")
    return [*files, out / "summary.md", out / "summary.html"]


def _curve_plot(result: EvalResult, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for source, style in (("min-norm", "-"), ("apgd-ce", "o--")):
        pts = sorted((p for p in result.curve if p.source == source), key=lambda p: p.eps)
        if pts:
            label = f"{result.min_norm_attack} distances" if source == "min-norm" else "APGD-CE (subset)"
            ax.plot([p.eps for p in pts], [p.robust_accuracy for p in pts], style, label=label)
    ax.axvline(result.eps, color="grey", lw=0.8, ls=":")
    ax.scatter([result.eps], [result.robust_accuracy], color="red", zorder=5, label="cascade")
    ax.set_xlabel(f"epsilon ({result.norm})")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Accuracy versus epsilon")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _grid_plot(result: EvalResult, path: Path) -> Path:
    ex = result.examples
    assert ex is not None
    k = len(ex.x)
    fig, axes = plt.subplots(2, k, figsize=(1.6 * k, 3.6), squeeze=False)
    for i in range(k):
        for row, img, title in ((0, ex.x[i], f"y={int(ex.y[i])}"), (1, ex.x_adv[i], f"pred={int(ex.pred_adv[i])}")):
            arr = img.detach().cpu().float()
            arr = arr[0] if arr.shape[0] == 1 else arr.permute(1, 2, 0)
            ax = axes[row][i]
            ax.imshow(arr.numpy(), cmap="gray" if arr.dim() == 2 else None, vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle("clean (top) and adversarial (bottom)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else "inf"


def _markdown(result: EvalResult, images: list[str]) -> str:
    lines = [
        f"# Robustness of {result.model}",
        "",
        f"Data {result.data}, {result.n} points, threat model {result.norm} with eps {result.eps:g}, seed {result.seed}.",
        "",
        "| stage | robust accuracy | broken | seconds |",
        "| --- | ---: | ---: | ---: |",
        f"| clean | {result.clean_accuracy:.2%} | | |",
    ]
    lines += [f"| {s.name} | {s.robust_accuracy:.2%} | {s.broken}/{s.attacked} | {s.seconds:.1f} |" for s in result.attacks]
    lines += [
        "",
        f"**Robust accuracy: {result.robust_accuracy:.2%}** (total {result.seconds:.1f} s).",
        "",
    ]
    if result.min_norm_attack:
        lines += [f"Median minimum {result.norm} distance ({result.min_norm_attack}): {_fmt(result.median_distance)}.", ""]
    lines += ["## Sanity checks", "", "| check | fired | detail |", "| --- | --- | --- |"]
    lines += [f"| {c.name} | {'**yes**' if c.fired else 'no'} | {c.detail} |" for c in result.checks]
    for c in result.checks:
        if c.fired:
            lines += ["", f"### {c.name}", "", c.meaning, "", f"What to do: {c.advice}"]
    lines += [""] + [f"![{name}]({name})" for name in images] + [""]
    return "\n".join(lines)


def _html(result: EvalResult, images: list[str]) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(s.name)}</td><td>{s.robust_accuracy:.2%}</td><td>{s.broken}/{s.attacked}</td>"
        f"<td>{s.seconds:.1f}</td></tr>"
        for s in result.attacks
    )
    checks = "".join(
        f"<tr><td>{esc(c.name)}</td><td>{'<b>yes</b>' if c.fired else 'no'}</td><td>{esc(c.detail)}</td>"
        f"<td>{esc(c.advice) if c.fired else ''}</td></tr>"
        for c in result.checks
    )
    imgs = "".join(f'<p><img src="{esc(name)}" alt="{esc(name)}"></p>' for name in images)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>dlsec: {esc(result.model)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:.2em .6em;border-bottom:1px solid #ddd}}</style>
</head><body>
<h1>Robustness of {esc(result.model)}</h1>
<p>Data {esc(result.data)}, {result.n} points, threat model {esc(result.norm)} with eps {result.eps:g}, seed {result.seed}.</p>
<table><tr><th>stage</th><th>robust accuracy</th><th>broken</th><th>seconds</th></tr>
<tr><td>clean</td><td>{result.clean_accuracy:.2%}</td><td></td><td></td></tr>{rows}</table>
<p><b>Robust accuracy: {result.robust_accuracy:.2%}</b> (total {result.seconds:.1f} s).
Median minimum {esc(result.norm)} distance ({esc(result.min_norm_attack)}): {_fmt(result.median_distance)}.</p>
<h2>Sanity checks</h2>
<table><tr><th>check</th><th>fired</th><th>detail</th><th>what to do</th></tr>{checks}</table>
{imgs}
</body></html>
"""
