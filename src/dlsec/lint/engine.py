"""``dlsec lint`` engine: parse Python files with :mod:`ast`, resolve aliases, run the rules on every call.

Alias resolution maps each name to its qualified origin: ``import torch as t`` makes ``t.load`` ``torch.load``,
``from torch import load as L`` makes ``L`` ``torch.load``, attribute chains are followed
(``tf.keras.models.load_model``), ``loader = torch.load`` binds ``loader`` in that scope, and
``functools.partial(torch.load, ...)`` (also ``partial`` imported under any name) becomes a call of
``torch.load`` whose bound keywords count as the call's keywords. A partial that is never called by name in
the file (passed straight to another function) is checked where it is created.

Dynamic access with literal strings resolves too: ``importlib.import_module("pickle").loads``,
``__import__("pickle").loads``, ``getattr(torch, "load")`` and ``sys.modules["pickle"].loads``.

Resolution is flow-insensitive within a scope in one respect: function bodies are analysed after the
enclosing module or function body, with the bindings it ends with (as Python runs them). Where a name is
bound twice the last binding wins, with two exceptions that keep an import: a later assignment of a constant
(``try: import torch`` / ``except ImportError: torch = None``, the optional-import pattern) does not replace
an import binding of the same scope, and an import of a module the rules know (``torch``, ``pickle``,
``yaml`` ...) is only replaced by another import of a known module (``try: import cPickle as pickle`` /
``except: import pickle`` gives ``pickle``). Parameters, loop targets and assignments of anything else shadow
imports (a local ``load`` is not ``torch.load``). Comprehensions have their own scope: their variables do not
leak into the enclosing one.

Values: a literal (``weights_only=True``) decides a rule; a non-literal value (a variable, an expression) or a
``**kwargs`` that may carry the keyword gives a finding with ``confidence="low"`` (and usually a lower
severity): dlsec cannot prove the call safe, a human should look. ``**{"k": v}`` dict literals and
``**dict(k=v)`` calls are unpacked; ``**kw`` where ``kw`` is bound (in the same scope or an enclosing one) to
such a dict contributes its keywords (``weights_only=False`` in it is DLS102) and still counts as an opaque
``**kwargs`` for rules that need a keyword to be absent (the dict may have been changed since).

A statement nested too deeply for the recursion limit is skipped and reported as an error (its line span);
the rest of the file is still linted.

Inline suppression: ``# dlsec: ignore[DLS101]``, ``# dlsec: ignore[DLS101,DLS201]`` or a bare
``# dlsec: ignore`` (all rules) on any line of the flagged call. Suppressed findings are counted.
"""

from __future__ import annotations

import ast
import builtins
import io
import os
import re
import tokenize
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dlsec.errors import InputError
from dlsec.lint.results import LintError, LintFinding, LintReport
from dlsec.lint.rules import REGISTRY, UNKNOWN, CallSite, Rule, literal

MAX_FILE_BYTES = 5 * 1024 * 1024
"""Files above this size are not parsed (an error entry, never clean)."""
MAX_FILES = 200_000
"""A directory walk stops with an error past this many Python files."""
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        "node_modules",
        "site-packages",
    }
)
"""Directory names never walked into (besides any name starting with ``.venv``)."""

_BUILTINS = frozenset(dir(builtins))
_PARTIAL = frozenset({"functools.partial", "functools.partialmethod"})
_SUPPRESS = re.compile(r"#\s*dlsec:\s*ignore(?:\[(?P<ids>[^\]]*)\])?", re.IGNORECASE)
_ALL = "*"


@dataclass
class _Partial:
    """A ``functools.partial`` of a resolved callable bound to a name."""

    target: str
    args: tuple[ast.expr, ...]
    keywords: dict[str, ast.expr]
    star_kwargs: bool
    node: ast.Call
    used: bool = False


@dataclass
class _Kwargs:
    """A dict bound to a name (``kw = {"k": v}`` / ``kw = dict(k=v)``): the keywords ``**kw`` passes.

    ``exact`` is False when the dict may hold more than ``keywords`` (it is bound to a name, which later code
    can mutate): a ``**kw`` then still counts as an opaque ``**mapping`` too (the rules see both)."""

    keywords: dict[str, ast.expr]
    exact: bool = False


