"""Key-encryption keys (KEKs) and signing keys.

A protected file is encrypted under a fresh 256-bit data key; the data key is *wrapped* (AES-256-GCM) by one or more
key-encryption keys, each from one of these sources:

* :class:`KeyFile`: a file holding a random 256-bit key (``dlsec protect keygen --kek``), written readable by its
  owner only;
* :class:`EnvKey`: the same key, base64, in an environment variable (for CI secrets and containers);
* :class:`Passphrase`: a key derived with Argon2id (RFC 9106, memory-hard; its salt and cost are stored with the
  wrap, bounded on read so a crafted file cannot ask for gigabytes);
* a :class:`KeyService` plug-in (a KMS, an HSM): it wraps and unwraps the data key itself and never hands out its
  key. Register one with :func:`register_key_service` or the ``dlsec.key_services`` entry-point group.

Secrets never appear in ``repr``, messages or logs; a key's public *id* (a hash of the key under its own label) says
which key a file wants.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from dlsec.errors import InputError, KeyMismatchError, VerificationError

_HEX = re.compile(r"(?:[0-9a-f]{2})*")
KEK_BYTES = 32
KEY_FILE_TAG = "dlsec-kek-v1"
MAX_KEY_FILE = 64 << 10

# Argon2id cost: RFC 9106's second recommended option (64 MiB, 3 passes, 4 lanes). Bounds on what a file may ask for.
ARGON2_DEFAULT = {"memory_kib": 64 * 1024, "iterations": 3, "lanes": 4}
ARGON2_MAX = {"memory_kib": 256 * 1024, "iterations": 8, "lanes": 8}  # at most 4x the default
MAX_PASSPHRASE_TRIES = 4  # passphrase wraps tried per file: a crafted header cannot ask for more derivations
ARGON2_MIN = {"memory_kib": 8 * 1024, "iterations": 1, "lanes": 1}


def key_id(key: bytes) -> str:
    """A key's public name: 16 hex digits of SHA-256 over a label and the key (reveals nothing usable)."""
    return hashlib.sha256(b"dlsec key id v1\x00" + key).hexdigest()[:16]


def _aead(key: bytes) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def wrap_with(kek: bytes, dek: bytes, context: bytes) -> dict[str, str]:
    """Wrap a data key under ``kek`` (AES-256-GCM, random nonce, ``context`` bound as associated data)."""
    nonce = os.urandom(12)
    return {"nonce": nonce.hex(), "wrapped": _aead(kek).encrypt(nonce, dek, context).hex()}


def strict_hex(value: Any) -> bytes:
    """Bytes from lowercase hex only (``bytes.fromhex`` also takes upper case and spaces: an edit it would hide)."""
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise ValueError("not lowercase hex")
    return bytes.fromhex(value)


def unwrap_with(kek: bytes, entry: dict[str, Any], context: bytes) -> bytes:
    """The data key of a wrap made by :func:`wrap_with`; a failed tag means the header was edited."""
    from cryptography.exceptions import InvalidTag

    try:
        nonce, wrapped = strict_hex(entry["nonce"]), strict_hex(entry["wrapped"])
        dek = _aead(kek).decrypt(nonce, wrapped, context)
    except (InvalidTag, KeyError, ValueError, TypeError):
        raise VerificationError("the wrapped data key failed authentication: the file's header was edited") from None
    if len(dek) != KEK_BYTES:
        raise VerificationError("the wrapped data key has the wrong length: the file's header was edited")
    return dek


class KeySource(Protocol):
    """Anything that wraps and unwraps a file's data key."""

    @property
    def kind(self) -> str:
        """``key``, ``passphrase`` or ``service``."""
        ...

    def wrap(self, dek: bytes, context: bytes) -> dict[str, Any]:
        """A JSON-ready wrap entry (``kind`` and ``key_id`` included) for the file header."""
        ...

    def matches(self, entry: dict[str, Any]) -> bool:
        """Whether this source can open ``entry`` (the entry's kind and key id are ours)."""
        ...

    def unwrap(self, entry: dict[str, Any], context: bytes) -> bytes:
        """The data key; :class:`VerificationError` if the entry was tampered with."""
        ...

    def describe(self) -> str:
        """A short, secret-free description for messages."""
        ...


