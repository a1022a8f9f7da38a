"""``--fix``: weights_only=True is added where it is missing, formatting kept, the result parses and is clean."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlsec.lint import lint_paths, lint_source
from dlsec.lint.fix import apply_fixes

CASES = [
    ("import torch\nx = torch.load('m')\n", "import torch\nx = torch.load('m', weights_only=True)\n"),
    ("import torch\nx = torch.load()\n", "import torch\nx = torch.load(weights_only=True)\n"),
    ("import torch\nx = torch.load('m',)\n", "import torch\nx = torch.load('m', weights_only=True,)\n"),
    ("import torch\nx = torch.load(('m'))\n", "import torch\nx = torch.load(('m'), weights_only=True)\n"),
    (
        "import torch\nx = torch.load(\n    'm',\n    map_location='cpu',  # keep me\n)\n",
        "import torch\nx = torch.load(\n    'm',\n    map_location='cpu',  # keep me\n    weights_only=True,\n)\n",
    ),
    (
        "import torch\nx = torch.load(\n    'm'\n)\n",
        "import torch\nx = torch.load(\n    'm', weights_only=True\n)\n",
    ),
    (
        "import torch\nx = torch.load('m',  # why\n               map_location='cpu')\n",
        "import torch\nx = torch.load('m',  # why\n               map_location='cpu', weights_only=True)\n",
    ),
    (
        "import torch\nx = torch.load(torch.load('a'))\n",
        "import torch\nx = torch.load(torch.load('a', weights_only=True), weights_only=True)\n",
    ),
    (
        "import functools, torch\nld = functools.partial(torch.load, map_location='cpu')\nld('a')\nld('b')\n",
        "import functools, torch\nld = functools.partial(torch.load, map_location='cpu', weights_only=True)\n"
        "ld('a')\nld('b')\n",
    ),
    (
        "import torch\ns = 'é'; torch.hub.load_state_dict_from_url(u)\n",
        "import torch\ns = 'é'; torch.hub.load_state_dict_from_url(u, weights_only=True)\n",
    ),
    (
        "import torch\r\nx = torch.load(\r\n    'm',\r\n)\r\n",
        "import torch\r\nx = torch.load(\r\n    'm',\r\n    weights_only=True,\r\n)\r\n",
    ),
]


@pytest.mark.parametrize(("before", "after"), CASES)
def test_fix_text(before: str, after: str) -> None:
    result = lint_source(before)
    fixed = apply_fixes(before, result.fix_targets)
    assert fixed == after
    ast.parse(fixed)
    assert [f for f in lint_source(fixed).findings if f.rule in ("DLS101", "DLS104")] == []


@pytest.mark.parametrize(
    "src",
    [
        "import torch\ntorch.load('m', weights_only=False)\n",  # needs a human
        "import torch\ntorch.load('m', weights_only=flag)\n",
        "import torch\ntorch.load('m', **kwargs)\n",  # might already carry weights_only
        "import torch, dill\ntorch.load('m', pickle_module=dill)\n",  # torch refuses both
        "import torch\ntorch.load('m', weights_only=None)\n",
        "import torch\ntorch.load('m')  # dlsec: ignore[DLS101]\n",
    ],
)
def test_not_fixed(src: str) -> None:
    assert lint_source(src).fix_targets == ()


def test_fix_writes_files_and_reports_what_is_left(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    src = textwrap.dedent(
        """\
        import torch
        a = torch.load(
            "a.pt",
            map_location="cpu",
        )
        b = torch.load("b.pt", weights_only=False)
        """
    )
    path.write_text(src)
    path.chmod(0o640)
    r = lint_paths(path, fix=True)
    assert r.fixed == 1
    assert [f.rule for f in r.findings] == ["DLS102"]  # what a human has to decide
    text = path.read_text()
    assert '    map_location="cpu",\n    weights_only=True,\n)' in text
    assert "weights_only=False" in text
    assert path.stat().st_mode & 0o777 == 0o640
    ast.parse(text)
    again = lint_paths(path, fix=True)
    assert again.fixed == 0 and path.read_text() == text


def test_fix_leaves_a_file_alone_if_the_result_would_not_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dlsec.lint.fix as fix

    path = tmp_path / "m.py"
    path.write_text("import torch\ntorch.load('m')\n")
    monkeypatch.setattr(fix, "KEYWORD", "weights_only=")
    r = lint_paths(path, fix=True)
    assert r.fixed == 0 and r.exit_code() == 1 and "left unchanged" in r.errors[0].message
    assert path.read_text() == "import torch\ntorch.load('m')\n"


_ARGS = ["'m.pt'", "path", "(p)", "f(x, y)", "*args", "[1,\n 2]", "'é'"]
_KWARGS = ["map_location='cpu'", "mmap=True", "map_location=(\n    dev\n)"]


@st.composite
def _calls(draw: st.DrawFn) -> str:
    args = draw(st.lists(st.sampled_from(_ARGS), max_size=2))  # a third positional is pickle_module
    kwargs = draw(st.lists(st.sampled_from(_KWARGS), max_size=2, unique=True))
    parts = args + kwargs
    multiline = draw(st.booleans())
    trailing = draw(st.booleans()) and bool(parts)
    comment = draw(st.booleans())
    if multiline:
        body = "".join(f"\n    {p}," for p in parts)
        if not trailing:
            body = body[:-1]
        body += ("  # note" if comment else "") + "\n"
    else:
        body = ", ".join(parts) + ("," if trailing else "")
    return f"import torch\nx = torch.load({body})\n"


@settings(max_examples=200, deadline=None)
@given(_calls())
def test_fix_keeps_every_argument_and_adds_the_keyword(src: str) -> None:
    result = lint_source(src)
    has_star = "*args" in src
    if not result.fix_targets:
        pytest.fail(f"nothing to fix in {src!r}")
    fixed = apply_fixes(src, result.fix_targets)
    before = ast.parse(src).body[1].value  # type: ignore[attr-defined]
    after = ast.parse(fixed).body[1].value  # type: ignore[attr-defined]
    assert [ast.dump(a) for a in after.args] == [ast.dump(a) for a in before.args]
    assert [ast.dump(k) for k in after.keywords[:-1]] == [ast.dump(k) for k in before.keywords]
    assert ast.dump(after.keywords[-1]) == ast.dump(ast.keyword("weights_only", ast.Constant(True)))
    assert lint_source(fixed).findings == ()
    assert has_star or "*" not in fixed


def test_fix_through_a_symlink_edits_the_target(tmp_path: Path) -> None:
    # regression: --fix replaced the link with a regular file
    real = tmp_path / "real" / "m.py"
    real.parent.mkdir()
    real.write_text("import torch\nm = torch.load('m')\n")
    real.chmod(0o640)
    link = tmp_path / "link.py"
    link.symlink_to(real)
    r = lint_paths(link, fix=True)
    assert r.fixed == 1 and r.findings == ()
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert real.read_text() == "import torch\nm = torch.load('m', weights_only=True)\n"
    assert real.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in real.parent.iterdir()) == ["m.py"]
