"""The lint engine: suppression, selection, file walking, limits, syntax errors, multi-line calls."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from dlsec.errors import InputError
from dlsec.lint import engine, lint_paths, lint_source, select_rules


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
