"""One executor for every backend: the plan's steps written once against a small set of ciphertext operations.

The same code drives SEAL (:class:`dlsec.he.seal.SealBackend`), an exact float64 slot simulator
(:class:`NumpyBackend`, which also records the largest magnitude any slot reaches, to size the integer headroom
of ``q0``) and a metadata tracker (:class:`MetaBackend`: level and scale only, used to tell the owner of encrypted
weights at which level and scale each weight must be encrypted). So the simulator checks exactly the control flow
the encrypted run executes.

Scale management: every product of a ciphertext of scale ``s`` at a level whose last prime is ``q`` with a
weight is encoded at scale ``q * target / s``, so that after the rescale by ``q`` the scale is ``target`` (the
plan's ``Delta`` after every linear step, or the scale of the other operand for the quartic's ``e x`` term). Scales
then never drift, and sums never mix scales.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from dlsec.he.ir import Affine, Op, Quartic, Square
from dlsec.he.layout import DiagStep, ExpandStep, QuarticStep, SquareStep, Step

__all__ = [
    "Backend",
    "BatchPacking",
    "Meta",
    "MetaBackend",
    "NumpyBackend",
    "WeightKey",
    "batch_weights",
    "run_batch",
    "run_single",
    "single_weights",
    "weight_vector",
]

C = TypeVar("C")

WeightKey = tuple[int, str, int]
"""``(step index, tag, row)``: tags ``w`` (expanded input weights), ``d`` (diagonal), ``b`` (bias), ``h``, ``e``."""


class Backend(Protocol[C]):
    """The ciphertext operations the executor needs (``C`` is the backend's ciphertext type)."""

    delta: float
    """The plan's scale: every linear step's output is pinned to it."""

    def mul_w(self, ct: C, key: WeightKey, target: float | None = None) -> C:
        """``ct * weight[key]`` (not rescaled) so that the rescale gives scale ``target`` (default: Delta)."""

    def add_w(self, ct: C, key: WeightKey) -> C:
        """``ct + weight[key]`` at ``ct``'s scale."""

    def mul_scalar(self, ct: C, value: float, target: float | None = None) -> C:
        """``ct * value`` (batch mode), so that the rescale gives scale ``target`` (default: Delta)."""

    def add_scalar(self, ct: C, value: float) -> C:
        """``ct + value`` (batch mode)."""

    def add(self, a: C, b: C) -> C:
        """``a + b`` (may reuse ``a``)."""

    def rotate(self, ct: C, step: int) -> C:
        """Slots rotated left by ``step``."""

    def relin(self, ct: C) -> C:
        """Back to two polynomials after a ciphertext-ciphertext product (no-op otherwise)."""

    def rescale(self, ct: C, target: float | None = None) -> C:
        """Drop the last prime; pin the scale to ``target`` when given."""

    def square(self, ct: C) -> C:
        """``ct ** 2``, relinearized and rescaled."""

    def align(self, ct: C, ref: C) -> C:
        """``ct`` switched down to ``ref``'s level (same scale)."""

    def scale_of(self, ct: C) -> float:
        """The scale of ``ct``."""


def weight_vector(steps: Sequence[Step], key: WeightKey) -> np.ndarray:
    """The plaintext slot vector a single-mode key names."""
    st = steps[key[0]]
    tag, row = key[1], key[2]
    if tag == "b" and isinstance(st, (ExpandStep, DiagStep)):
        return st.bias
    if tag in ("w", "d") and isinstance(st, (ExpandStep, DiagStep)):
        return st.weights[row]
    if tag == "h" and isinstance(st, QuarticStep):
        return st.h
    if tag == "e" and isinstance(st, QuarticStep):
        return st.e
    raise KeyError(key)


def single_weights(steps: Sequence[Step]) -> Callable[[WeightKey], np.ndarray]:
    """The weight lookup of a single-mode plan."""
    return lambda key: weight_vector(steps, key)


def run_single(steps: Sequence[Step], be: Backend[C], inputs: Sequence[C]) -> C:
    """Evaluate the single-sample steps on the input ciphertexts; returns the output ciphertext."""
    x: Any = None
    for idx, st in enumerate(steps):
        if isinstance(st, ExpandStep):
            acc: Any = None
            for k, ct in enumerate(inputs):
                p = be.mul_w(ct, (idx, "w", k))
                acc = p if acc is None else be.add(acc, p)
            x = _finish_linear(be, acc, st.sum_steps, idx)
        elif isinstance(st, DiagStep):
            if x is None:
                x = inputs[0]
            babies = {0: x}
            for j in sorted(st.baby_steps):
                babies[j] = be.rotate(x, j)
            total: Any = None
            for g, members in st.groups():
                inner: Any = None
                for k, j in members:
                    p = be.mul_w(babies[j], (idx, "d", k))
                    inner = p if inner is None else be.add(inner, p)
                if g:
                    inner = be.rotate(be.relin(inner), g)
                total = inner if total is None else be.add(total, inner)
            x = _finish_linear(be, total, st.sum_steps, idx)
        elif isinstance(st, SquareStep):
            x = be.square(x)
        elif isinstance(st, QuarticStep):
            x = _quartic(be, x, idx)
    return x


def _finish_linear(be: Backend[C], acc: C, sum_steps: Sequence[int], idx: int) -> C:
    acc = be.rescale(be.relin(acc), target=be.delta)
    for step in sum_steps:
        acc = be.add(acc, be.rotate(acc, step))
    return be.add_w(acc, (idx, "b", 0))


def _quartic(be: Backend[C], x: C, idx: int) -> C:
    t = be.add_w(be.square(x), (idx, "h", 0))
    w = be.square(t)
    ex = be.rescale(be.relin(be.mul_w(x, (idx, "e", 0), target=be.scale_of(w))), target=be.scale_of(w))
    return be.add(w, be.align(ex, w))


@dataclass(frozen=True)
class BatchPacking:
    """Batch mode packing: ``group`` features per ciphertext, each in a block of ``slots / group`` samples.

    ``group = 1`` is the plain layout (slot ``j`` of ciphertext ``i`` holds feature ``i`` of sample ``j``; weights
    are plaintext scalars). With fewer samples than slots, ``group > 1`` uses the empty slots: block ``g`` of
    ciphertext ``c`` holds feature ``c G + g``, so a linear map needs ``G`` times fewer products, each with a
    plaintext that is constant on every block. The client sends, for each ``c``, the ``G`` block rotations
    (``(c, r)``: block ``g`` holds feature ``c G + (g + r) mod G``), so the first layer needs no rotation; later
    layers rotate their inputs by multiples of the block.
    """

    slots: int
    group: int = 1

    @staticmethod
    def for_batch(slots: int, batch_size: int | None) -> BatchPacking:
        """The packing for queries of ``batch_size`` samples (``None``: a full query, one feature per ciphertext)."""
        if batch_size is None or batch_size >= slots:
            return BatchPacking(slots, 1)
        block = 1 << max(0, math.ceil(math.log2(max(1, batch_size))))
        return BatchPacking(slots, max(1, slots // block))

    @property
    def block(self) -> int:
        """Samples per query."""
        return self.slots // self.group

    def groups(self, features: int) -> int:
        """Ciphertexts holding ``features`` features."""
        return -(-features // self.group)

    def input_ciphertexts(self, features: int) -> int:
        """Ciphertexts per query for ``features`` input features (block rotations included)."""
        return self.groups(features) * self.group if self.group > 1 else features

    def rotations(self) -> list[int]:
        """Block rotations the hidden layers need."""
        return [r * self.block for r in range(1, self.group)]

    def pack(self, flat: np.ndarray) -> list[np.ndarray]:
        """Slot vectors of a query: ``flat`` is (samples <= block, features)."""
        n_samples, n = flat.shape
        if self.group == 1:
            return [np.pad(flat[:, i], (0, self.slots - n_samples)) for i in range(n)]
        out = []
        for c in range(self.groups(n)):
            for r in range(self.group):
                v = np.zeros(self.slots)
                for g in range(self.group):
                    f = c * self.group + (g + r) % self.group
                    if f < n:
                        v[g * self.block : g * self.block + n_samples] = flat[:, f]
                out.append(v)
        return out

    def unpack(self, vectors: Sequence[np.ndarray], features: int, samples: int) -> np.ndarray:
        """(samples, features) from the decrypted output vectors."""
        cols = []
        for o in range(features):
            q, g = divmod(o, self.group)
            cols.append(vectors[q][g * self.block : g * self.block + samples])
        return np.stack(cols, axis=1)

    def blocks(self, values: np.ndarray, q: int) -> np.ndarray:
        """Slot vector with ``values[q G + g]`` on block ``g``."""
        v = np.zeros(self.slots)
        for g in range(self.group):
            i = q * self.group + g
            if i < len(values):
                v[g * self.block : (g + 1) * self.block] = values[i]
        return v

    def weight(self, op: Affine, q: int, c: int, r: int) -> np.ndarray:
        """Plaintext of output group ``q`` times input copy ``(c, r)``."""
        v = np.zeros(self.slots)
        for g in range(self.group):
            o, f = q * self.group + g, c * self.group + (g + r) % self.group
            if o < op.n_out and f < op.n_in:
                v[g * self.block : (g + 1) * self.block] = op.matrix[o, f]
        return v

    def nonzero(self, op: Affine) -> np.ndarray:
        """``[q, c, r]``: whether that product has any non-zero weight (every output group keeps one)."""
        q_n, c_n, gr = self.groups(op.n_out), self.groups(op.n_in), self.group
        padded = np.zeros((q_n * gr, c_n * gr))
        padded[: op.n_out, : op.n_in] = op.matrix
        q, c, r, g = np.meshgrid(np.arange(q_n), np.arange(c_n), np.arange(gr), np.arange(gr), indexing="ij")
        nz = (np.abs(padded[q * gr + g, c * gr + (g + r) % gr]) > 1e-300).any(axis=-1)
        for qq in range(q_n):
            if not nz[qq].any():
                nz[qq, 0, 0] = True
        return nz


def batch_weights(ops: Sequence[Op], packing: BatchPacking) -> Callable[[WeightKey], np.ndarray]:
    """The weight lookup of a grouped batch plan: keys ``g`` (products), ``bg`` (bias), ``hg``/``eg`` (quartic)."""

    def lookup(key: WeightKey) -> np.ndarray:
        op = ops[key[0]]
        tag, row = key[1], key[2]
        if isinstance(op, Affine):
            if tag == "g":
                c_n = packing.groups(op.n_in)
                qc, r = divmod(row, packing.group)
                q, c = divmod(qc, c_n)
                w = packing.weight(op, q, c, r)
                if not w.any():  # an output group with no weight at all: see layout._nonzero
                    w[: packing.block] = EMPTY_ROW_WEIGHT
                return w
            if tag == "bg":
                return packing.blocks(op.bias, row)
        elif isinstance(op, Quartic) and tag in ("hg", "eg"):
            return packing.blocks(op.h if tag == "hg" else op.e, row)
        raise KeyError(key)

    return lookup


EMPTY_ROW_WEIGHT = 1e-9
"""Weight given to an output with none: SEAL refuses products that encode to zero (transparent ciphertexts);
the output is then its bias, off by 1e-9 times an input."""


@dataclass(frozen=True, eq=False)
class _Rows:
    cols: list[np.ndarray]
    vals: list[np.ndarray]


def _rows(op: Affine) -> _Rows:
    cols, vals = [], []
    for o in range(op.n_out):
        nz = np.nonzero(np.abs(op.matrix[o]) > 1e-300)[0]
        if len(nz) == 0:
            cols.append(np.array([0]))
            vals.append(np.array([EMPTY_ROW_WEIGHT]))
        else:
            cols.append(nz)
            vals.append(op.matrix[o, nz])
    return _Rows(cols, vals)


def run_batch(ops: Sequence[Op], be: Backend[C], inputs: Sequence[C], packing: BatchPacking | None = None) -> list[C]:
    """Evaluate a batch query (see :class:`BatchPacking`); returns the output ciphertexts (one per group)."""
    if packing is not None and packing.group > 1:
        return _run_grouped(ops, be, inputs, packing)
    xs: list[Any] = list(inputs)
    for op in ops:
        if isinstance(op, Affine):
            rows = _rows(op)
            out = []
            for o in range(op.n_out):
                acc: Any = None
                for i, w in zip(rows.cols[o], rows.vals[o], strict=True):
                    p = be.mul_scalar(xs[int(i)], float(w))
                    acc = p if acc is None else be.add(acc, p)
                out.append(be.add_scalar(be.rescale(acc, target=be.delta), float(op.bias[o])))
            xs = out
        elif isinstance(op, Square):
            xs = [be.square(c) for c in xs]
        else:
            assert isinstance(op, Quartic)
            new = []
            for i, c in enumerate(xs):
                t = be.add_scalar(be.square(c), float(op.h[i]))
                w = be.square(t)
                ex = be.rescale(be.mul_scalar(c, float(op.e[i]), be.scale_of(w)), target=be.scale_of(w))
                new.append(be.add(w, be.align(ex, w)))
            xs = new
    return xs


def _run_grouped(ops: Sequence[Op], be: Backend[C], inputs: Sequence[C], packing: BatchPacking) -> list[C]:
    gr = packing.group
    xs: list[Any] = list(inputs)
    first = True
    for idx, op in enumerate(ops):
        if isinstance(op, Affine):
            c_n = packing.groups(op.n_in)
            if first:
                copies = [xs[c * gr : (c + 1) * gr] for c in range(c_n)]
            else:
                copies = [[y] + [be.rotate(y, r * packing.block) for r in range(1, gr)] for y in xs]
            nz = packing.nonzero(op)
            out = []
            for q in range(packing.groups(op.n_out)):
                acc: Any = None
                for c in range(c_n):
                    for r in range(gr):
                        if nz[q, c, r]:
                            p = be.mul_w(copies[c][r], (idx, "g", (q * c_n + c) * gr + r))
                            acc = p if acc is None else be.add(acc, p)
                out.append(be.add_w(be.rescale(be.relin(acc), target=be.delta), (idx, "bg", q)))
            xs = out
        elif isinstance(op, Square):
            xs = [be.square(y) for y in xs]
        else:
            assert isinstance(op, Quartic)
            new = []
            for q, y in enumerate(xs):
                t = be.add_w(be.square(y), (idx, "hg", q))
                w = be.square(t)
                ex = be.rescale(be.relin(be.mul_w(y, (idx, "eg", q), target=be.scale_of(w))), target=be.scale_of(w))
                new.append(be.add(w, be.align(ex, w)))
            xs = new
        first = False
    return xs


class NumpyBackend:
    """Exact float64 simulation of the slots (a ciphertext is an ``np.ndarray``); tracks the largest magnitude."""

    delta = 1.0

    def __init__(self, weights: Callable[[WeightKey], np.ndarray] | None = None) -> None:
        self.weights = weights
        self.max_abs = 0.0

    def _w(self, key: WeightKey) -> np.ndarray:
        if self.weights is None:
            raise KeyError(key)
        return self.weights(key)

    def _t(self, v: np.ndarray) -> np.ndarray:
        m = float(np.abs(v).max()) if v.size else 0.0
        if m > self.max_abs:
            self.max_abs = m
        return v

    def mul_w(self, ct: np.ndarray, key: WeightKey, target: float | None = None) -> np.ndarray:
        """See :meth:`~dlsec.he.runtime.Backend.mul_w`."""
        return self._t(ct * self._w(key))

    def add_w(self, ct: np.ndarray, key: WeightKey) -> np.ndarray:
        """See :meth:`~dlsec.he.runtime.Backend.add_w`."""
        return self._t(ct + self._w(key))

    def mul_scalar(self, ct: np.ndarray, value: float, target: float | None = None) -> np.ndarray:
        """See :meth:`~dlsec.he.runtime.Backend.mul_scalar`."""
        return self._t(ct * value)

    def add_scalar(self, ct: np.ndarray, value: float) -> np.ndarray:
        """See :meth:`~dlsec.he.runtime.Backend.add_scalar`."""
        return self._t(ct + value)

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """See :meth:`~dlsec.he.runtime.Backend.add`."""
        return self._t(a + b)

    def rotate(self, ct: np.ndarray, step: int) -> np.ndarray:
        """See :meth:`~dlsec.he.runtime.Backend.rotate`."""
        return np.roll(ct, -step, axis=-1)

    def relin(self, ct: np.ndarray) -> np.ndarray:
        """See :meth:`~dlsec.he.runtime.Backend.relin`."""
        return ct

    def rescale(self, ct: np.ndarray, target: float | None = None) -> np.ndarray:
        """See :meth:`~dlsec.he.runtime.Backend.rescale`."""
        return ct

    def square(self, ct: np.ndarray) -> np.ndarray:
        """See :meth:`~dlsec.he.runtime.Backend.square`."""
        return self._t(ct * ct)

    def align(self, ct: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """See :meth:`~dlsec.he.runtime.Backend.align`."""
        return ct

    def scale_of(self, ct: np.ndarray) -> float:
        """See :meth:`~dlsec.he.runtime.Backend.scale_of`."""
        return 1.0


@dataclass(frozen=True)
class Meta:
    """A ciphertext's metadata: levels consumed, scale, polynomial count."""

    level: int
    scale: float
    size: int = 2


class MetaBackend:
    """Tracks level and scale only; records, for each weight, the level and scale it must be encoded at.

    ``primes`` are the data primes ``q0..qL`` (the special prime excluded), ``delta`` the scale.
    """

    def __init__(self, primes: Sequence[int], delta: float) -> None:
        self.primes = [int(p) for p in primes]
        self.delta = float(delta)
        self.requests: dict[WeightKey, tuple[int, float]] = {}
        self.counts: dict[tuple[str, int], int] = {}
        self.max_level = 0
        self.encrypted = False

    def _count(self, op: str, level: int, n: int = 1) -> None:
        self.counts[(op, level)] = self.counts.get((op, level), 0) + n

    def fresh(self) -> Meta:
        """A freshly encrypted ciphertext."""
        return Meta(0, self.delta)

    def _q(self, ct: Meta) -> int:
        top = len(self.primes) - 1 - ct.level
        if top < 1:
            raise ValueError("out of levels")
        return self.primes[top]

    def mul_w(self, ct: Meta, key: WeightKey, target: float | None = None) -> Meta:
        """See :meth:`~dlsec.he.runtime.Backend.mul_w`."""
        scale = self._q(ct) * (target or self.delta) / ct.scale
        self.requests[key] = (ct.level, scale)
        self._count("cmul" if self.encrypted else "mul", ct.level)
        return Meta(ct.level, ct.scale * scale, 3 if self.encrypted else ct.size)

    def add_w(self, ct: Meta, key: WeightKey) -> Meta:
        """See :meth:`~dlsec.he.runtime.Backend.add_w`."""
        self.requests[key] = (ct.level, ct.scale)
        self._count("add", ct.level)
        return ct

    def mul_scalar(self, ct: Meta, value: float, target: float | None = None) -> Meta:
        """See :meth:`~dlsec.he.runtime.Backend.mul_scalar`."""
        self._count("mul", ct.level)
        return Meta(ct.level, self._q(ct) * (target or self.delta), ct.size)

    def add_scalar(self, ct: Meta, value: float) -> Meta:
        """See :meth:`~dlsec.he.runtime.Backend.add_scalar`."""
        self._count("add", ct.level)
        return ct

    def add(self, a: Meta, b: Meta) -> Meta:
        """See :meth:`~dlsec.he.runtime.Backend.add`."""
        self._count("add", a.level)
        return Meta(a.level, a.scale, max(a.size, b.size))

    def rotate(self, ct: Meta, step: int) -> Meta:
        """See :meth:`~dlsec.he.runtime.Backend.rotate`."""
        self._count("rot", ct.level)
        return ct

    def relin(self, ct: Meta) -> Meta:
        """See :meth:`~dlsec.he.runtime.Backend.relin`."""
        if ct.size > 2:
            self._count("relin", ct.level)
        return Meta(ct.level, ct.scale, 2)

    def rescale(self, ct: Meta, target: float | None = None) -> Meta:
        """See :meth:`~dlsec.he.runtime.Backend.rescale`."""
        q = self._q(ct)
        self._count("rescale", ct.level)
        new = Meta(ct.level + 1, target if target is not None else ct.scale / q, ct.size)
        self.max_level = max(self.max_level, new.level)
        return new

    def square(self, ct: Meta) -> Meta:
        """See :meth:`~dlsec.he.runtime.Backend.square`."""
        self._count("cmul", ct.level)
        return self.rescale(self.relin(Meta(ct.level, ct.scale * ct.scale, 3)))

    def align(self, ct: Meta, ref: Meta) -> Meta:
        """See :meth:`~dlsec.he.runtime.Backend.align`."""
        return Meta(ref.level, ct.scale, ct.size)

    def scale_of(self, ct: Meta) -> float:
        """See :meth:`~dlsec.he.runtime.Backend.scale_of`."""
        return ct.scale