@dataclass(frozen=True, repr=False)
class RawKey:
    """A 256-bit key-encryption key held in memory (the base of :class:`KeyFile` and :class:`EnvKey`)."""

    key: bytes = field(repr=False)
    origin: str = "key"
    kind: str = "key"

    def __post_init__(self) -> None:
        if len(self.key) != KEK_BYTES:
            raise InputError(f"{self.origin}: a key-encryption key is {KEK_BYTES} bytes, this one is {len(self.key)}")

    def __repr__(self) -> str:
        return f"RawKey(id={self.id}, origin={self.origin!r})"

    @property
    def id(self) -> str:
        """The key's public id."""
        return key_id(self.key)

    def wrap(self, dek: bytes, context: bytes) -> dict[str, Any]:
        """Wrap under this key."""
        return {"kind": "key", "key_id": self.id, **wrap_with(self.key, dek, context + self.id.encode())}

    def matches(self, entry: dict[str, Any]) -> bool:
        """Ours when the entry is a raw-key wrap with our id."""
        return entry.get("kind") == "key" and entry.get("key_id") == self.id

    def unwrap(self, entry: dict[str, Any], context: bytes) -> bytes:
        """Unwrap an entry made by :meth:`wrap`."""
        return unwrap_with(self.key, entry, context + self.id.encode())

    def describe(self) -> str:
        """``key <id> (from <origin>)``."""
        return f"key {self.id} (from {self.origin})"


