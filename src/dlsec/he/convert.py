"""Make a trained PyTorch model HE-friendly: BatchNorm folded, ReLU replaced by a low-degree polynomial.

CKKS evaluates additions and multiplications only, so every non-linearity must be a polynomial, and every
multiplication costs one level of the modulus chain. :func:`convert` traces the model with ``torch.fx`` (the model
must be a chain: no branches, no residual additions), accepts only layers it can lower exactly, and refuses
anything else *by its qualified name* (``features.4 (MaxPool2d)``) at conversion time, never at encryption time:

* ``Linear``, ``Conv2d`` (any stride, padding, dilation or groups), ``AvgPool2d``/``AdaptiveAvgPool2d``,
  ``Flatten`` (``nn.Flatten``, ``torch.flatten(x, 1)``, ``x.flatten(1)``), ``Identity``/``Dropout`` (dropped);
* ``BatchNorm1d``/``BatchNorm2d`` with running statistics: folded into the preceding ``Linear``/``Conv2d``
  (``W * gamma / sigma``, ``(b - mu) * gamma / sigma + beta``), or kept as a per-channel affine map otherwise;
* ``ReLU`` (module, ``torch.relu``, ``F.relu``, ``x.relu()``): replaced by :class:`PolyActivation`.

Activations: ``square`` is ``x ** 2`` (CryptoNets); ``poly2`` / ``poly4`` are least-squares fits of ReLU of
degree 2 or 4 on the range of that layer's inputs measured on calibration data, widened by ``margin`` times its
width on each side (layers are calibrated in order, each after the previous ones were replaced, so each sees the
distribution the HE model will feed it). A short fine-tune (Adam, a few epochs, polynomials fixed) then recovers
the accuracy the approximation lost. The result is an ordinary ``nn.Module``: its plaintext accuracy is what the
encrypted model computes, up to CKKS noise.
"""

from __future__ import annotations

import copy
import json
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from dlsec.errors import ConfigError, DataError, ModelError

__all__ = [
    "ACTIVATIONS",
    "ActivationFit",
    "ChannelAffine",
    "HEModel",
    "PolyActivation",
    "convert",
    "finetune",
    "fit_relu",
    "load_he_model",
    "save_he_model",
]

ACTIVATIONS = ("poly2", "poly4", "square")
"""Replacements for ReLU: least-squares fits of degree 2 or 4 on the calibrated range, or ``x ** 2``."""

_FORMAT = "dlsec-he-model/1"
MAX_HE_MODEL_BYTES = 1 << 30


class PolyActivation(nn.Module):
    """``sum(coeffs[k] * x ** k)``, the polynomial that replaces a ReLU (coefficients in ascending order).

    ``lo``/``hi`` record the input range the fit was made on; ``source`` the qualified name of the ReLU replaced.
    """

    coeffs: torch.Tensor

    def __init__(self, coeffs: Sequence[float], lo: float = 0.0, hi: float = 0.0, source: str = "") -> None:
        super().__init__()
        self.register_buffer("coeffs", torch.tensor([float(c) for c in coeffs], dtype=torch.float64))
        self.lo, self.hi, self.source = float(lo), float(hi), source

    @property
    def degree(self) -> int:
        """Degree of the polynomial."""
        return int(self.coeffs.numel()) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate the polynomial elementwise (Horner)."""
        c = self.coeffs.to(x.dtype)
        out = torch.full_like(x, float(c[-1]))
        for k in range(len(c) - 2, -1, -1):
            out = out * x + c[k]
        return out

    def extra_repr(self) -> str:
        """The parameters' text representation."""
        return f"coeffs={[round(float(c), 6) for c in self.coeffs]}, range=[{self.lo:.4g}, {self.hi:.4g}]"


class ChannelAffine(nn.Module):
    """``x * scale[c] + shift[c]`` per channel (dimension 1): a BatchNorm that follows no Linear/Conv2d."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.scale = nn.Parameter(scale.detach().clone().float())
        self.shift = nn.Parameter(shift.detach().clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel affine map."""
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)


