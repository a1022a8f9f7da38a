"""``dlsec scan``: exit 0 nothing at or above the threshold, 1 findings, 2 error, 3 nothing scannable."""

from __future__ import annotations

import click

from dlsec.cli.console import console
from dlsec.reports.jsonout import dumps
from dlsec.reports.sarif import sarif
from dlsec.scan import ScanReport, Severity, scan_path


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text", show_default=True)
@click.option("--strict", is_flag=True, help="treat imports that are not on the allowlist as critical")
@click.option("--fail-on", default="high", show_default=True, help="lowest severity that makes the exit status 1")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True, help="files scanned in parallel")
def scan(paths: tuple[str, ...], fmt: str, strict: bool, fail_on: str, jobs: int) -> int:
    """Scan model files (or directories) for code-execution payloads, without loading them."""
    threshold = Severity.parse(fail_on)
    report = scan_path(*paths, strict=strict, jobs=jobs)
    if fmt == "json":
        click.echo(dumps(report))
    elif fmt == "sarif":
        click.echo(sarif(report))
    else:
        _text(report, threshold)
    return report.exit_code(threshold)


def _text(report: ScanReport, threshold: Severity) -> None:
    for f in sorted(report.findings, key=lambda f: (-f.severity, f.path, f.member, f.offset or 0)):
        where = f.path + (f":{f.member}" if f.member else "") + (f"@{f.offset}" if f.offset is not None else "")
        console.print(f"{f.severity.name:8} {where}  {f.message}", markup=False, highlight=False)
    for e in report.errors:
        console.print(f"ERROR    {e.path}{':' + e.member if e.member else ''}  {e.message}", markup=False, highlight=False)
    for s in report.skipped:
        console.print(f"SKIPPED  {s.path}  {s.reason}", markup=False, highlight=False)
    bad = len(report.at_least(threshold))
    console.print(
        f"{len(report.scanned)} scanned, {len(report.findings)} findings ({bad} at or above {threshold.name.lower()}), "
        f"{len(report.errors)} errors, {len(report.skipped)} skipped",
        markup=False,
        highlight=False,
    )
