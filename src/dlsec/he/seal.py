"""CKKS through TenSEAL: keys, (de)serialization, encryption, and the SEAL backend of the executor.

TenSEAL's high-level vectors cannot rescale on demand, rotate by an arbitrary step, or use keys for chosen
rotations only, so the evaluation uses TenSEAL's bindings of SEAL itself (``tenseal.sealapi``) on the SEAL context
a TenSEAL :class:`tenseal.Context` wraps. Keys:

* :class:`SecretKeys` (the client's): a TenSEAL context *with* its secret key, serialized with TenSEAL's own
  ``serialize(save_secret_key=True)``. It never leaves the client.
* :class:`EvalKeys` (the server's): the TenSEAL context serialized *without* secret key, public key, relin or
  Galois keys (parameters only), plus SEAL's seeded serializations of the relinearization key and of the Galois
  keys of exactly the rotations the plan performs (SEAL's seeded form stores half of each key as a PRNG seed).
  Loading refuses any context that holds a secret key.

Inputs are encrypted with the secret key (symmetric CKKS, seeded: half the upload of public-key encryption).
SEAL's Python bindings serialize to file paths only; bytes go through an anonymous in-memory file (``memfd``,
or a private temporary file where there is none). Nothing is pickled.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from dlsec.errors import ConfigError, InputError
from dlsec.he.params import CKKSParams
from dlsec.he.runtime import WeightKey
from dlsec.he.wire import pack, unpack

__all__ = [
    "EvalKeys",
    "SealBackend",
    "SecretKeys",
    "ciphertext_from_bytes",
    "ciphertext_to_bytes",
    "keygen",
    "rotation_plan",
    "seal_primes",
]

MAX_KEY_BYTES = 1 << 30
"""Largest key bundle read (1 GiB)."""


def tenseal() -> Any:
    """The ``tenseal`` module; :class:`ConfigError` with the install hint when it is missing."""
    try:
        return importlib.import_module("tenseal")
    except ImportError as exc:
        raise ConfigError("encrypted inference needs TenSEAL: pip install 'dlsec[he]'") from exc


def _sealapi() -> Any:
    tenseal()
    return importlib.import_module("tenseal.sealapi")


def _to_bytes(obj: Any) -> bytes:
    """SEAL's own serialization of ``obj`` (anything with ``save(path)``)."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("dlsec-he")
        try:
            obj.save(f"/proc/self/fd/{fd}")
            size = os.fstat(fd).st_size
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    with tempfile.TemporaryDirectory(prefix="dlsec-he-") as d:
        path = os.path.join(d, "obj")
        obj.save(path)
        with open(path, "rb") as f:
            return f.read()


def _from_bytes(obj: Any, seal_context: Any, data: bytes, what: str) -> None:
    """Load SEAL's serialization ``data`` into ``obj``; :class:`InputError` if SEAL rejects it."""
    try:
        if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
            fd = os.memfd_create("dlsec-he")
            try:
                os.write(fd, data)
                obj.load(seal_context, f"/proc/self/fd/{fd}")
            finally:
                os.close(fd)
        else:
            with tempfile.TemporaryDirectory(prefix="dlsec-he-") as d:
                path = os.path.join(d, "obj")
                with open(path, "wb") as f:
                    f.write(data)
                obj.load(seal_context, path)
    except Exception as exc:
        raise InputError(f"invalid {what}: SEAL rejected it ({exc})") from None


def seal_primes(params: CKKSParams) -> list[int]:
    """The primes SEAL picks for ``params`` (``q0 .. qL, P``), without creating keys."""
    s = _sealapi()
    try:
        moduli = s.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_mod_bit_sizes))
    except Exception as exc:
        raise ConfigError(
            f"SEAL finds no primes for N={params.poly_modulus_degree} and bit sizes {list(params.coeff_mod_bit_sizes)} "
            f"({exc}); use a larger scale or ring"
        ) from None
    return [int(m.value()) for m in moduli]


def _params_of(ctx: Any) -> tuple[int, tuple[int, ...]]:
    kd = ctx.seal_context().data.key_context_data().parms()
    return int(kd.poly_modulus_degree()), tuple(int(m.bit_count()) for m in kd.coeff_modulus())