class _Relu(nn.Module):
    """A ReLU waiting for its polynomial; records the range of its inputs while calibrating."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source
        self.lo, self.hi = math.inf, -math.inf
        self.record = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.record:
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))
        return torch.relu(x)


@dataclass(frozen=True)
class ActivationFit:
    """How one ReLU was replaced: its name, the range fitted on, the coefficients and the fit's max error there."""

    source: str
    lo: float
    hi: float
    coeffs: tuple[float, ...]
    max_error: float


class HEModel(nn.Module):
    """A chain of HE-friendly layers (Linear, Conv2d, AvgPool2d, Flatten, ChannelAffine, PolyActivation).

    ``input_shape`` is the per-sample shape (``(C, H, W)`` or ``(F,)``); ``names`` the qualified name in the
    original model of each layer (for messages).
    """

    layers: nn.Sequential

    def __init__(self, layers: Sequence[nn.Module], input_shape: Sequence[int], names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.names = list(names) if names is not None else [f"layers.{i}" for i in range(len(layers))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch ``(N, *input_shape)``."""
        return self.layers(x)

    @property
    def activations(self) -> list[PolyActivation]:
        """The polynomial activations, in order."""
        return [m for m in self.layers if isinstance(m, PolyActivation)]

    @property
    def fits(self) -> tuple[ActivationFit, ...]:
        """The fits of the activations (range, coefficients, max error of the fit on its range)."""
        return tuple(
            ActivationFit(a.source, a.lo, a.hi, tuple(float(c) for c in a.coeffs), _fit_error(a.coeffs.numpy(), a.lo, a.hi))
            for a in self.activations
        )


def _fit_error(coeffs: np.ndarray, lo: float, hi: float) -> float:
    if hi <= lo:
        return 0.0
    grid = np.linspace(lo, hi, 2001)
    return float(np.abs(np.polynomial.polynomial.polyval(grid, coeffs) - np.maximum(grid, 0.0)).max())


def fit_relu(lo: float, hi: float, degree: int) -> tuple[float, ...]:
    """Least-squares polynomial of ``degree`` closest to ReLU on ``[lo, hi]`` (uniform weight), ascending order."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise ConfigError(f"cannot fit ReLU on the range [{lo}, {hi}]")
    grid = np.linspace(lo, hi, 4001)
    coeffs = np.polynomial.polynomial.polyfit(grid, np.maximum(grid, 0.0), degree)
    return tuple(float(c) for c in coeffs)


# ---------------------------------------------------------------------------------------------------- tracing

_POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_DROPPED = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)


def _refuse(name: str, what: str, why: str = "") -> ModelError:
    hint = why or (
        "encrypted inference supports Linear, Conv2d, AvgPool2d, BatchNorm (folded), Flatten and ReLU "
        "(replaced by a polynomial)"
    )
    return ModelError(f"cannot convert layer {name} ({what}): {hint}")


def _trace(model: nn.Module) -> list[tuple[str, str, Any]]:
    """The model as a chain of ``(name, kind, module-or-None)``; kinds: module, relu, flatten."""
    import torch.fx as fx

    if isinstance(model, torch.jit.ScriptModule):
        raise ModelError(
            "cannot convert a TorchScript model: conversion needs the Python module "
            "(use package.module:factory --weights FILE)"
        )
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:
        first = str(exc).strip().splitlines()
        raise ModelError(
            f"cannot trace the model with torch.fx (data-dependent control flow?): {first[0] if first else type(exc).__name__}"
        ) from exc
    chain: list[tuple[str, str, Any]] = []
    prev: fx.Node | None = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if prev is not None:
                raise ModelError("cannot convert a model with more than one input")
            prev = node
            continue
        if node.op == "output":
            out = node.args[0]
            if out is not prev:
                raise ModelError("cannot convert: the model's output is not the result of its last layer")
            break
        if node.op == "get_attr":
            raise _refuse(str(node.target), "a parameter used directly in forward")
        label = str(node.target) if node.op == "call_module" else node.name
        if node.all_input_nodes != [prev]:
            raise _refuse(label, node.op, "the model is not a chain of layers (branch, residual or shape computation)")
        if node.op == "call_module":
            mod = gm.get_submodule(str(node.target))
            chain.append((str(node.target), "module", mod))
        elif node.op == "call_function":
            if node.target in (torch.relu, nn.functional.relu, torch.nn.functional.relu):
                chain.append((node.name, "relu", None))
            elif node.target is torch.flatten and _flatten_args(node.args[1:], node.kwargs):
                chain.append((node.name, "flatten", None))
            else:
                fname = getattr(node.target, "__name__", str(node.target))
                if node.target in (operator.add, torch.add):
                    raise _refuse(node.name, fname, "residual additions are not supported")
                raise _refuse(node.name, f"function {fname}")
        elif node.op == "call_method":
            if node.target == "relu" and not node.kwargs and len(node.args) == 1:
                chain.append((node.name, "relu", None))
            elif node.target == "flatten" and _flatten_args(node.args[1:], node.kwargs):
                chain.append((node.name, "flatten", None))
            else:
                raise _refuse(node.name, f"method .{node.target}()")
        prev = node
    return chain


def _flatten_args(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    start = args[0] if args else kwargs.get("start_dim", 0)
    end = args[1] if len(args) > 1 else kwargs.get("end_dim", -1)
    return start == 1 and end == -1


def _fold_bn(layer: nn.Module, bn: nn.Module) -> None:
    """Fold eval-mode BatchNorm ``bn`` into ``layer`` (a Linear or Conv2d copy) in place."""
    assert isinstance(layer, (nn.Linear, nn.Conv2d))
    scale, shift = _bn_affine(bn)
    w = layer.weight.data
    shape = (-1,) + (1,) * (w.dim() - 1)
    bias = layer.bias.data if layer.bias is not None else torch.zeros(w.shape[0])
    layer.weight.data = w * scale.view(shape)
    new_bias = bias * scale + shift
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias)
    else:
        layer.bias.data = new_bias


def _bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    assert isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d))
    if bn.running_mean is None or bn.running_var is None:
        raise ModelError("BatchNorm without running statistics cannot be folded")
    sigma = torch.sqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(sigma)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(sigma)
    scale = gamma / sigma
    return scale.float(), (beta - bn.running_mean.double() * scale).float()


