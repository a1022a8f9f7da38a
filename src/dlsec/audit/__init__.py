"""``dlsec audit``: known-vulnerable versions of deep-learning packages, offline first.

The small public API (in the spirit of pip-audit's)::

    from dlsec.audit import audit_environment, audit_requirements, load_database

    report = audit_environment()                      # the running interpreter
    report = audit_environment("/opt/venv/lib/python3.11/site-packages")
    report = audit_requirements("requirements.txt")   # or uv.lock / poetry.lock
    report.exit_code()                                # 0 clean, 1 findings

Advisories come from the OSV-format database shipped with dlsec (:func:`load_database`), an OSV export zip
(``load_database(osv_zip=...)``) or OSV's API (:class:`~dlsec.audit.service.OnlineOsv`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence

from dlsec.audit.inventory import (
    Inventory,
    Package,
    SkippedPackage,
    read_environment,
    read_file,
    read_site_packages,
)
from dlsec.audit.osv import Advisory, normalize_name, parse_record, public_version
from dlsec.audit.posture import check_environment, check_packages
from dlsec.audit.results import AuditReport, PostureFinding, VulnFinding
from dlsec.audit.service import Database, OnlineOsv, VulnerabilityService

__all__ = [
    "Advisory",
    "AuditReport",
    "Database",
    "Inventory",
    "OnlineOsv",
    "Package",
    "PostureFinding",
    "SkippedPackage",
    "VulnFinding",
    "VulnerabilityService",
    "audit",
    "audit_environment",
    "audit_requirements",
    "dedupe",
    "load_database",
    "normalize_name",
    "parse_record",
    "smallest_fix",
]


def load_database(
    osv_zip: str | os.PathLike[str] | None = None, names: Iterable[str] | None = None
) -> Database:
    """The shipped deep-learning database, or an OSV export zip (optionally only advisories for ``names``)."""
    if osv_zip is not None:
        return Database.from_zip(osv_zip, names)
    return Database.shipped()


def _rank(advisory_id: str) -> int:
    """Which id of duplicates to show: GHSA first (reviewed), then PYSEC, then anything else."""
    return 0 if advisory_id.startswith("GHSA-") else 1 if advisory_id.startswith("PYSEC-") else 2


def dedupe(advisories: Sequence[Advisory]) -> list[Advisory]:
    """One advisory per vulnerability: records sharing an id or alias are merged (aliases united)."""
    groups: list[list[Advisory]] = []
    for a in advisories:
        hit = [g for g in groups if any(a.all_ids & b.all_ids for b in g)]
        merged = [a] + [b for g in hit for b in g]
        groups = [g for g in groups if g not in hit] + [merged]
    out: list[Advisory] = []
    for g in groups:
        best = min(g, key=lambda a: (_rank(a.id), a.id))
        ids = set().union(*(a.all_ids for a in g)) - {best.id}
        severity = best.severity or next((a.severity for a in g if a.severity is not None), None)
        out.append(dataclasses.replace(best, aliases=tuple(sorted(ids)), severity=severity))
    return sorted(out, key=lambda a: a.id)


def smallest_fix(name: str, version: str, advisories: Sequence[Advisory]) -> str | None:
    """The smallest fixed version above ``version`` that none of ``advisories`` affects (None if none known)."""
    installed = public_version(version)
    candidates = sorted({v for a in advisories for v in a.fixed_versions(name) if v > installed})
    for c in candidates:
        if not any(a.affects(name, c) for a in advisories):
            return str(c)
    return None


def _is_ignored(a: Advisory, ignore: frozenset[str]) -> bool:
    return bool(a.all_ids & ignore)


def audit(
    inventory: Inventory,
    service: VulnerabilityService | None = None,
    *,
    ignore: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    database: str = "",
) -> AuditReport:
    """Audit an inventory against a service (the shipped database by default).

    ``ignore`` holds advisory ids or aliases to leave out; ``env`` (an environment mapping) turns on the
    environment posture checks.
    """
    svc: VulnerabilityService = service if service is not None else Database.shipped()
    ignored = frozenset(ignore)
    answers = svc.query(list(inventory.packages))
    vulns: list[VulnFinding] = []
    ignored_hits: set[str] = set()
    for pkg in inventory.packages:
        found = dedupe(answers.get(pkg, []))
        kept = [a for a in found if not _is_ignored(a, ignored)]
        ignored_hits.update(a.id for a in found if _is_ignored(a, ignored))
        if not kept:
            continue
        fix = smallest_fix(pkg.name, pkg.version, kept)
        for a in kept:
            vulns.append(
                VulnFinding(
                    pkg.name,
                    pkg.version,
                    pkg.source,
                    a.id,
                    a.aliases,
                    a.summary,
                    a.severity,
                    tuple(str(v) for v in a.fixed_versions(pkg.name)),
                    fix,
                )  # fmt: skip
            )
    posture = check_packages(inventory.packages)
    if env is not None:
        posture += check_environment(env, inventory.packages)
    warnings = tuple(getattr(svc, "warnings", ()))
    vulns.sort(key=lambda v: (v.package, v.id))
    return AuditReport(
        inventory.packages, tuple(vulns), tuple(posture), inventory.skipped, tuple(sorted(ignored_hits)),
        warnings, database,
    )  # fmt: skip


def audit_environment(
    path: str | os.PathLike[str] | None = None,
    service: VulnerabilityService | None = None,
    *,
    ignore: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
) -> AuditReport:
    """Audit a site-packages folder, or the running interpreter (``path=None``, environment checks included)."""
    if path is None:
        inv = read_environment()
        env = os.environ if env is None else env
    else:
        inv = read_site_packages(path)
    return audit(inv, service, ignore=ignore, env=env)


def audit_requirements(
    *files: str | os.PathLike[str], service: VulnerabilityService | None = None, ignore: Iterable[str] = ()
) -> AuditReport:
    """Audit requirements files / ``uv.lock`` / ``poetry.lock`` (exact pins only; the rest reported skipped)."""
    inv = Inventory()
    for f in files:
        inv = inv.merge(read_file(f))
    return audit(inv, service, ignore=ignore)
