"""The HE model as a short list of operations CKKS evaluates directly, with the activations' affine parts folded.

:func:`lower` turns an :class:`~dlsec.he.convert.HEModel` into alternating :class:`Affine` maps and activations:

* every linear layer (Linear, Conv2d, AvgPool2d, ChannelAffine) becomes a dense matrix over the flattened
  ``C*H*W`` features (its columns are the layer applied to the unit vectors, in float64), and consecutive ones are
  multiplied together, so a conv followed by an average pool costs one level, not two;
* a degree-2 activation ``a*y**2 + b*y + c`` applied to ``y = M x + v`` is rewritten as a pure square:
  ``a (y + s)**2 + r`` with ``s = b / 2a``, ``r = c - a s**2``, so the previous map becomes
  ``sqrt|a| (M x + v + s)``, the activation ``t**2``, and the next map absorbs ``sign(a)`` in its weights and
  ``r`` in its bias. The activation then costs one multiplication and one level, with no plaintext multiplication;
* a degree-4 activation is rewritten (depressed quartic, completed square) as ``sign(c4) [(u**2 + h)**2 + e u]
  + const`` with ``u = |c4|**(1/4) (y + c3 / 4 c4)``: two levels, the scalings folded the same way
  (:class:`Quartic`);
* an activation that is affine on its range (``|c2| R**2`` negligible) is merged into its neighbours.

:func:`run_ir` evaluates the list in float64 (the reference the encrypted result is compared with).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from dlsec.errors import ConfigError, ModelError
from dlsec.he.convert import HEModel, PolyActivation

__all__ = ["MAX_MATRIX_ENTRIES", "Affine", "Op", "Quartic", "Square", "depth", "lower", "run_ir"]

MAX_MATRIX_ENTRIES = 1 << 24
"""Largest dense matrix a layer is lowered to (16M entries, 128 MB in float64)."""

_NEGLIGIBLE = 1e-9


@dataclass(frozen=True, eq=False)
class Affine:
    """``y = matrix @ x + bias`` over flattened features; ``stride`` is the spatial stride of a conv-like map.

    ``in_shape``/``out_shape`` are per-sample shapes (``(C, H, W)`` or ``(F,)``); ``stride`` is set when both are
    images and output pixel ``(y, x)`` reads input pixels near ``(stride[0] * y, stride[1] * x)`` (convolutions,
    average pools and their compositions), which lets the single-sample plan keep the image layout.
    """

    matrix: np.ndarray
    bias: np.ndarray
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    stride: tuple[int, int] | None
    name: str

    @property
    def n_in(self) -> int:
        """Input features."""
        return int(self.matrix.shape[1])

    @property
    def n_out(self) -> int:
        """Output features."""
        return int(self.matrix.shape[0])


@dataclass(frozen=True, eq=False)
class Square:
    """``y = x ** 2`` elementwise (one level)."""

    size: int
    name: str


@dataclass(frozen=True, eq=False)
class Quartic:
    """``y = (x ** 2 + h) ** 2 + e * x`` elementwise, ``h`` and ``e`` per feature (two levels)."""

    h: np.ndarray
    e: np.ndarray
    name: str

    @property
    def size(self) -> int:
        """Features."""
        return int(self.h.shape[0])


Op = Affine | Square | Quartic


@dataclass(frozen=True)
class _Poly:
    coeffs: tuple[float, ...]
    radius: float
    size: int
    name: str


def depth(ops: Sequence[Op]) -> int:
    """Multiplicative depth: one level per affine map and square, two per quartic."""
    return sum(2 if isinstance(op, Quartic) else 1 for op in ops)


def _prod(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


def _affine_of(layer: nn.Module, shape: tuple[int, ...], name: str) -> Affine:
    n = _prod(shape)
    mod = copy.deepcopy(layer).double().eval()
    with torch.no_grad():
        try:
            bias = mod(torch.zeros((1, *shape), dtype=torch.float64)).reshape(-1)
        except Exception as exc:
            raise ModelError(f"layer {name} fails on inputs of shape {shape}: {exc}") from exc
        m = int(bias.numel())
        if n * m > MAX_MATRIX_ENTRIES:
            raise ModelError(
                f"layer {name} maps {n} to {m} features, too large for encrypted inference ({n * m} > {MAX_MATRIX_ENTRIES} entries)"
            )
        cols = []
        for start in range(0, n, 1024):
            count = min(1024, n - start)
            basis = torch.zeros((count, n), dtype=torch.float64)
            basis[torch.arange(count), torch.arange(start, start + count)] = 1.0
            cols.append(mod(basis.reshape(count, *shape)).reshape(count, m) - bias)
        out_shape = tuple(int(s) for s in mod(torch.zeros((1, *shape), dtype=torch.float64)).shape[1:])
    matrix = torch.cat(cols).T.contiguous().numpy()
    matrix[np.abs(matrix) < 1e-300] = 0.0
    stride: tuple[int, int] | None = None
    if len(shape) == 3 and len(out_shape) == 3:
        if isinstance(layer, (nn.Conv2d, nn.AvgPool2d)):
            s = layer.stride
            stride = (int(s[0]), int(s[1])) if isinstance(s, tuple) else (int(s), int(s))
        elif isinstance(layer, nn.AdaptiveAvgPool2d):
            if shape[1] % out_shape[1] == 0 and shape[2] % out_shape[2] == 0:
                stride = (shape[1] // out_shape[1], shape[2] // out_shape[2])
        else:
            stride = (1, 1)
    return Affine(matrix, bias.numpy().copy(), shape, out_shape, stride, name)


def _identity(shape: tuple[int, ...], name: str) -> Affine:
    n = _prod(shape)
    return Affine(np.eye(n), np.zeros(n), shape, shape, (1, 1) if len(shape) == 3 else None, name)


def _compose(a: Affine, b: Affine) -> Affine:
    """``b`` after ``a``."""
    if b.n_in != a.n_out:
        raise ModelError(f"layer {b.name} expects {b.n_in} features but {a.name} produces {a.n_out}")
    stride = None
    if a.stride is not None and b.stride is not None and len(a.out_shape) == 3 and len(b.in_shape) == 3:
        stride = (a.stride[0] * b.stride[0], a.stride[1] * b.stride[1])
    return Affine(b.matrix @ a.matrix, b.matrix @ a.bias + b.bias, a.in_shape, b.out_shape, stride, f"{a.name}>{b.name}")


def lower(model: HEModel) -> list[Op]:
    """Lower ``model`` to ``Affine (activation Affine)*`` with the activations' affine parts folded (module doc)."""
    shape = model.input_shape
    raw: list[Affine | _Poly] = []
    for layer, name in zip(model.layers, model.names, strict=False):
        if isinstance(layer, nn.Flatten):
            shape = (_prod(shape),)
            if raw and isinstance(raw[-1], Affine):
                raw[-1] = replace(raw[-1], out_shape=shape, stride=None)
            continue
        if isinstance(layer, PolyActivation):
            radius = max(abs(layer.lo), abs(layer.hi), 1.0)
            raw.append(_Poly(tuple(float(c) for c in layer.coeffs), radius, _prod(shape), layer.source or name))
            continue
        aff = _affine_of(layer, shape, name)
        shape = aff.out_shape
        raw.append(aff)
    # normalise to Affine (Poly Affine)*: identity maps where two activations meet or at either end
    seq: list[Affine | _Poly] = []
    cur = model.input_shape
    for item in raw:
        if isinstance(item, _Poly) and (not seq or isinstance(seq[-1], _Poly)):
            seq.append(_identity(cur, f"identity:{item.name}"))
        if isinstance(item, Affine) and seq and isinstance(seq[-1], Affine):
            seq[-1] = _compose(seq[-1], item)
        else:
            seq.append(item)
        cur = item.out_shape if isinstance(item, Affine) else cur
    if not seq:
        raise ModelError("the model has no layers to lower")
    if isinstance(seq[-1], _Poly):
        seq.append(_identity(cur, "identity:output"))
    return _fold(seq)