_Binding = str | _Partial | _Kwargs | None
"""A name's origin: a qualified name, a partial, a dict of keywords, or None for a local value of unknown origin."""

_KNOWN_ROOTS = frozenset(
    {
        "torch",
        "pickle",
        "_pickle",
        "cPickle",
        "dill",
        "cloudpickle",
        "joblib",
        "sklearn",
        "pandas",
        "shelve",
        "jsonpickle",
        "numpy",
        "yaml",
        "keras",
        "tensorflow",
        "tf_keras",
        "transformers",
        "importlib",
        "functools",
    }
)
"""Top-level modules the rules know: an import of one is not replaced by an import of anything else."""
_IMPORTERS = frozenset({"importlib.import_module", "builtins.__import__"})


@dataclass
class _Scope:
    """Names bound in one module, class or function body."""

    kind: str
    parent: _Scope | None
    names: dict[str, _Binding] = field(default_factory=dict)

    def lookup(self, name: str) -> tuple[bool, _Binding]:
        """``(found, binding)`` along the scope chain (class bodies are not visible from nested functions)."""
        scope: _Scope | None = self
        first = True
        while scope is not None:
            if (first or scope.kind != "class") and name in scope.names:
                return True, scope.names[name]
            first = False
            scope = scope.parent
        return False, None


@dataclass(frozen=True)
class _Raw:
    """A rule hit before suppression: the finding, the call span and the call ``--fix`` would edit."""

    finding: LintFinding
    first: int
    last: int
    fix_target: ast.Call | None


