"""``dlsec lint``: exit 0 clean, 1 findings, 2 error (a file that does not parse is never clean), 3 no Python file."""

from __future__ import annotations

import click

from dlsec.errors import InputError


@click.command()
@click.argument("paths", nargs=-1)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text", show_default=True
)
@click.option(
    "--select", multiple=True, metavar="ID", help="only these rules (ids, id prefixes such as DLS1, names)"
)
@click.option("--ignore", multiple=True, metavar="ID", help="skip these rules (ids, id prefixes, names)")
@click.option("--fix", is_flag=True, help="add weights_only=True where it is missing (files are rewritten)")
@click.option("--list-rules", is_flag=True, help="print the rules and exit")
def lint(
    paths: tuple[str, ...],
    fmt: str,
    select: tuple[str, ...],
    ignore: tuple[str, ...],
    fix: bool,
    list_rules: bool,
) -> int:
    """Flag unsafe model/data loading code in Python files: torch.load without weights_only=True, pickle,
    yaml.load, numpy allow_pickle, trust_remote_code, Keras safe_mode=False, torch.hub, eval/exec of data.
    Suppress a line with ``# dlsec: ignore[DLS101]``."""
    from dlsec.lint import lint_paths, select_rules
    from dlsec.reports import lint as render

    if list_rules:
        click.echo(render.rule_table(select_rules(select, ignore)))
        return 0
    if not paths:
        raise InputError("give files or directories to lint (or --list-rules)")
    report = lint_paths(*paths, select=select, ignore=ignore, fix=fix)
    if fmt == "json":
        click.echo(render.to_json(report))
    elif fmt == "sarif":
        click.echo(render.sarif(report))
    else:
        click.echo(render.text(report))
    return report.exit_code()
