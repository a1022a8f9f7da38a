"""``dlsec he`` end to end: convert, compile, keygen, infer against a loopback server, run; bad input exits 2."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from dlsec.cli import main

pytest.importorskip("tenseal")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture(scope="module")
def he_model_file(tmp_path_factory: pytest.TempPathFactory, w1_he) -> Path:  # type: ignore[no-untyped-def]
    from dlsec.he import save_he_model

    path = tmp_path_factory.mktemp("he") / "w1.safetensors"
    save_he_model(w1_he, path)
    return path


def test_compile_keygen_serve_infer(capsys: pytest.CaptureFixture[str], he_model_file: Path, tmp_path: Path) -> None:
    plan_path, report = tmp_path / "plan.safetensors", tmp_path / "report.json"
    code, out, err = run(
        capsys, "he", "compile", "--model", str(he_model_file), "--mode", "single", "--check-samples", "2",
        "--limit", "128", "--out", str(plan_path), "--json", str(report), "--release-noise", "1e-5",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(report.read_text())
    assert doc["check"]["passed"] and doc["report"]["levels_used"] == 3 and doc["report"]["evaluation_key_bytes"] < 16 << 20
    secret, evaluation = tmp_path / "c.secret", tmp_path / "s.eval"
    code, out, err = run(capsys, "he", "keygen", "--plan", str(plan_path), "--secret", str(secret), "--evaluation", str(evaluation))
    assert code == 0, err
    assert secret.stat().st_mode & 0o077 == 0  # the secret context is readable by its owner only

    from dlsec.he import Plan
    from dlsec.he.server import make_server

    assert Plan.load(plan_path).client.release_noise == 1e-5  # noise flooding reaches the client's decrypt

    srv = make_server(Plan.load(plan_path), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        host, port = srv.server_address[:2]
        code, out, err = run(
            capsys, "he", "infer", "--server", f"http://{host}:{port}", "--data", "digits", "--limit", "4",
            "--secret", str(secret), "--evaluation", str(evaluation), "--json",
        )  # fmt: skip
        assert code == 0, err
        res = json.loads(out)
        assert len(res["predictions"]) == 4 and res["accuracy"] >= 0.75
        # the server refuses the secret context as an evaluation context: one line, exit 2
        code, out, err = run(
            capsys, "he", "infer", "--server", f"http://{host}:{port}", "--limit", "1",
            "--secret", str(secret), "--evaluation", str(secret),
        )  # fmt: skip
        assert code == 2 and err.count("\n") == 1 and "dlsec: error" in err
    finally:
        srv.shutdown()
        srv.server_close()


def test_run_over_http(capsys: pytest.CaptureFixture[str], he_model_file: Path) -> None:
    code, out, err = run(capsys, "he", "run", "--model", str(he_model_file), "--limit", "3", "--http", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["agreement_with_plaintext"] == 1.0 and res["max_logit_error"] <= 1e-3 and len(res["predictions"]) == 3


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["he", "convert", "--model", "demo", "--out", "x.safetensors"], "MaxPool2d"),
        (["he", "compile", "--model", "missing.safetensors", "--out", "p"], "missing"),
        (["he", "keygen"], "exactly one of --plan and --server"),
        (["he", "infer", "--server", "ftp://x", "--limit", "1"], "http(s) URL"),
        (["he", "serve", "--plan", "nowhere.safetensors"], "plan file not found"),
    ],
)
def test_bad_input_one_line_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *args)
    assert code == 2 and needle in err and err.count("\n") == 1, err
