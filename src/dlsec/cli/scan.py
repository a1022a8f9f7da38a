"""``dlsec scan``: exit 0 nothing at or above the threshold, 1 findings, 2 error, 3 nothing scannable."""

from __future__ import annotations

import click

from dlsec.scan import ScanReport, Severity, scan_path


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text", show_default=True)
@click.option("--strict", is_flag=True, help="treat imports that are not on the allowlist as critical")
@click.option("--fail-on", default="high", show_default=True, help="lowest severity that makes the exit status 1")
@click.option(
    "--jobs", type=click.IntRange(0, 64), default=0, show_default=True,
    help="processes scanning files in parallel; 0 picks one per CPU (up to 8) for large folders",
)  # fmt: skip
def scan(paths: tuple[str, ...], fmt: str, strict: bool, fail_on: str, jobs: int) -> int:
    """Scan model files (or directories) for code-execution payloads, without loading them."""
    threshold = Severity.parse(fail_on)
    report = scan_path(*paths, strict=strict, jobs=jobs)
    if fmt == "json":
        from dlsec.reports.jsonout import dumps

        click.echo(dumps(report))
    elif fmt == "sarif":
        from dlsec.reports.sarif import sarif

        click.echo(sarif(report))
    else:
        _text(report, threshold)
    return report.exit_code(threshold)


def _text(report: ScanReport, threshold: Severity) -> None:
    """Plain lines (no rich: a scan in CI should start as fast as the file walk allows)."""
    for f in sorted(report.findings, key=lambda f: (-f.severity, f.path, f.member, f.offset or 0)):
        where = f.path + (f":{f.member}" if f.member else "") + (f"@{f.offset}" if f.offset is not None else "")
        click.echo(f"{f.severity.name:8} {where}  {f.message}")
    for e in report.errors:
        click.echo(f"ERROR    {e.path}{':' + e.member if e.member else ''}  {e.message}")
    for s in report.skipped:
        click.echo(f"SKIPPED  {s.path}  {s.reason}")
    bad = len(report.at_least(threshold))
    click.echo(
        f"{len(report.scanned)} scanned, {len(report.findings)} findings ({bad} at or above {threshold.name.lower()}), "
        f"{len(report.errors)} errors, {len(report.skipped)} skipped"
    )
