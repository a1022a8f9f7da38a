"""PyTorch: ``torch.load`` without ``weights_only=True``, custom ``pickle_module``, URL loads, ``torch.hub``."""

from __future__ import annotations

import re
from collections.abc import Iterator

from dlsec.lint.rules.base import UNKNOWN, CallSite, Hit, Rule, literal
from dlsec.scan.results import Severity

TORCH_LOAD = frozenset({"torch.load", "torch.serialization.load"})
URL_LOAD = frozenset({"torch.hub.load_state_dict_from_url", "torch.utils.model_zoo.load_url"})
HUB = {"torch.hub.load": 0, "torch.hub.list": 0, "torch.hub.help": 0}
"""torch.hub functions that import a repo's ``hubconf.py`` and the position of their repo argument."""

_BRANCHES = frozenset({"main", "master", "dev", "develop", "head", "trunk", "latest", "nightly"})
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(?::(?P<ref>[^\s:]+))?$")


def _pickle_module(site: CallSite) -> bool:
    """True when a ``pickle_module`` other than a literal None is passed."""
    pm = site.arg("pickle_module", 2)
    return pm is not None and literal(pm) is not None


class TorchLoadMissingWeightsOnly(Rule):
    """``torch.load(f)`` with no ``weights_only``."""

    id = "DLS101"
    name = "torch-load-without-weights-only"
    severity = Severity.MEDIUM
    why = (
        "torch.load unpickles arbitrary objects unless weights_only=True; torch >= 2.6 defaults to True, "
        "but the code cannot know which torch runs it (and TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns it off)"
    )
    fix = "pass weights_only=True (dlsec lint --fix adds it), or store tensors as safetensors"

    def check(self, site: CallSite) -> Iterator[Hit]:
        if site.qname not in TORCH_LOAD or _pickle_module(site):
            return
        wo = site.keywords.get("weights_only")
        if wo is None:
            if site.star_kwargs:
                yield Hit(f"{site.qname} without weights_only (it may come in **kwargs)", confidence="low")
            else:
                yield Hit(f"{site.qname} without weights_only=True", fixable=True)
        elif literal(wo) is None:
            yield Hit(f"{site.qname} with weights_only=None (the version-dependent default)")


class TorchLoadWeightsOnlyFalse(Rule):
    """``torch.load(f, weights_only=False)`` or a non-literal value."""

    id = "DLS102"
    name = "torch-load-weights-only-false"
    severity = Severity.HIGH
    why = "weights_only=False makes torch.load a full unpickle: a malicious checkpoint runs code when loaded"
    fix = (
        "use weights_only=True (allow extra classes with torch.serialization.add_safe_globals) or safetensors"
    )

    def check(self, site: CallSite) -> Iterator[Hit]:
        if site.qname not in TORCH_LOAD or _pickle_module(site):
            return
        wo = site.keywords.get("weights_only")
        if wo is None:
            return
        value = literal(wo)
        if value is UNKNOWN:
            yield Hit(
                f"{site.qname} with a weights_only that is not the literal True",
                severity=Severity.MEDIUM,
                confidence="low",
            )
        elif value is not None and not value:
            yield Hit(f"{site.qname} with weights_only={value!r}")


class TorchLoadPickleModule(Rule):
    """``torch.load(f, pickle_module=...)``."""

    id = "DLS103"
    name = "torch-load-pickle-module"
    severity = Severity.HIGH
    why = "a custom pickle_module turns the weights-only unpickler off (torch refuses weights_only=True with it)"
    fix = "drop pickle_module and load with weights_only=True"

    def check(self, site: CallSite) -> Iterator[Hit]:
        if site.qname in TORCH_LOAD and _pickle_module(site):
            yield Hit(f"{site.qname} with a custom pickle_module")


class TorchLoadFromUrl(Rule):
    """``torch.hub.load_state_dict_from_url(url)``: its ``weights_only`` defaults to False."""

    id = "DLS104"
    name = "torch-load-url-without-weights-only"
    severity = Severity.HIGH
    why = (
        "torch.hub.load_state_dict_from_url downloads a file and torch.loads it with weights_only=False "
        "unless told otherwise: a replaced file at the URL runs code"
    )
    fix = "pass weights_only=True (dlsec lint --fix adds it) and check_hash=True"

    def check(self, site: CallSite) -> Iterator[Hit]:
        if site.qname not in URL_LOAD:
            return
        wo = site.arg("weights_only", 6)
        if wo is None:
            if site.star_kwargs or site.has_star_args():
                yield Hit(
                    f"{site.qname} without weights_only (it may come in *args/**kwargs)", confidence="low"
                )
            else:
                yield Hit(f"{site.qname} without weights_only=True (its default is False)", fixable=True)
            return
        value = literal(wo)
        if value is UNKNOWN:
            yield Hit(
                f"{site.qname} with a non-literal weights_only", severity=Severity.MEDIUM, confidence="low"
            )
        elif not value:
            yield Hit(f"{site.qname} with weights_only={value!r}")


class TorchHubUnpinned(Rule):
    """``torch.hub.load("owner/repo", ...)`` without a pinned ref."""

    id = "DLS105"
    name = "torch-hub-unpinned-repo"
    severity = Severity.MEDIUM
    why = (
        "torch.hub.load imports and runs the repo's hubconf.py: an unpinned or computed repo runs whatever "
        "the branch holds today (trust_repo=True also skips the confirmation prompt)"
    )
    fix = 'pin a tag or commit ("owner/repo:<sha>") of a repo you trust, or vendor the code and use source="local"'

    def check(self, site: CallSite) -> Iterator[Hit]:
        if site.qname not in HUB:
            return
        if literal(site.keywords.get("source")) == "local":
            return
        trust = literal(site.keywords.get("trust_repo"))
        severity = Severity.HIGH if trust is True else None
        extra = " and trust_repo=True" if trust is True else ""
        repo_expr = site.arg("repo_or_dir", HUB[site.qname]) or site.arg("github")
        repo = literal(repo_expr)
        if not isinstance(repo, str):
            yield Hit(
                f"{site.qname} of a repo that is not a literal{extra}", severity=severity, confidence="low"
            )
            return
        m = _REPO.match(repo)
        if m is None:
            return  # not an owner/repo spec (a local directory given without source="local" fails anyway)
        ref = m.group("ref")
        if ref is None:
            yield Hit(
                f"{site.qname}({repo!r}) without a pinned ref (it follows the default branch){extra}",
                severity=severity,
            )
        elif ref.lower() in _BRANCHES:
            yield Hit(
                f"{site.qname}({repo!r}) follows branch {ref!r}, not a pinned tag or commit{extra}",
                severity=severity,
            )
