"""``dlsec.he.compile``: from a (converted) model and sample inputs to a checked :class:`~dlsec.he.plan.Plan`.

1. Convert (if given a plain ``nn.Module``) and lower the model (:mod:`dlsec.he.ir`); its depth fixes the levels.
2. Size the parameters: the plan is simulated slot by slot in float64 on the sample inputs
   (:class:`~dlsec.he.runtime.NumpyBackend`, the executor the encrypted run uses), and the largest magnitude any
   slot reaches, garbage slots included, times ``2 ** headroom_bits``, sets the integer bits of ``q0``; the ring is
   the smallest that holds the depth at 128-bit security with the largest scale that fits
   (:func:`~dlsec.he.params.select_params`).
3. Differential check: throwaway keys, the sample inputs encrypted, evaluated and decrypted (as released, rounded),
   compared with the plaintext HE-friendly torch model: argmax agreement and maximum logit error. Below
   ``min_agreement`` or above ``max_error`` compilation fails with :class:`CheckFailed`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from dlsec.errors import ConfigError, DataError
from dlsec.he.convert import HEModel, convert
from dlsec.he.ir import Affine, Op, depth, lower
from dlsec.he.layout import plan_single
from dlsec.he.params import CKKSParams, select_params
from dlsec.he.plan import MODES, CheckReport, Plan
from dlsec.he.runtime import BatchPacking, NumpyBackend, batch_weights, run_batch, run_single, single_weights

__all__ = ["CheckFailed", "compile", "differential_check", "simulate"]

SIMULATION_SAMPLES = 256
"""Sample inputs simulated slot by slot in single mode to size ``q0``."""


class CheckFailed(ConfigError):
    """The encrypted model disagrees with the plaintext model beyond the thresholds."""


def simulate(
    ops: list[Op], x: np.ndarray, mode: str, slots: int, batch_size: int | None = None, **layout_options: Any
) -> tuple[np.ndarray, float]:
    """Outputs of the plan simulated in float64 on ``x`` (N, features), and the largest slot magnitude reached."""
    if mode == "single":
        lay = plan_single(ops, slots, **layout_options)
        be = NumpyBackend(single_weights(lay.steps))
        outs = []
        for row in x:
            ins = [np.where(g >= 0, row[np.maximum(g, 0)], 0.0) for g in lay.gathers]
            outs.append(run_single(lay.steps, be, ins)[lay.out.slots])
        return np.stack(outs), be.max_abs
    packing = BatchPacking.for_batch(slots, batch_size)
    be = NumpyBackend(batch_weights(ops, packing))
    n_out = ops[-1].n_out if isinstance(ops[-1], Affine) else 0
    parts = []
    for start in range(0, len(x), packing.block):
        chunk = x[start : start + packing.block].astype(np.float64)
        logits: list[np.ndarray] = run_batch(ops, be, packing.pack(chunk), packing)
        parts.append(packing.unpack(logits, n_out, len(chunk)))
    return np.concatenate(parts), be.max_abs


def compile(  # noqa: A001 - the issue's name for it
    model: nn.Module,
    sample_inputs: torch.Tensor,
    mode: str = "batch",
    encrypted_weights: bool = False,
    *,
    activation: str = "poly2",
    params: CKKSParams | None = None,
    scale_bits: int | None = None,
    headroom_bits: int = 3,
    expand_input: bool = True,
    max_input_ciphertexts: int = 8,
    key_budget_bytes: int = 16 << 20,
    release_bits: int = 12,
    release_noise: float = 0.0,
    batch_size: int | None = None,
    check: bool = True,
    check_samples: int | None = None,
    min_agreement: float = 1.0,
    max_error: float = 1e-3,
) -> Plan:
    """Compile ``model`` for encrypted inference (module docstring); returns a checked :class:`Plan`.

    ``model`` is an :class:`HEModel` (from :func:`dlsec.he.convert`) or a plain module, converted here with
    ``activation`` and no fine-tuning. ``sample_inputs`` (N, *shape) calibrate the parameters and feed the
    differential check (the first ``check_samples`` of them: default all in batch mode, 16 in single mode).
    ``params`` forces a parameter set (it must hold the depth and the largest value). ``batch_size`` (batch
    mode) is the number of samples per query the plan is packed for: below ``N / 2`` the empty slots carry more
    features (fewer products per query, a few block rotations); default a full query.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if encrypted_weights and mode != "single":
        raise ConfigError("encrypted weights need mode='single' (batch packing would need one ciphertext per weight)")
    if not isinstance(sample_inputs, torch.Tensor) or sample_inputs.dim() < 2 or len(sample_inputs) == 0:
        raise DataError("sample_inputs must be a non-empty batch (N, ...)")
    if not 0 <= min_agreement <= 1 or not max_error > 0:
        raise ConfigError("min_agreement must be in [0, 1] and max_error positive")
    if headroom_bits < 0:
        raise ConfigError(f"headroom_bits must be non-negative, got {headroom_bits}")
    sample_inputs = sample_inputs.detach().float().cpu()
    he = model if isinstance(model, HEModel) else convert(model, sample_inputs, activation=activation)
    if tuple(sample_inputs.shape[1:]) != he.input_shape:
        raise DataError(f"the model takes inputs of shape {he.input_shape}, the samples are {tuple(sample_inputs.shape[1:])}")
    ops = lower(he)
    need = depth(ops)
    flat = sample_inputs.reshape(len(sample_inputs), -1).double().numpy()
    sim_x = flat[:SIMULATION_SAMPLES] if mode == "single" else flat
    layout_options = {"expand_input": expand_input, "max_input_ciphertexts": max_input_ciphertexts}
    chosen = params or select_params(need, scale_bits=scale_bits)
    for _ in range(4):
        _, max_abs = simulate(ops, sim_x, mode, chosen.slots, batch_size, **layout_options)
        int_bits = max(2, math.ceil(math.log2(max(max_abs, 1e-12))) + 1 + headroom_bits)
        if params is not None:
            if int_bits > params.int_bits:
                raise ConfigError(
                    f"values reach {max_abs:.3g}: the parameters' q0 leaves {params.int_bits} integer bits, "
                    f"{int_bits} are needed (with {headroom_bits} bits of headroom)"
                )
            break
        new = select_params(need, int_bits=int_bits, scale_bits=scale_bits)
        if new == chosen:
            break
        chosen = new
    plan = Plan(
        ops,
        chosen,
        mode,
        input_shape=he.input_shape,
        encrypted_weights=encrypted_weights,
        expand_input=expand_input,
        max_input_ciphertexts=max_input_ciphertexts,
        key_budget_bytes=key_budget_bytes,
        release_bits=release_bits,
        release_noise=release_noise,
        batch_size=batch_size,
    )
    if check:
        n = check_samples if check_samples is not None else (len(sample_inputs) if mode == "batch" else 16)
        report = differential_check(plan, he, sample_inputs[: max(1, n)], min_agreement=min_agreement, max_error=max_error)
        plan.check = report
        if not report.passed:
            raise CheckFailed(
                f"differential check failed on {report.samples} samples: argmax agreement {report.agreement:.2%} "
                f"(need {min_agreement:.2%}), max logit error {report.max_logit_error:.3g} (limit {max_error:.3g})"
            )
    return plan


@torch.no_grad()
def differential_check(
    plan: Plan, model: nn.Module, x: torch.Tensor, *, min_agreement: float = 1.0, max_error: float = 1e-3
) -> CheckReport:
    """Run ``plan`` encrypted on ``x`` with throwaway keys and compare with ``model`` in float64 (plaintext torch)."""
    keys = plan.client.keygen()
    weights = plan.encrypt_weights(keys.secret) if plan.encrypted_weights else None
    t = time.process_time()
    enc = plan.client.encrypt(x, keys.secret)
    out = plan.evaluate(enc, keys.evaluation, weights)
    got = plan.client.decrypt(out, keys.secret)
    seconds = (time.process_time() - t) / max(1, len(enc.samples))
    plan.weights = None
    ref_model = _float64_copy(model)
    want = ref_model(x.double()).numpy()
    err = np.abs(got - want)
    return CheckReport(
        samples=len(x),
        agreement=float((got.argmax(1) == want.argmax(1)).mean()),
        max_logit_error=float(err.max()),
        mean_logit_error=float(err.mean()),
        seconds_per_query=seconds,
        min_agreement=min_agreement,
        max_error=max_error,
    )


def _float64_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).double().eval()
