"""One regression test per defect found in review (each built in code, each failing before its fix)."""

from __future__ import annotations

import io
import json
import os
import struct

import pytest

from dlsec.errors import DlsecError, InputError, VerificationError
from dlsec.protect import RawKey, decrypt_bytes, decrypt_file, encrypt_file, rewrap_file, sign, verify
from dlsec.protect.container import MAGIC, MAX_WRAPS
from dlsec.protect.keys import Passphrase
from dlsec.protect.signing import signed_file_digest

from .conftest import edit_header, fast_passphrase, make_safetensors


def test_symlinked_folder_is_refused_when_signing_and_fails_verification(tmp_path, ed25519):
    m, elsewhere = tmp_path / "model", tmp_path / "elsewhere"
    m.mkdir()
    elsewhere.mkdir()
    (m / "a.bin").write_bytes(b"a")
    (elsewhere / "evil.bin").write_bytes(b"evil")
    sig = sign(m, ed25519, tmp_path / "m.sig")
    os.symlink(elsewhere, m / "shards")
    with pytest.raises(VerificationError, match="symbolic link"):
        verify(m, ed25519.public_key(), sig)
    with pytest.raises(InputError, match="symbolic link"):
        sign(m, ed25519, tmp_path / "m2.sig")


def test_decrypt_checks_the_bytes_it_decrypts_against_the_signature(tmp_path, st_file, kek, ed25519):
    """A file swapped in after the signature check is refused: one read, hashed as it is decrypted."""
    good, evil = tmp_path / "good.enc", tmp_path / "evil.enc"
    encrypt_file(st_file, good, [kek], sign_key=ed25519)
    other = tmp_path / "other.safetensors"
    make_safetensors(other, seed=9)
    encrypt_file(other, evil, [kek])  # same team key, never signed
    digest = signed_file_digest(good, ed25519.public_key())
    os.replace(evil, good)  # the swap, after the check
    with pytest.raises(VerificationError, match="does not match its signature"):
        decrypt_file(good, tmp_path / "out", [kek], expect_sha256=digest)
    assert not (tmp_path / "out").exists()


def test_signature_pointing_at_a_device_or_fifo_is_refused(tmp_path, st_file, ed25519):
    import dlsec

    os.symlink("/dev/zero", tmp_path / "model.safetensors.sig")
    with pytest.raises(VerificationError, match="not a regular file"):
        dlsec.load(st_file, verify_key=ed25519.public_key())
    os.unlink(tmp_path / "model.safetensors.sig")
    os.mkfifo(tmp_path / "model.safetensors.sig")
    with pytest.raises(VerificationError, match="not a regular file"):
        verify(st_file, ed25519.public_key())


def test_rewrap_past_the_wrap_limit_leaves_the_file_intact(tmp_path, kek):
    src = tmp_path / "p"
    src.write_bytes(b"x" * 5000)
    keys = [RawKey(os.urandom(32)) for _ in range(MAX_WRAPS)]
    encrypt_file(src, tmp_path / "f.enc", keys)
    before = (tmp_path / "f.enc").read_bytes()
    with pytest.raises(InputError, match="key wraps"):
        rewrap_file(tmp_path / "f.enc", [keys[0]], [kek], keep=True)
    assert (tmp_path / "f.enc").read_bytes() == before
    assert decrypt_bytes(before, [keys[-1]]) == b"x" * 5000


def test_passphrase_derivations_per_file_are_bounded(monkeypatch):
    phrases = [fast_passphrase(f"passphrase number {i}") for i in range(8)]
    blob = io.BytesIO()
    from dlsec.protect.container import encrypt_stream

    encrypt_stream(io.BytesIO(b"data"), blob, 4, phrases)
    calls = []
    orig = Passphrase._derive
    monkeypatch.setattr(Passphrase, "_derive", lambda self, salt, cost: calls.append(1) or orig(self, salt, cost))
    with pytest.raises(DlsecError, match="wrong passphrase"):
        decrypt_bytes(blob.getvalue(), [fast_passphrase("not one of them")])
    assert len(calls) == 4


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.__setitem__("meta_mac", "\u00e9" * 64),  # non-ASCII: compare_digest raised TypeError
        lambda d: d["wraps"][0]["kdf"].__setitem__("salt", ""),  # short salt: Argon2 raised ValueError
        lambda d: d.__setitem__("meta_mac", d["meta_mac"].upper()),
    ],
)
def test_crafted_header_fields_are_verification_failures(edit):
    blob = io.BytesIO()
    from dlsec.protect.container import encrypt_stream

    encrypt_stream(io.BytesIO(b"data" * 100), blob, 400, [fast_passphrase("a passphrase")])
    with pytest.raises(VerificationError):
        decrypt_bytes(edit_header(blob.getvalue(), edit), [fast_passphrase("a passphrase")])


def test_deeply_nested_json_is_a_failed_check_not_a_crash(tmp_path, st_file, kek, ed25519):
    body = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(VerificationError):
        decrypt_bytes(MAGIC + struct.pack(">I", len(body)) + body, [kek])
    (tmp_path / "model.safetensors.sig").write_bytes(body)
    with pytest.raises(VerificationError):
        verify(st_file, ed25519.public_key())


@pytest.mark.parametrize("material", ["x", ["a"], {"publicKey": {"hint": 5}}])
def test_malformed_verification_material(tmp_path, st_file, ed25519, material):
    sig = sign(st_file, ed25519)
    bundle = json.loads(sig.read_text())
    bundle["verificationMaterial"] = material
    sig.write_text(json.dumps(bundle))
    with pytest.raises(VerificationError, match="malformed"):
        verify(st_file, ed25519.public_key())
    bundle["verificationMaterial"] = {"publicKey": None}  # no hint (model-signing's older bundles): the key decides
    sig.write_text(json.dumps(bundle))
    assert verify(st_file, ed25519.public_key()).files == 1


def test_tampered_safetensors_with_huge_offsets_is_named_not_crashed(tmp_path, ed25519):
    p = tmp_path / "m.safetensors"
    make_safetensors(p)
    sign(p, ed25519)
    raw = p.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = raw[8 : 8 + n].replace(b'"data_offsets":[0,', b'"data_offsets":[0e0,', 1)
    p.write_bytes(struct.pack("<Q", len(header)) + header + raw[8 + n :])
    with pytest.raises(VerificationError, match="does not match"):
        verify(p, ed25519.public_key())


def test_sign_and_verify_dot(tmp_path, ed25519, monkeypatch):
    d = tmp_path / "m"
    d.mkdir()
    (d / "w.bin").write_bytes(b"w")
    monkeypatch.chdir(d)
    sig = sign(".", ed25519)
    assert sig == tmp_path / "m.sig"
    assert verify(".", ed25519.public_key()).files == 1


def test_key_ids_from_a_file_are_quoted_in_messages(kek):
    blob = io.BytesIO()
    from dlsec.protect.container import encrypt_stream

    encrypt_stream(io.BytesIO(b"d"), blob, 1, [kek])
    evil = edit_header(blob.getvalue(), lambda d: d["wraps"][0].__setitem__("key_id", "\x1b[31mred"))
    with pytest.raises(DlsecError) as info:
        decrypt_bytes(evil, [RawKey(os.urandom(32))])
    assert "\x1b" not in str(info.value)


def test_bundle_signature_base64_is_strict(tmp_path, st_file, ed25519):
    sig = sign(st_file, ed25519)
    bundle = json.loads(sig.read_text())
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = "***"
    sig.write_text(json.dumps(bundle))
    with pytest.raises(VerificationError):
        verify(st_file, ed25519.public_key())
