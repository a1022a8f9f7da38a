"""``dlsec sandbox`` through ``dlsec.cli.main``: exit codes, the three formats, loader listing, bad input."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import pytest

from dlsec.cli import COMMANDS, main
from dlsec.reports.sandbox import sarif, text
from dlsec.sandbox import Isolation, SandboxEvent, SandboxReport

from .conftest import ISOLATION, Reduce, write_pickle


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str, auto_isolation: bool = True
) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``dlsec sandbox ARGS``."""
    monkeypatch.setitem(COMMANDS, "sandbox", "dlsec.cli.sandbox:sandbox")
    if auto_isolation and not ISOLATION and "--no-isolation" not in args:
        args = (*args, "--no-isolation")  # no namespaces on this machine: the monitor alone
    with pytest.raises(SystemExit) as exc:
        main(["sandbox", *args])
    out = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 0), out.out, out.err


def test_exit_codes_and_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_pickle(tmp_path / "bad.pkl", Reduce(os.system, ("true",)))
    code, out, _ = run(monkeypatch, capsys, str(bad))
    assert code == 1
    assert out.startswith("DANGEROUS") and f"stopped at: [global] pickle.find_class {os.system.__module__}.system" in out
    assert "isolation in force:" in out

    good = write_pickle(tmp_path / "good.pkl", {"weights": [1.0, 2.0]})
    code, out, _ = run(monkeypatch, capsys, str(good), "--loader", "pickle")
    assert code == 0 and out.startswith("CLEAN") and "loaded: a dict" in out
    assert "nothing dangerous was observed by the in-process monitor" in out and "no proof" in out

    cut = tmp_path / "cut.pkl"
    cut.write_bytes(pickle.dumps(list(range(50)))[:-10])
    code, out, _ = run(monkeypatch, capsys, str(cut))
    assert code == 2 and out.startswith("ERROR") and "load failed" in out


def test_payload_ending_the_process_is_not_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    f = write_pickle(tmp_path / "exit.pkl", Reduce(os._exit, (0,)))
    code, out, _ = run(monkeypatch, capsys, str(f), "--format", "json")
    doc = json.loads(out)
    assert code == 1 and doc["verdict"] == "dangerous" and doc["blocked"]["detail"].endswith("._exit")
    f = write_pickle(tmp_path / "exit.pkl", Reduce(sys.exit, (0,)))  # a benign-looking global that ends the load
    code, out, _ = run(monkeypatch, capsys, str(f), "--format", "json")
    doc = json.loads(out)
    assert code in (1, 2) and doc["verdict"] != "clean"


def test_json_and_sarif(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_pickle(tmp_path / "bad.pkl", Reduce(os.system, ("true",)))
    code, out, _ = run(monkeypatch, capsys, str(bad), "--format", "json", "--no-isolation")
    doc = json.loads(out)
    assert code == 1 and doc["verdict"] == "dangerous" and doc["loader"] == "pickle"
    assert doc["blocked"]["name"] == "pickle.find_class" and doc["blocked"] in doc["events"]
    ns = next(i for i in doc["isolation"] if i["name"] == "namespaces")
    assert ns["in_force"] is False and "--no-isolation" in ns["detail"]

    code, out, _ = run(monkeypatch, capsys, str(bad), "--format", "sarif")
    log = json.loads(out)
    assert code == 1 and log["version"] == "2.1.0"
    (result,) = log["runs"][0]["results"]
    assert result["ruleId"] == "sandbox-dangerous-global" and result["properties"]["stopped_here"] is True
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == str(bad)
    assert {r["id"] for r in log["runs"][0]["tool"]["driver"]["rules"]} == {"sandbox-dangerous-global"}


def test_list_loaders_and_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(monkeypatch, capsys, "--list-loaders")
    names = [ln.split()[0] for ln in out.splitlines()]
    assert code == 0 and {"torch", "pickle", "numpy", "joblib"} <= set(names)
    code, out, err = run(monkeypatch, capsys, str(tmp_path / "missing.pt"))
    assert code == 2 and out == "" and err.count("\n") == 1 and "no such file" in err
    code, _, err = run(monkeypatch, capsys)
    assert code == 2 and "missing FILE" in err
    f = write_pickle(tmp_path / "x.pkl", 1)
    code, _, err = run(monkeypatch, capsys, str(f), "--loader", "nope")
    assert code == 2 and "unknown loader" in err


def test_renderers_on_a_built_report() -> None:
    ev = SandboxEvent("network", "socket.connect", "('10.0.0.1', 80)", True)
    quiet = SandboxEvent("import", "import", "json", False)
    rep = SandboxReport(
        path="m.pkl", loader="pickle", verdict="dangerous", events=(quiet, ev), blocked=ev,
        isolation=(Isolation("namespaces", False, "unshare failed"), Isolation("RLIMIT_AS", True, "1 MiB")),
        exit_status=86, error="", seconds=0.5,
    )  # fmt: skip
    out = text(rep)
    assert "stopped at: [network] socket.connect" in out and "json" not in out and "1 other events" in out
    assert "isolation NOT in force: namespaces (unshare failed)" in out
    assert "import" in text(rep, verbose=True).split("stopped at")[1]
    log = json.loads(sarif(rep))
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["sandbox-network"]
    assert log["runs"][0]["properties"]["isolation"][0] == {"name": "namespaces", "in_force": False,
                                                            "detail": "unshare failed"}  # fmt: skip
    err = SandboxReport("m.pkl", "pickle", "error", (), None, (), -9, "timed out", 1.0)
    assert [r["ruleId"] for r in json.loads(sarif(err))["runs"][0]["results"]] == ["sandbox-error"]
    assert err.exit_code() == 2 and rep.exit_code() == 1


def test_no_namespaces_is_refused_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """S3: without namespaces the run is refused (exit 2, one line) unless --no-isolation says otherwise."""
    from dlsec.sandbox import runner

    monkeypatch.setattr(runner, "namespaces_available", lambda: "unshare failed: test")
    good = write_pickle(tmp_path / "good.pkl", {"weights": [1.0]})
    code, out, err = run(monkeypatch, capsys, str(good), auto_isolation=False)
    assert code == 2 and out == "" and err.count("\n") == 1 and "--no-isolation" in err and "unshare failed" in err
    code, out, _ = run(monkeypatch, capsys, str(good), "--no-isolation")
    assert code == 0 and out.startswith("CLEAN") and "isolation NOT in force: namespaces" in out