def _he_layers(model: nn.Module) -> tuple[list[nn.Module], list[str]]:
    layers: list[nn.Module] = []
    names: list[str] = []
    for name, kind, mod in _trace(model):
        if kind == "relu":
            layers.append(_Relu(name))
            names.append(name)
        elif kind == "flatten":
            layers.append(nn.Flatten())
            names.append(name)
        elif isinstance(mod, nn.ReLU):
            layers.append(_Relu(name))
            names.append(name)
        elif isinstance(mod, _DROPPED):
            continue
        elif isinstance(mod, nn.Flatten):
            if mod.start_dim != 1 or mod.end_dim != -1:
                raise _refuse(name, "Flatten", "only Flatten(start_dim=1) is supported")
            layers.append(nn.Flatten())
            names.append(name)
        elif isinstance(mod, (nn.Linear, nn.Conv2d)):
            layers.append(copy.deepcopy(mod).float().eval())
            names.append(name)
        elif isinstance(mod, _POOLS):
            layers.append(copy.deepcopy(mod))
            names.append(name)
        elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            try:
                if layers and isinstance(layers[-1], (nn.Linear, nn.Conv2d)):
                    _fold_bn(layers[-1], mod)
                    names[-1] = f"{names[-1]}+{name}"
                else:
                    layers.append(ChannelAffine(*_bn_affine(mod)))
                    names.append(name)
            except ModelError as exc:
                raise _refuse(name, type(mod).__name__, str(exc)) from None
        elif isinstance(mod, nn.Module):
            raise _refuse(name, type(mod).__name__)
    if not layers:
        raise ModelError("cannot convert: the model has no layers")
    return layers, names


# ---------------------------------------------------------------------------------------------------- convert


