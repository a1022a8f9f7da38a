"""``dlsec sandbox``: exit 0 the load completed with nothing dangerous, 1 dangerous behaviour, 2 error.

A load that fails, crashes, times out or is killed without a dangerous event is an error (2), never clean. Clean
means that nothing dangerous was observed by the in-process monitor (audit hooks) under the isolation the report
lists. Without namespace isolation on this machine the run is refused (2) unless ``--no-isolation`` is given.
"""

from __future__ import annotations

import click

from dlsec.errors import InputError


@click.command()
@click.argument("file", required=False)
@click.option("--loader", default=None, help="loader to use (see --list-loaders); default: picked from the file")
@click.option("--list-loaders", is_flag=True, help="list the loaders and whether each is installed, then exit")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=120, show_default=True,
              help="wall-clock seconds (also the CPU-time limit)")  # fmt: skip
@click.option("--memory-mb", type=click.IntRange(64, 1 << 20), default=2048, show_default=True,
              help="address space the load may add")  # fmt: skip
@click.option("--fsize-mb", type=click.IntRange(1, 1 << 16), default=64, show_default=True,
              help="largest file, and size of the private tmpfs")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text", show_default=True)
@click.option("--no-isolation", is_flag=True, help="no namespaces (audit hooks, seccomp and resource limits only); needed where namespaces are unavailable")
@click.option("--keep-going", is_flag=True,
              help="record every event instead of stopping at the first dangerous one (isolation contains it)")
@click.option("-v", "--verbose", is_flag=True, help="text format: list every event, not only dangerous ones")
def sandbox(
    file: str | None, loader: str | None, list_loaders: bool, timeout: float, memory_mb: int, fsize_mb: int,
    fmt: str, no_isolation: bool, keep_going: bool, verbose: bool,
) -> int:  # fmt: skip
    """Load FILE with its format's loader in an isolated child process and report what the load tried to do."""
    from dlsec.sandbox import LOADERS, run_sandbox

    if list_loaders:
        for ld in LOADERS.values():
            state = "installed" if ld.available() else f"needs {', '.join(ld.requires)}"
            click.echo(f"{ld.name:12} {state:16} {' '.join(ld.suffixes):34} {ld.call}")
        return 0
    if file is None:
        raise InputError("missing FILE (or --list-loaders)")
    report = run_sandbox(file, loader, timeout=timeout, memory_mb=memory_mb, fsize_mb=fsize_mb,
                         isolation=not no_isolation, keep_going=keep_going)  # fmt: skip
    if fmt == "json":
        from dlsec.reports.jsonout import dumps

        click.echo(dumps(report))
    elif fmt == "sarif":
        from dlsec.reports.sandbox import sarif

        click.echo(sarif(report))
    else:
        from dlsec.reports.sandbox import text

        click.echo(text(report, verbose=verbose))
    return report.exit_code()