def _check_context(ctx: Any, params: CKKSParams, what: str) -> None:
    n, bits = _params_of(ctx)
    if n != params.poly_modulus_degree or bits != params.coeff_mod_bit_sizes:
        raise InputError(
            f"the {what} is for N={n}, modulus {list(bits)}; the plan needs N={params.poly_modulus_degree}, "
            f"modulus {list(params.coeff_mod_bit_sizes)}"
        )


def naf_steps(step: int, slots: int) -> list[int]:
    """``step`` as a shortest signed sum of powers of two (each as a left rotation mod ``slots``)."""
    best: list[int] | None = None
    for v in (step % slots, step % slots - slots):
        digits, n, j = [], v, 0
        while n:
            if n & 1:
                z = 2 - (n % 4)
                digits.append(z << j)
                n -= z
            n //= 2
            j += 1
        if best is None or len(digits) < len(best):
            best = digits
    return [d % slots for d in best or []]


def rotation_plan(needed: Sequence[int], params: CKKSParams, budget_bytes: int) -> tuple[int, ...]:
    """The rotation keys to generate: the steps the plan needs, or, if their keys exceed ``budget_bytes``, the
    powers of two in both directions (each rotation then composed of its signed binary digits)."""
    slots = params.slots
    steps = sorted({int(s) % slots for s in needed} - {0})
    if len(steps) * params.galois_key_bytes() <= budget_bytes:
        return tuple(steps)
    pows = {1 << j for j in range(slots.bit_length() - 1)}
    used = {d for s in steps for d in naf_steps(s, slots)} & (pows | {slots - p for p in pows})
    return tuple(sorted(used)) if len(used) < len(steps) else tuple(steps)


class SecretKeys:
    """The client's keys: a private TenSEAL context (secret and public key) for ``params``."""

    def __init__(self, params: CKKSParams, context: Any) -> None:
        if not context.is_private():
            raise ConfigError("secret keys need a context that holds the secret key")
        _check_context(context, params, "secret context")
        self.params = params
        self.context = context
        s = _sealapi()
        sc = context.seal_context().data
        self._seal = sc
        self._encoder = s.CKKSEncoder(sc)
        self._encryptor = s.Encryptor(sc, context.secret_key().data)
        self._decryptor = s.Decryptor(sc, context.secret_key().data)

    def to_bytes(self) -> bytes:
        """The secret context (TenSEAL's serialization, secret key included) in a ``secret-context`` container."""
        blob = self.context.serialize(
            save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
        )
        return pack("secret-context", {"params": self.params.to_dict()}, {"context": blob})

    @classmethod
    def from_bytes(cls, data: bytes) -> SecretKeys:
        """Read :meth:`to_bytes`'s output."""
        msg = unpack(data, "secret-context", MAX_KEY_BYTES)
        params = CKKSParams.from_dict(msg.meta.get("params", {}))
        try:
            ctx = tenseal().Context.load(msg.sections["context"], n_threads=1)
        except KeyError:
            raise InputError("secret context message has no context section") from None
        except Exception as exc:
            raise InputError(f"invalid secret context: {exc}") from None
        return cls(params, ctx)

    def encrypt(self, vector: np.ndarray) -> Any:
        """Encrypt a slot vector (length at most ``slots``) at the top level, scale Delta; seeded (symmetric)."""
        s = _sealapi()
        pt = s.Plaintext()
        self._encoder.encode(np.asarray(vector, dtype=np.float64).tolist(), self._seal.first_parms_id(), self.params.scale, pt)
        ct = s.Ciphertext()
        self._encryptor.encrypt_symmetric(pt, ct)
        return ct

    def encrypt_serialized(self, vector: np.ndarray) -> bytes:
        """Like :meth:`encrypt`, but SEAL's seeded serialization (half the size of a full ciphertext)."""
        s = _sealapi()
        pt = s.Plaintext()
        self._encoder.encode(np.asarray(vector, dtype=np.float64).tolist(), self._seal.first_parms_id(), self.params.scale, pt)
        return _to_bytes(self._encryptor.encrypt_symmetric(pt))

    def encrypt_at(self, vector: np.ndarray, level: int, scale: float) -> Any:
        """Encrypt at ``level`` rescales below the top with a chosen scale (encrypted weights)."""
        s = _sealapi()
        cd = self._seal.first_context_data()
        for _ in range(level):
            cd = cd.next_context_data()
        pt = s.Plaintext()
        self._encoder.encode(np.asarray(vector, dtype=np.float64).tolist(), cd.parms_id(), float(scale), pt)
        ct = s.Ciphertext()
        self._encryptor.encrypt_symmetric(pt, ct)
        return ct

    def decrypt(self, ct: Any) -> np.ndarray:
        """All slots of ``ct`` (real parts), unrounded: callers release only rounded values (see plan docs)."""
        s = _sealapi()
        pt = s.Plaintext()
        try:
            self._decryptor.decrypt(ct, pt)
        except Exception as exc:
            raise InputError(f"cannot decrypt: {exc}") from None
        return np.asarray(self._encoder.decode_double(pt), dtype=np.float64)


