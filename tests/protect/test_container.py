"""Encrypted container: round trips and every mutation the issue lists, rejected."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlsec.errors import DlsecError, InputError, KeyMismatchError, VerificationError
from dlsec.protect import RawKey, decrypt_bytes, decrypt_file, rewrap_file
from dlsec.protect.container import MAGIC, TAG, encrypt_file, encrypt_stream, read_header

from .conftest import edit_header, fast_passphrase, make_safetensors

CHUNK = 1024


def _encrypt(data: bytes, keys, chunk: int = CHUNK) -> bytes:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, len(data), keys, chunk_size=chunk)
    return out.getvalue()


def _chunks(blob: bytes) -> tuple[bytes, list[bytes]]:
    """(header bytes, [chunk ciphertexts]) of an encrypted file."""
    h = read_header(io.BytesIO(blob))
    pos, out = h.data_offset, []
    for i in range(h.chunks):
        n = min(h.chunk_size, h.size - i * h.chunk_size) + TAG
        out.append(blob[pos : pos + n])
        pos += n
    assert pos == len(blob)
    return blob[: h.data_offset], out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 5 * CHUNK + 3), chunk=st.sampled_from([1024, 1536, 4096]), seed=st.integers(0, 2**16))
def test_round_trip_is_byte_identical(kek, size, chunk, seed):
    data = hashlib.shake_256(seed.to_bytes(4, "big")).digest(size) if size else b""
    blob = _encrypt(data, [kek], chunk)
    assert blob.startswith(MAGIC)
    assert read_header(io.BytesIO(blob)).chunks == max(1, -(-size // chunk))
    assert decrypt_bytes(blob, [kek]) == data


def test_round_trip_files_and_safetensors_table(tmp_path, kek, st_file):
    out = tmp_path / "m.enc"
    header, digest = encrypt_file(st_file, out, [kek], chunk_size=CHUNK)
    assert header.meta["format"] == "safetensors" and len(header.meta["tensor_table_sha256"]) == 64
    assert header.chunks > 10  # several chunks, the last one short
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()
    back = tmp_path / "m.dec"
    decrypt_file(out, back, [kek])
    assert back.read_bytes() == st_file.read_bytes()
    assert oct(back.stat().st_mode & 0o777) == "0o600"
    assert st_file.read_bytes() not in out.read_bytes()  # nothing in the clear, tensor names included
    assert b"layer0.weight" not in out.read_bytes()


def test_two_encryptions_differ(kek):
    data = b"x" * 3000
    a, b = _encrypt(data, [kek]), _encrypt(data, [kek])
    assert a != b  # fresh data key and file id each time
    assert decrypt_bytes(a, [kek]) == decrypt_bytes(b, [kek]) == data


# ------------------------------------------------------------------------------------------------ mutations


@pytest.fixture
def sample(kek) -> bytes:
    data = hashlib.shake_256(b"sample").digest(4 * CHUNK + 100)
    return _encrypt(data, [kek])


def _rejected(blob: bytes, keys) -> DlsecError:
    with pytest.raises(DlsecError) as info:
        decrypt_bytes(blob, keys)
    return info.value


def test_every_bit_of_the_header_is_bound(sample, kek):
    header, _ = _chunks(sample)
    for i in range(len(header)):
        for bit in range(8):
            b = bytearray(sample)
            b[i] ^= 1 << bit
            _rejected(bytes(b), [kek])


def test_a_flipped_bit_in_any_chunk_or_tag(sample, kek):
    header, chunks = _chunks(sample)
    pos = len(header)
    for c in chunks:
        for off in (0, len(c) // 2, len(c) - TAG - 1, len(c) - TAG, len(c) - 1):
            b = bytearray(sample)
            b[pos + off] ^= 0x01
            err = _rejected(bytes(b), [kek])
            assert isinstance(err, VerificationError) and "failed authentication" in str(err)
        pos += len(c)


def test_truncation_reorder_duplication_drop_append(sample, kek):
    header, chunks = _chunks(sample)
    cases = {
        "truncated mid-chunk": sample[:-10],
        "last chunk dropped": header + b"".join(chunks[:-1]),
        "middle chunk dropped": header + b"".join(chunks[:1] + chunks[2:]),
        "reordered": header + b"".join([chunks[1], chunks[0], *chunks[2:]]),
        "duplicated": header + b"".join([chunks[0], chunks[0], *chunks[2:]]),
        "chunk inserted": header + b"".join([chunks[0], chunks[0], *chunks[1:]]),
        "appended bytes": sample + b"\x00",
        "header only": header,
    }
    for what, blob in cases.items():
        err = _rejected(blob, [kek])
        assert isinstance(err, VerificationError), what


def test_chunks_from_another_file_under_the_same_key(kek):
    a = _encrypt(b"a" * 3000, [kek])
    b = _encrypt(b"b" * 3000, [kek])
    ha, ca = _chunks(a)
    _, cb = _chunks(b)
    _rejected(ha + cb[0] + b"".join(ca[1:]), [kek])




def test_metadata_edits_are_rejected_even_when_consistent(sample, kek):
    def set_table(d):
        d["meta"]["format"] = "safetensors"
        d["meta"]["tensor_table_sha256"] = "0" * 64

    def bump_size(d):
        d["meta"]["size"] -= 1

    def swap_file_id(d):
        d["meta"]["file_id"] = "00" * 16

    for edit in (set_table, bump_size, swap_file_id):
        err = _rejected(edit_header(sample, edit), [kek])
        assert isinstance(err, VerificationError)


def test_tensor_table_is_bound(tmp_path, kek):
    p = tmp_path / "m.safetensors"
    make_safetensors(p)
    blob = _encrypt(p.read_bytes(), [kek])

    def other_table(d):
        d["meta"]["tensor_table_sha256"] = hashlib.sha256(b"another table").hexdigest()

    err = _rejected(edit_header(blob, other_table), [kek])
    assert isinstance(err, VerificationError) and "header was edited" in str(err)
    # a flipped bit inside the encrypted tensor table (the first bytes of chunk 0)
    header, _ = _chunks(blob)
    for off in (9, 40, 100):
        b = bytearray(blob)
        b[len(header) + off] ^= 0x04
        assert isinstance(_rejected(bytes(b), [kek]), VerificationError)


def test_wrong_key_and_wrong_passphrase_are_named(sample, kek, other_kek):
    err = _rejected(sample, [other_kek])
    assert isinstance(err, KeyMismatchError) and "wrong key" in str(err) and kek.id in str(err)
    blob = _encrypt(b"z" * 100, [fast_passphrase("right passphrase")])
    err = _rejected(blob, [fast_passphrase("wrong passphrase")])
    assert isinstance(err, KeyMismatchError) and str(err).endswith("wrong passphrase")
    assert decrypt_bytes(blob, [fast_passphrase("right passphrase")]) == b"z" * 100


def test_key_wraps_cannot_move_between_files(kek):
    a = _encrypt(b"a" * 100, [kek])
    b = _encrypt(b"b" * 100, [kek])
    wrap_a = json.loads(a[12 : read_header(io.BytesIO(a)).data_offset])["wraps"]

    def graft(d):
        d["wraps"] = wrap_a

    assert isinstance(_rejected(edit_header(b, graft), [kek]), VerificationError)


def test_crafted_kdf_cost_is_refused_before_deriving(kek):
    blob = _encrypt(b"p" * 100, [fast_passphrase("a passphrase")])

    def huge(d):
        d["wraps"][0]["kdf"]["memory_kib"] = 64 << 20  # 64 GiB

    err = _rejected(edit_header(blob, huge), [fast_passphrase("a passphrase")])
    assert isinstance(err, VerificationError) and "memory_kib" in str(err)


def test_header_size_is_bounded(kek):
    blob = MAGIC + struct.pack(">I", 1 << 30)
    assert isinstance(_rejected(blob, [kek]), VerificationError)
    assert isinstance(_rejected(b"not encrypted at all", [kek]), InputError)


# ------------------------------------------------------------------------------------------------ rewrap, memory


def test_rewrap_changes_keys_not_chunks(tmp_path, kek, other_kek):
    p = tmp_path / "m.enc"
    src = tmp_path / "plain"
    src.write_bytes(os.urandom(5000))
    encrypt_file(src, p, [kek], chunk_size=CHUNK)
    before = p.read_bytes()
    h0 = read_header(io.BytesIO(before))
    with pytest.raises(KeyMismatchError):
        rewrap_file(p, [other_kek], [kek])
    assert p.read_bytes() == before  # a failed rewrap leaves the file alone
    rewrap_file(p, [kek], [other_kek])
    after = p.read_bytes()
    h1 = read_header(io.BytesIO(after))
    assert after[h1.data_offset :] == before[h0.data_offset :]  # chunks copied, not re-encrypted
    assert h1.meta == h0.meta
    assert decrypt_bytes(after, [other_kek]) == src.read_bytes()
    with pytest.raises(KeyMismatchError):
        decrypt_bytes(after, [kek])
    rewrap_file(p, [other_kek], [kek], keep=True)
    assert decrypt_bytes(p.read_bytes(), [kek]) == decrypt_bytes(p.read_bytes(), [other_kek]) == src.read_bytes()


def test_failed_decrypt_leaves_nothing_behind(tmp_path, sample, kek):
    bad = bytearray(sample)
    bad[-1] ^= 1
    src = tmp_path / "bad.enc"
    src.write_bytes(bytes(bad))
    with pytest.raises(VerificationError):
        decrypt_file(src, tmp_path / "out", [kek])
    assert sorted(os.listdir(tmp_path)) == ["bad.enc"]


def test_memory_stays_flat_on_a_file_over_a_thousand_chunks(tmp_path, kek):
    src = tmp_path / "big"
    with open(src, "wb") as f:
        for i in range(64):
            f.write(hashlib.shake_256(i.to_bytes(2, "big")).digest(32 * CHUNK))  # 2 MiB = 2048 chunks
    tracemalloc.start()
    try:
        header, _ = encrypt_file(src, tmp_path / "big.enc", [kek], chunk_size=CHUNK)
        _, enc_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        decrypt_file(tmp_path / "big.enc", tmp_path / "big.dec", [kek])
        _, dec_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert header.chunks == 2048
    assert (tmp_path / "big.dec").read_bytes() == src.read_bytes()
    assert enc_peak < 64 * CHUNK and dec_peak < 64 * CHUNK, (enc_peak, dec_peak)  # vs a 2048-chunk file


def test_no_key_and_bad_chunk_size(kek):
    with pytest.raises(InputError):
        _encrypt(b"x", [])
    with pytest.raises(InputError):
        _encrypt(b"x", [kek], chunk=10)


def test_env_key_and_key_file(tmp_path, monkeypatch):
    from dlsec.protect import EnvKey, KeyFile, write_key_file

    k = write_key_file(tmp_path / "k.kek")
    assert oct((tmp_path / "k.kek").stat().st_mode & 0o777) == "0o600"
    assert KeyFile(tmp_path / "k.kek").key == k.key
    assert k.key.hex() not in repr(k) and base64.b64encode(k.key).decode() not in repr(k)  # secrets stay out of repr
    with pytest.raises(InputError):
        write_key_file(tmp_path / "k.kek")  # never overwrites
    monkeypatch.setenv("MY_KEY", base64.b64encode(k.key).decode())
    blob = _encrypt(b"secret" * 100, [KeyFile(tmp_path / "k.kek")])
    assert decrypt_bytes(blob, [EnvKey("MY_KEY")]) == b"secret" * 100
    monkeypatch.setenv("MY_KEY", "not base64!")
    with pytest.raises(InputError):
        EnvKey("MY_KEY")
    with pytest.raises(InputError):
        KeyFile(tmp_path / "missing.kek")
    with pytest.raises(InputError):
        RawKey(b"short")


class FakeKms:
    """A key service that keeps its key to itself (a stand-in for a KMS)."""

    name = "fake-kms"

    def __init__(self) -> None:
        self._key = RawKey(b"k" * 32, origin="kms")
        self.calls = 0

    def wrap(self, dek: bytes, context: bytes) -> tuple[str, bytes]:
        self.calls += 1
        entry = self._key.wrap(dek, context)
        return "kms-key-1", bytes.fromhex(entry["nonce"]) + bytes.fromhex(entry["wrapped"])

    def unwrap(self, key_id: str, blob: bytes, context: bytes) -> bytes:
        self.calls += 1
        assert key_id == "kms-key-1"
        return self._key.unwrap({"nonce": blob[:12].hex(), "wrapped": blob[12:].hex()}, context)


def test_key_service_plugin(kek):
    from dlsec.protect import key_service, register_key_service

    kms = FakeKms()
    register_key_service("fake-kms", lambda: kms)
    src = key_service("fake-kms")
    blob = _encrypt(b"m" * 2000, [src])
    assert decrypt_bytes(blob, [key_service("fake-kms")]) == b"m" * 2000
    assert kms.calls == 2
    with pytest.raises(KeyMismatchError):
        decrypt_bytes(blob, [kek])
    with pytest.raises(InputError):
        key_service("no-such-service")


def test_large_file_path_type(tmp_path, kek):
    with pytest.raises(InputError):
        encrypt_file(tmp_path / "missing", tmp_path / "o", [kek])
    with pytest.raises(InputError):
        encrypt_file(tmp_path, tmp_path / "o", [kek])
    assert not (tmp_path / "o").exists()
