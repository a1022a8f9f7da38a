"""Detached signatures over a manifest of SHA-256 digests, in the OpenSSF model-signing format.

A signature is a Sigstore bundle (v0.3 JSON) holding a DSSE envelope whose payload is an in-toto v1 statement with
model-signing's predicate (``https://model_signing/signature/v1.0``): one resource per file (its path relative to the
model folder, or ``.`` for a single file) with its SHA-256, the ``files`` serialization, and a subject digest over all
resource digests. This is what ``model-signing`` writes and reads with a key-based signer, so:

* a model signed by ``model-signing`` with an ECDSA key verifies here, and one signed here with an ECDSA P-256 key
  verifies there;
* dlsec's default key is Ed25519 (same bundle; ``model-signing`` 1.1 accepts only ECDSA keys, so it cannot check
  those).

For safetensors files dlsec adds per-tensor digests under the predicate's ``dlsec`` field (v1.0 verifiers ignore
fields they do not know); on a mismatch they name the tensors that changed.

Nothing here decrypts or loads a model: an encrypted file is signed and verified as the bytes on disk, so a
signature is checked before any key is used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from dlsec.errors import InputError, VerificationError
from dlsec.protect.keys import public_pem, read_small

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
DEFAULT_IGNORE = (".git", ".github", ".gitattributes", ".gitignore")
MAX_SIGNATURE = 64 << 20
MAX_FILES = 1_000_000
BLOCK = 1 << 20


@dataclass(frozen=True)
class Manifest:
    """What a signature covers: the model's name, each file's SHA-256 and, for safetensors, each tensor's."""

    name: str
    resources: tuple[tuple[str, str], ...]
    ignore_paths: tuple[str, ...] = DEFAULT_IGNORE
    tensors: dict[str, dict[str, str]] = field(default_factory=dict)

    def root_digest(self) -> str:
        """SHA-256 over the resource digests in name order (model-signing's subject digest)."""
        h = hashlib.sha256()
        for _, digest in sorted(self.resources):
            h.update(bytes.fromhex(digest))
        return h.hexdigest()

    def statement(self) -> dict[str, Any]:
        """The in-toto statement that gets signed."""
        predicate: dict[str, Any] = {
            "serialization": {
                "method": "files", "hash_type": "sha256", "allow_symlinks": False,
                "ignore_paths": list(self.ignore_paths),
            },
            "resources": [{"name": n, "algorithm": "sha256", "digest": d} for n, d in sorted(self.resources)],
        }  # fmt: skip
        if self.tensors:
            predicate["dlsec"] = {"version": 1, "tensors": self.tensors}
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.name, "digest": {"sha256": self.root_digest()}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": predicate,
        }


@dataclass(frozen=True)
class Verified:
    """A signature that checked out: the manifest it covers and the signing key's hint."""

    manifest: Manifest
    key_hint: str
    files: int


def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def default_signature_path(path: str | os.PathLike[str]) -> Path:
    """``model.safetensors`` -> ``model.safetensors.sig``; a folder ``m/`` -> ``m.sig`` beside it."""
    p = Path(path)
    p = p if p.name else p.resolve()  # "." has no name of its own
    return p.with_name(p.name + ".sig")


# ------------------------------------------------------------------------------------------------ hashing


def _safetensors_layout(head: bytes, size: int) -> list[tuple[str, int, int]] | None:
    """(tensor name, start, end) in file offsets, or None when this is no well-formed safetensors file."""
    if len(head) < 10 or head[8:9] != b"{":
        return None
    n = struct.unpack("<Q", head[:8])[0]
    if not 2 <= n <= min(100_000_000, size - 8) or len(head) < 8 + n:
        return None
    try:
        table = json.loads(head[8 : 8 + n])
    except (ValueError, RecursionError):
        return None
    out = []
    if not isinstance(table, dict):
        return None
    for name, info in table.items():
        if name == "__metadata__":
            continue
        try:
            a, b = info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (a, b)):
            return None
        if not 0 <= a <= b or 8 + n + b > size:
            return None
        out.append((name, 8 + n + a, 8 + n + b))
    return sorted(out, key=lambda t: (t[1], t[2]))


