"""Slot layouts and the single-sample plan: every linear map as diagonals over the whole slot vector.

A CKKS ciphertext holds ``S = N / 2`` slots, and the only data movement is a cyclic rotation of all of them. The
plan tracks explicitly where every logical feature lives (:class:`Layout`: one slot per feature; every other
slot is *garbage* that nothing reads), so no step ever relies on a vector being replicated across the slots. That
is the bug in TenSEAL's tutorial pattern ``enc_x.mm(W) + b`` (OpenMined/TenSEAL#462): ``mm`` assumes its input is
replicated, and a bias added to the first slots only breaks the replication the next ``mm`` needs.

A linear map ``y = M x + v`` from an input layout to an output layout is the ``S x S`` matrix ``M~`` with
``M~[out(o), in(i)] = M[o, i]``; it is evaluated with the diagonal method of Halevi and Shoup (CRYPTO 2014):
``y = sum_d diag_d * rot(x, d)`` over the offsets ``d`` of its non-zero (generalised) diagonals, where
``diag_d[j] = M~[j, j + d]``. Because ``diag_d`` is zero wherever ``M~`` has no entry, every product also masks the
garbage: garbage never survives a linear step. Baby-step giant-step (Halevi and Shoup 2018) splits each offset
``d = g + j`` and computes ``sum_g rot(sum_j rot(diag_{g+j}, -g) * rot(x, j), g)``: the baby rotations of ``x`` are
shared, each giant step rotates one inner sum, and the diagonals are pre-rotated in plaintext, so ``D`` diagonals
cost about ``2 sqrt(D)`` rotations. The split is ``j = d mod b`` for the best ``b``, or, for convolutions, the
geometric one (channel offset as ``g``, spatial offset as ``j``) when that needs fewer rotations. Three output
layouts are planned and the cheapest kept:

* **expanded input** (first layer only, :class:`ExpandStep`): the client, who holds ``x`` in the clear, writes
  into slot ``t * m' + o`` the ``t``-th input that output ``o`` needs (``m'`` = outputs rounded up to a power of
  two). The layer is then one plaintext product per input ciphertext and ``log2`` (blocks per ciphertext)
  rotate-and-sum steps; wide layers that do not fit one ciphertext use several, summed without rotations;
* **hybrid** (GAZELLE's method for rectangular matrices, generalised to any input layout): each product
  ``M[o, i] x_i`` is placed in the slot ``j = in(i) - d`` with ``j = o (mod m')`` and ``0 <= d < m'``, so at most
  ``m'`` diagonals; a rotate-and-sum by ``m', 2 m', ...`` over the window the products occupy leaves ``y_o`` in slot
  ``lo + o``;
* **structured** (convolutions and pools on an image layout ``slot = base + c cs + h hs + w ws``): the output keeps
  the layout with strides multiplied by the layer's stride (``base + o cs + y s hs + x s ws``), so the offset of each
  weight depends only on ``(c - o, dy, dx)``: at most ``(C_in + C_out - 1) k**2`` diagonals whatever the image size,
  and no rotate-and-sum.

Rotation keys: the plan lists every rotation it performs; only those keys are generated (or, over a key budget,
the powers of two, each rotation then composed of its binary digits).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from dlsec.errors import ConfigError
from dlsec.he.ir import Affine, Op, Quartic, Square

__all__ = [
    "DiagStep",
    "ExpandStep",
    "Layout",
    "QuarticStep",
    "SingleLayout",
    "SquareStep",
    "Step",
    "plan_single",
    "rotation_steps",
]

ROTATION_COST = 10.0
"""Cost of one rotation in plaintext products (key switching dominates: about 10x on SEAL at N = 8192)."""

_ZERO = 1e-300


def _pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


@dataclass(frozen=True, eq=False)
class Layout:
    """Where each logical feature (flattened ``shape``, C-major) lives; ``geometry`` is ``(base, cs, hs, ws)``
    when the features form an image laid out affinely (``slot = base + c cs + h hs + w ws`` mod ``S``)."""

    slots: np.ndarray
    shape: tuple[int, ...]
    geometry: tuple[int, int, int, int] | None = None

    @staticmethod
    def contiguous(shape: Sequence[int]) -> Layout:
        """Features in slots ``0..n-1`` in order."""
        shape = tuple(int(s) for s in shape)
        n = int(math.prod(shape))
        geo = (0, shape[1] * shape[2], shape[2], 1) if len(shape) == 3 else None
        return Layout(np.arange(n, dtype=np.int64), shape, geo)


@dataclass(frozen=True, eq=False)
class ExpandStep:
    """First linear map on an input the client expanded: ``sum_k weights[k] * x_k``, rescale, rotate-and-sum, bias."""

    weights: np.ndarray
    sum_steps: tuple[int, ...]
    bias: np.ndarray
    out: Layout
    name: str


@dataclass(frozen=True, eq=False)
class DiagStep:
    """A linear map by baby-step giant-step diagonals.

    Diagonal ``diags[k]`` is split as ``giants[k] + baby`` (mod slots); it uses ``weights[k]``, pre-rotated by its
    giant step. After the products are summed and rescaled, ``sum_steps`` rotate-and-sum (hybrid layout) and
    ``bias`` is added.
    """

    diags: tuple[int, ...]
    giants: tuple[int, ...]
    weights: np.ndarray
    sum_steps: tuple[int, ...]
    bias: np.ndarray
    out: Layout
    name: str
    kind: str

    @property
    def slots(self) -> int:
        """Slots per ciphertext."""
        return int(self.weights.shape[1])

    def groups(self) -> Iterator[tuple[int, list[tuple[int, int]]]]:
        """``(giant step, [(row of weights, baby step), ...])`` in order."""
        by: dict[int, list[tuple[int, int]]] = {}
        for k, (d, g) in enumerate(zip(self.diags, self.giants, strict=True)):
            by.setdefault(g, []).append((k, (d - g) % self.slots))
        yield from sorted(by.items())

    @property
    def baby_steps(self) -> set[int]:
        """Rotations of the input (shared by all giant steps)."""
        return {(d - g) % self.slots for d, g in zip(self.diags, self.giants, strict=True)} - {0}

    @property
    def giant_steps(self) -> set[int]:
        """Rotations of the inner sums."""
        return set(self.giants) - {0}


@dataclass(frozen=True, eq=False)
class SquareStep:
    """``x ** 2`` slotwise (relinearize, rescale)."""

    name: str


@dataclass(frozen=True, eq=False)
class QuarticStep:
    """``(x ** 2 + h) ** 2 + e x`` slotwise; ``h`` and ``e`` are slot vectors (zero off the layout)."""

    h: np.ndarray
    e: np.ndarray
    name: str


Step = ExpandStep | DiagStep | SquareStep | QuarticStep


@dataclass(frozen=True, eq=False)
class SingleLayout:
    """The single-sample plan: the client's input gathers, the steps, and where the outputs land.

    ``gathers[k, s]`` is the input feature the client writes into slot ``s`` of input ciphertext ``k`` (-1: zero).
    """

    slots: int
    gathers: np.ndarray
    steps: tuple[Step, ...]
    out: Layout


def rotation_steps(steps: Sequence[Step]) -> list[int]:
    """Every rotation the plan performs, sorted."""
    out: set[int] = set()
    for st in steps:
        if isinstance(st, DiagStep):
            out |= st.baby_steps | st.giant_steps | set(st.sum_steps)
        elif isinstance(st, ExpandStep):
            out |= set(st.sum_steps)
    return sorted(out)


def _nonzero(op: Affine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = op.matrix
    rows, cols = np.nonzero(np.abs(m) > _ZERO)
    vals = m[rows, cols]
    # a row with no weight would give an all-zero product, which SEAL refuses (transparent ciphertext): give it a
    # negligible weight instead (the output is its bias, off by 1e-9 times an input).
    empty = np.setdiff1d(np.arange(m.shape[0]), rows)
    if len(empty):
        rows = np.concatenate([rows, empty])
        cols = np.concatenate([cols, np.zeros(len(empty), dtype=cols.dtype)])
        vals = np.concatenate([vals, np.full(len(empty), 1e-9)])
    return rows.astype(np.int64), cols.astype(np.int64), vals


def _rotations(diags: np.ndarray, giants: np.ndarray, slots: int) -> int:
    babies = (diags - giants) % slots
    return len(np.unique(babies[babies != 0])) + len(np.unique(giants[giants != 0]))


def _bsgs(diags: np.ndarray, slots: int, hint: np.ndarray | None = None) -> np.ndarray:
    """Giant step of each offset: ``d - d mod b`` for the best baby step ``b``, or the ``hint`` split if cheaper."""
    best: np.ndarray = np.zeros_like(diags)
    best_cost = _rotations(diags, best, slots)
    limit = int(2 * math.sqrt(slots)) + 1
    candidates = set(range(2, min(limit, slots) + 1)) | {1 << k for k in range(int(math.log2(slots)) + 1)}
    for b in sorted(candidates):
        giants = diags - diags % b
        cost = _rotations(diags, giants, slots)
        if cost < best_cost:
            best, best_cost = giants, cost
    if hint is not None and _rotations(diags, hint % slots, slots) < best_cost:
        best = hint % slots
    return best


def _diag_step(
    op: Affine,
    rows: np.ndarray,
    vals: np.ndarray,
    j: np.ndarray,
    d: np.ndarray,
    out: Layout,
    sum_steps: tuple[int, ...],
    kind: str,
    slots: int,
    hint: np.ndarray | None = None,
) -> DiagStep:
    d = d % slots
    j = j % slots
    uniq, first, inv = np.unique(d, return_index=True, return_inverse=True)
    giants = _bsgs(uniq, slots, hint[first] if hint is not None else None)
    weights = np.zeros((len(uniq), slots))
    np.add.at(weights, (inv, j), vals)
    for k in range(len(uniq)):
        if giants[k]:
            weights[k] = np.roll(weights[k], int(giants[k]))
    bias = np.zeros(slots)
    bias[out.slots] = op.bias
    return DiagStep(
        tuple(int(x) for x in uniq), tuple(int(g) for g in giants), weights, sum_steps, bias, out, op.name, kind
    )


def _hybrid(op: Affine, layout: Layout, slots: int) -> DiagStep | None:
    mp = _pow2(op.n_out)
    if mp > slots:
        return None
    rows, cols, vals = _nonzero(op)
    in_s = layout.slots[cols]
    d = (in_s - rows) % mp
    j = in_s - d
    base = j - rows
    lo = int(base.min())
    blocks = (int(base.max()) - lo) // mp + 1
    r = math.ceil(math.log2(blocks)) if blocks > 1 else 0
    if (1 << r) * mp > slots:
        r = int(math.log2(slots // mp))
    out = Layout((lo + np.arange(op.n_out, dtype=np.int64)) % slots, op.out_shape, None)
    if len(op.out_shape) == 3 and r == 0:
        c, h, w = op.out_shape
        out = Layout(out.slots, op.out_shape, (lo % slots, h * w, w, 1))
    return _diag_step(op, rows, vals, j, d, out, tuple(mp << k for k in range(r)), "hybrid", slots)


def _structured(op: Affine, layout: Layout, slots: int) -> DiagStep | None:
    if op.stride is None or layout.geometry is None or len(op.out_shape) != 3:
        return None
    base, cs, hs, ws = layout.geometry
    sy, sx = op.stride
    c, h, w = op.out_shape
    oc, oy, ox = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    out_slots = ((base + oc * cs + oy * (sy * hs) + ox * (sx * ws)).reshape(-1) % slots).astype(np.int64)
    if len(np.unique(out_slots)) != len(out_slots):
        return None
    rows, cols, vals = _nonzero(op)
    in_s = layout.slots[cols]
    j = out_slots[rows]
    out = Layout(out_slots, op.out_shape, (base, cs, sy * hs, sx * ws))
    # split each offset into its channel part (giant step) and its spatial part (baby step)
    channel_in = cols // (layout.shape[1] * layout.shape[2])
    channel_out = rows // (h * w)
    hint = (channel_in - channel_out) * cs
    return _diag_step(op, rows, vals, j, in_s - j, out, (), "structured", slots, hint)


def _cost(step: DiagStep | ExpandStep) -> float:
    if isinstance(step, ExpandStep):
        return len(step.weights) * (1 + ROTATION_COST) + len(step.sum_steps) * ROTATION_COST
    rot = len(step.baby_steps) + len(step.giant_steps) + len(step.sum_steps)
    return len(step.diags) + ROTATION_COST * rot


def _linear(op: Affine, layout: Layout, slots: int) -> DiagStep:
    cands = [s for s in (_structured(op, layout, slots), _hybrid(op, layout, slots)) if s is not None]
    if not cands:
        raise ConfigError(
            f"layer {op.name} has {op.n_out} outputs, more than the {slots} slots of a ciphertext; "
            "use mode='batch' or a larger ring"
        )
    return min(cands, key=_cost)


def _expand(op: Affine, slots: int, max_inputs: int) -> tuple[np.ndarray, ExpandStep] | None:
    mp = _pow2(op.n_out)
    if mp > slots:
        return None
    rows, cols, vals = _nonzero(op)
    order = np.lexsort((cols, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    counts = np.bincount(rows, minlength=op.n_out)
    t_of = np.arange(len(rows)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[rows]
    taps = _pow2(int(counts.max()))
    per_ct = min(taps, slots // mp)
    k_cts = taps // per_ct
    if k_cts > max_inputs:
        return None
    k = t_of // per_ct
    s = (t_of % per_ct) * mp + rows
    gathers = np.full((k_cts, slots), -1, dtype=np.int64)
    weights = np.zeros((k_cts, slots))
    gathers[k, s] = cols
    weights[k, s] = vals
    sum_steps = tuple(mp << u for u in range(int(math.log2(per_ct))))
    out = Layout.contiguous(op.out_shape)
    bias = np.zeros(slots)
    bias[out.slots] = op.bias
    return gathers, ExpandStep(weights, sum_steps, bias, out, op.name)


def plan_single(ops: Sequence[Op], slots: int, *, expand_input: bool = True, max_input_ciphertexts: int = 8) -> SingleLayout:
    """Lay ``ops`` out for one sample per ciphertext of ``slots`` slots (see the module docstring)."""
    first = ops[0]
    assert isinstance(first, Affine)
    if first.n_in > slots and not expand_input:
        raise ConfigError(f"the input has {first.n_in} features, more than the {slots} slots of a ciphertext")
    steps: list[Step] = []
    head: ExpandStep | DiagStep
    expanded = _expand(first, slots, max_input_ciphertexts) if expand_input else None
    if expanded is not None:
        gathers, step0 = expanded
        plain_in = Layout.contiguous(first.in_shape)
        alt = _linear(first, plain_in, slots) if first.n_in <= slots else None
        if alt is not None and _cost(alt) < _cost(step0):
            head = alt
            gathers = np.full((1, slots), -1, dtype=np.int64)
            gathers[0, : first.n_in] = np.arange(first.n_in)
        else:
            head = step0
    else:
        if first.n_in > slots:
            raise ConfigError(
                f"the input has {first.n_in} features, more than the {slots} slots, and its expansion needs more "
                f"than {max_input_ciphertexts} ciphertexts"
            )
        gathers = np.full((1, slots), -1, dtype=np.int64)
        gathers[0, : first.n_in] = np.arange(first.n_in)
        head = _linear(first, Layout.contiguous(first.in_shape), slots)
    steps.append(head)
    layout = head.out
    for op in ops[1:]:
        if isinstance(op, Square):
            steps.append(SquareStep(op.name))
        elif isinstance(op, Quartic):
            h = np.zeros(slots)
            e = np.zeros(slots)
            h[layout.slots] = op.h
            e[layout.slots] = op.e
            steps.append(QuarticStep(h, e, op.name))
        else:
            st = _linear(op, layout, slots)
            steps.append(st)
            layout = st.out
    return SingleLayout(slots, gathers, tuple(steps), layout)
