"""Slot layouts, checked by the exact float64 simulation of the executor (no encryption involved)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dlsec.he import convert
from dlsec.he.ir import lower, run_ir
from dlsec.he.layout import DiagStep, ExpandStep, plan_single, rotation_steps
from dlsec.he.params import select_params
from dlsec.he.runtime import BatchPacking, NumpyBackend, batch_weights, run_batch, run_single, single_weights
from dlsec.he.seal import naf_steps, rotation_plan


def simulate(model: nn.Module, x: torch.Tensor, slots: int, junk: bool = False, **opts: object) -> tuple[float, list]:
    he = convert(model.eval(), x, activation="poly2")
    ops = lower(he)
    lay = plan_single(ops, slots, **opts)  # type: ignore[arg-type]
    be = NumpyBackend(single_weights(lay.steps))
    ref = run_ir(ops, x.numpy())
    rng = np.random.default_rng(0)
    err = 0.0
    for s, row in enumerate(x.reshape(len(x), -1).double().numpy()):
        ins = []
        for g in lay.gathers:
            v = np.where(g >= 0, row[np.maximum(g, 0)], 0.0)
            if junk:  # what the unused slots hold must not matter: every product masks them
                v = np.where(g >= 0, v, rng.normal(0, 1, len(v)))
            ins.append(v)
        err = max(err, float(np.abs(run_single(lay.steps, be, ins)[lay.out.slots] - ref[s]).max()))
    return err, list(lay.steps)


def conv_net(stride: int, padding: int) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, stride=stride, padding=padding),
        nn.ReLU(),
        nn.Conv2d(3, 5, 2, stride=1, padding=1),
        nn.AvgPool2d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.LazyLinear(7),
    )


@pytest.mark.parametrize(("stride", "padding"), [(1, 0), (2, 1), (2, 0), (1, 2), (3, 1)])
@pytest.mark.parametrize("expand", [True, False])
def test_conv_layouts_exact(stride: int, padding: int, expand: bool) -> None:
    x = torch.rand(6, 1, 8, 8)
    model = conv_net(stride, padding)
    model(x)  # materialise the lazy layer
    err, steps = simulate(model, x, 1024, junk=True, expand_input=expand)
    assert err < 1e-9
    assert isinstance(steps[0], ExpandStep) == expand or not expand


def test_structured_layout_chosen_for_stacked_convs() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(392, 32), nn.ReLU(), nn.Linear(32, 10),
    )
    x = torch.rand(3, 1, 28, 28)
    err, steps = simulate(model, x, 4096, junk=True)
    assert err < 1e-9
    conv2 = steps[2]
    assert isinstance(conv2, DiagStep) and conv2.kind == "structured"
    # (C_in + C_out - 1) * k * k diagonals at most, whatever the image size
    assert len(conv2.diags) <= (4 + 8 - 1) * 16
    assert len(conv2.baby_steps) + len(conv2.giant_steps) < 40


def test_dense_layers_hybrid_and_expanded() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.rand(8, 1, 8, 8)
    err, steps = simulate(model, x, 4096, junk=True)
    assert err < 1e-9
    assert isinstance(steps[0], ExpandStep) and len(steps[0].weights) == 1  # 32 outputs x 64 taps in one ciphertext
    assert isinstance(steps[2], DiagStep) and steps[2].kind == "hybrid" and len(steps[2].diags) <= 16
    err, steps = simulate(model, x, 4096, junk=True, expand_input=False)
    assert err < 1e-9 and isinstance(steps[0], DiagStep)


def test_wide_input_expands_over_several_ciphertexts() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(300, 64), nn.ReLU(), nn.Linear(64, 10))
    x = torch.rand(4, 300)
    err, steps = simulate(model, x, 256, max_input_ciphertexts=128)
    assert err < 1e-9
    assert isinstance(steps[0], ExpandStep) and len(steps[0].weights) == 512 * 64 // 256


def test_batch_packing_equals_reference() -> None:
    torch.manual_seed(5)
    model = conv_net(2, 1)
    x = torch.rand(17, 1, 8, 8)
    model(x)
    ops = lower(convert(model.eval(), x, activation="poly4"))
    flat = x.reshape(17, -1).double().numpy()
    out = np.stack(run_batch(ops, NumpyBackend(), [flat[:, i] for i in range(flat.shape[1])]), axis=1)
    assert np.abs(out - run_ir(ops, flat)).max() < 1e-9


def test_rotation_keys_only_those_needed_or_binary_digits() -> None:
    torch.manual_seed(6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    ops = lower(convert(model.eval(), torch.rand(8, 64)))
    p = select_params(3)
    lay = plan_single(ops, p.slots)
    needed = rotation_steps(lay.steps)
    assert rotation_plan(needed, p, 1 << 40) == tuple(needed)
    tight = rotation_plan(list(range(1, 200)), p, 1 << 20)
    assert len(tight) < 199 and all(s & (s - 1) == 0 or (p.slots - s) & (p.slots - s - 1) == 0 for s in tight)
    for k in (1, 7, 15, 100, 4095, 2049, 3000):
        parts = naf_steps(k, 4096)
        assert sum(parts) % 4096 == k % 4096 and len(parts) <= 7


@pytest.mark.parametrize("group", [2, 4, 8])
@pytest.mark.parametrize("activation", ["poly2", "poly4"])
def test_grouped_batch_packing_equals_reference(group: int, activation: str) -> None:
    """Several features per ciphertext (fewer samples than slots): same outputs, sample by sample."""
    torch.manual_seed(8)
    model = conv_net(2, 1)
    x = torch.rand(9, 1, 8, 8)
    model(x)
    ops = lower(convert(model.eval(), x, activation=activation))
    packing = BatchPacking(64 * group, group)
    assert packing.block == 64
    flat = x.reshape(9, -1).double().numpy()
    be = NumpyBackend(batch_weights(ops, packing))
    outs = run_batch(ops, be, packing.pack(flat), packing)
    assert len(outs) == -(-7 // group)
    got = packing.unpack(outs, 7, 9)
    assert np.abs(got - run_ir(ops, flat)).max() < 1e-9
    assert BatchPacking.for_batch(4096, 540).group == 4 and BatchPacking.for_batch(4096, None).group == 1