def hash_stream(f: Any, *, tensors: bool = True) -> tuple[str, dict[str, str]]:
    """SHA-256 of a seekable binary stream and, for safetensors with ``tensors``, of each tensor's bytes.

    One pass, memory bounded by the block size (plus the safetensors header).
    """
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    h = hashlib.sha256()
    first = f.read(BLOCK)
    layout: list[tuple[str, int, int]] = []
    per: dict[str, str] = {}
    if tensors and len(first) >= 10 and first[8:9] == b"{":
        n = struct.unpack("<Q", first[:8])[0]
        if len(first) < 8 + n <= 8 + 100_000_000:
            first += f.read(8 + n - len(first))
        found = _safetensors_layout(first, size)
        if found is not None:
            per = {name: hashlib.sha256().hexdigest() for name, a, b in found if a == b}
            layout = [t for t in found if t[1] < t[2]]
    hashers: dict[str, Any] = {}
    reuse = bytearray(BLOCK)  # later blocks are read into one buffer: no allocation per block
    view = memoryview(reuse)
    lo, pos, block = 0, 0, first
    while block:
        h.update(block)
        end = pos + len(block)
        mv = memoryview(block)
        i = lo
        while i < len(layout) and layout[i][1] < end:
            name, a, b = layout[i]
            if b > pos:
                hashers.setdefault(name, hashlib.sha256()).update(mv[max(a, pos) - pos : min(b, end) - pos])
            i += 1
        while lo < len(layout) and layout[lo][2] <= end:
            name = layout[lo][0]
            per[name] = hashers.pop(name, hashlib.sha256()).hexdigest()
            lo += 1
        pos = end
        n_read = f.readinto(reuse)
        block = view[:n_read] if n_read else b""
    for name, th in hashers.items():
        per[name] = th.hexdigest()
    return h.hexdigest(), per


def hash_file(path: Path, *, tensors: bool = True) -> tuple[str, dict[str, str]]:
    """:func:`hash_stream` of a file."""
    with open(path, "rb") as f:
        return hash_stream(f, tensors=tensors)


def _walk(root: Path, ignore: Iterable[str], exclude: set[Path]) -> list[tuple[str, Path]]:
    ignored = {PurePosixPath(i) for i in ignore}
    out = []
    for dirpath, dirs, names in os.walk(root, followlinks=False):
        d = Path(dirpath)
        rel_dir = PurePosixPath(d.relative_to(root).as_posix())
        for x in dirs:
            if (rel_dir / x) not in ignored and (d / x).is_symlink():
                raise InputError(f"{d / x} is a symbolic link: signatures do not follow links (allow_symlinks is false)")
        dirs[:] = sorted(x for x in dirs if (rel_dir / x) not in ignored)
        for x in sorted(names):
            p = d / x
            rel = rel_dir / x
            if rel in ignored or p.resolve() in exclude:
                continue
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                raise InputError(f"{p} is a symbolic link: signatures do not follow links (allow_symlinks is false)")
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"{p} is not a regular file")
            out.append((str(rel), p))
            if len(out) > MAX_FILES:
                raise InputError(f"{root} holds more than {MAX_FILES} files")
    return out


def build_manifest(
    path: str | os.PathLike[str], *, ignore_paths: Iterable[str] = DEFAULT_IGNORE, tensors: bool = True,
    exclude: Iterable[str | os.PathLike[str]] = (), file_digest: str | None = None,
) -> Manifest:  # fmt: skip
    """The manifest of a file or a folder (files in name order; ``ignore_paths`` and ``exclude`` left out).

    ``file_digest`` gives a single file's SHA-256 when the caller already has it (encryption hashes what it
    writes), so the file is not read again.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p} not found")
    ignore = tuple(ignore_paths)
    if p.is_file():
        if file_digest is not None:
            return Manifest(p.name, ((".", file_digest),), ignore)
        digest, per = hash_file(p, tensors=tensors)
        return Manifest(p.name, ((".", digest),), ignore, {".": per} if per else {})
    if not p.is_dir():
        raise InputError(f"{p} is neither a file nor a folder")
    excluded = {Path(e).resolve() for e in exclude}
    resources, per_file = [], {}
    for rel, fp in _walk(p, ignore, excluded):
        digest, per = hash_file(fp, tensors=tensors)
        resources.append((rel, digest))
        if per:
            per_file[rel] = per
    if not resources:
        raise InputError(f"{p} holds no files to sign")
    return Manifest(p.resolve().name, tuple(resources), ignore, per_file)


# ------------------------------------------------------------------------------------------------ sign and verify


def _sign_bytes(private: Any, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if isinstance(private, ed25519.Ed25519PrivateKey):
        return private.sign(data)
    return bytes(private.sign(data, ec.ECDSA(_ec_hash(private.public_key()))))


def _ec_hash(public: Any) -> Any:
    from cryptography.hazmat.primitives import hashes

    return {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[public.curve.key_size]


def _check_signature(public: Any, sig: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(sig, data)
        else:
            public.verify(sig, data, ec.ECDSA(_ec_hash(public)))
    except (InvalidSignature, ValueError):
        return False
    return True


def key_hint(public: Any) -> str:
    """SHA-256 of the public key's PEM, as model-signing records it."""
    return hashlib.sha256(public_pem(public)).hexdigest()


