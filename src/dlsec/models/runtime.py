"""Eval mode, frozen weights and devices: the only place that knows how a model is run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameter-free model)."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _set_mode(model: nn.Module, training: bool) -> bool:
    """Set train/eval mode; False for models whose mode is fixed (``torch.export`` programs)."""
    try:
        model.train(training)
    except NotImplementedError:
        return False
    return True


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode with weights frozen for the duration of an attack; both restored afterwards.

    Each submodule's ``training`` flag and each parameter's ``requires_grad`` is put back exactly as found,
    so a model that was half in training mode comes back the same. Exported programs carry the mode they
    were exported in and cannot be switched; they are used as they are.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    switched = _set_mode(model, False)
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        if switched:
            for m, flag in modes:
                m.training = flag
        for p, flag in grads:
            p.requires_grad_(flag)


class QueryCounter(nn.Module):
    """Wraps a classifier and counts per-sample forward passes and backward passes through it.

    ``forwards`` grows by the batch size of each call; ``backwards`` by the batch size of each gradient that
    flows back into the logits. The wrapped model is not copied.

    A model whose output is cut from its input (a NumPy round-trip, a ``detach``) has no input gradient; its
    output is then joined to the input with weight zero, so gradient attacks see a zero gradient and fail
    honestly instead of crashing (the ``zero_gradients`` masking check then flags the model).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forwards = 0
        self.backwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        n = int(x.shape[0])
        self.forwards += n
        if torch.is_grad_enabled() and x.requires_grad and not out.requires_grad:
            out = out + 0.0 * x.sum()
        if out.requires_grad:
            out.register_hook(self._count_backward(n))
        return out

    def _count_backward(self, n: int):  # type: ignore[no-untyped-def]
        def hook(grad: torch.Tensor) -> None:
            self.backwards += n

        return hook


def to_device(model: nn.Module, device: str | torch.device) -> nn.Module:
    """Move a model to ``device``; a clear error for a device torch does not have."""
    from dlsec.errors import ConfigError

    try:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} is not available (no CUDA)")
        return model.to(dev)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot use device {device!r}: {exc}") from exc
