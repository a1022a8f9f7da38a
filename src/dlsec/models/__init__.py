"""Framework glue: loading models, eval mode, devices, query counting, and the classifier contract."""

from __future__ import annotations

import torch
from torch import nn

from dlsec.errors import ModelError
from dlsec.models.demo import DEFAULT_DEMO, DEMO_MODELS, DigitsCNN, load_demo
from dlsec.models.loading import inspect_pt2, load_model, load_weights
from dlsec.models.runtime import QueryCounter, attack_mode, device_of, to_device

__all__ = [
    "DEFAULT_DEMO",
    "DEMO_MODELS",
    "DigitsCNN",
    "QueryCounter",
    "attack_mode",
    "check_classifier",
    "device_of",
    "inspect_pt2",
    "load_demo",
    "load_model",
    "load_weights",
    "predict",
    "to_device",
]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits for ``x`` in batches, on the model's device, returned on ``x``'s device."""
    dev = device_of(model)
    outs = [model(x[i : i + batch_size].to(dev)).to(x.device) for i in range(0, len(x), batch_size)]
    return torch.cat(outs) if outs else x.new_zeros((0, 0))


def check_classifier(model: nn.Module, x: torch.Tensor, num_classes: int | None = None) -> int:
    """Probe the model on a few inputs; return its number of classes or raise :class:`ModelError`.

    A classifier maps ``(N, *shape)`` to finite logits ``(N, K)`` with ``K >= 2`` (and ``K`` covering every label).
    """
    if not callable(model):
        raise ModelError("the model is not callable")
    probe = x[: min(4, len(x))]
    try:
        with attack_mode(model), torch.no_grad():
            out = model(probe.to(device_of(model)))
    except Exception as exc:
        msg = str(exc).strip().splitlines()
        raise ModelError(
            f"the model failed on inputs of shape {tuple(probe.shape[1:])}: {msg[0] if msg else type(exc).__name__}"
        ) from exc
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != probe.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"the model is not a classifier: expected logits of shape (N, K), got {shape}")
    k = int(out.shape[1])
    if k < 2:
        raise ModelError(f"the model is not a classifier: it returns {k} output per input")
    if not torch.isfinite(out).all():
        raise ModelError("the model returns non-finite outputs")
    if num_classes is not None and k < num_classes:
        raise ModelError(f"the model has {k} outputs but the labels need {num_classes} classes")
    return k