def generate_kek() -> bytes:
    """A fresh random 256-bit key-encryption key."""
    return os.urandom(KEK_BYTES)


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a new file readable by its owner only (mode 0600), refusing to overwrite."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(f"{p} already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise InputError(f"cannot write {p}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_key_file(path: str | os.PathLike[str], key: bytes | None = None) -> RawKey:
    """Write a key file (``dlsec-kek-v1 <base64>``, mode 0600) and return the key."""
    k = RawKey(key if key is not None else generate_kek(), origin=str(path))
    write_private(path, f"{KEY_FILE_TAG} {base64.b64encode(k.key).decode()}\n".encode())
    return k


def _decode_key(text: str, origin: str) -> bytes:
    body = text.strip()
    if body.startswith(KEY_FILE_TAG):
        body = body[len(KEY_FILE_TAG) :].strip()
    try:
        key = base64.b64decode(body, validate=True)
    except ValueError:
        raise InputError(f"{origin}: not a dlsec key (expected '{KEY_FILE_TAG} <base64 of 32 bytes>')") from None
    if len(key) != KEK_BYTES:
        raise InputError(f"{origin}: a key-encryption key is {KEK_BYTES} bytes, this one is {len(key)}")
    return key


def KeyFile(path: str | os.PathLike[str]) -> RawKey:  # noqa: N802 - reads like a type at call sites
    """The key in a key file written by :func:`write_key_file`."""
    p = Path(path)
    try:
        text = read_small(p, "key file").decode("ascii")
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a dlsec key file") from None
    return RawKey(_decode_key(text, str(p)), origin=str(p))


def EnvKey(name: str = "DLSEC_KEY") -> RawKey:  # noqa: N802
    """The key in environment variable ``name`` (base64 of 32 bytes, optionally prefixed ``dlsec-kek-v1``)."""
    value = os.environ.get(name)
    if not value:
        raise InputError(f"environment variable {name} is not set")
    return RawKey(_decode_key(value, f"${name}"), origin=f"${name}")


@dataclass(frozen=True, repr=False)
class Passphrase:
    """A key-encryption key derived from a passphrase with Argon2id; each wrap has its own salt."""

    passphrase: bytes = field(repr=False)
    memory_kib: int = ARGON2_DEFAULT["memory_kib"]
    iterations: int = ARGON2_DEFAULT["iterations"]
    lanes: int = ARGON2_DEFAULT["lanes"]
    kind: str = "passphrase"

    def __post_init__(self) -> None:
        if isinstance(self.passphrase, str):
            object.__setattr__(self, "passphrase", self.passphrase.encode())
        if len(self.passphrase) < 8:
            raise InputError("a passphrase must be at least 8 characters long")
        _check_cost({"memory_kib": self.memory_kib, "iterations": self.iterations, "lanes": self.lanes})

    def __repr__(self) -> str:
        return "Passphrase(***)"

    def _derive(self, salt: bytes, cost: dict[str, int]) -> bytes:
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

        kdf = Argon2id(
            salt=salt, length=KEK_BYTES, iterations=cost["iterations"], lanes=cost["lanes"],
            memory_cost=cost["memory_kib"],
        )  # fmt: skip
        return kdf.derive(self.passphrase)

    def wrap(self, dek: bytes, context: bytes) -> dict[str, Any]:
        """Derive a key under a fresh salt and wrap with it; the salt and cost go in the entry."""
        salt = os.urandom(16)
        cost = {"memory_kib": self.memory_kib, "iterations": self.iterations, "lanes": self.lanes}
        kek = self._derive(salt, cost)
        kdf = {"name": "argon2id", "salt": salt.hex(), **cost}
        return {"kind": "passphrase", "key_id": key_id(kek), "kdf": kdf, **wrap_with(kek, dek, context + b"passphrase")}

    def matches(self, entry: dict[str, Any]) -> bool:
        """Any passphrase entry is a candidate (the derived key's id tells whether the passphrase is right)."""
        return entry.get("kind") == "passphrase"

    def unwrap(self, entry: dict[str, Any], context: bytes) -> bytes:
        """Derive with the entry's salt and cost (bounded), check the id, unwrap."""
        kdf = entry.get("kdf")
        if not isinstance(kdf, dict) or kdf.get("name") != "argon2id":
            raise VerificationError("the passphrase entry names no supported key derivation: header edited")
        cost = {k: kdf.get(k) for k in ARGON2_DEFAULT}
        _check_cost(cost, from_file=True)
        try:
            salt = strict_hex(kdf.get("salt"))
            if len(salt) != 16:
                raise ValueError("salt length")
        except ValueError:
            raise VerificationError("the passphrase entry's salt is not 16 bytes of hex: header edited") from None
        kek = self._derive(salt, cost)  # type: ignore[arg-type]
        if key_id(kek) != entry.get("key_id"):
            raise KeyMismatchError("wrong passphrase")
        return unwrap_with(kek, entry, context + b"passphrase")

    def describe(self) -> str:
        """``passphrase``."""
        return "passphrase"


def _check_cost(cost: dict[str, Any], from_file: bool = False) -> None:
    for k, hi in ARGON2_MAX.items():
        v = cost.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or not ARGON2_MIN[k] <= v <= hi:
            where = "the file asks for" if from_file else "given"
            exc = VerificationError if from_file else InputError
            raise exc(f"Argon2id {k} {where} {v!r} is outside [{ARGON2_MIN[k]}, {hi}]")


@runtime_checkable
class KeyService(Protocol):
    """A key service (KMS, HSM, vault) that wraps data keys under a key it never reveals.

    ``wrap`` returns the service's key id and an opaque blob; ``unwrap`` gives the data key back. Both receive the
    file's context (its id and metadata digest) to bind as associated data or encryption context.
    """

    name: str

    def wrap(self, dek: bytes, context: bytes) -> tuple[str, bytes]:
        """(key id, wrapped blob)."""
        ...

    def unwrap(self, key_id: str, blob: bytes, context: bytes) -> bytes:
        """The data key; raise on failure."""
        ...


@dataclass(frozen=True)
class ServiceKey:
    """Adapts a :class:`KeyService` to the wrap-entry interface of the file header."""

    service: KeyService
    kind: str = "service"

    def wrap(self, dek: bytes, context: bytes) -> dict[str, Any]:
        """Ask the service to wrap."""
        kid, blob = self.service.wrap(dek, context)
        return {"kind": "service", "service": self.service.name, "key_id": str(kid), "wrapped": blob.hex()}

    def matches(self, entry: dict[str, Any]) -> bool:
        """Entries of this service."""
        return entry.get("kind") == "service" and entry.get("service") == self.service.name

    def unwrap(self, entry: dict[str, Any], context: bytes) -> bytes:
        """Ask the service to unwrap; any failure of the service is a failed check, not a crash."""
        try:
            dek = self.service.unwrap(str(entry.get("key_id")), strict_hex(entry.get("wrapped")), context)
        except Exception as exc:  # noqa: BLE001 - a plug-in may raise anything
            raise VerificationError(f"key service {self.service.name!r} refused to unwrap: {exc}") from None
        if not isinstance(dek, bytes) or len(dek) != KEK_BYTES:
            raise VerificationError(f"key service {self.service.name!r} returned no 32-byte key")
        return dek

    def describe(self) -> str:
        """``key service <name>``."""
        return f"key service {self.service.name}"


KEY_SERVICES: dict[str, Callable[[], KeyService]] = {}
"""Key-service factories by name; plug-ins add theirs with :func:`register_key_service` or an entry point."""


def register_key_service(name: str, factory: Callable[[], KeyService]) -> None:
    """Make ``dlsec protect ... --key-service NAME`` (and :func:`key_service`) use ``factory``."""
    KEY_SERVICES[name] = factory


def key_service(name: str) -> ServiceKey:
    """The registered key service ``name`` (entry points in group ``dlsec.key_services`` are loaded on demand)."""
    if name not in KEY_SERVICES:
        from importlib.metadata import entry_points

        for ep in entry_points(group="dlsec.key_services"):
            if ep.name == name:
                KEY_SERVICES[name] = ep.load()
    if name not in KEY_SERVICES:
        known = ", ".join(sorted(KEY_SERVICES)) or "none registered"
        raise InputError(f"unknown key service {name!r} ({known})")
    service = KEY_SERVICES[name]()
    if not isinstance(service, KeyService):
        raise InputError(f"key service {name!r} does not implement wrap and unwrap")
    return ServiceKey(service)


# ------------------------------------------------------------------------------------------------ signing keys

SIGNING_KINDS = ("ed25519", "ecdsa-p256")


def generate_signing_key(kind: str = "ed25519") -> Any:
    """A new private key: Ed25519 (dlsec's default) or ECDSA P-256 (verifiable by OpenSSF ``model-signing``)."""
    if kind == "ed25519":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.generate()
    if kind == "ecdsa-p256":
        from cryptography.hazmat.primitives.asymmetric import ec

        return ec.generate_private_key(ec.SECP256R1())
    raise InputError(f"signing key type must be one of {', '.join(SIGNING_KINDS)}, got {kind!r}")


def write_signing_key(private: Any, path: str | os.PathLike[str]) -> Path:
    """Write the private key (PEM, PKCS#8, mode 0600) to ``path`` and the public key to ``path.pub``."""
    from cryptography.hazmat.primitives import serialization as ser

    pub_path = Path(f"{path}.pub")
    if pub_path.exists():
        raise InputError(f"{pub_path} already exists; refusing to overwrite a key")
    write_private(path, private.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
    pub_path.write_bytes(public_pem(private.public_key()))
    return pub_path


def public_pem(public: Any) -> bytes:
    """A public key as SubjectPublicKeyInfo PEM (what model-signing hashes for its key hint)."""
    from cryptography.hazmat.primitives import serialization as ser

    return bytes(public.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo))


def read_small(path: str | os.PathLike[str], what: str, limit: int = MAX_KEY_FILE) -> bytes:
    """A small regular file (a key, a passphrase, a signature), read with a bound; devices and FIFOs refused."""
    p = Path(path)
    try:
        st = os.stat(p)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{what} {p} is not a regular file")
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{what} {p} not found") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(f"{what} {p} is over {limit} bytes")
    return data


def _read_pem(path: str | os.PathLike[str], what: str) -> bytes:
    return read_small(path, what)


def _check_signing_type(key: Any, origin: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return key
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and key.curve.name in (
        "secp256r1", "secp384r1", "secp521r1",
    ):  # fmt: skip
        return key
    raise InputError(f"{origin}: unsupported key type (Ed25519, or ECDSA on P-256/P-384/P-521)")


def load_private_key(path: str | os.PathLike[str], password: bytes | None = None) -> Any:
    """An Ed25519 or ECDSA private key from PEM."""
    from cryptography.hazmat.primitives import serialization as ser

    data = _read_pem(path, "private key")
    try:
        key = ser.load_pem_private_key(data, password)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: not a usable PEM private key ({str(exc).splitlines()[0]})") from None
    return _check_signing_type(key, str(path))


def load_public_key(path: str | os.PathLike[str]) -> Any:
    """An Ed25519 or ECDSA public key from PEM (a private key file is accepted too: its public half is used)."""
    from cryptography.hazmat.primitives import serialization as ser

    data = _read_pem(path, "public key")
    try:
        key: Any = ser.load_pem_public_key(data)
    except ValueError:
        try:
            key = ser.load_pem_private_key(data, None).public_key()
        except (ValueError, TypeError):
            raise InputError(f"{path}: not a PEM public key") from None
    return _check_signing_type(key, str(path))
