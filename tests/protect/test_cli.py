"""dlsec protect: exit 0 ok, 1 verification failed, 2 error, one line each."""

from __future__ import annotations

import pytest

from dlsec.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_cli_end_to_end(tmp_path, st_file, capsys, monkeypatch):
    k, s, enc, dec = (str(tmp_path / n) for n in ("a.kek", "s.pem", "m.enc", "m.dec"))
    assert run(capsys, "protect", "keygen", "--kek", k, "--signing", s)[0] == 0
    code, _, err = run(capsys, "protect", "keygen", "--kek", k)
    assert code == 2 and "already exists" in err and err.count("\n") == 1
    code, out, _ = run(capsys, "protect", "encrypt", str(st_file), "-o", enc, "--key-file", k, "--sign-key", s, "--chunk-kib", "4")
    assert code == 0 and "signed" in out
    code, out, _ = run(capsys, "protect", "decrypt", enc, "-o", dec, "--key-file", k, "--verify-key", s + ".pub")
    assert code == 0 and "signature ok" in out
    assert (tmp_path / "m.dec").read_bytes() == st_file.read_bytes()
    assert run(capsys, "protect", "verify", enc, "--key", s + ".pub")[0] == 0

    code, _, err = run(capsys, "protect", "decrypt", enc, "-o", dec + "2", "--key-file", k)
    assert code == 2 and "--verify-key" in err
    other = str(tmp_path / "b.kek")
    run(capsys, "protect", "keygen", "--kek", other)
    code, _, err = run(capsys, "protect", "decrypt", enc, "-o", dec + "2", "--key-file", other, "--no-verify")
    assert code == 2 and "wrong key" in err and err.count("\n") == 1
    code, _, err = run(capsys, "protect", "decrypt", enc, "-o", dec + "2", "--key-file", str(tmp_path / "nope.kek"), "--no-verify")
    assert code == 2 and "nope.kek not found" in err

    monkeypatch.setenv("PW", "a long passphrase")
    code, out, _ = run(capsys, "protect", "rewrap", enc, "--key-file", k, "--new-passphrase-env", "PW", "--sign-key", s, "--verify-key", s + ".pub")
    assert code == 0 and "untouched" in out
    monkeypatch.setenv("PW2", "not the passphrase")
    code, _, err = run(capsys, "protect", "decrypt", enc, "-o", dec + "3", "--passphrase-env", "PW2", "--verify-key", s + ".pub")
    assert code == 2 and err.strip().endswith("wrong passphrase")
    code, _, _ = run(capsys, "protect", "decrypt", enc, "-o", dec + "3", "--passphrase-env", "PW", "--verify-key", s + ".pub")
    assert code == 0 and (tmp_path / "m.dec3").read_bytes() == st_file.read_bytes()

    data = bytearray((tmp_path / "m.enc").read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / "m.enc").write_bytes(bytes(data))
    code, _, err = run(capsys, "protect", "verify", enc, "--key", s + ".pub")
    assert code == 1 and "does not match its signature" in err
    code, _, err = run(capsys, "protect", "decrypt", enc, "-o", dec + "4", "--passphrase-env", "PW", "--no-verify")
    assert code == 1 and "failed authentication" in err
    assert not (tmp_path / "m.dec4").exists()
    code, _, err = run(capsys, "protect", "verify", str(tmp_path / "missing"), "--key", s + ".pub")
    assert code == 2 and "not found" in err
    code, _, err = run(capsys, "protect", "encrypt", str(st_file), "-o", enc + "x")
    assert code == 2 and "needs a key" in err


def test_cli_sign_verify_folder(tmp_path, st_file, capsys):
    s = str(tmp_path.parent / f"{tmp_path.name}-s.pem")
    run(capsys, "protect", "keygen", "--signing", s, "--type", "ecdsa-p256")
    sig = str(tmp_path.parent / f"{tmp_path.name}.sig")
    assert run(capsys, "protect", "sign", str(tmp_path), "--key", s, "--signature", sig)[0] == 0
    assert run(capsys, "protect", "verify", str(tmp_path), "--key", s + ".pub", "--signature", sig)[0] == 0
    (tmp_path / "new.txt").write_text("x")
    code, _, err = run(capsys, "protect", "verify", str(tmp_path), "--key", s + ".pub", "--signature", sig)
    assert code == 1 and "not signed: new.txt" in err