class _Visitor(ast.NodeVisitor):
    """Walks one module: tracks bindings, builds a :class:`CallSite` for every call, runs the rules."""

    def __init__(self, path: str, rules: Sequence[Rule], lines: list[str]) -> None:
        self.path = path
        self.rules = rules
        self.lines = lines
        self.scope = _Scope("module", None)
        self.pending: list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, _Scope]] = []
        self.partials: dict[int, _Partial] = {}
        self.keep: list[ast.Call] = []  # keeps the nodes keyed by id() in self.partials alive
        self.raw: list[_Raw] = []
        self.too_deep: list[tuple[int, int]] = []  # line spans of statements not linted (RecursionError)

    # ------------------------------------------------------------------ resolution
    def resolve(self, expr: ast.expr) -> str | None:
        """The qualified name an expression refers to, or None."""
        if isinstance(expr, ast.Name):
            found, b = self.scope.lookup(expr.id)
            if not found:
                return f"builtins.{expr.id}" if expr.id in _BUILTINS else expr.id
            return b if isinstance(b, str) else None
        if isinstance(expr, ast.Attribute):
            base = self.resolve(expr.value)
            return f"{base}.{expr.attr}" if base else None
        if isinstance(expr, ast.Call):
            return self._resolve_dynamic(expr)
        if isinstance(expr, ast.Subscript):  # sys.modules["pickle"]
            key = expr.slice
            if (
                isinstance(key, ast.Constant)
                and isinstance(key.value, str)
                and self.resolve(expr.value) == "sys.modules"
            ):
                return key.value or None
        return None

    def _resolve_dynamic(self, call: ast.Call) -> str | None:
        """``importlib.import_module("m")``, ``__import__("m")``, ``getattr(obj, "name")`` with literal strings."""
        if call.keywords and not all(k.arg for k in call.keywords):
            return None
        args = call.args
        if not args or any(isinstance(a, ast.Starred) for a in args):
            return None
        first = args[0]
        text = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None
        func = self.resolve(call.func)
        if func in _IMPORTERS:
            if not text or text.startswith("."):
                return None
            if func == "builtins.__import__" and not (
                len(args) > 3 or any(k.arg == "fromlist" for k in call.keywords)
            ):
                return text.split(".", 1)[0]  # __import__("a.b") returns the top-level package a
            return text
        if func == "builtins.getattr" and len(args) in (2, 3):
            name = args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and name.value.isidentifier():
                base = self.resolve(first)
                return f"{base}.{name.value}" if base else None
        return None

    def _partial_of(self, call: ast.Call) -> _Partial | None:
        """The partial a ``functools.partial(f, ...)`` call makes, when ``f`` resolves (one object per call node)."""
        if id(call) in self.partials:
            return self.partials[id(call)]
        if self.resolve(call.func) not in _PARTIAL or not call.args or isinstance(call.args[0], ast.Starred):
            return None
        inner = call.args[0]
        base: _Partial | None = None
        if isinstance(inner, ast.Call):
            base = self._partial_of(inner)
        elif isinstance(inner, ast.Name) and isinstance(bound := self.scope.lookup(inner.id)[1], _Partial):
            base = bound
        target = base.target if base is not None else self.resolve(inner)
        if not target:
            return None
        keywords, star = self._keywords(call.keywords)
        if base is not None:
            base.used = True
            p = _Partial(
                target,
                base.args + tuple(call.args[1:]),
                {**base.keywords, **keywords},
                star or base.star_kwargs,
                base.node,
            )
        else:
            p = _Partial(target, tuple(call.args[1:]), keywords, star, call)
        self.partials[id(call)] = p
        self.keep.append(call)
        return p

    def _value(self, expr: ast.expr | None) -> _Binding:
        """What binding an assigned value gives its target."""
        if expr is None:
            return None
        if isinstance(expr, ast.Call):
            kwargs = self._dict_keywords(expr)
            if kwargs is not None:
                return _Kwargs(kwargs)
            return self._partial_of(expr) or self.resolve(expr)
        if isinstance(expr, ast.Dict):
            kwargs = self._dict_keywords(expr)
            return _Kwargs(kwargs) if kwargs is not None else None
        if isinstance(expr, ast.Subscript):
            return self.resolve(expr)
        if isinstance(expr, ast.Name):
            found, b = self.scope.lookup(expr.id)
            if found:
                return b
        if isinstance(expr, ast.Name | ast.Attribute):
            return self.resolve(expr)
        return None

    def bind(self, name: str, value: _Binding) -> None:
        """Bind ``name`` in the current scope."""
        self.scope.names[name] = value

    def _bind_import(self, name: str, origin: str | None) -> None:
        """An import binding: it replaces an earlier import of a module the rules know only with another one
        (``try: import torch`` / ``except ImportError: import torch_stub as torch`` keeps ``torch``)."""
        old = self.scope.names.get(name)
        known = isinstance(old, str) and old.split(".", 1)[0] in _KNOWN_ROOTS
        if known and (not origin or origin.split(".", 1)[0] not in _KNOWN_ROOTS):
            return
        self.bind(name, origin)

    def _bind_assigned(self, target: ast.expr, value_expr: ast.expr) -> None:
        """An assignment's binding; a constant (``torch = None`` in an ``except ImportError``) does not replace an
        import binding of the same scope: the optional-import pattern keeps the module."""
        if (
            isinstance(target, ast.Name)
            and isinstance(self.scope.names.get(target.id), str)
            and literal(value_expr) is not UNKNOWN
        ):
            return
        self._bind_target(target, self._value(value_expr))

    def _dict_keywords(self, expr: ast.expr) -> dict[str, ast.expr] | None:
        """The keywords of a dict literal with string-literal keys or of a ``dict(k=v, ...)`` call, else None."""
        if isinstance(expr, ast.Dict):
            if not all(isinstance(k, ast.Constant) and isinstance(k.value, str) for k in expr.keys):
                return None
            return {
                k.value: v
                for k, v in zip(expr.keys, expr.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(k.value, str)
            }
        if (
            isinstance(expr, ast.Call)
            and not expr.args
            and all(k.arg is not None for k in expr.keywords)
            and self.resolve(expr.func) == "builtins.dict"
        ):
            return {k.arg: k.value for k in expr.keywords if k.arg is not None}
        return None

    def _keywords(self, kws: Iterable[ast.keyword]) -> tuple[dict[str, ast.expr], bool]:
        """Keywords by name and whether an opaque ``**mapping`` is present. ``**{"k": v}`` and ``**dict(k=v)``
        are unpacked; ``**name`` with ``name`` bound to such a dict (in this scope or an enclosing one) adds its
        keywords and still counts as opaque (the dict may have been changed since)."""
        out: dict[str, ast.expr] = {}
        star = False
        for kw in kws:
            if kw.arg is not None:
                out[kw.arg] = kw.value
                continue
            inline = self._dict_keywords(kw.value)
            if inline is not None:
                out.update(inline)
                continue
            bound = self.scope.lookup(kw.value.id)[1] if isinstance(kw.value, ast.Name) else None
            if isinstance(bound, _Kwargs):
                out.update(bound.keywords)
                star = star or not bound.exact
            else:
                star = True
        return out, star

    def _bind_target(self, target: ast.expr, value: _Binding) -> None:
        if isinstance(target, ast.Name):
            self.bind(target.id, value)
        elif isinstance(target, ast.Tuple | ast.List):
            for t in target.elts:
                self._bind_target(t.value if isinstance(t, ast.Starred) else t, None)
        else:
            self.visit(target)

    # ------------------------------------------------------------------ statements
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self._bind_import(alias.asname, alias.name)
            else:
                top = alias.name.split(".", 1)[0]
                self._bind_import(top, top)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                continue
            origin = f"{node.module}.{alias.name}" if node.module and not node.level else None
            self._bind_import(alias.asname or alias.name, origin)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for d in node.decorator_list:
            self.visit(d)
        self.visit(node.args)
        if node.returns:
            self.visit(node.returns)
        self.bind(node.name, None)
        self.pending.append((node, self.scope))

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_arguments(self, node: ast.arguments) -> None:
        for d in [*node.defaults, *node.kw_defaults]:
            if d is not None:
                self.visit(d)

    def _bind_params(self, args: ast.arguments) -> None:
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            self.bind(a.arg, None)
        for v in (args.vararg, args.kwarg):
            if v is not None:
                self.bind(v.arg, None)

    def _run_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, parent: _Scope) -> None:
        saved = self.scope
        self.scope = _Scope("function", parent)
        self._bind_params(node.args)
        self._statements(node.body)
        self.scope = saved

    def _statements(self, body: list[ast.stmt]) -> None:
        """Visit statements one by one: one nested too deeply for the recursion limit is recorded in
        :attr:`too_deep` and skipped, the others are still linted."""
        for stmt in body:
            saved = self.scope
            try:
                self.visit(stmt)
            except RecursionError:
                self.scope = saved
                self.too_deep.append((stmt.lineno, stmt.end_lineno or stmt.lineno))

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit(node.args)
        saved = self.scope
        self.scope = _Scope("function", saved)
        self._bind_params(node.args)
        self.visit(node.body)
        self.scope = saved

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for e in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self.visit(e)
        saved = self.scope
        self.scope = _Scope("class", saved)
        for stmt in node.body:
            self.visit(stmt)
        self.scope = saved
        # a subclass of a safe YAML loader is as safe for DLS401 as its base (its own constructors aside)
        bases = [self.resolve(b) for b in node.bases]
        safe = [b for b in bases if b and b.startswith("yaml.") and b.endswith(("SafeLoader", "BaseLoader"))]
        self.bind(node.name, safe[0] if safe else None)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for t in node.targets:
            self._bind_assigned(t, node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self._bind_assigned(node.target, node.value)
        else:
            self._bind_target(node.target, None)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        self._bind_target(node.target, None)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        scope = self.scope
        while scope.kind == "comprehension" and scope.parent is not None:
            scope = scope.parent
        scope.names[node.target.id] = self._value(node.value)

    def _loop(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self._bind_target(node.target, None)
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)

    visit_For = _loop
    visit_AsyncFor = _loop

    def visit_withitem(self, node: ast.withitem) -> None:
        self.visit(node.context_expr)
        if node.optional_vars is not None:
            self._bind_target(node.optional_vars, None)

    def _comp(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        """A comprehension has its own scope (its variables do not leak); its first iterable is evaluated in the
        enclosing scope, as Python does."""
        saved = self.scope
        for i, gen in enumerate(node.generators):
            self.visit(gen.iter)
            if i == 0:
                self.scope = _Scope("comprehension", saved)
            self._bind_target(gen.target, None)
            for cond in gen.ifs:
                self.visit(cond)
        for name in ("elt", "key", "value"):
            sub = getattr(node, name, None)
            if sub is not None:
                self.visit(sub)
        self.scope = saved

    visit_ListComp = _comp
    visit_SetComp = _comp
    visit_GeneratorExp = _comp
    visit_DictComp = _comp

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.bind(node.name, None)
        for stmt in node.body:
            self.visit(stmt)

    # ------------------------------------------------------------------ calls
    def visit_Call(self, node: ast.Call) -> None:
        self._partial_of(node)
        self._check(self._site(node))
        self.generic_visit(node)

    def _site(self, node: ast.Call) -> CallSite:
        func = node.func
        partial: _Partial | None = None
        qname: str | None
        if isinstance(func, ast.Name):
            found, b = self.scope.lookup(func.id)
            if isinstance(b, _Partial):
                partial, qname = b, b.target
                b.used = True
            else:
                qname = self.resolve(func)
        elif isinstance(func, ast.Call):
            partial = self._partial_of(func)
            qname = partial.target if partial else self.resolve(func)  # getattr(torch, "load")(...)
            if partial is not None:
                partial.used = True
        else:
            qname = self.resolve(func)
        attr = (
            func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        )
        keywords, star = self._keywords(node.keywords)
        args: tuple[ast.expr, ...] = tuple(node.args)
        if partial is not None:
            attr = partial.target.rsplit(".", 1)[-1]
            keywords = {**partial.keywords, **keywords}
            star = star or partial.star_kwargs
            args = partial.args + args
        return CallSite(
            node, qname, attr, args, keywords, star, partial.node if partial else None, self.resolve
        )

    def _check(self, site: CallSite) -> None:
        node = site.node
        target = site.partial if site.partial is not None else node
        for rule in self.rules:
            for hit in rule.check(site):
                line = node.lineno
                col = _char_col(self.lines, line, node.col_offset)
                message = hit.message + (" (through functools.partial)" if site.partial is not None else "")
                finding = LintFinding(
                    self.path,
                    line,
                    col,
                    rule.id,
                    hit.severity or rule.severity,
                    message,
                    rule.fix,
                    hit.confidence,
                )
                end = node.end_lineno or line
                self.raw.append(_Raw(finding, line, end, target if hit.fixable else None))

    # ------------------------------------------------------------------ driver
    def run(self, tree: ast.Module) -> list[_Raw]:
        """Visit the module, then every function body (with the bindings its enclosing scope ends with)."""
        self._statements(tree.body)
        while self.pending:
            fn, parent = self.pending.pop(0)
            outer = parent
            while outer.kind == "class" and outer.parent is not None:
                outer = outer.parent
            self._run_function(fn, outer)
        for p in self.partials.values():
            if not p.used:  # created and handed on: check it where it is made
                self._check(_partial_site(p, self.resolve))
        return self.raw


def _partial_site(p: _Partial, resolve: Callable[[ast.expr], str | None]) -> CallSite:
    return CallSite(
        p.node,
        p.target,
        p.target.rsplit(".", 1)[-1],
        p.args,
        dict(p.keywords),
        p.star_kwargs,
        p.node,
        resolve,
    )


def split_lines(text: str) -> list[str]:
    """Physical lines as the tokenizer counts them (``\\n``, ``\\r\\n`` and ``\\r``), endings kept."""
    return re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$", text)


def _char_col(lines: list[str], line: int, byte_col: int) -> int:
    """ast's UTF-8 byte column as a character column."""
    if not 0 < line <= len(lines):
        return byte_col
    return len(lines[line - 1].encode("utf-8")[:byte_col].decode("utf-8", "replace"))


def suppressions(text: str) -> dict[int, frozenset[str]]:
    """Line -> rule ids (or names) suppressed there (``{"*"}`` for a bare ``# dlsec: ignore``), from comments."""
    out: dict[int, frozenset[str]] = {}

    def add(line: int, comment: str) -> None:
        m = _SUPPRESS.search(comment)
        if not m:
            return
        ids = m.group("ids")
        found = (
            frozenset({_ALL})
            if ids is None
            else frozenset(i.strip().upper() for i in ids.split(",") if i.strip())
        )
        out[line] = out.get(line, frozenset()) | found

    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                add(tok.start[0], tok.string)
    except (tokenize.TokenError, SyntaxError):
        for i, line in enumerate(split_lines(text), 1):
            if "#" in line:
                add(i, line[line.index("#") :])
    return out


def _is_suppressed(raw: _Raw, supp: dict[int, frozenset[str]]) -> bool:
    rule = REGISTRY[raw.finding.rule]
    for line in range(raw.first, raw.last + 1):
        ids = supp.get(line)
        if ids and (_ALL in ids or rule.id in ids or rule.name.upper() in ids):
            return True
    return False


@dataclass(frozen=True)
class SourceResult:
    """Lint result of one source text: kept findings, the count suppressed, and the calls ``--fix`` would edit."""

    findings: tuple[LintFinding, ...]
    suppressed: int
    fix_targets: tuple[ast.Call, ...]
    not_linted: tuple[tuple[int, int], ...] = ()
    """Line spans of statements nested too deeply to lint (the rest of the file was linted)."""


def lint_source(text: str, path: str = "<string>", rules: Sequence[Rule] | None = None) -> SourceResult:
    """Lint Python source text. Raises :class:`SyntaxError` (or ValueError for NUL bytes) if it does not parse."""
    tree = ast.parse(text, filename=path)
    active = list(REGISTRY.values()) if rules is None else list(rules)
    visitor = _Visitor(path, active, split_lines(text))
    raws = visitor.run(tree)
    supp = suppressions(text) if "dlsec" in text.lower() else {}
    kept: list[LintFinding] = []
    targets: dict[tuple[int, int], ast.Call] = {}
    suppressed = 0
    seen: set[tuple[int, int, str, str]] = set()
    for raw in raws:
        f = raw.finding
        key = (f.line, f.col, f.rule, f.message)
        if key in seen:
            continue
        seen.add(key)
        if _is_suppressed(raw, supp):
            suppressed += 1
            continue
        kept.append(f)
        if raw.fix_target is not None:
            targets[(raw.fix_target.lineno, raw.fix_target.col_offset)] = raw.fix_target
    kept.sort(key=lambda f: (f.line, f.col, f.rule))
    return SourceResult(tuple(kept), suppressed, tuple(targets.values()), tuple(visitor.too_deep))


# ---------------------------------------------------------------------------------------------- selection
def select_rules(select: Iterable[str] = (), ignore: Iterable[str] = ()) -> list[Rule]:
    """Rules by ``--select``/``--ignore``: ids (``DLS101``), id prefixes (``DLS1``) or names, comma-separated
    or repeated. Unknown ones are an :class:`InputError`."""

    def expand(specs: Iterable[str]) -> set[str]:
        ids: set[str] = set()
        for spec in specs:
            for part in spec.split(","):
                p = part.strip()
                if not p:
                    continue
                match = {r.id for r in REGISTRY.values() if r.id.startswith(p.upper()) or r.name == p.lower()}
                if not match:
                    raise InputError(f"unknown lint rule {p!r} (see dlsec lint --list-rules)")
                ids |= match
        return ids

    chosen = expand(select) if any(s.strip() for s in select) else set(REGISTRY)
    chosen -= expand(ignore)
    return [REGISTRY[i] for i in sorted(chosen)]


# ---------------------------------------------------------------------------------------------- files
def iter_python_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[tuple[Path, str | None]]:
    """``(path, None)`` per Python file under ``paths`` (files given explicitly are taken whatever their suffix),
    ``(path, message)`` for a path that does not exist. Symlinks inside directories are not followed."""
    count = 0
    for given in paths:
        p = Path(given)
        if p.is_file():
            yield p, None
            count += 1
            continue
        if not p.is_dir():
            yield p, "no such file or directory"
            continue
        for dirpath, dirnames, filenames in os.walk(p, followlinks=False):
            dirnames[:] = sorted(
                d
                for d in dirnames
                if d not in SKIP_DIRS
                and not d.startswith(".venv")
                and not os.path.islink(os.path.join(dirpath, d))
            )
            for name in sorted(filenames):
                full = Path(dirpath, name)
                if name.endswith((".py", ".pyi")) and not full.is_symlink() and full.is_file():
                    count += 1
                    if count > MAX_FILES:
                        raise InputError(
                            f"more than {MAX_FILES} Python files under {given}; lint fewer at once"
                        )
                    yield full, None


def read_source(path: Path) -> tuple[str, str]:
    """``(text, encoding)`` of a Python file (PEP 263 cookie honoured); InputError when over the size limit or
    not decodable."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(f"{size} bytes, over the {MAX_FILE_BYTES}-byte limit")
    with path.open("rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"over the {MAX_FILE_BYTES}-byte limit")
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
    except (SyntaxError, LookupError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot decode: {exc}") from None
    if encoding == "utf-8-sig" and text.startswith("\ufeff"):
        text = text[1:]
    return text, encoding


def lint_paths(
    *paths: str | os.PathLike[str],
    select: Iterable[str] = (),
    ignore: Iterable[str] = (),
    fix: bool = False,
) -> LintReport:
    """Lint files and directories. With ``fix``, mechanical fixes (``weights_only=True``) are written back
    when the fixed file still parses, and the report describes the files after fixing."""
    from dlsec.lint.fix import apply_fixes

    if not paths:
        raise InputError("no paths to lint")
    rules = select_rules(select, ignore)
    findings: list[LintFinding] = []
    errors: list[LintError] = []
    files: list[str] = []
    suppressed = fixed = 0
    for path, problem in iter_python_files(paths):
        name = str(path)
        if problem is not None:
            errors.append(LintError(name, problem))
            continue
        files.append(name)
        try:
            text, encoding = read_source(path)
            result = lint_source(text, name, rules)
        except InputError as exc:
            errors.append(LintError(name, str(exc)))
            continue
        except (SyntaxError, ValueError) as exc:
            line = getattr(exc, "lineno", None)
            msg = getattr(exc, "msg", None) or str(exc)
            errors.append(LintError(name, f"syntax error{f' at line {line}' if line else ''}: {msg}"))
            continue
        except RecursionError:
            errors.append(LintError(name, "expressions nested too deeply to lint"))
            continue
        except (OSError, MemoryError) as exc:
            errors.append(LintError(name, f"cannot lint: {type(exc).__name__}: {exc}"))
            continue
        if result.not_linted:
            spans = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in result.not_linted)
            where = "line" if len(result.not_linted) == 1 and "-" not in spans else "lines"
            errors.append(
                LintError(
                    name, f"expressions nested too deeply to lint at {where} {spans} (the rest was linted)"
                )
            )
        if fix and result.fix_targets:
            new = apply_fixes(text, result.fix_targets)
            try:
                after = lint_source(new, name, rules)
            except (SyntaxError, ValueError) as exc:
                errors.append(LintError(name, f"--fix would break the file ({exc}); left unchanged"))
            else:
                raw = new.encode(encoding)
                real = path.resolve()  # a symlink keeps pointing at its (edited) target
                tmp = real.with_name(f".{real.name}.dlsec-fix")
                tmp.write_bytes(raw)
                os.chmod(tmp, real.stat().st_mode & 0o7777)
                os.replace(tmp, real)
                fixed += len(result.fix_targets)
                result = after
        findings.extend(result.findings)
        suppressed += result.suppressed
    return LintReport(tuple(findings), tuple(errors), suppressed, tuple(files), fixed)
