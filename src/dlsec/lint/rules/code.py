"""Dynamic code: ``eval``/``exec``/``compile`` of data that is not a literal in the source."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from dlsec.lint.rules.base import CallSite, Hit, Rule
from dlsec.scan.results import Severity

BUILTINS = frozenset({"builtins.eval", "builtins.exec", "builtins.compile"})
_READERS = frozenset(
    {
        "read",
        "read_text",
        "read_bytes",
        "readline",
        "readlines",
        "load",
        "loads",
        "safe_load",
        "open",
        "urlopen",
        "get",
        "decode",
        "getattr",
        "get_config",
        "from_json",
        "environ",
        "getenv",
        "input",
    }
)
_DATA_WORDS = (
    "config",
    "cfg",
    "conf",
    "yaml",
    "json",
    "model",
    "ckpt",
    "checkpoint",
    "state",
    "meta",
    "spec",
    "manifest",
    "payload",
    "setting",
    "param",
    "hparam",
    "args",
)


def _looks_loaded(expr: ast.expr) -> bool:
    """True when the expression reads something (a file, a config, a model attribute) rather than computing
    source text in code: a heuristic for the issue's "eval/exec of model or config content"."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in _READERS:
                return True
        if isinstance(node, ast.Subscript | ast.Attribute | ast.Name):
            ident = (
                node.attr
                if isinstance(node, ast.Attribute)
                else node.id
                if isinstance(node, ast.Name)
                else ""
            )
            if isinstance(node, ast.Attribute) and ident == "environ":
                return True
            if any(w in ident.lower() for w in _DATA_WORDS):
                return True
    return False


class DynamicCode(Rule):
    """``eval(x)`` / ``exec(x)`` / ``compile(x, ...)`` where ``x`` is not a string literal."""

    id = "DLS901"
    name = "eval-exec-of-data"
    severity = Severity.HIGH
    why = (
        "eval/exec run any code in the string: when it comes from a model, config or file, whoever wrote "
        "that file runs code (high when the argument reads data, medium otherwise, low for compile)"
    )
    fix = "parse data with ast.literal_eval, json or a safe YAML loader; map names to functions with a dict"

    def check(self, site: CallSite) -> Iterator[Hit]:
        if site.qname not in BUILTINS or not site.args:
            return
        src = site.args[0]
        if isinstance(src, ast.Constant):
            return
        fn = site.qname.rsplit(".", 1)[1]
        if fn == "compile":
            yield Hit("compile() of a non-literal source", severity=Severity.LOW, confidence="low")
        elif _looks_loaded(src):
            yield Hit(f"{fn}() of data read at run time (model, config or file content)", confidence="medium")
        else:
            yield Hit(f"{fn}() of a non-literal string", severity=Severity.MEDIUM, confidence="low")
