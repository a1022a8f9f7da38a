"""PyYAML: ``yaml.load`` without a safe loader, ``yaml.unsafe_load``, ``yaml.full_load``."""

from __future__ import annotations

from collections.abc import Iterator

from dlsec.lint.rules.base import CallSite, Hit, Rule
from dlsec.scan.results import Severity

LOAD = frozenset({"yaml.load", "yaml.load_all"})
UNSAFE = frozenset({"yaml.unsafe_load", "yaml.unsafe_load_all"})
FULL = frozenset({"yaml.full_load", "yaml.full_load_all"})
SAFE_LOADERS = frozenset({"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"})
UNSAFE_LOADERS = frozenset({"Loader", "UnsafeLoader", "CLoader", "CUnsafeLoader"})
FULL_LOADERS = frozenset({"FullLoader", "CFullLoader"})


class YamlUnsafeLoad(Rule):
    """``yaml.load`` with no or an unsafe ``Loader``; ``yaml.unsafe_load``."""

    id = "DLS401"
    name = "yaml-unsafe-load"
    severity = Severity.HIGH
    why = (
        "yaml.load with Loader/UnsafeLoader (or no Loader on old PyYAML) builds arbitrary Python objects "
        "from !!python/ tags: a config file runs code"
    )
    fix = "use yaml.safe_load (or Loader=yaml.SafeLoader / CSafeLoader)"

    def check(self, site: CallSite) -> Iterator[Hit]:
        if site.qname in UNSAFE:
            yield Hit(f"{site.qname} constructs arbitrary Python objects")
            return
        if site.qname not in LOAD:
            return
        loader = site.arg("Loader", 1)
        if loader is None:
            if site.star_kwargs or site.has_star_args():
                yield Hit(
                    f"{site.qname} whose Loader cannot be seen (*args/**kwargs)",
                    severity=Severity.MEDIUM,
                    confidence="low",
                )
            else:
                yield Hit(f"{site.qname} without Loader= (unsafe or full loader on old PyYAML)")
            return
        qname = site.resolve(loader)
        last = qname.rsplit(".", 1)[-1] if qname else None
        if last in SAFE_LOADERS or last in FULL_LOADERS:
            return  # FullLoader: DLS402
        if last in UNSAFE_LOADERS and qname is not None and qname.startswith("yaml."):
            yield Hit(f"{site.qname} with Loader={qname}")
        elif last is None or not last.endswith(("SafeLoader", "BaseLoader")):
            yield Hit(
                f"{site.qname} with a Loader dlsec cannot prove safe ({qname or 'an expression'})",
                severity=Severity.MEDIUM,
                confidence="low",
            )


class YamlFullLoad(Rule):
    """``yaml.full_load`` / ``Loader=yaml.FullLoader``."""

    id = "DLS402"
    name = "yaml-full-load"
    severity = Severity.MEDIUM
    why = (
        "FullLoader ran arbitrary code on untrusted input in PyYAML < 5.4 (CVE-2020-1747, CVE-2020-14343) "
        "and still builds Python objects beyond plain data"
    )
    fix = "use yaml.safe_load (or Loader=yaml.SafeLoader / CSafeLoader)"

    def check(self, site: CallSite) -> Iterator[Hit]:
        if site.qname in FULL:
            yield Hit(f"{site.qname} uses FullLoader")
            return
        if site.qname not in LOAD:
            return
        loader = site.arg("Loader", 1)
        qname = site.resolve(loader) if loader is not None else None
        if qname and qname.startswith("yaml.") and qname.rsplit(".", 1)[-1] in FULL_LOADERS:
            yield Hit(f"{site.qname} with Loader={qname}")
