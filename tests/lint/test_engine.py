"""The lint engine: suppression, selection, file walking, limits, syntax errors, multi-line calls."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from dlsec.errors import InputError
from dlsec.lint import engine, lint_paths, lint_source, select_rules
from dlsec.scan.results import Severity


def test_suppression_by_id_list_and_bare() -> None:
    src = textwrap.dedent(
        """
        import torch, pickle
        torch.load('a')  # dlsec: ignore[DLS101]
        torch.load('b')  # dlsec: ignore[DLS201]
        pickle.loads(x)  # dlsec: ignore[DLS101, DLS201]
        pickle.loads(y)  # dlsec: ignore
        pickle.loads(z)  # DLSEC: IGNORE[dls201]
        pickle.loads(w)  # dlsec: ignore[pickle-load]
        s = "# dlsec: ignore"; pickle.loads(v)
        """
    )
    r = lint_source(src)
    assert [(f.line, f.rule) for f in r.findings] == [(4, "DLS101"), (9, "DLS201")]
    assert r.suppressed == 5
    assert lint_source("import pickle\npickle.loads(b)  # DLSEC: Ignore[DLS201]\n").suppressed == 1


def test_suppression_on_any_line_of_a_multiline_call() -> None:
    first = "import torch\ntorch.load(  # dlsec: ignore[DLS101]\n    'a',\n)\n"
    last = "import torch\ntorch.load(\n    'a',\n)  # dlsec: ignore[DLS101]\n"
    other = "import torch\ntorch.load(\n    'a',\n)\nx = 1  # dlsec: ignore[DLS101]\n"
    assert lint_source(first).findings == () and lint_source(first).suppressed == 1
    assert lint_source(last).findings == ()
    assert len(lint_source(other).findings) == 1


def test_positions_are_of_the_call() -> None:
    f = lint_source("import torch\n\nx = [1, torch.load('m')]\n").findings[0]
    assert (f.line, f.col) == (3, 8)
    f = lint_source("import torch\ns = 'é'; torch.load('m')\n").findings[0]
    assert f.col == 9  # characters, not UTF-8 bytes


def test_select_and_ignore() -> None:
    assert {r.id for r in select_rules(["DLS1"])} == {"DLS101", "DLS102", "DLS103", "DLS104", "DLS105"}
    assert {r.id for r in select_rules(["DLS101,DLS201"])} == {"DLS101", "DLS201"}
    assert "DLS901" not in {r.id for r in select_rules(ignore=["eval-exec-of-data"])}
    with pytest.raises(InputError, match="unknown lint rule"):
        select_rules(["DLS999"])
    src = "import torch, pickle\ntorch.load('a')\npickle.loads(b)\n"
    assert [f.rule for f in lint_source(src, rules=select_rules(["DLS201"])).findings] == ["DLS201"]


def test_syntax_error_is_an_error_not_clean(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n    pass\n")
    r = lint_paths(bad)
    assert r.findings == () and len(r.errors) == 1 and "syntax error" in r.errors[0].message
    assert r.exit_code() == 2
    nul = tmp_path / "nul.py"
    nul.write_bytes(b"x = 1\x00\n")
    assert lint_paths(nul).exit_code() == 2


def test_findings_win_over_errors_for_the_exit_code(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("def f(:\n")
    (tmp_path / "unsafe.py").write_text("import pickle\npickle.loads(b)\n")
    r = lint_paths(tmp_path)
    assert len(r.errors) == 1 and len(r.findings) == 1 and r.exit_code() == 1


def test_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "MAX_FILE_BYTES", 100)
    big = tmp_path / "big.py"
    big.write_text("x = 1\n" * 40)
    r = lint_paths(big)
    assert r.exit_code() == 2 and "limit" in r.errors[0].message


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    r = lint_paths(tmp_path / "nope.py")
    assert r.exit_code() == 2 and "no such file" in r.errors[0].message


def test_directory_walk_skips_venv_git_pycache_and_symlinks(tmp_path: Path) -> None:
    unsafe = "import pickle\npickle.loads(b)\n"
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(unsafe)
    (tmp_path / "pkg" / "notes.txt").write_text(unsafe)
    for skip in (".venv", ".venv-bench", ".git", "__pycache__"):
        (tmp_path / skip).mkdir()
        (tmp_path / skip / "x.py").write_text(unsafe)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "o.py").write_text(unsafe)
    os.symlink(outside, tmp_path / "linkdir")
    os.symlink(tmp_path / "pkg" / "a.py", tmp_path / "link.py")
    r = lint_paths(tmp_path)
    assert [Path(f).relative_to(tmp_path).as_posix() for f in r.files] == ["pkg/a.py"]
    assert len(r.findings) == 1


def test_explicit_file_with_any_suffix_and_encoding_cookie(tmp_path: Path) -> None:
    script = tmp_path / "tool"
    script.write_bytes(b"# -*- coding: latin-1 -*-\nimport pickle\ns = '\xe9'\npickle.loads(b)\n")
    r = lint_paths(script)
    assert [f.rule for f in r.findings] == ["DLS201"] and r.findings[0].line == 4


def test_no_paths_is_an_input_error() -> None:
    with pytest.raises(InputError):
        lint_paths()


def test_aliases_through_attribute_chains_and_reimports() -> None:
    src = textwrap.dedent(
        """
        import tensorflow as tf
        import torch.hub
        import torch.serialization as ser
        try:
            import cPickle as pickle
        except ImportError:
            import pickle
        tf.keras.models.load_model('m.keras', safe_mode=False)
        torch.hub.load('o/r', 'm')
        ser.load('m')
        pickle.loads(b)
        """
    )
    found = {(f.line, f.rule) for f in lint_source(src).findings}
    assert found == {(9, "DLS601"), (10, "DLS105"), (11, "DLS101"), (12, "DLS201")}


def test_nested_functions_lambdas_and_comprehensions() -> None:
    src = textwrap.dedent(
        """
        import torch
        def outer():
            ld = torch.load
            def inner(p):
                return ld(p)
            return inner
        f = lambda p: torch.load(p)
        xs = [torch.load(p) for p in paths]
        g = lambda torch: torch.load(p)
        """
    )
    assert sorted(f.line for f in lint_source(src).findings) == [6, 8, 9]


def test_partial_message_and_reuse() -> None:
    src = "import functools, torch\nld = functools.partial(torch.load)\nld('a')\nld('b')\n"
    found = lint_source(src).findings
    assert [f.line for f in found] == [3, 4] and all("functools.partial" in f.message for f in found)
    nested = "import functools, torch\np = functools.partial(functools.partial(torch.load), map_location='cpu')\np('a')\n"
    assert [f.line for f in lint_source(nested).findings] == [3]


def test_deeply_nested_code_is_an_error_not_clean(tmp_path: Path) -> None:
    deep = tmp_path / "deep.py"
    deep.write_text("x = " + "1 + " * 5000 + "1\n")
    r = lint_paths(deep)
    assert r.findings == () and r.exit_code() == 2 and len(r.errors) == 1


def test_optional_import_pattern_keeps_the_module() -> None:
    # regression: `except ImportError: torch = None` replaced the import binding and disabled every rule
    src = textwrap.dedent(
        """
        try:
            import torch
        except ImportError:  # optional dependency
            torch = None
        try:
            import yaml
        except ImportError:
            yaml: object = None
        try:
            from pickle import loads
        except ImportError:
            from _compat_shim import loads
        def load_ckpt(path):
            return torch.load(path, weights_only=False)
        def load_cfg(f):
            return yaml.load(f, Loader=yaml.Loader)
        loads(b)
        """
    )
    found = {(f.line, f.rule) for f in lint_source(src).findings}
    assert found == {(15, "DLS102"), (17, "DLS401"), (18, "DLS201")}
    # a non-constant value still shadows (the documented "last binding wins" for anything else)
    assert lint_source("import torch\ntorch = make_stub()\ntorch.load('m')\n").findings == ()


def test_kwargs_bound_to_dicts_are_resolved() -> None:
    # regression: unsafe keywords passed through **kwargs were invisible (or only a low DLS101)
    src = textwrap.dedent(
        """
        import numpy as np, torch
        from transformers import AutoModel
        kw = {"weights_only": False}
        m1 = torch.load("a.pt", **kw)
        m2 = torch.load("a.pt", **dict(weights_only=False))
        opts = dict(allow_pickle=True)
        a = np.load("x.npy", **opts)
        def f():
            hf = {"trust_remote_code": True}
            return AutoModel.from_pretrained("x", **hf)
        """
    )
    found = {(f.line, f.rule, f.severity, f.confidence) for f in lint_source(src).findings}
    assert found == {
        (5, "DLS102", Severity.HIGH, "high"),
        (6, "DLS102", Severity.HIGH, "high"),
        (8, "DLS301", Severity.HIGH, "high"),
        (11, "DLS501", Severity.HIGH, "high"),
    }
    # unresolvable **kwargs / *args: the low-confidence finding in the numpy and HF rules too
    src = textwrap.dedent(
        """
        import numpy as np
        from transformers import AutoModel
        def g(*args, **kwargs):
            np.load("x.npy", **kwargs)
            np.load(*args)
            AutoModel.from_pretrained("x", **kwargs)
            np.load("x.npy", None, False, *args)
        """
    )
    low = [(f.line, f.rule, f.confidence) for f in lint_source(src).findings]
    assert low == [(5, "DLS301", "low"), (6, "DLS301", "low"), (7, "DLS501", "low")]


def test_dynamic_access_with_literal_strings() -> None:
    # regression: these forms reached pickle.loads / torch.load unseen
    src = textwrap.dedent(
        """
        import importlib, sys, torch, pickle
        importlib.import_module("pickle").loads(b)
        __import__("pickle").loads(b)
        getattr(torch, "load")("a.pt")
        sys.modules["pickle"].loads(b)
        p = importlib.import_module("pickle")
        p.loads(b)
        pickle._loads(b)
        pickle._load(f)
        pickle._Unpickler(f).load()
        getattr(torch, name)("a.pt")
        importlib.import_module(".pickle", "pkg").loads(b)
        """
    )
    found = [(f.line, f.rule) for f in lint_source(src).findings]
    assert found == [(3, "DLS201"), (4, "DLS201"), (5, "DLS101"), (6, "DLS201"), (8, "DLS201"),
                     (9, "DLS201"), (10, "DLS201"), (11, "DLS201")]  # fmt: skip


def test_comprehension_variables_do_not_leak() -> None:
    # regression: `[pickle for pickle in ...]` shadowed the module for the rest of the scope
    src = "import pickle\nxs = [pickle for pickle in range(3)]\nys = {k: v for k, v in {}.items()}\npickle.loads(b)\n"
    assert [(f.line, f.rule) for f in lint_source(src).findings] == [(4, "DLS201")]
    # the first iterable is evaluated in the enclosing scope; a walrus binds in the enclosing scope
    src2 = "import torch, pickle\nxs = [(ld := torch.load) for pickle in pickle.loads(b)]\nld('m')\n"
    assert [(f.line, f.rule) for f in lint_source(src2).findings] == [(2, "DLS201"), (3, "DLS101")]


def test_deeply_nested_statement_does_not_hide_the_rest_of_the_file(tmp_path: Path) -> None:
    # regression: one deep expression made the whole file an error and nothing in it was linted
    deep = tmp_path / "deep.py"
    deep.write_text("import torch\nx = " + "1 + " * 1500 + "1\ny = torch.load('m', weights_only=False)\n")
    r = lint_paths(deep)
    assert [(f.line, f.rule) for f in r.findings] == [(3, "DLS102")]
    assert len(r.errors) == 1 and "line 2 " in r.errors[0].message and r.exit_code() == 1