class EvalKeys:
    """The server's keys: parameters, relinearization key, Galois keys for ``rotations``; never a secret key."""

    def __init__(self, params: CKKSParams, context: Any, relin: Any | None, galois: Any | None, rotations: Sequence[int]) -> None:
        if context.is_private() or context.has_secret_key():
            raise ConfigError("refusing an evaluation context that holds a secret key: send the public evaluation context")
        _check_context(context, params, "evaluation context")
        self.params = params
        self.context = context
        self.relin = relin
        self.galois = galois
        self.rotations = tuple(int(r) for r in rotations)
        self.seal_context = context.seal_context().data
        self._relin_bytes: bytes | None = None
        self._galois_bytes: bytes | None = None

    def to_bytes(self) -> bytes:
        """Parameters-only TenSEAL context + SEAL's seeded relin and Galois keys, in a ``eval-context`` container."""
        ctx = self.context.serialize(save_public_key=False, save_secret_key=False, save_galois_keys=False, save_relin_keys=False)
        sections = {"context": ctx}
        if self.relin is not None:
            sections["relin"] = self._relin_bytes if self._relin_bytes is not None else _to_bytes(self.relin)
        if self.galois is not None:
            sections["galois"] = self._galois_bytes if self._galois_bytes is not None else _to_bytes(self.galois)
        return pack("eval-context", {"params": self.params.to_dict(), "rotations": list(self.rotations)}, sections)

    @classmethod
    def from_bytes(cls, data: bytes, max_bytes: int = MAX_KEY_BYTES) -> EvalKeys:
        """Read :meth:`to_bytes`'s output; refuses a context with a secret key (:class:`ConfigError`)."""
        msg = unpack(data, "eval-context", max_bytes)
        params = CKKSParams.from_dict(msg.meta.get("params", {}))
        rotations = msg.meta.get("rotations", [])
        if not isinstance(rotations, list) or not all(isinstance(r, int) and 0 < r < params.slots for r in rotations):
            raise InputError("invalid rotation list in the evaluation context")
        if "context" not in msg.sections:
            raise InputError("evaluation context message has no context section")
        try:
            ctx = tenseal().Context.load(msg.sections["context"], n_threads=1)
        except Exception as exc:
            raise InputError(f"invalid evaluation context: {exc}") from None
        if ctx.is_private() or ctx.has_secret_key():
            raise ConfigError("refusing an evaluation context that holds a secret key: send the public evaluation context")
        _check_context(ctx, params, "evaluation context")
        s = _sealapi()
        sc = ctx.seal_context().data
        relin = galois = None
        if "relin" in msg.sections:
            relin = s.RelinKeys()
            _from_bytes(relin, sc, msg.sections["relin"], "relinearization key")
        if "galois" in msg.sections:
            galois = s.GaloisKeys()
            _from_bytes(galois, sc, msg.sections["galois"], "Galois keys")
            tool = sc.key_context_data().galois_tool()
            for r in rotations:
                if not galois.has_key(tool.get_elt_from_step(r)):
                    raise InputError(f"the Galois keys lack rotation {r} the context lists")
        elif rotations:
            raise InputError("the evaluation context lists rotations but holds no Galois keys")
        keys = cls(params, ctx, relin, galois, rotations)
        if "relin" in msg.sections:
            keys._relin_bytes = msg.sections["relin"]
        if "galois" in msg.sections:
            keys._galois_bytes = msg.sections["galois"]
        return keys