def convert(
    model: nn.Module,
    calibration: torch.Tensor,
    *,
    activation: str = "poly2",
    margin: float = 0.1,
    train: tuple[torch.Tensor, torch.Tensor] | None = None,
    epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> HEModel:
    """HE-friendly copy of ``model``: BatchNorm folded, each ReLU replaced by a polynomial (the model is untouched).

    ``calibration`` (N, *shape) measures each activation's input range; ``activation`` is one of
    :data:`ACTIVATIONS`; ``margin`` widens each range by that fraction of its width on both sides. With ``train``
    ``(x, y)`` and ``epochs > 0`` the result is fine-tuned (:func:`finetune`). Refuses unsupported layers with
    :class:`ModelError` naming them.
    """
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}")
    if not margin >= 0 or not math.isfinite(margin):
        raise ConfigError(f"margin must be a non-negative number, got {margin}")
    if not isinstance(calibration, torch.Tensor) or calibration.dim() < 2 or len(calibration) == 0:
        raise DataError("calibration data must be a non-empty batch (N, ...)")
    calibration = calibration.detach().float().cpu()
    layers, names = _he_layers(model)
    he = HEModel(layers, calibration.shape[1:], names).eval()
    _check_equivalent(model, he, calibration)
    degree = {"poly2": 2, "poly4": 4, "square": 2}[activation]
    for i, layer in enumerate(he.layers):
        if not isinstance(layer, _Relu):
            continue
        if activation == "square":
            coeffs: tuple[float, ...] = (0.0, 0.0, 1.0)
            lo, hi = _measure(he, layer, calibration)
        else:
            lo, hi = _measure(he, layer, calibration)
            width = max(hi - lo, 1e-6)
            lo, hi = lo - margin * width, hi + margin * width
            coeffs = fit_relu(lo, hi, degree)
        he.layers[i] = PolyActivation(coeffs, lo, hi, layer.source)
    if train is not None and epochs > 0:
        finetune(he, *train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    return he.eval()


def _measure(he: HEModel, relu: _Relu, x: torch.Tensor) -> tuple[float, float]:
    relu.record = True
    relu.lo, relu.hi = math.inf, -math.inf
    with torch.no_grad():
        for i in range(0, len(x), 512):
            he(x[i : i + 512])
    relu.record = False
    if not (math.isfinite(relu.lo) and math.isfinite(relu.hi)):
        raise DataError(f"non-finite inputs reach activation {relu.source}")
    return relu.lo, relu.hi


def _check_equivalent(model: nn.Module, he: HEModel, x: torch.Tensor) -> None:
    probe = x[: min(32, len(x))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            want = model(probe)
            got = he(probe)
    except Exception as exc:
        first = str(exc).strip().splitlines()
        raise ModelError(f"the model fails on the calibration inputs: {first[0] if first else type(exc).__name__}") from exc
    finally:
        model.train(was_training)
    if not isinstance(want, torch.Tensor) or want.shape != got.shape:
        raise ModelError("conversion changed the model's output shape; is the model a plain chain of layers?")
    tol = 1e-4 * max(1.0, float(want.abs().max()))
    if float((want.float() - got.float()).abs().max()) > tol:
        raise ModelError("the traced layer chain does not reproduce the model's outputs; is forward a plain chain?")


M = TypeVar("M", bound=nn.Module)


def finetune(
    he: M,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> M:
    """Train ``he`` in place on ``(x, y)`` with Adam, cross-entropy, shuffled by ``seed``; returns it in eval mode.

    Used to fine-tune an HE model after conversion (polynomial coefficients are buffers, so they stay fixed); any
    classifier trains the same way (the benchmarks and tests train their ReLU models with it).
    """
    if epochs < 0 or batch_size < 1 or not lr > 0:
        raise ConfigError("epochs must be >= 0, batch_size >= 1 and lr > 0")
    if len(x) != len(y) or len(x) == 0:
        raise DataError("fine-tuning needs as many labels as inputs, and at least one")
    g = torch.Generator().manual_seed(seed)
    params = [p for p in he.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    he.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            loss = nn.functional.cross_entropy(he(x[idx].float()), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return he.eval()


# ---------------------------------------------------------------------------------------------------- files


def _layer_spec(layer: nn.Module) -> dict[str, Any]:
    if isinstance(layer, nn.Linear):
        return {"kind": "linear", "in": layer.in_features, "out": layer.out_features, "bias": layer.bias is not None}
    if isinstance(layer, nn.Conv2d):
        if isinstance(layer.padding, str):
            raise ModelError("string padding cannot be saved; use integer padding")
        return {
            "kind": "conv2d",
            "in": layer.in_channels,
            "out": layer.out_channels,
            "kernel": list(layer.kernel_size),
            "stride": list(layer.stride),
            "padding": list(layer.padding),
            "dilation": list(layer.dilation),
            "groups": layer.groups,
            "padding_mode": layer.padding_mode,
            "bias": layer.bias is not None,
        }
    if isinstance(layer, nn.AvgPool2d):
        return {
            "kind": "avgpool2d",
            "kernel": layer.kernel_size,
            "stride": layer.stride,
            "padding": layer.padding,
            "ceil_mode": layer.ceil_mode,
            "count_include_pad": layer.count_include_pad,
            "divisor_override": layer.divisor_override,
        }
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return {"kind": "adaptiveavgpool2d", "output_size": layer.output_size}
    if isinstance(layer, nn.Flatten):
        return {"kind": "flatten"}
    if isinstance(layer, ChannelAffine):
        return {"kind": "channel_affine", "channels": int(layer.scale.numel())}
    if isinstance(layer, PolyActivation):
        return {"kind": "poly", "coeffs": [float(c) for c in layer.coeffs], "lo": layer.lo, "hi": layer.hi, "source": layer.source}
    raise ModelError(f"cannot save layer {type(layer).__name__}")


def _build_layer(spec: dict[str, Any]) -> nn.Module:
    kind = spec.get("kind")
    if kind == "linear":
        return nn.Linear(int(spec["in"]), int(spec["out"]), bias=bool(spec["bias"]))
    if kind == "conv2d":
        conv_kwargs: dict[str, Any] = {"padding_mode": str(spec["padding_mode"])}
        return nn.Conv2d(
            int(spec["in"]),
            int(spec["out"]),
            tuple(spec["kernel"]),
            stride=tuple(spec["stride"]),
            padding=tuple(spec["padding"]),
            dilation=tuple(spec["dilation"]),
            groups=int(spec["groups"]),
            bias=bool(spec["bias"]),
            **conv_kwargs,
        )
    if kind == "avgpool2d":
        return nn.AvgPool2d(
            spec["kernel"],
            spec["stride"],
            spec["padding"],
            ceil_mode=bool(spec["ceil_mode"]),
            count_include_pad=bool(spec["count_include_pad"]),
            divisor_override=spec["divisor_override"],
        )
    if kind == "adaptiveavgpool2d":
        return nn.AdaptiveAvgPool2d(spec["output_size"])
    if kind == "flatten":
        return nn.Flatten()
    if kind == "channel_affine":
        c = int(spec["channels"])
        return ChannelAffine(torch.ones(c), torch.zeros(c))
    if kind == "poly":
        return PolyActivation(spec["coeffs"], float(spec["lo"]), float(spec["hi"]), str(spec.get("source", "")))
    raise ModelError(f"unknown layer kind {kind!r} in the HE model file")


def save_he_model(model: HEModel, path: str | Path) -> None:
    """Write ``model`` as one safetensors file: weights as tensors, the layer chain as JSON metadata (no pickle)."""
    spec = {
        "format": _FORMAT,
        "input_shape": list(model.input_shape),
        "names": model.names,
        "layers": [_layer_spec(layer) for layer in model.layers],
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"dlsec": json.dumps(spec)})


def load_he_model(path: str | Path) -> HEModel:
    """Read a file written by :func:`save_he_model`; :class:`ModelError` if it is not one."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"HE model file not found: {p}")
    if p.stat().st_size > MAX_HE_MODEL_BYTES:
        raise ModelError(f"{p} is over the {MAX_HE_MODEL_BYTES}-byte limit")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        spec = json.loads(meta["dlsec"])
        if spec.get("format") != _FORMAT:
            raise ValueError(f"format {spec.get('format')!r}")
        layers = [_build_layer(s) for s in spec["layers"]]
        model = HEModel(layers, spec["input_shape"], spec.get("names"))
        state = load_file(str(p))
        model.load_state_dict(state, strict=True)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{p} is not a dlsec HE model file: {exc}") from exc
    return model.eval()
