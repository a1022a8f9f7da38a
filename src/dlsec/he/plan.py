"""The compiled plan: what the client encrypts, what the server computes, what it costs, and the keys it needs.

A :class:`Plan` holds the lowered model (:mod:`dlsec.he.ir`), the CKKS parameters (:mod:`dlsec.he.params`) and,
in ``single`` mode, the slot layout (:mod:`dlsec.he.layout`). Everything it reports (:class:`PlanReport`: levels,
rotations, key sizes, bytes on the wire, estimated latency) is known before any key exists. Its
:class:`ClientPlan` (``plan.client``) is the part a client needs, with no weights: parameters, input gathers,
output slots, rotation list and a fingerprint binding client and server to the same plan.

Two packings:

* ``single`` (latency): one sample per query; its (expanded) features in the slots of one or a few ciphertexts;
  linear maps by diagonals with baby-step giant-step rotations (see :mod:`dlsec.he.layout`).
* ``batch`` (throughput): slot ``j`` of ciphertext ``i`` holds feature ``i`` of sample ``j``: a query carries up to
  ``N / 2`` samples, a dense layer is a plaintext-scalar multiply-accumulate over ciphertexts and needs no rotation.
  With ``batch_size`` below ``N / 2``, the empty slots hold more features (:class:`~dlsec.he.runtime.BatchPacking`):
  fewer products per query, a few block rotations.

Two weight modes: (a) plaintext weights on the server; (b) ``encrypted_weights``: the model owner (the key
holder) encrypts every weight vector at the level and scale the plan prescribes (:meth:`Plan.encrypt_weights`),
the host evaluates with ciphertext-ciphertext products (:meth:`Plan.without_weights` is all it needs besides them),
so it sees neither weights nor inputs. Single mode only. It assumes one key holder: the owner of the weights also
encrypts the inputs and decrypts the outputs (one CKKS key cannot serve two mutually distrusting parties).

Release of decrypted values (IND-CPA-D): Li and Micciancio (EUROCRYPT 2021) showed that a CKKS decryption leaks
the secret key through its approximation error if it is handed to anyone else as is. Decrypted outputs are
therefore never returned raw: :meth:`ClientPlan.decrypt` rounds them to a grid of ``2 ** -release_bits``
(default 12 bits, about 2.4e-4, far above the CKKS error of these plans, about 1e-6) and can first add Gaussian
noise of standard deviation ``release_noise`` (noise flooding, the provable countermeasure of Li, Micciancio,
Schultz and Sorrell, 2022, at a cost in precision). Rounding removes the error's low-order bits that the attack
reads; it is not a proof, so outputs meant for third parties should use flooding with a noise well above the
CKKS error.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlsec.errors import ConfigError, DataError, InputError, ModelError
from dlsec.he.ir import Affine, Op, Quartic, Square, depth
from dlsec.he.layout import SingleLayout, plan_single, rotation_steps
from dlsec.he.params import CKKSParams
from dlsec.he.runtime import (
    BatchPacking,
    MetaBackend,
    WeightKey,
    batch_weights,
    run_batch,
    run_single,
    single_weights,
    weight_vector,
)
from dlsec.he.wire import pack, unpack

__all__ = [
    "CheckReport",
    "ClientPlan",
    "Encrypted",
    "EncryptedWeights",
    "KeyPair",
    "MODES",
    "Plan",
    "PlanReport",
]

MODES = ("batch", "single")
_FORMAT = "dlsec-he-plan/1"
_CLIENT_FORMAT = "dlsec-he-client/1"
MAX_PLAN_BYTES = 1 << 31
MAX_GROUPS = 4096
"""Most queries (sample groups) one message may carry."""


# ---------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PlanReport:
    """What a plan costs, known before any key exists (sizes are SEAL's seeded serializations, estimated)."""

    mode: str
    encrypted_weights: bool
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    levels_used: int
    levels_available: int
    slots: int
    samples_per_query: int
    input_ciphertexts: int
    output_ciphertexts: int
    rotation_steps: tuple[int, ...]
    galois_keys: tuple[int, ...]
    galois_key_bytes: int
    relin_key_bytes: int
    upload_bytes: int
    download_bytes: int
    encrypted_weight_bytes: int
    rotations_per_query: int
    products_per_query: int
    estimated_ms: float
    key_budget_bytes: int

    @property
    def evaluation_key_bytes(self) -> int:
        """Galois plus relinearization keys: what the server receives once per client."""
        return self.galois_key_bytes + self.relin_key_bytes

    @property
    def over_key_budget(self) -> bool:
        """Whether the Galois keys exceed the key budget: no smaller set of keys (powers of two included) serves
        this plan, so the budget is a preference, not a bound."""
        return self.galois_key_bytes > self.key_budget_bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["evaluation_key_bytes"] = self.evaluation_key_bytes
        return d


@dataclass(frozen=True)
class CheckReport:
    """The differential check: encrypted outputs against the plaintext HE-friendly torch model."""

    samples: int
    agreement: float
    max_logit_error: float
    mean_logit_error: float
    seconds_per_query: float
    min_agreement: float
    max_error: float

    @property
    def passed(self) -> bool:
        """Both thresholds met."""
        return self.agreement >= self.min_agreement and self.max_logit_error <= self.max_error

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "passed": self.passed}