def _degree(p: _Poly) -> int:
    mags = [abs(c) * p.radius**k for k, c in enumerate(p.coeffs)]
    top = max(mags) if mags else 0.0
    deg = 0
    for k, m in enumerate(mags):
        if m > _NEGLIGIBLE * top:
            deg = k
    return deg


def _fold(seq: list[Affine | _Poly]) -> list[Op]:
    out: list[Op] = []
    prev = seq[0]
    assert isinstance(prev, Affine)
    i = 1
    while i < len(seq):
        poly, nxt = seq[i], seq[i + 1]
        assert isinstance(poly, _Poly) and isinstance(nxt, Affine)
        c = list(poly.coeffs) + [0.0] * 5
        deg = _degree(poly)
        if deg <= 1:
            mid = replace(prev, matrix=prev.matrix * c[1], bias=prev.bias * c[1] + c[0])
            prev = _compose(mid, nxt)
        elif deg == 2:
            a, b, c0 = c[2], c[1], c[0]
            s = b / (2 * a)
            r = c0 - a * s * s
            k = math.sqrt(abs(a))
            out.append(replace(prev, matrix=prev.matrix * k, bias=(prev.bias + s) * k))
            out.append(Square(poly.size, poly.name))
            sign = math.copysign(1.0, a)
            prev = replace(nxt, matrix=nxt.matrix * sign, bias=nxt.bias + nxt.matrix @ np.full(nxt.n_in, r))
        elif deg == 4:
            c4, c3 = c[4], c[3]
            t = c3 / (4 * c4)
            shifted = np.polynomial.polynomial.Polynomial(c[:5])(np.polynomial.polynomial.Polynomial([-t, 1.0]))
            al = [float(v) for v in np.asarray(shifted.coef, dtype=np.float64)] + [0.0] * 5
            q = abs(c4) ** 0.25
            sign = math.copysign(1.0, c4)
            h = q * q * al[2] / (2 * c4)
            e = sign * al[1] / q
            const = al[0] - al[2] ** 2 / (4 * c4)
            out.append(replace(prev, matrix=prev.matrix * q, bias=(prev.bias + t) * q))
            out.append(Quartic(np.full(poly.size, h), np.full(poly.size, e), poly.name))
            prev = replace(nxt, matrix=nxt.matrix * sign, bias=nxt.bias + nxt.matrix @ np.full(nxt.n_in, const))
        else:
            raise ConfigError(f"activation {poly.name} has degree {deg}; only degrees 2 and 4 can be lowered")
        i += 2
    out.append(prev)
    return out


def run_ir(ops: Sequence[Op], x: np.ndarray) -> np.ndarray:
    """Evaluate the lowered model on ``x`` (N, features) in float64."""
    h = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    for op in ops:
        if isinstance(op, Affine):
            h = h @ op.matrix.T + op.bias
        elif isinstance(op, Square):
            h = h * h
        else:
            h = (h * h + op.h) ** 2 + op.e * h
    return h
