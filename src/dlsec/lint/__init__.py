"""``dlsec lint``: AST rules for unsafe model and data loading code (torch.load, pickle, yaml, trust_remote_code...).

from dlsec.lint import lint_paths
report = lint_paths("src/", select=["DLS1"])
"""

from __future__ import annotations

from dlsec.lint.engine import MAX_FILE_BYTES, lint_paths, lint_source, select_rules
from dlsec.lint.results import LintError, LintFinding, LintReport
from dlsec.lint.rules import REGISTRY, Rule

__all__ = [
    "MAX_FILE_BYTES",
    "REGISTRY",
    "LintError",
    "LintFinding",
    "LintReport",
    "Rule",
    "lint_paths",
    "lint_source",
    "select_rules",
]