@dataclass(frozen=True, eq=False)
class KeyPair:
    """The client's secret keys and the server's evaluation keys from one :meth:`ClientPlan.keygen`."""

    secret: Any
    evaluation: Any
    seconds: float


# ---------------------------------------------------------------------------------------------------- containers


@dataclass(frozen=True, eq=False)
class Encrypted:
    """Ciphertexts of one or more queries: ``groups[q]`` are query ``q``'s ciphertexts, ``samples[q]`` its samples.

    ``blobs`` instead of ``groups`` when built from serialized (seeded) ciphertexts; ``fingerprint`` names the plan.
    """

    kind: str
    fingerprint: str
    samples: tuple[int, ...]
    groups: tuple[tuple[Any, ...], ...] = ()
    blobs: tuple[tuple[bytes, ...], ...] = ()

    def to_bytes(self) -> bytes:
        """A ``ciphertexts`` container (SEAL serializations)."""
        from dlsec.he.seal import ciphertext_to_bytes

        blobs = self.blobs or tuple(tuple(ciphertext_to_bytes(c) for c in g) for g in self.groups)
        sections = {f"{q}.{k}": b for q, g in enumerate(blobs) for k, b in enumerate(g)}
        meta = {"kind": self.kind, "fingerprint": self.fingerprint, "samples": list(self.samples), "counts": [len(g) for g in blobs]}
        return pack("ciphertexts", meta, sections)

    @staticmethod
    def from_bytes(data: bytes, max_bytes: int | None = None) -> Encrypted:
        """Parse a container (ciphertexts stay serialized until :meth:`load`)."""
        msg = unpack(data, "ciphertexts", max_bytes)
        m = msg.meta
        counts, samples = m.get("counts"), m.get("samples")
        if (
            not isinstance(counts, list)
            or not isinstance(samples, list)
            or len(counts) != len(samples)
            or not 0 < len(counts) <= MAX_GROUPS
            or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in counts + samples)
            or not isinstance(m.get("fingerprint"), str)
            or m.get("kind") not in ("input", "output")
        ):
            raise InputError("malformed ciphertext message")
        blobs = []
        for q, c in enumerate(counts):
            try:
                blobs.append(tuple(msg.sections[f"{q}.{k}"] for k in range(c)))
            except KeyError:
                raise InputError("malformed ciphertext message: missing ciphertext") from None
        if sum(counts) != len(msg.sections):
            raise InputError("malformed ciphertext message: unexpected sections")
        return Encrypted(str(m["kind"]), str(m["fingerprint"]), tuple(samples), blobs=tuple(blobs))

    def load(self, keys: Any) -> Encrypted:
        """The same with every ciphertext loaded for ``keys``' parameters."""
        if self.groups:
            return self
        from dlsec.he.seal import ciphertext_from_bytes

        groups = tuple(tuple(ciphertext_from_bytes(keys, b) for b in g) for g in self.blobs)
        return Encrypted(self.kind, self.fingerprint, self.samples, groups=groups)


@dataclass(frozen=True, eq=False)
class EncryptedWeights:
    """Mode (b): the owner's ciphertext of every weight vector, keyed by ``(step, tag, row)``."""

    fingerprint: str
    weights: Mapping[WeightKey, Any]

    def to_bytes(self) -> bytes:
        """A ``weights`` container."""
        from dlsec.he.seal import ciphertext_to_bytes

        sections = {f"{s}.{t}.{r}": ciphertext_to_bytes(c) for (s, t, r), c in self.weights.items()}
        return pack("weights", {"fingerprint": self.fingerprint}, sections)

    @staticmethod
    def from_bytes(data: bytes, keys: Any, max_bytes: int | None = None) -> EncryptedWeights:
        """Parse and load for ``keys``' parameters."""
        from dlsec.he.seal import ciphertext_from_bytes

        msg = unpack(data, "weights", max_bytes)
        out: dict[WeightKey, Any] = {}
        for name, blob in msg.sections.items():
            parts = name.split(".")
            if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
                raise InputError("malformed encrypted weights")
            out[(int(parts[0]), parts[1], int(parts[2]))] = ciphertext_from_bytes(keys, blob)
        return EncryptedWeights(str(msg.meta.get("fingerprint", "")), out)