def keygen(params: CKKSParams, rotations: Sequence[int], relin: bool = True) -> tuple[SecretKeys, EvalKeys]:
    """Fresh keys for ``params``: the client's secret keys and the server's evaluation keys (only ``rotations``)."""
    ts = tenseal()
    s = _sealapi()
    try:
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree, coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes), n_threads=1)
    except Exception as exc:
        raise ConfigError(f"SEAL refused the parameters {params.to_dict()}: {exc}") from exc
    ctx.global_scale = params.scale
    secret = SecretKeys(params, ctx)
    sc = ctx.seal_context().data
    gen = s.KeyGenerator(sc, ctx.secret_key().data)
    relin_bytes = _to_bytes(gen.create_relin_keys()) if relin else None
    steps = sorted({int(r) % params.slots for r in rotations} - {0})
    galois_bytes = None
    if steps:
        tool = sc.key_context_data().galois_tool()
        galois_bytes = _to_bytes(gen.create_galois_keys([tool.get_elt_from_step(r) for r in steps]))
    public = ts.Context.load(
        ctx.serialize(save_public_key=False, save_secret_key=False, save_galois_keys=False, save_relin_keys=False), n_threads=1
    )
    sc_pub = public.seal_context().data
    rk = gk = None
    if relin_bytes is not None:
        rk = s.RelinKeys()
        _from_bytes(rk, sc_pub, relin_bytes, "relinearization key")
    if galois_bytes is not None:
        gk = s.GaloisKeys()
        _from_bytes(gk, sc_pub, galois_bytes, "Galois keys")
    ev = EvalKeys(params, public, rk, gk, steps)
    if relin_bytes is not None:
        ev._relin_bytes = relin_bytes
    if galois_bytes is not None:
        ev._galois_bytes = galois_bytes
    return secret, ev


def ciphertext_to_bytes(ct: Any) -> bytes:
    """SEAL's serialization of a ciphertext."""
    return _to_bytes(ct)


def ciphertext_from_bytes(keys: EvalKeys | SecretKeys, data: bytes) -> Any:
    """Load a ciphertext for ``keys``' parameters; :class:`InputError` if SEAL rejects it."""
    s = _sealapi()
    ct = s.Ciphertext()
    sc = keys.seal_context if isinstance(keys, EvalKeys) else keys._seal
    _from_bytes(ct, sc, data, "ciphertext")
    return ct


