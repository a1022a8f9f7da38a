"""``dlsec audit``: exit 0 clean, 1 a vulnerable package or posture finding, 2 error, 3 nothing audited."""

from __future__ import annotations

import os

import click

from dlsec.errors import InputError


@click.command()
@click.option(
    "--path",
    "paths",
    multiple=True,
    metavar="SITE_PACKAGES",
    help="audit the distributions installed in this folder (repeatable)",
)
@click.option(
    "-r",
    "--requirement",
    "files",
    multiple=True,
    metavar="FILE",
    help="audit the exact pins of a requirements file, uv.lock or poetry.lock (repeatable)",
)
@click.option(
    "--osv-db",
    type=click.Path(dir_okay=False),
    metavar="ZIP",
    help="read advisories from OSV's export zip (PyPI/all.zip) instead of the shipped database",
)
@click.option("--online", is_flag=True, help="query OSV's API instead of the shipped database")
@click.option(
    "--osv-url", metavar="URL", help="OSV API base URL for --online (default: $DLSEC_OSV_URL or OSV's)"
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 600),
    default=15.0,
    show_default=True,
    help="seconds per OSV request with --online (a total deadline: connect, headers and body)",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "sarif", "requirements"]),
    default="table",
    show_default=True,
)
@click.option(
    "--ignore-vuln",
    "ignore",
    multiple=True,
    metavar="ID",
    help="leave out an advisory (its id or any alias, e.g. a CVE); repeatable",
)
@click.option("--no-env", is_flag=True, help="skip the environment-variable posture checks")
def audit(
    paths: tuple[str, ...],
    files: tuple[str, ...],
    osv_db: str | None,
    online: bool,
    osv_url: str | None,
    timeout: float,
    fmt: str,
    ignore: tuple[str, ...],
    no_env: bool,
) -> int:
    """Find known-vulnerable versions of deep-learning packages (offline by default) and risky settings."""
    from dlsec.audit import Inventory, load_database
    from dlsec.audit import audit as run_audit
    from dlsec.audit.inventory import read_environment, read_file, read_site_packages
    from dlsec.audit.service import OnlineOsv, VulnerabilityService
    from dlsec.reports.audit import RENDERERS

    if osv_db and online:
        raise InputError("--osv-db and --online are exclusive: pick one source of advisories")
    if osv_url and not online:
        raise InputError("--osv-url needs --online")
    inv = Inventory()
    for p in paths:
        inv = inv.merge(read_site_packages(p))
    for f in files:
        inv = inv.merge(read_file(f))
    environment = not paths and not files
    if environment:
        inv = read_environment()
    service: VulnerabilityService
    if online:
        service = OnlineOsv(osv_url, timeout=timeout)
        database = f"OSV API {service.base_url}"
    elif osv_db:
        service = load_database(osv_db, names={p.name for p in inv.packages})
        database = f"OSV export {os.path.basename(osv_db)}"
    else:
        service = load_database()
        database = f"shipped database, {len(service)} advisories"
    env = os.environ if (environment or paths) and not no_env else None
    report = run_audit(inv, service, ignore=ignore, env=env, database=database)
    click.echo(RENDERERS[fmt](report))
    return report.exit_code()