# ---------------------------------------------------------------------------------------------------- client plan


class ClientPlan:
    """What a client needs: parameters, input packing, output slots, rotations; no weights.

    ``gathers`` (single mode) is ``(K, slots)``: the input feature written in each slot of each input ciphertext
    (-1: zero); ``out_slots`` where the logits land. In batch mode ``group`` features share a ciphertext
    (:class:`~dlsec.he.runtime.BatchPacking`).
    """

    def __init__(
        self,
        *,
        mode: str,
        params: CKKSParams,
        input_shape: Sequence[int],
        n_out: int,
        gathers: np.ndarray | None,
        out_slots: np.ndarray | None,
        galois: Sequence[int],
        relin: bool,
        release_bits: int,
        release_noise: float,
        encrypted_weights: bool,
        group: int = 1,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 0 <= release_bits <= 40:
            raise ConfigError(f"release_bits must be 0 to 40, got {release_bits}")
        if not (release_noise >= 0 and math.isfinite(release_noise)):
            raise ConfigError(f"release_noise must be a non-negative number, got {release_noise}")
        self.mode = mode
        self.params = params
        self.input_shape = tuple(int(s) for s in input_shape)
        self.n_in = int(math.prod(self.input_shape))
        self.n_out = int(n_out)
        self.gathers = gathers
        self.out_slots = out_slots
        self.galois = tuple(int(g) for g in galois)
        self.relin = bool(relin)
        self.release_bits = int(release_bits)
        self.release_noise = float(release_noise)
        self.encrypted_weights = bool(encrypted_weights)
        if group < 1 or params.slots % group:
            raise ConfigError(f"group must divide the {params.slots} slots, got {group}")
        self.packing = BatchPacking(params.slots, int(group))
        self.fingerprint = hashlib.sha256(json.dumps(self._spec(), sort_keys=True).encode()).hexdigest()[:32]

    @property
    def input_ciphertexts(self) -> int:
        """Ciphertexts per query."""
        if self.mode == "single" and self.gathers is not None:
            return len(self.gathers)
        return self.packing.input_ciphertexts(self.n_in)

    @property
    def output_ciphertexts(self) -> int:
        """Ciphertexts per answer."""
        return 1 if self.mode == "single" else self.packing.groups(self.n_out) if self.packing.group > 1 else self.n_out

    @property
    def samples_per_query(self) -> int:
        """Samples per query."""
        return 1 if self.mode == "single" else self.packing.block

    def _spec(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "params": self.params.to_dict(),
            "input_shape": list(self.input_shape),
            "n_out": self.n_out,
            "gathers": self.gathers.tolist() if self.gathers is not None else None,
            "out_slots": self.out_slots.tolist() if self.out_slots is not None else None,
            "galois": list(self.galois),
            "relin": self.relin,
            "release_bits": self.release_bits,
            "release_noise": self.release_noise,
            "encrypted_weights": self.encrypted_weights,
            "group": self.packing.group,
        }

    def to_json(self) -> str:
        """The client spec as JSON (no weights)."""
        return json.dumps({"format": _CLIENT_FORMAT, **self._spec(), "fingerprint": self.fingerprint})

    @classmethod
    def from_json(cls, text: str | bytes) -> ClientPlan:
        """Parse :meth:`to_json`'s output, checking the fingerprint."""
        try:
            d = json.loads(text)
            if d.get("format") != _CLIENT_FORMAT:
                raise ValueError(f"format {d.get('format')!r}")
            params = CKKSParams.from_dict(d["params"])
            gathers = np.asarray(d["gathers"], dtype=np.int64) if d["gathers"] is not None else None
            out_slots = np.asarray(d["out_slots"], dtype=np.int64) if d["out_slots"] is not None else None
            plan = cls(
                mode=str(d["mode"]),
                params=params,
                input_shape=[int(s) for s in d["input_shape"]],
                n_out=int(d["n_out"]),
                gathers=gathers,
                out_slots=out_slots,
                galois=[int(g) for g in d["galois"]],
                relin=bool(d["relin"]),
                release_bits=int(d["release_bits"]),
                release_noise=float(d["release_noise"]),
                encrypted_weights=bool(d["encrypted_weights"]),
                group=int(d.get("group", 1)),
            )
        except (ConfigError, InputError):
            raise
        except Exception as exc:
            raise InputError(f"not a dlsec HE client plan: {exc}") from None
        if plan.fingerprint != d.get("fingerprint"):
            raise InputError("client plan fingerprint mismatch (corrupted or altered)")
        if plan.mode == "single" and (gathers is None or out_slots is None or gathers.ndim != 2 or gathers.shape[1] != params.slots):
            raise InputError("client plan: single mode needs gathers (K, slots) and out_slots")
        return plan

    # keys ---------------------------------------------------------------------------------------------------

    def keygen(self) -> KeyPair:
        """Fresh keys: a secret context for the client, evaluation keys (relin, the plan's rotations) for the server."""
        from dlsec.he.seal import keygen

        t = time.process_time()
        secret, evaluation = keygen(self.params, self.galois, relin=self.relin)
        return KeyPair(secret, evaluation, time.process_time() - t)

    def check_keys(self, keys: Any) -> None:
        """Raise :class:`ConfigError` unless ``keys`` (secret or evaluation) match the plan's parameters."""
        if getattr(keys, "params", None) != self.params:
            raise ConfigError("the keys were made for other CKKS parameters than this plan's; run keygen for this plan")
        ev_rot = getattr(keys, "rotations", None)
        if ev_rot is not None and not set(self.galois) <= set(ev_rot):
            raise ConfigError("the evaluation keys lack rotations this plan needs; run keygen for this plan")

    # packing ------------------------------------------------------------------------------------------------

    def _flat(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        arr = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
        if arr.ndim < 1 or tuple(arr.shape[1:]) != self.input_shape:
            if tuple(arr.shape) == self.input_shape:
                arr = arr[None]
            else:
                raise DataError(f"the plan takes inputs of shape {self.input_shape}, got {tuple(arr.shape)}")
        if len(arr) == 0:
            raise DataError("no inputs to encrypt")
        if not np.isfinite(arr).all():
            raise DataError("inputs contain NaN or infinite values")
        return arr.reshape(len(arr), -1)

    def pack_vectors(self, x: torch.Tensor | np.ndarray) -> list[tuple[int, list[np.ndarray]]]:
        """The slot vectors to encrypt: ``[(samples, [vector per ciphertext]), ...]``, one entry per query."""
        flat = self._flat(x)
        out = []
        if self.mode == "single":
            assert self.gathers is not None
            g = self.gathers
            for row in flat:
                out.append((1, [np.where(gk >= 0, row[np.maximum(gk, 0)], 0.0) for gk in g]))
        else:
            block = self.packing.block
            for start in range(0, len(flat), block):
                chunk = flat[start : start + block]
                out.append((len(chunk), self.packing.pack(chunk)))
        return out

    def encrypt(self, x: torch.Tensor | np.ndarray, keys: Any, serialized: bool = False) -> Encrypted:
        """Encrypt inputs ``x`` (N, *input_shape) with the secret keys; ``serialized`` keeps seeded bytes (upload)."""
        self.check_keys(keys)
        groups, blobs, samples = [], [], []
        for n, vecs in self.pack_vectors(x):
            samples.append(n)
            if serialized:
                blobs.append(tuple(keys.encrypt_serialized(v) for v in vecs))
            else:
                groups.append(tuple(keys.encrypt(v) for v in vecs))
        return Encrypted("input", self.fingerprint, tuple(samples), groups=tuple(groups), blobs=tuple(blobs))

    def decrypt(self, enc: Encrypted, keys: Any) -> np.ndarray:
        """Logits ``(N, n_out)`` of an output, rounded (and flooded) for release; see the module docstring."""
        self.check_keys(keys)
        if enc.kind != "output":
            raise InputError("can only decrypt an output")
        if enc.fingerprint != self.fingerprint:
            raise InputError("the ciphertexts were computed with another plan")
        enc = enc.load(keys)
        rows = []
        for n, group in zip(enc.samples, enc.groups, strict=True):
            if self.mode == "single":
                assert self.out_slots is not None
                if len(group) != 1:
                    raise InputError("a single-mode output is one ciphertext")
                rows.append(keys.decrypt(group[0])[self.out_slots][None])
            else:
                if len(group) != self.output_ciphertexts or not 0 < n <= self.samples_per_query:
                    raise InputError("malformed batch-mode output")
                rows.append(self.packing.unpack([keys.decrypt(c) for c in group], self.n_out, n))
        return self.release(np.concatenate(rows))

    def release(self, values: np.ndarray) -> np.ndarray:
        """Flood (when ``release_noise > 0``) and round to ``2 ** -release_bits``: the only values ever returned."""
        v = np.asarray(values, dtype=np.float64)
        if self.release_noise > 0:
            rng = np.random.default_rng(secrets.randbits(128))
            v = v + rng.normal(0.0, self.release_noise, v.shape)
        q = float(2**self.release_bits)
        return np.round(v * q) / q


# ---------------------------------------------------------------------------------------------------- plan


def _cost_ms(op: str, level: int, params: CKKSParams) -> float:
    """Per-operation cost model (milliseconds), fitted on SEAL through TenSEAL at N = 8192 on a 2-core VM."""
    primes = len(params.coeff_mod_bit_sizes) - 1 - level
    total = len(params.coeff_mod_bit_sizes)
    n = params.poly_modulus_degree
    f = (n / 8192) * (math.log2(n) / 13)
    per = {"mul": 0.1, "cmul": 0.35, "encode": 0.23, "add": 0.03, "rescale": 0.25}
    if op in per:
        return per[op] * primes * f
    if op in ("rot", "relin", "conj"):
        return 0.2 * primes * total * f
    return 0.0


class Plan:
    """A compiled model: lowered operations, CKKS parameters, packing and keys' shape (see the module docstring).

    Built by :func:`dlsec.he.compile`; ``keygen``/``encrypt``/``decrypt`` are the client's (they keep the keys of
    the last :meth:`keygen` as defaults), ``evaluate`` the server's.
    """

    def __init__(
        self,
        ops: Sequence[Op],
        params: CKKSParams,
        mode: str = "batch",
        *,
        input_shape: Sequence[int],
        encrypted_weights: bool = False,
        expand_input: bool = True,
        max_input_ciphertexts: int = 8,
        key_budget_bytes: int = 16 << 20,
        release_bits: int = 12,
        release_noise: float = 0.0,
        weights_public: bool = True,
        check: CheckReport | None = None,
        batch_size: int | None = None,
    ) -> None:
        from dlsec.he.seal import rotation_plan

        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if encrypted_weights and mode != "single":
            raise ConfigError("encrypted weights need mode='single'")
        if not ops or not isinstance(ops[0], Affine) or not isinstance(ops[-1], Affine):
            raise ConfigError("a plan starts and ends with an affine map")
        need = depth(ops)
        if need > params.depth:
            raise ConfigError(f"the model needs {need} levels but the parameters hold {params.depth}")
        self.ops = list(ops)
        self.params = params
        self.mode = mode
        self.encrypted_weights = encrypted_weights
        self.expand_input = expand_input
        self.max_input_ciphertexts = int(max_input_ciphertexts)
        self.key_budget_bytes = int(key_budget_bytes)
        self.weights_public = weights_public
        self.check: CheckReport | None = check
        self.layout: SingleLayout | None = None
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.packing = BatchPacking.for_batch(params.slots, batch_size if mode == "batch" else None)
        galois: tuple[int, ...] = tuple(self.packing.rotations())
        if mode == "single":
            self.layout = plan_single(
                self.ops, params.slots, expand_input=expand_input, max_input_ciphertexts=self.max_input_ciphertexts
            )
            galois = rotation_plan(rotation_steps(self.layout.steps), params, self.key_budget_bytes)
        relin = encrypted_weights or any(isinstance(op, (Square, Quartic)) for op in self.ops)
        self.client = ClientPlan(
            mode=mode,
            params=params,
            input_shape=input_shape,
            n_out=self._affine(-1).n_out,
            gathers=self.layout.gathers if self.layout else None,
            out_slots=self.layout.out.slots if self.layout else None,
            galois=galois,
            relin=relin,
            release_bits=release_bits,
            release_noise=release_noise,
            encrypted_weights=encrypted_weights,
            group=self.packing.group,
        )
        self.keys: KeyPair | None = None
        self.weights: EncryptedWeights | None = None
        self._plaintexts: dict[WeightKey, tuple[Any, Any, float]] = {}
        self.report = self._report()

    # ---------------------------------------------------------------- properties

    def _affine(self, index: int) -> Affine:
        op = self.ops[index]
        assert isinstance(op, Affine)
        return op

    @property
    def fingerprint(self) -> str:
        """Binds client, server and encrypted weights to this plan."""
        return self.client.fingerprint

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample input shape."""
        return self.client.input_shape

    def _meta(self, encrypted: bool) -> MetaBackend:
        from dlsec.he.seal import seal_primes

        primes = seal_primes(self.params)[:-1]
        meta = MetaBackend(primes, self.params.scale)
        meta.encrypted = encrypted
        if self.layout is not None:
            run_single(self.layout.steps, meta, [meta.fresh() for _ in range(len(self.layout.gathers))])
        else:
            run_batch(self.ops, meta, [meta.fresh() for _ in range(self.client.input_ciphertexts)], self.packing)
        return meta

    def _report(self) -> PlanReport:
        p = self.params
        meta = self._meta(self.encrypted_weights)
        per_key = p.galois_key_bytes()
        c = self.client
        n_in = c.input_ciphertexts
        n_out = c.output_ciphertexts
        out_level = meta.max_level
        wf = p.wire_factor
        up = int(n_in * p.ciphertext_bytes() // 2 * wf)
        down = int(n_out * p.ciphertext_bytes(out_level) * wf)
        enc_w = int(sum(p.ciphertext_bytes(lv) for lv, _ in meta.requests.values()) * wf) if self.encrypted_weights else 0
        ms = sum(cnt * _cost_ms(op, lv, p) for (op, lv), cnt in meta.counts.items())
        ms += n_in * 1.0 * (len(p.coeff_mod_bit_sizes) - 1) * (p.poly_modulus_degree / 8192)  # encrypt
        ms += n_out * 0.3 * (len(p.coeff_mod_bit_sizes) - 1 - out_level) * (p.poly_modulus_degree / 8192)  # decrypt
        rot = sum(cnt for (op, _), cnt in meta.counts.items() if op == "rot")
        prods = sum(cnt for (op, _), cnt in meta.counts.items() if op in ("mul", "cmul"))
        return PlanReport(
            mode=self.mode,
            encrypted_weights=self.encrypted_weights,
            poly_modulus_degree=p.poly_modulus_degree,
            coeff_mod_bit_sizes=p.coeff_mod_bit_sizes,
            scale_bits=p.scale_bits,
            levels_used=meta.max_level,
            levels_available=p.depth,
            slots=p.slots,
            samples_per_query=c.samples_per_query,
            input_ciphertexts=n_in,
            output_ciphertexts=n_out,
            rotation_steps=tuple(rotation_steps(self.layout.steps)) if self.layout else tuple(self.packing.rotations()),
            galois_keys=c.galois,
            galois_key_bytes=len(c.galois) * per_key,
            relin_key_bytes=per_key if c.relin else 0,
            upload_bytes=up,
            download_bytes=down,
            encrypted_weight_bytes=enc_w,
            rotations_per_query=rot,
            products_per_query=prods,
            key_budget_bytes=self.key_budget_bytes,
            estimated_ms=round(ms, 1),
        )

    # ---------------------------------------------------------------- client side

    def keygen(self) -> KeyPair:
        """Fresh keys (kept as this plan's defaults); see :meth:`ClientPlan.keygen`."""
        self.keys = self.client.keygen()
        return self.keys

    def _secret(self, keys: Any) -> Any:
        if keys is None:
            if self.keys is None:
                raise ConfigError("no keys: call plan.keygen() first or pass keys")
            return self.keys.secret
        return keys.secret if isinstance(keys, KeyPair) else keys

    def _evaluation(self, keys: Any) -> Any:
        if keys is None:
            if self.keys is None:
                raise ConfigError("no keys: call plan.keygen() first or pass keys")
            return self.keys.evaluation
        return keys.evaluation if isinstance(keys, KeyPair) else keys

    def encrypt(self, x: torch.Tensor | np.ndarray, keys: Any = None, serialized: bool = False) -> Encrypted:
        """Encrypt inputs ``x`` (N, *input_shape); see :meth:`ClientPlan.encrypt`."""
        return self.client.encrypt(x, self._secret(keys), serialized)

    def decrypt(self, enc: Encrypted, keys: Any = None) -> np.ndarray:
        """Released logits ``(N, n_out)``; see :meth:`ClientPlan.decrypt`."""
        return self.client.decrypt(enc, self._secret(keys))

    def encrypt_weights(self, keys: Any = None) -> EncryptedWeights:
        """Mode (b), run by the model owner: every weight vector encrypted at the level and scale it is used at."""
        if not self.encrypted_weights:
            raise ConfigError("this plan was compiled with encrypted_weights=False")
        if not self.weights_public:
            raise ConfigError("this plan holds no weights to encrypt")
        secret = self._secret(keys)
        self.client.check_keys(secret)
        assert self.layout is not None
        meta = self._meta(True)
        steps = self.layout.steps
        cts = {k: secret.encrypt_at(weight_vector(steps, k), lv, sc) for k, (lv, sc) in sorted(meta.requests.items())}
        self.weights = EncryptedWeights(self.fingerprint, cts)
        return self.weights

    # ---------------------------------------------------------------- server side

    def check_input(self, enc: Encrypted, keys: Any) -> Encrypted:
        """Load and validate a query (fingerprint, ciphertext counts, level, scale, size); :class:`InputError` if bad."""
        if enc.kind != "input":
            raise InputError("expected input ciphertexts")
        if enc.fingerprint != self.fingerprint:
            raise InputError("the ciphertexts were made for another plan (fingerprint mismatch)")
        want = self.client.input_ciphertexts
        for n, g in zip(enc.samples, enc.groups or enc.blobs, strict=True):
            if len(g) != want:
                raise InputError(f"each query needs {want} input ciphertexts, got {len(g)}")
            if not 0 < n <= self.client.samples_per_query:
                raise InputError(f"a query holds 1 to {self.client.samples_per_query} samples, got {n}")
        enc = enc.load(keys)
        first = keys.seal_context.first_parms_id()
        for g in enc.groups:
            for ct in g:
                if ct.parms_id() != first or ct.size() != 2 or not ct.is_ntt_form() or ct.scale != self.params.scale:
                    raise InputError("input ciphertexts must be fresh: top level, two polynomials, the plan's scale")
        return enc

    def evaluate(self, enc: Encrypted, keys: Any = None, weights: EncryptedWeights | None = None) -> Encrypted:
        """Run the plan on encrypted queries with the evaluation keys (never a secret key)."""
        from dlsec.he.seal import EvalKeys, SealBackend

        ev = self._evaluation(keys)
        if not isinstance(ev, EvalKeys):
            raise ConfigError("evaluate needs the public evaluation keys (EvalKeys), not a secret context")
        self.client.check_keys(ev)
        enc = self.check_input(enc, ev)
        if self.encrypted_weights:
            weights = weights or self.weights
            if weights is None:
                raise ConfigError("this plan evaluates on encrypted weights: pass the owner's EncryptedWeights")
            if weights.fingerprint != self.fingerprint:
                raise InputError("the encrypted weights were made for another plan")
            be = SealBackend(ev, encrypted=weights.weights)
        else:
            if not self.weights_public:
                raise ConfigError("this plan holds no plaintext weights")
            lookup = single_weights(self.layout.steps) if self.layout else batch_weights(self.ops, self.packing)
            be = SealBackend(ev, plain=lookup, cache=self._plaintexts)
        groups = []
        for g in enc.groups:
            if self.layout is not None:
                groups.append((run_single(self.layout.steps, be, list(g)),))
            else:
                groups.append(tuple(run_batch(self.ops, be, list(g), self.packing)))
        return Encrypted("output", self.fingerprint, enc.samples, groups=tuple(groups))

    # ---------------------------------------------------------------- mode (b) host plan

    def without_weights(self) -> Plan:
        """The same plan with every weight replaced by its non-zero pattern: what a mode (b) host holds."""
        ops: list[Op] = []
        for op in self.ops:
            if isinstance(op, Affine):
                ops.append(
                    Affine((np.abs(op.matrix) > 1e-300).astype(np.float64), np.zeros_like(op.bias), op.in_shape, op.out_shape, op.stride, op.name)
                )
            elif isinstance(op, Quartic):
                ops.append(Quartic(np.zeros_like(op.h), np.zeros_like(op.e), op.name))
            else:
                ops.append(op)
        host = self._clone(ops, weights_public=False)
        if host.fingerprint != self.fingerprint:
            raise ModelError("internal error: the weightless plan's layout differs from the plan's")
        return host

    def _clone(self, ops: Sequence[Op], weights_public: bool) -> Plan:
        return Plan(
            ops,
            self.params,
            self.mode,
            input_shape=self.input_shape,
            encrypted_weights=self.encrypted_weights,
            expand_input=self.expand_input,
            max_input_ciphertexts=self.max_input_ciphertexts,
            key_budget_bytes=self.key_budget_bytes,
            release_bits=self.client.release_bits,
            release_noise=self.client.release_noise,
            weights_public=weights_public,
            check=self.check,
            batch_size=self.batch_size,
        )

    # ---------------------------------------------------------------- files

    def save(self, path: str | Path) -> None:
        """One safetensors file: the lowered weights as tensors, everything else as JSON metadata (no pickle)."""
        from safetensors.numpy import save_file

        tensors: dict[str, np.ndarray] = {}
        ops_meta: list[dict[str, Any]] = []
        for i, op in enumerate(self.ops):
            if isinstance(op, Affine):
                tensors[f"ops.{i}.matrix"] = np.ascontiguousarray(op.matrix)
                tensors[f"ops.{i}.bias"] = np.ascontiguousarray(op.bias)
                ops_meta.append(
                    {"kind": "affine", "name": op.name, "in_shape": list(op.in_shape), "out_shape": list(op.out_shape), "stride": list(op.stride) if op.stride else None}
                )
            elif isinstance(op, Square):
                ops_meta.append({"kind": "square", "name": op.name, "size": op.size})
            else:
                tensors[f"ops.{i}.h"] = np.ascontiguousarray(op.h)
                tensors[f"ops.{i}.e"] = np.ascontiguousarray(op.e)
                ops_meta.append({"kind": "quartic", "name": op.name})
        meta: dict[str, Any] = {
            "format": _FORMAT,
            "mode": self.mode,
            "params": self.params.to_dict(),
            "input_shape": list(self.input_shape),
            "options": {
                "encrypted_weights": self.encrypted_weights,
                "expand_input": self.expand_input,
                "max_input_ciphertexts": self.max_input_ciphertexts,
                "key_budget_bytes": self.key_budget_bytes,
                "release_bits": self.client.release_bits,
                "release_noise": self.client.release_noise,
                "weights_public": self.weights_public,
                "batch_size": self.batch_size,
            },
            "ops": ops_meta,
            "check": self.check.to_dict() if self.check else None,
            "fingerprint": self.fingerprint,
        }
        save_file(tensors, str(path), metadata={"dlsec": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a plan written by :meth:`save`; :class:`ModelError` if it is not one or does not re-derive."""
        from safetensors import safe_open

        p = Path(path)
        if not p.is_file():
            raise ModelError(f"plan file not found: {p}")
        if p.stat().st_size > MAX_PLAN_BYTES:
            raise ModelError(f"{p} is over the {MAX_PLAN_BYTES}-byte limit")
        try:
            with safe_open(str(p), framework="numpy") as f:
                meta = json.loads((f.metadata() or {})["dlsec"])
                if meta.get("format") != _FORMAT:
                    raise ValueError(f"format {meta.get('format')!r}")
                ops: list[Op] = []
                for i, om in enumerate(meta["ops"]):
                    if om["kind"] == "affine":
                        stride = tuple(om["stride"]) if om["stride"] else None
                        ops.append(
                            Affine(f.get_tensor(f"ops.{i}.matrix"), f.get_tensor(f"ops.{i}.bias"), tuple(om["in_shape"]), tuple(om["out_shape"]), stride, om["name"])  # type: ignore[arg-type]
                        )
                    elif om["kind"] == "square":
                        ops.append(Square(int(om["size"]), om["name"]))
                    elif om["kind"] == "quartic":
                        ops.append(Quartic(f.get_tensor(f"ops.{i}.h"), f.get_tensor(f"ops.{i}.e"), om["name"]))
                    else:
                        raise ValueError(f"unknown op {om['kind']!r}")
            o = meta["options"]
            chk = meta.get("check")
            check = (
                CheckReport(**{k: v for k, v in chk.items() if k != "passed"}) if isinstance(chk, dict) else None
            )
            plan = cls(
                ops,
                CKKSParams.from_dict(meta["params"]),
                meta["mode"],
                input_shape=meta["input_shape"],
                encrypted_weights=bool(o["encrypted_weights"]),
                expand_input=bool(o["expand_input"]),
                max_input_ciphertexts=int(o["max_input_ciphertexts"]),
                key_budget_bytes=int(o["key_budget_bytes"]),
                release_bits=int(o["release_bits"]),
                release_noise=float(o["release_noise"]),
                weights_public=bool(o["weights_public"]),
                check=check,
                batch_size=int(o["batch_size"]) if o.get("batch_size") is not None else None,
            )
        except (ConfigError, ModelError):
            raise
        except Exception as exc:
            raise ModelError(f"{p} is not a dlsec HE plan: {exc}") from None
        if plan.fingerprint != meta.get("fingerprint"):
            raise ModelError(f"{p}: the plan does not re-derive to its recorded fingerprint (altered or other version)")
        return plan
