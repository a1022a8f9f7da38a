"""Encrypted inference: a PyTorch model evaluated on CKKS-encrypted inputs (and optionally encrypted weights).

Pipeline::

    he_model = dlsec.he.convert(model, x_calib, activation="poly2", train=(x, y), epochs=3)
    plan = dlsec.he.compile(he_model, x_calib, mode="single")      # or "batch"; encrypted_weights=True
    print(plan.report)                                              # levels, rotations, key sizes, latency
    plan.keygen()
    logits = plan.decrypt(plan.evaluate(plan.encrypt(x)))           # rounded before release

Modules: :mod:`~dlsec.he.params` (128-bit parameter table), :mod:`~dlsec.he.convert` (polynomial activations),
:mod:`~dlsec.he.ir` (lowering and folding), :mod:`~dlsec.he.layout` (slot layouts, diagonals, BSGS),
:mod:`~dlsec.he.runtime` (one executor for SEAL, simulation and metadata), :mod:`~dlsec.he.seal` (keys, SEAL),
:mod:`~dlsec.he.plan` (the plan, client spec, containers), :mod:`~dlsec.he.compile` (sizing and the differential
check), :mod:`~dlsec.he.server` (HTTP service and client). TenSEAL is imported only when keys or ciphertexts are
made (``pip install 'dlsec[he]'``).
"""

from __future__ import annotations

from dlsec.he.compile import CheckFailed, compile, differential_check
from dlsec.he.convert import (
    ACTIVATIONS,
    HEModel,
    PolyActivation,
    convert,
    finetune,
    load_he_model,
    save_he_model,
)
from dlsec.he.params import MAX_BITS_128, CKKSParams, check_security, select_params
from dlsec.he.plan import CheckReport, ClientPlan, Encrypted, EncryptedWeights, KeyPair, Plan, PlanReport

__all__ = [
    "ACTIVATIONS",
    "MAX_BITS_128",
    "CKKSParams",
    "CheckFailed",
    "CheckReport",
    "ClientPlan",
    "Encrypted",
    "EncryptedWeights",
    "HEModel",
    "KeyPair",
    "Plan",
    "PlanReport",
    "PolyActivation",
    "check_security",
    "compile",
    "convert",
    "differential_check",
    "finetune",
    "load_he_model",
    "save_he_model",
    "select_params",
]