class SealBackend:
    """The executor's operations on SEAL ciphertexts.

    Weights come either from ``plain`` (a function giving the plaintext slot vector of a weight key; encoded at
    the level and scale of the ciphertext it multiplies, and kept in ``cache`` when one is given: a plaintext
    depends only on the parameters, so the cache serves every client) or from ``encrypted`` (ciphertexts the owner
    encrypted at the level and scale the plan prescribes: ciphertext-ciphertext products, relinearized).
    """

    def __init__(
        self,
        keys: EvalKeys,
        plain: Callable[[WeightKey], np.ndarray] | None = None,
        encrypted: Mapping[WeightKey, Any] | None = None,
        cache: dict[WeightKey, tuple[Any, Any, float]] | None = None,
    ) -> None:
        s = _sealapi()
        self._s = s
        self.keys = keys
        self.params = keys.params
        self.sc = keys.seal_context
        self.ev = s.Evaluator(self.sc)
        self.encoder = s.CKKSEncoder(self.sc)
        self.plain = plain
        self.encrypted = encrypted
        self.cache = cache
        self.delta = keys.params.scale
        self.slots = keys.params.slots
        self.available = set(keys.rotations)

    def _q_last(self, ct: Any) -> float:
        return float(self.sc.get_context_data(ct.parms_id()).parms().coeff_modulus()[-1].value())

    def _encode(self, values: Any, parms_id: Any, scale: float) -> Any:
        pt = self._s.Plaintext()
        self.encoder.encode(values, parms_id, scale, pt)
        return pt

    def _weight_pt(self, key: WeightKey, parms_id: Any, scale: float) -> Any:
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and hit[1] == parms_id and hit[2] == scale:
                return hit[0]
        assert self.plain is not None
        pt = self._encode(np.asarray(self.plain(key), dtype=np.float64).tolist(), parms_id, scale)
        if self.cache is not None:
            self.cache[key] = (pt, parms_id, scale)
        return pt

    def _weight_ct(self, key: WeightKey, parms_id: Any, scale: float) -> Any:
        assert self.encrypted is not None
        w = self.encrypted.get(key)
        if w is None:
            raise InputError(f"the encrypted weights lack {key}")
        if w.parms_id() != parms_id or abs(w.scale - scale) > 1e-9 * scale:
            raise InputError(f"encrypted weight {key} is not at the level and scale the plan needs")
        return w

    def mul_w(self, ct: Any, key: WeightKey, target: float | None = None) -> Any:
        """See :meth:`~dlsec.he.runtime.Backend.mul_w`."""
        scale = self._q_last(ct) * (target or self.delta) / ct.scale
        out = self._s.Ciphertext()
        if self.encrypted is not None:
            self.ev.multiply(ct, self._weight_ct(key, ct.parms_id(), scale), out)
        else:
            self.ev.multiply_plain(ct, self._weight_pt(key, ct.parms_id(), scale), out)
        return out

    def add_w(self, ct: Any, key: WeightKey) -> Any:
        """See :meth:`~dlsec.he.runtime.Backend.add_w`."""
        if self.encrypted is not None:
            self.ev.add_inplace(ct, self._weight_ct(key, ct.parms_id(), ct.scale))
        else:
            self.ev.add_plain_inplace(ct, self._weight_pt(key, ct.parms_id(), ct.scale))
        return ct

    def mul_scalar(self, ct: Any, value: float, target: float | None = None) -> Any:
        """See :meth:`~dlsec.he.runtime.Backend.mul_scalar`."""
        scale = self._q_last(ct) * (target or self.delta) / ct.scale
        out = self._s.Ciphertext()
        self.ev.multiply_plain(ct, self._encode(float(value), ct.parms_id(), scale), out)
        return out

    def add_scalar(self, ct: Any, value: float) -> Any:
        """See :meth:`~dlsec.he.runtime.Backend.add_scalar`."""
        self.ev.add_plain_inplace(ct, self._encode(float(value), ct.parms_id(), ct.scale))
        return ct

    def add(self, a: Any, b: Any) -> Any:
        """See :meth:`~dlsec.he.runtime.Backend.add`."""
        self.ev.add_inplace(a, b)
        return a

    def rotate(self, ct: Any, step: int) -> Any:
        """See :meth:`~dlsec.he.runtime.Backend.rotate`."""
        step %= self.slots
        if step == 0:
            return ct
        parts = [step] if step in self.available else naf_steps(step, self.slots)
        if self.keys.galois is None or any(p not in self.available for p in parts):
            raise ConfigError(f"no Galois key for rotation {step}")
        cur = ct
        for p in parts:
            out = self._s.Ciphertext()
            self.ev.rotate_vector(cur, p, self.keys.galois, out)
            cur = out
        return cur

    def relin(self, ct: Any) -> Any:
        """See :meth:`~dlsec.he.runtime.Backend.relin`."""
        if ct.size() > 2:
            if self.keys.relin is None:
                raise ConfigError("the evaluation keys hold no relinearization key")
            self.ev.relinearize_inplace(ct, self.keys.relin)
        return ct

    def rescale(self, ct: Any, target: float | None = None) -> Any:
        """See :meth:`~dlsec.he.runtime.Backend.rescale`."""
        out = self._s.Ciphertext()
        self.ev.rescale_to_next(ct, out)
        if target is not None:
            if abs(out.scale - target) > 1e-6 * target:
                raise InputError("ciphertext scale drifted from the plan's (wrong input scale?)")
            out.scale = target
        return out

    def square(self, ct: Any) -> Any:
        """See :meth:`~dlsec.he.runtime.Backend.square`."""
        out = self._s.Ciphertext()
        self.ev.square(ct, out)
        return self.rescale(self.relin(out))

    def align(self, ct: Any, ref: Any) -> Any:
        """See :meth:`~dlsec.he.runtime.Backend.align`."""
        self.ev.mod_switch_to_inplace(ct, ref.parms_id())
        return ct

    def scale_of(self, ct: Any) -> float:
        """See :meth:`~dlsec.he.runtime.Backend.scale_of`."""
        return float(ct.scale)
