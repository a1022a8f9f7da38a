"""``dlsec lint`` from the command line: exit codes, text/JSON/SARIF, --list-rules, --select, --fix; and the
project's own code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dlsec
from dlsec.cli import COMMANDS, main
from dlsec.lint import REGISTRY, lint_paths

UNSAFE = "import torch\nimport yaml\nm = torch.load('m.pt')\ncfg = yaml.load(open('c.yaml'))\n"


def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    monkeypatch.setitem(COMMANDS, "lint", "dlsec.cli.lint:lint")
    with pytest.raises(SystemExit) as exc:
        main(["lint", *args])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    clean = tmp_path / "clean.py"
    clean.write_text("import torch\nm = torch.load('m.pt', weights_only=True)\n")
    unsafe = tmp_path / "unsafe.py"
    unsafe.write_text(UNSAFE)
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n")
    return clean, unsafe, broken


def test_exit_codes(capsys, monkeypatch, files) -> None:
    clean, unsafe, broken = files
    code, out, _ = run(capsys, monkeypatch, str(clean))
    assert code == 0 and "1 files, 0 findings" in out
    code, out, _ = run(capsys, monkeypatch, str(unsafe))
    assert code == 1
    assert f"{unsafe}:3:5: DLS101 [medium]" in out and f"{unsafe}:4:7: DLS401 [high]" in out
    code, out, _ = run(capsys, monkeypatch, str(broken))
    assert code == 2 and "syntax error" in out
    code, _, err = run(capsys, monkeypatch)
    assert code == 2 and err.startswith("dlsec: error:")
    code, _, err = run(capsys, monkeypatch, "--select", "NOPE", str(clean))
    assert code == 2 and "unknown lint rule" in err


def test_select_ignore(capsys, monkeypatch, files) -> None:
    _, unsafe, _ = files
    assert run(capsys, monkeypatch, "--select", "DLS4", str(unsafe))[0] == 1
    code, out, _ = run(capsys, monkeypatch, "--ignore", "DLS101", "--ignore", "DLS401", str(unsafe))
    assert code == 0 and "0 findings" in out


def test_json(capsys, monkeypatch, files) -> None:
    _, unsafe, broken = files
    code, out, _ = run(capsys, monkeypatch, "--format", "json", str(unsafe), str(broken))
    doc = json.loads(out)
    assert code == 1
    assert [(f["rule"], f["line"], f["severity"]) for f in doc["findings"]] == [
        ("DLS101", 3, "medium"),
        ("DLS401", 4, "high"),
    ]
    assert doc["errors"][0]["path"] == str(broken) and doc["suppressed"] == 0
    assert set(doc["files"]) == {str(unsafe), str(broken)}


def test_sarif(capsys, monkeypatch, files) -> None:
    _, unsafe, broken = files
    code, out, _ = run(capsys, monkeypatch, "--format", "sarif", str(unsafe), str(broken))
    log = json.loads(out)
    assert code == 1 and log["version"] == "2.1.0"
    run0 = log["runs"][0]
    rules = run0["tool"]["driver"]["rules"]
    assert {r["id"] for r in rules} >= set(REGISTRY)
    res = [r for r in run0["results"] if r["ruleId"] != "lint-error"]
    assert [r["ruleId"] for r in res] == ["DLS101", "DLS401"]
    loc = res[1]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == str(unsafe) and loc["region"] == {
        "startLine": 4,
        "startColumn": 7,
    }
    assert res[1]["level"] == "error" and res[0]["level"] == "warning"
    assert rules[res[0]["ruleIndex"]]["id"] == "DLS101"
    assert any(r["ruleId"] == "lint-error" for r in run0["results"])


def test_list_rules(capsys, monkeypatch) -> None:
    code, out, _ = run(capsys, monkeypatch, "--list-rules")
    assert code == 0
    for rule in REGISTRY.values():
        assert rule.id in out and rule.why in out
    code, out, _ = run(capsys, monkeypatch, "--list-rules", "--select", "DLS2")
    assert "DLS201" in out and "DLS101" not in out


def test_fix_from_the_cli(capsys, monkeypatch, files) -> None:
    _, unsafe, _ = files
    code, out, _ = run(capsys, monkeypatch, "--fix", str(unsafe))
    assert code == 1 and "1 calls fixed" in out and "DLS101" not in out and "DLS401" in out
    assert "torch.load('m.pt', weights_only=True)" in unsafe.read_text()


def test_pre_commit_hook_definition() -> None:
    text = (Path(__file__).resolve().parents[2] / ".pre-commit-hooks.yaml").read_text()
    assert "- id: dlsec-lint" in text and "entry: dlsec lint" in text
    assert "language: python" in text and "types: [python]" in text


# Files whose job is to load untrusted files, inside an isolated child process: their unsafe loads are
# deliberate and carry `# dlsec: ignore[...]` comments with a reason.
ISOLATED = {"sandbox/child.py"}


def test_dlsec_own_source() -> None:
    """dlsec's own code never calls torch.load without weights_only=True, pickle, yaml.load, ... outside the
    sandbox child, and every file parses."""
    src = Path(dlsec.__file__).resolve().parent
    report = lint_paths(src)
    assert report.errors == ()
    assert len(report.files) > 50
    assert report.findings == ()
    assert report.suppressed == 8  # the sandbox child's eight loaders are still seen
    for rel in ISOLATED:  # and they are suppressed only there
        alone = lint_paths(src / rel)
        assert alone.findings == () and alone.suppressed == 8


def test_nothing_to_lint_is_exit_3(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("torch.load(f)")
    report = lint_paths(tmp_path)
    assert report.files == () and report.exit_code() == 3
