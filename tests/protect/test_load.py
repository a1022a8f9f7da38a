"""dlsec.load: verify, decrypt in memory, load without pickle, or refuse naming the check."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest
import torch

import dlsec
from dlsec.errors import InputError, KeyMismatchError, ModelError, VerificationError
from dlsec.protect import RefusedFormatError, encrypt_file, sign

from .conftest import fast_passphrase


def test_encrypted_signed_safetensors(tmp_path, st_file, kek, ed25519):
    from safetensors.torch import load_file

    want = load_file(str(st_file))
    enc = tmp_path / "m.enc"
    encrypt_file(st_file, enc, [kek], sign_key=ed25519)
    got = dlsec.load(enc, key=kek, verify_key=ed25519.public_key())
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_each_failed_check_is_named(tmp_path, st_file, kek, other_kek, ed25519):
    from dlsec.protect import generate_signing_key

    enc = tmp_path / "m.enc"
    encrypt_file(st_file, enc, [kek], sign_key=ed25519)
    with pytest.raises(VerificationError, match="unsigned load refused"):
        dlsec.load(enc, key=kek)
    with pytest.raises(VerificationError, match="another key"):
        dlsec.load(enc, key=kek, verify_key=generate_signing_key().public_key())
    with pytest.raises(KeyMismatchError, match="wrong key"):
        dlsec.load(enc, key=other_kek, verify_key=ed25519.public_key())
    with pytest.raises(InputError, match="is encrypted"):
        dlsec.load(enc, verify_key=ed25519.public_key())
    data = bytearray(enc.read_bytes())
    data[-20] ^= 1
    enc.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="does not match its signature"):
        dlsec.load(enc, key=kek, verify_key=ed25519.public_key())
    with pytest.raises(VerificationError, match="failed authentication"):
        dlsec.load(enc, key=kek, allow_unsigned=True)
    with pytest.raises(InputError, match="not found"):
        dlsec.load(tmp_path / "missing", key=kek, allow_unsigned=True)


def test_plaintext_given_a_key_is_a_downgrade(st_file, kek, ed25519):
    sign(st_file, ed25519)
    assert len(dlsec.load(st_file, verify_key=ed25519.public_key())) == 4
    with pytest.raises(VerificationError, match="not encrypted"):
        dlsec.load(st_file, key=kek, verify_key=ed25519.public_key())


def test_passphrase_and_key_paths(tmp_path, st_file, ed25519):
    from dlsec.protect import write_key_file, write_signing_key

    write_key_file(tmp_path / "k.kek")
    pub = write_signing_key(ed25519, tmp_path / "s.pem")
    enc = tmp_path / "m.enc"
    from dlsec.protect import KeyFile

    encrypt_file(st_file, enc, [KeyFile(tmp_path / "k.kek"), fast_passphrase("team passphrase")], sign_key=ed25519)
    assert len(dlsec.load(enc, key=str(tmp_path / "k.kek"), verify_key=str(pub))) == 4
    assert len(dlsec.load(enc, key=fast_passphrase("team passphrase"), verify_key=pub)) == 4


def _export(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).eval()
    p = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(m, (torch.randn(1, 4),)), str(p))
    return p, m


def test_encrypted_pt2_loads_in_memory(tmp_path, kek, ed25519):
    p, m = _export(tmp_path)
    enc = tmp_path / "m.pt2.enc"
    encrypt_file(p, enc, [kek], sign_key=ed25519)
    p.unlink()
    loaded = dlsec.load(enc, key=kek, verify_key=ed25519.public_key())
    x = torch.randn(1, 4)  # exported with a static batch of one
    assert torch.allclose(loaded(x), m(x))
    assert sorted(os.listdir(tmp_path)) == ["m.pt2.enc", "m.pt2.enc.sig"]  # nothing decrypted to disk


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def test_pickle_formats_refused_unless_allowed_and_clean(tmp_path, kek, ed25519):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    enc = tmp_path / "good.enc"
    encrypt_file(good, enc, [kek], sign_key=ed25519)
    with pytest.raises(RefusedFormatError, match="needs pickle"):
        dlsec.load(enc, key=kek, verify_key=ed25519.public_key())
    out = dlsec.load(enc, key=kek, verify_key=ed25519.public_key(), allow_pickle=True)
    assert torch.equal(out["w"], torch.ones(2))
    bad = tmp_path / "bad.pt"
    torch.save({"w": _Payload()}, bad, _use_new_zipfile_serialization=True)
    encrypt_file(bad, tmp_path / "bad.enc", [kek], sign_key=ed25519)
    with pytest.raises(RefusedFormatError, match="did not scan clean"):
        dlsec.load(tmp_path / "bad.enc", key=kek, verify_key=ed25519.public_key(), allow_pickle=True)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(RefusedFormatError, match="did not scan clean"):
        dlsec.load(raw, allow_unsigned=True, allow_pickle=True)


def test_unknown_and_corrupt_formats(tmp_path, kek):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world, no model here")
    with pytest.raises(RefusedFormatError, match="not recognised"):
        dlsec.load(junk, allow_unsigned=True)
    st = bytearray(io.BytesIO().getvalue())
    st += (30).to_bytes(8, "little") + b'{"a": {"dtype": "F32", "shape"' + b"\x00" * 10
    (tmp_path / "bad.safetensors").write_bytes(bytes(st))
    with pytest.raises((ModelError, RefusedFormatError)):
        dlsec.load(tmp_path / "bad.safetensors", allow_unsigned=True)


def test_directory_signature_is_not_a_file_signature(tmp_path, st_file, ed25519):
    sign(tmp_path, ed25519, tmp_path.parent / "dir.sig")
    with pytest.raises(VerificationError, match="covers a folder"):
        dlsec.load(st_file, verify_key=ed25519.public_key(), signature=tmp_path.parent / "dir.sig")


def test_fifo_is_never_opened(tmp_path, kek):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        dlsec.load(fifo, allow_unsigned=True)
    with pytest.raises(InputError, match="not a regular file"):
        encrypt_file(fifo, tmp_path / "out", [kek])
