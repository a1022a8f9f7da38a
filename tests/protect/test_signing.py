"""Signatures: round trips, every tamper named, and interoperability with OpenSSF model-signing."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import pytest

from dlsec.errors import InputError, VerificationError
from dlsec.protect import build_manifest, load_public_key, sign, verify, write_signing_key
from dlsec.protect.signing import pae

from .conftest import make_safetensors


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    make_safetensors(d / "model.safetensors")
    (d / "config.json").write_text('{"layers": 3}')
    (d / "sub" / "tokenizer.txt").write_text("a b c")
    (d / ".git").mkdir()
    (d / ".git" / "HEAD").write_text("ref")
    return d


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa"])
def test_sign_verify_file_and_folder(model_dir, kind, ed25519, ecdsa, tmp_path):
    key = ed25519 if kind == "ed25519" else ecdsa
    sig = sign(model_dir, key, tmp_path / "m.sig")
    v = verify(model_dir, key.public_key(), sig)
    assert v.files == 3  # .git ignored
    assert {n for n, _ in v.manifest.resources} == {"config.json", "model.safetensors", "sub/tokenizer.txt"}
    assert set(v.manifest.tensors["model.safetensors"]) == {"layer0.weight", "layer1.weight", "layer2.weight", "empty"}
    f = model_dir / "model.safetensors"
    assert verify(f, key.public_key(), sign(f, key)).manifest.resources[0][0] == "."


def test_signature_inside_the_folder_is_not_part_of_it(model_dir, ed25519):
    sig = sign(model_dir, ed25519, model_dir / "model.sig")
    assert verify(model_dir, ed25519.public_key(), sig).files == 3


def test_every_tamper_is_named(model_dir, ed25519, tmp_path):
    sig = sign(model_dir, ed25519, tmp_path / "m.sig")
    pub = ed25519.public_key()

    def fails(expect: str) -> None:
        with pytest.raises(VerificationError, match=expect):
            verify(model_dir, pub, sig)

    st = model_dir / "model.safetensors"
    original = st.read_bytes()
    data = bytearray(original)
    data[-3] ^= 1  # last tensor's bytes
    st.write_bytes(bytes(data))
    fails(r"changed: model.safetensors \(tensors layer2.weight\)")
    st.write_bytes(original)
    verify(model_dir, pub, sig)
    (model_dir / "extra.bin").write_bytes(b"new")
    fails("not signed: extra.bin")
    (model_dir / "extra.bin").unlink()
    (model_dir / "config.json").unlink()
    fails("missing: config.json")


def test_signature_from_another_key_and_edited_manifest(model_dir, ed25519, ecdsa, tmp_path):
    from dlsec.protect import generate_signing_key

    sig = sign(model_dir, ed25519, tmp_path / "m.sig")
    with pytest.raises(VerificationError, match="another key"):
        verify(model_dir, generate_signing_key().public_key(), sig)
    with pytest.raises(VerificationError, match="another key"):
        verify(model_dir, ecdsa.public_key(), sig)
    # a manifest edited after signing: a resource digest replaced by the file's new digest, signature kept
    bundle = json.loads(sig.read_text())
    stmt = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    stmt["predicate"]["resources"][0]["digest"] = "00" * 32
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    sig.write_text(json.dumps(bundle))
    with pytest.raises(VerificationError, match="does not verify"):
        verify(model_dir, ed25519.public_key(), sig)
    # the hint removed does not help a forger either
    del bundle["verificationMaterial"]
    sig.write_text(json.dumps(bundle))
    with pytest.raises(VerificationError, match="does not verify"):
        verify(model_dir, ed25519.public_key(), sig)


def test_signed_but_inconsistent_manifest_is_rejected(model_dir, ed25519, tmp_path):
    """A statement whose subject digest does not match its resources is refused even with a valid signature."""
    from dlsec.protect.signing import _sign_bytes

    m = build_manifest(model_dir)
    stmt = m.statement()
    stmt["subject"][0]["digest"]["sha256"] = "11" * 32
    payload = json.dumps(stmt).encode()
    sig = base64.b64encode(_sign_bytes(ed25519, pae(payload))).decode()
    bundle = {"dsseEnvelope": {"payload": base64.b64encode(payload).decode(), "payloadType": "application/vnd.in-toto+json", "signatures": [{"sig": sig}]}}
    (tmp_path / "x.sig").write_text(json.dumps(bundle))
    with pytest.raises(VerificationError, match="inconsistent"):
        verify(model_dir, ed25519.public_key(), tmp_path / "x.sig")


def test_malformed_and_missing_signatures(model_dir, ed25519, tmp_path):
    pub = ed25519.public_key()
    with pytest.raises(VerificationError, match="unsigned"):
        verify(model_dir, pub, tmp_path / "none.sig")
    for text in ("not json", "[]", '{"dsseEnvelope": {}}', '{"dsseEnvelope": {"payload": "!!", "payloadType": "x", "signatures": []}}'):
        (tmp_path / "bad.sig").write_text(text)
        with pytest.raises(VerificationError):
            verify(model_dir, pub, tmp_path / "bad.sig")


def test_symlinks_are_refused(model_dir, ed25519, tmp_path):
    os.symlink(model_dir / "config.json", model_dir / "link.json")
    with pytest.raises(InputError, match="symbolic link"):
        sign(model_dir, ed25519, tmp_path / "m.sig")


def test_keys_written_private(tmp_path, ed25519):
    pub = write_signing_key(ed25519, tmp_path / "k.pem")
    assert oct((tmp_path / "k.pem").stat().st_mode & 0o777) == "0o600"
    assert load_public_key(pub) is not None
    with pytest.raises(InputError):
        write_signing_key(ed25519, tmp_path / "k.pem")
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(InputError):
        load_public_key(tmp_path / "junk.pem")


def test_per_tensor_digests_cover_every_byte(tmp_path):
    """The single-pass hasher gives each tensor the digest of exactly its bytes, across read blocks."""
    import hashlib
    import struct

    from dlsec.protect import signing

    p = tmp_path / "m.safetensors"
    make_safetensors(p, n=4, size=700)  # ~7.8 MB: several 8 MiB-block boundaries? one; shrink the block below
    old = signing.BLOCK
    signing.BLOCK = 1 << 16
    try:
        digest, per = signing.hash_file(p)
    finally:
        signing.BLOCK = old
    raw = p.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    table = json.loads(raw[8 : 8 + n])
    for name, info in table.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        assert per[name] == hashlib.sha256(raw[8 + n + a : 8 + n + b]).hexdigest(), name
    assert digest == hashlib.sha256(raw).hexdigest()


# ------------------------------------------------------------------------------------------------ model-signing


@pytest.fixture
def ms():
    return pytest.importorskip("model_signing")


def test_model_signing_verifies_dlsec_signatures(ms, model_dir, ecdsa, tmp_path):
    shutil.rmtree(model_dir / ".git")
    write_signing_key(ecdsa, tmp_path / "ec.pem")
    sig = sign(model_dir, ecdsa, tmp_path / "m.sig")
    ms.verifying.Config().use_elliptic_key_verifier(public_key=tmp_path / "ec.pem.pub").verify(model_dir, sig)
    f = model_dir / "model.safetensors"
    ms.verifying.Config().use_elliptic_key_verifier(public_key=tmp_path / "ec.pem.pub").verify(f, sign(f, ecdsa))
    (model_dir / "config.json").write_text("{}")
    with pytest.raises(ValueError):
        ms.verifying.Config().use_elliptic_key_verifier(public_key=tmp_path / "ec.pem.pub").verify(model_dir, sig)


def test_dlsec_verifies_model_signing_signatures(ms, model_dir, ecdsa, tmp_path):
    write_signing_key(ecdsa, tmp_path / "ec.pem")
    ms.signing.Config().use_elliptic_key_signer(private_key=tmp_path / "ec.pem").sign(model_dir, tmp_path / "ms.sig")
    v = verify(model_dir, load_public_key(tmp_path / "ec.pem.pub"), tmp_path / "ms.sig")
    assert v.files == 3
    f = model_dir / "model.safetensors"
    ms.signing.Config().use_elliptic_key_signer(private_key=tmp_path / "ec.pem").sign(f, tmp_path / "one.sig")
    assert verify(f, ecdsa.public_key(), tmp_path / "one.sig").files == 1
    (model_dir / "sub" / "tokenizer.txt").write_text("tampered")
    with pytest.raises(VerificationError, match="changed: sub/tokenizer.txt"):
        verify(model_dir, ecdsa.public_key(), tmp_path / "ms.sig")
