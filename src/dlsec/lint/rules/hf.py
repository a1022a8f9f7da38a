"""Hugging Face and friends: ``trust_remote_code=True``, ``from_pretrained(use_safetensors=False)``."""

from __future__ import annotations

from collections.abc import Iterator

from dlsec.lint.rules.base import UNKNOWN, CallSite, Hit, Rule, literal
from dlsec.scan.results import Severity

REMOTE_CODE_ATTRS = frozenset({"from_pretrained", "from_config"})
"""Method names that take ``trust_remote_code`` (transformers' Auto classes, diffusers, peft ...)."""
REMOTE_CODE_CALLS = frozenset(
    {
        "transformers.pipeline",
        "datasets.load_dataset",
        "datasets.load_dataset_builder",
        "sentence_transformers.SentenceTransformer",
        "vllm.LLM",
    }
)
"""Functions that take ``trust_remote_code``: with an opaque ``**kwargs`` and no visible keyword they get a
low-confidence finding (the keyword may be in the mapping)."""


class TrustRemoteCode(Rule):
    """``trust_remote_code=True`` on any call (transformers, datasets, sentence-transformers, vLLM ...)."""

    id = "DLS501"
    name = "trust-remote-code"
    severity = Severity.HIGH
    why = "trust_remote_code=True imports and runs Python files shipped with a model or dataset repository"
    fix = "use a model class that ships with the library, or pin revision= to a reviewed commit and vendor the code"

    def check(self, site: CallSite) -> Iterator[Hit]:
        expr = site.keywords.get("trust_remote_code")
        if expr is None:
            if site.star_kwargs and (site.attr in REMOTE_CODE_ATTRS or site.qname in REMOTE_CODE_CALLS):
                yield Hit(
                    f"{site.attr} whose trust_remote_code cannot be seen (it may come in **kwargs)",
                    severity=Severity.LOW,
                    confidence="low",
                )
            return
        value = literal(expr)
        where = site.attr or "a call"
        if value is UNKNOWN:
            yield Hit(
                f"{where} with a non-literal trust_remote_code", severity=Severity.MEDIUM, confidence="low"
            )
        elif value:
            yield Hit(f"{where} with trust_remote_code={value!r}")


class FromPretrainedPickle(Rule):
    """``from_pretrained(..., use_safetensors=False)``."""

    id = "DLS502"
    name = "from-pretrained-without-safetensors"
    severity = Severity.HIGH
    why = "use_safetensors=False makes from_pretrained load pickle-based .bin weights (torch.load) instead of safetensors"
    fix = "drop use_safetensors=False (or set it True) and publish/consume .safetensors weights"

    def check(self, site: CallSite) -> Iterator[Hit]:
        if site.attr != "from_pretrained":
            return
        expr = site.keywords.get("use_safetensors")
        if expr is None:
            return
        value = literal(expr)
        if value is UNKNOWN:
            yield Hit(
                "from_pretrained with a non-literal use_safetensors",
                severity=Severity.MEDIUM,
                confidence="low",
            )
        elif value is False:
            yield Hit("from_pretrained with use_safetensors=False")
