"""The rule model: a class per rule with a stable id, registered by name when it is defined.

A rule sees every call of a file as a :class:`CallSite`: the call's qualified name after aliases are resolved
(``import torch as t`` makes ``t.load`` ``torch.load``), its keywords (a ``functools.partial``'s keywords
included) and whether a ``**kwargs`` hides more of them. It yields :class:`Hit` objects; the engine turns them
into findings, applies inline suppression and ``--select``/``--ignore``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dlsec.scan.results import Severity

REGISTRY: dict[str, Rule] = {}
"""Every rule by id, filled by :meth:`Rule.__init_subclass__`."""

UNKNOWN = object()
"""What :func:`literal` returns for an expression whose value is not a literal."""


def literal(expr: ast.expr | None) -> Any:
    """The value of a literal constant (``True``, ``"s"``, ``None``, ``-1``), else :data:`UNKNOWN`."""
    if expr is None:
        return UNKNOWN
    try:
        return ast.literal_eval(expr)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return UNKNOWN


@dataclass(frozen=True)
class CallSite:
    """One call as the rules see it.

    ``qname`` is the resolved qualified name of the callee (``torch.load``, ``builtins.eval``) or None when it
    cannot be resolved (a method of a local object); ``attr`` is the last name in the callee expression
    (``from_pretrained`` in ``AutoModel.from_pretrained``). ``args`` and ``keywords`` include those bound by a
    ``functools.partial`` the callee came from (``partial`` is then that partial's call node); ``star_kwargs`` is
    True when a ``**mapping`` that is not a dict literal may carry more keywords.
    """

    node: ast.Call
    qname: str | None
    attr: str | None
    args: tuple[ast.expr, ...]
    keywords: dict[str, ast.expr]
    star_kwargs: bool
    partial: ast.Call | None
    resolve: Callable[[ast.expr], str | None] = field(compare=False, repr=False)

    def arg(self, name: str, position: int | None = None) -> ast.expr | None:
        """The expression passed as keyword ``name`` or at ``position`` (0-based), or None."""
        if name in self.keywords:
            return self.keywords[name]
        if position is not None and position < len(self.args):
            a = self.args[position]
            if not any(isinstance(x, ast.Starred) for x in self.args[: position + 1]):
                return a
        return None

    def has_star_args(self) -> bool:
        """True when a ``*args`` may fill positional parameters this site cannot see."""
        return any(isinstance(a, ast.Starred) for a in self.args)


@dataclass(frozen=True)
class Hit:
    """What a rule reports for a call: the message, the severity (the rule's if None), the confidence and
    whether ``--fix`` may rewrite the call."""

    message: str
    severity: Severity | None = None
    confidence: str = "high"
    fixable: bool = False


class Rule:
    """Base class: subclasses set ``id`` (``DLS`` + 3 digits, never reused), ``name``, ``severity``, a one-line
    ``why`` and a ``fix``, and implement :meth:`check`."""

    id: ClassVar[str] = ""
    name: ClassVar[str] = ""
    severity: ClassVar[Severity] = Severity.HIGH
    why: ClassVar[str] = ""
    fix: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.id:
            return
        if cls.id in REGISTRY:
            raise RuntimeError(f"duplicate lint rule id {cls.id}")
        REGISTRY[cls.id] = cls()

    def check(self, site: CallSite) -> Iterator[Hit]:
        """The problems of one call (none for most calls)."""
        raise NotImplementedError


def root(qname: str | None) -> str:
    """The top-level package of a qualified name (``torch`` for ``torch.hub.load``), or ``""``."""
    return qname.split(".", 1)[0] if qname else ""