def sign_manifest(manifest: Manifest, private: Any) -> dict[str, Any]:
    """The Sigstore bundle (as a dict) signing ``manifest`` with ``private``."""
    payload = json.dumps(manifest.statement(), indent=2, sort_keys=True).encode()
    sig = _sign_bytes(private, pae(payload))
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint(private.public_key())}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
        },
    }


def sign(
    path: str | os.PathLike[str], private: Any, signature: str | os.PathLike[str] | None = None, *,
    file_digest: str | None = None, tensors: bool = True,
) -> Path:  # fmt: skip
    """Sign a file or folder; the bundle goes to ``signature`` (default ``<path>.sig``). Returns its path."""
    out = Path(signature) if signature is not None else default_signature_path(path)
    manifest = build_manifest(path, tensors=tensors, exclude=[out], file_digest=file_digest)
    bundle = sign_manifest(manifest, private)
    tmp = out.with_name(f".{out.name}.part")
    tmp.write_text(json.dumps(bundle, indent=1) + "\n")
    os.replace(tmp, out)
    return out


def read_bundle(signature: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a signature file (size bounded); an unreadable one is a failed verification, not a crash."""
    p = Path(signature)
    if not p.exists():
        raise VerificationError(f"unsigned: no signature file {p}")
    try:
        doc = json.loads(read_small(p, "signature", MAX_SIGNATURE))
    except InputError as exc:
        raise VerificationError(str(exc)) from None
    except (ValueError, RecursionError):
        raise VerificationError(f"signature {p} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise VerificationError(f"signature {p} is not a Sigstore bundle")
    return doc


def open_bundle(bundle: dict[str, Any], public: Any, where: str = "signature") -> dict[str, Any]:
    """Check the bundle's signature with ``public`` and return the signed statement (nothing else trusted)."""
    try:
        env = bundle["dsseEnvelope"]
        payload = base64.b64decode(env["payload"], validate=True)
        payload_type = env["payloadType"]
        sigs = [base64.b64decode(s["sig"], validate=True) for s in env["signatures"]]
    except (KeyError, TypeError, ValueError):
        raise VerificationError(f"{where} is not a DSSE-signed Sigstore bundle") from None
    if payload_type != PAYLOAD_TYPE:
        raise VerificationError(f"{where}: payload type {payload_type!r} is not an in-toto statement")
    material = bundle.get("verificationMaterial")
    public_key = material.get("publicKey") if isinstance(material, dict) else None
    hint = public_key.get("hint") if isinstance(public_key, dict) else None
    if material is not None and not isinstance(material, dict) or hint is not None and not isinstance(hint, str):
        raise VerificationError(f"{where}: malformed verification material")
    if hint and hint != key_hint(public):
        raise VerificationError(f"{where} was made with another key (key hint {hint[:16]!r}...)")
    if not any(_check_signature(public, s, pae(payload)) for s in sigs):
        raise VerificationError(f"{where}: the signature does not verify with this key (manifest edited or other key)")
    try:
        statement = json.loads(payload)
    except (ValueError, RecursionError):
        raise VerificationError(f"{where}: the signed payload is not JSON") from None
    if not isinstance(statement, dict) or statement.get("predicateType") != PREDICATE_TYPE:
        raise VerificationError(f"{where}: not a model-signing v1.0 statement")
    return statement


def manifest_from_statement(statement: dict[str, Any], where: str = "signature") -> Manifest:
    """The manifest a verified statement describes (its subject digest checked against its resources)."""
    try:
        (subject,) = statement["subject"]
        pred = statement["predicate"]
        ser = pred["serialization"]
        resources = tuple((str(r["name"]), str(r["digest"])) for r in pred["resources"] if r["algorithm"] == "sha256")
        if len(resources) != len(pred["resources"]):
            raise ValueError("a resource is not hashed with sha256")
        manifest = Manifest(
            str(subject["name"]), resources, tuple(ser.get("ignore_paths", ())),
            pred.get("dlsec", {}).get("tensors", {}),
        )  # fmt: skip
        root = subject["digest"]["sha256"]
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationError(f"{where}: malformed manifest ({exc})") from None
    if ser.get("method") != "files" or ser.get("hash_type") != "sha256":
        raise InputError(f"{where}: serialization {ser.get('method')!r}/{ser.get('hash_type')!r} is not supported")
    if manifest.root_digest() != root:
        raise VerificationError(f"{where}: the manifest is inconsistent (its digest does not match its resources)")
    return manifest


def _compare(signed: Manifest, actual: Manifest, where: str) -> None:
    want, got = dict(signed.resources), dict(actual.resources)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    changed = sorted(n for n in set(want) & set(got) if want[n] != got[n])
    if not (missing or extra or changed):
        return
    parts = []
    if changed:
        detail = []
        for n in changed[:5]:
            tens = signed.tensors.get(n)
            now = actual.tensors.get(n)
            if tens and now:
                diff = sorted(k for k in set(tens) | set(now) if tens.get(k) != now.get(k))
                detail.append(f"{n} (tensors {', '.join(diff[:5]) or 'unchanged: header or padding edited'})")
            else:
                detail.append(n)
        parts.append("changed: " + ", ".join(detail))
    if missing:
        parts.append("missing: " + ", ".join(missing[:5]))
    if extra:
        parts.append("not signed: " + ", ".join(extra[:5]))
    raise VerificationError(f"{where}: the model does not match its signature ({'; '.join(parts)})")


def signed_file_digest(
    path: str | os.PathLike[str], public: Any, signature: str | os.PathLike[str] | None = None
) -> str:
    """Check the signature of a single file (its bundle and key) and return the SHA-256 it vouches for.

    The caller compares it with the digest of exactly the bytes it goes on to use (one read, no window between
    the check and the use); :func:`dlsec.protect.container.decrypt_file` does so before anything is released.
    """
    sig_path = Path(signature) if signature is not None else default_signature_path(path)
    where = f"signature {sig_path}"
    signed = manifest_from_statement(open_bundle(read_bundle(sig_path), public, where), where)
    if [n for n, _ in signed.resources] != ["."]:
        raise VerificationError(f"{where} covers a folder, not the single file {Path(path).name}")
    return signed.resources[0][1]


def verify(
    path: str | os.PathLike[str], public: Any, signature: str | os.PathLike[str] | None = None, *,
    data: bytes | None = None,
) -> Verified:  # fmt: skip
    """Verify ``path`` (a file or folder) against its signature; raise :class:`VerificationError` naming the check.

    ``data``: the file's bytes already in memory (the caller goes on to use exactly these, so nothing can swap the
    file between the check and the use).
    """
    sig_path = Path(signature) if signature is not None else default_signature_path(path)
    where = f"signature {sig_path}"
    statement = open_bundle(read_bundle(sig_path), public, where)
    signed = manifest_from_statement(statement, where)
    p = Path(path)
    if data is not None:
        if [n for n, _ in signed.resources] != ["."]:
            raise VerificationError(f"{where} covers a folder, not the single file {p.name}")
        actual = Manifest(p.name, ((".", hashlib.sha256(data).hexdigest()),))
        if actual.resources != signed.resources and signed.tensors:  # which tensors changed, for the message
            import io

            _, per = hash_stream(io.BytesIO(data))
            actual = Manifest(p.name, actual.resources, tensors={".": per})
    else:
        one_file = [n for n, _ in signed.resources] == ["."]
        if one_file and not p.is_file():
            raise VerificationError(f"{where} covers a single file, {p} is not one")
        try:
            actual = build_manifest(p, ignore_paths=signed.ignore_paths, tensors=False, exclude=[sig_path])
        except InputError as exc:
            if "symbolic link" in str(exc):
                raise VerificationError(f"{where}: {exc}") from None
            raise
        if actual.resources != signed.resources and signed.tensors:  # which tensors changed, for the message
            root = p if p.is_dir() else p.parent
            changed: dict[str, dict[str, str]] = {}
            for name, digest in actual.resources:
                if name in signed.tensors and dict(signed.resources).get(name) != digest:
                    changed[name] = hash_file(p if name == "." else root / name)[1]
            actual = Manifest(actual.name, actual.resources, actual.ignore_paths, changed)
    _compare(signed, actual, where)
    return Verified(signed, key_hint(public), len(signed.resources))
