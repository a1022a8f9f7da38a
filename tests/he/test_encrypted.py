"""Encrypted inference through SEAL: exactness against plaintext torch, packing, keys, containers, mode (b)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dlsec.data import Dataset
from dlsec.errors import ConfigError, InputError, ModelError
from dlsec.he import CheckFailed, ClientPlan, Encrypted, EncryptedWeights, HEModel, Plan, compile, convert
from dlsec.he.seal import EvalKeys, SecretKeys, tenseal

ts = pytest.importorskip("tenseal")

TOL = 1e-3


def _ref(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The plaintext HE-friendly model in float64 (a copy: the fixture stays float32)."""
    import copy

    m = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        return m(x.double()).numpy()


def test_w1_single_matches_plaintext(single: Plan, w1_he: HEModel, digits_test: Dataset) -> None:
    x = digits_test.x[:6]
    got = single.decrypt(single.evaluate(single.encrypt(x)))
    want = _ref(w1_he, x)
    assert np.abs(got - want).max() <= TOL
    assert (got.argmax(1) == want.argmax(1)).all()
    r = single.report
    assert r.levels_used == 3 and r.poly_modulus_degree == 8192 and r.evaluation_key_bytes <= 16 << 20
    assert single.check is not None and single.check.passed and single.check.samples == 4


def test_key_budget_is_a_preference_reported_when_exceeded(single: Plan, w1_he: HEModel, digits_test: Dataset) -> None:
    assert not single.report.over_key_budget  # W1's 13 keys fit the default 16 MB
    tight = compile(w1_he, digits_test.x[:32], mode="single", check_samples=2, key_budget_bytes=1 << 20)
    r = tight.report
    assert r.over_key_budget and r.galois_key_bytes > r.key_budget_bytes == 1 << 20
    # Over the budget the plan takes the smaller of its own rotations and the power-of-two keys composing them.
    assert len(r.galois_keys) <= len(single.report.galois_keys)
    tight.keygen()
    x = digits_test.x[:3]
    assert np.abs(tight.decrypt(tight.evaluate(tight.encrypt(x))) - _ref(w1_he, x)).max() <= TOL


def test_w1_batch_whole_test_split(batch: Plan, w1_he: HEModel, digits_test: Dataset) -> None:
    """The differential check ran on all 540 test images in one query: 100% agreement, error <= 1e-3."""
    c = batch.check
    assert c is not None and c.samples == len(digits_test.x) == 540
    assert c.agreement == 1.0 and c.max_logit_error <= TOL
    r = batch.report
    assert r.samples_per_query == 1024 and r.input_ciphertexts == 64 and r.output_ciphertexts == 3
    assert r.galois_keys == (1024, 2048, 3072)  # block rotations of the hidden layer only
    assert r.products_per_query < 2400 // 3  # four features per ciphertext: about a quarter of the products


def test_batched_packing_equals_per_sample(single: Plan, batch: Plan, digits_test: Dataset) -> None:
    x = digits_test.x[10:15]
    many = batch.decrypt(batch.evaluate(batch.encrypt(x)))
    one_by_one = np.concatenate([single.decrypt(single.evaluate(single.encrypt(x[i : i + 1]))) for i in range(len(x))])
    assert many.shape == one_by_one.shape == (5, 10)
    assert np.abs(many - one_by_one).max() <= 2 * TOL


def test_tenseal_tutorial_pattern_is_wrong_ours_is_right(w1: nn.Module, digits_train: Dataset, digits_test: Dataset) -> None:
    """TenSEAL's tutorial: ``enc_x.mm(W1) + b1``, square, ``.mm(W2) + b2`` (OpenMined/TenSEAL#462)."""
    he = convert(w1, digits_train.x, activation="square", train=(digits_train.x, digits_train.y), epochs=2)
    fc1, fc2 = he.layers[1], he.layers[3]
    assert isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)
    x = digits_test.x[:3]
    want = _ref(he, x)
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[40, 21, 21, 21, 21, 21, 21, 40], n_threads=1)
    ctx.global_scale = 2**21
    ctx.generate_galois_keys()
    tutorial = []
    for row in x.reshape(3, -1).double():
        enc = ts.ckks_vector(ctx, row.tolist())
        out = enc.mm(fc1.weight.detach().double().T.tolist()) + fc1.bias.detach().double().tolist()
        out.square_()
        out = out.mm(fc2.weight.detach().double().T.tolist()) + fc2.bias.detach().double().tolist()
        tutorial.append(out.decrypt())
    tutorial_err = np.abs(np.array(tutorial) - want).max()
    assert tutorial_err > 0.1  # the tutorial pattern is off by far more than any CKKS noise
    plan = compile(he, digits_test.x[:64], mode="single", check_samples=2)
    plan.keygen()
    ours = plan.decrypt(plan.evaluate(plan.encrypt(x)))
    assert np.abs(ours - want).max() <= TOL


def test_linear_bias_chain(digits_test: Dataset) -> None:
    torch.manual_seed(7)
    chain = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.Linear(48, 24), nn.ReLU(), nn.Linear(24, 16), nn.Linear(16, 10))
    for p in chain.parameters():
        nn.init.uniform_(p, -0.5, 0.5)  # biases as large as weights
    he = convert(chain.eval(), digits_test.x[:64], activation="poly2")
    x = digits_test.x[:3]
    for mode in ("single", "batch"):
        plan = compile(he, digits_test.x[:64], mode=mode, check_samples=3)
        plan.keygen()
        assert plan.report.levels_used == 3  # consecutive linear maps merged: one level each side of the square
        assert np.abs(plan.decrypt(plan.evaluate(plan.encrypt(x))) - _ref(he, x)).max() <= TOL


def test_conv_stride2_padding_single(cnn: nn.Module, digits_train: Dataset, digits_test: Dataset) -> None:
    he = convert(cnn, digits_train.x, activation="poly2")
    plan = compile(he, digits_test.x[:64], mode="single", check_samples=3)
    plan.keygen()
    kinds = [type(s).__name__ for s in plan.layout.steps]  # type: ignore[union-attr]
    assert kinds[0] in ("ExpandStep", "DiagStep")
    x = digits_test.x[20:22]
    got = plan.decrypt(plan.evaluate(plan.encrypt(x)))
    assert np.abs(got - _ref(he, x)).max() <= TOL
    assert plan.check is not None and plan.check.agreement == 1.0


def test_differential_check_threshold_stops_compile(w1_he: HEModel, digits_test: Dataset) -> None:
    with pytest.raises(CheckFailed, match="differential check failed"):
        compile(w1_he, digits_test.x[:32], mode="batch", max_error=1e-9)


def test_server_context_holds_no_secret_key(single: Plan) -> None:
    keys = single.keys
    assert keys is not None
    ev = keys.evaluation
    assert not ev.context.is_private() and not ev.context.has_secret_key()
    back = EvalKeys.from_bytes(ev.to_bytes())
    assert not back.context.is_private()
    assert back.rotations == single.client.galois
    # a context with the secret key is refused by the evaluation side, in every form
    with pytest.raises(ConfigError, match="secret key"):
        EvalKeys(single.params, keys.secret.context, None, None, ())
    secret_ctx = keys.secret.context.serialize(save_secret_key=True)
    from dlsec.he.wire import pack

    forged = pack("eval-context", {"params": single.params.to_dict(), "rotations": []}, {"context": secret_ctx})
    with pytest.raises(ConfigError, match="secret key"):
        EvalKeys.from_bytes(forged)
    with pytest.raises(ConfigError, match="EvalKeys"):
        single.evaluate(single.encrypt(torch.zeros(1, 1, 8, 8)), keys.secret)
    assert SecretKeys.from_bytes(keys.secret.to_bytes()).context.is_private()


def test_keys_for_other_parameters_refused(single: Plan, batch: Plan) -> None:
    assert single.keys is not None and batch.keys is not None
    if single.params != batch.params or single.client.galois:
        with pytest.raises(ConfigError):
            single.evaluate(single.encrypt(torch.zeros(1, 1, 8, 8)), batch.keys.evaluation)


def test_containers_reject_malformed_input(single: Plan) -> None:
    keys = single.keys
    assert keys is not None
    enc = single.encrypt(torch.zeros(2, 1, 8, 8), serialized=True)
    data = enc.to_bytes()
    assert Encrypted.from_bytes(data).samples == (1, 1)
    for bad in (b"", b"garbage", data[:-10], data + b"x", data[:8] + b"\xff\xff\xff\xff" + data[12:]):
        with pytest.raises(InputError):
            single.check_input(Encrypted.from_bytes(bad), keys.evaluation)
    # a ciphertext SEAL rejects
    msg = Encrypted("input", single.fingerprint, (1,), blobs=((b"\x00" * 100,),))
    with pytest.raises(InputError, match="SEAL rejected"):
        single.check_input(Encrypted.from_bytes(msg.to_bytes()), keys.evaluation)
    # another plan's ciphertexts
    other = Encrypted("input", "0" * 32, (1,), blobs=enc.blobs[:1])
    with pytest.raises(InputError, match="fingerprint"):
        single.check_input(other, keys.evaluation)
    # a valid ciphertext at the wrong scale
    wrong = keys.secret.encrypt_at(np.zeros(single.params.slots), 0, 2.0**20)
    forged = Encrypted("input", single.fingerprint, (1,), groups=((wrong,),))
    with pytest.raises(InputError, match="fresh"):
        single.check_input(forged, keys.evaluation)


def test_release_rounds_outputs(single: Plan, digits_test: Dataset) -> None:
    got = single.decrypt(single.evaluate(single.encrypt(digits_test.x[:2])))
    grid = got * 2**single.client.release_bits
    assert np.array_equal(grid, np.round(grid))


def test_plan_file_and_client_spec_round_trip(single: Plan, tmp_path: Path, digits_test: Dataset) -> None:
    single.save(tmp_path / "p.safetensors")
    back = Plan.load(tmp_path / "p.safetensors")
    assert back.fingerprint == single.fingerprint and back.report == single.report
    assert back.check == single.check
    spec = ClientPlan.from_json(single.client.to_json())
    assert spec.fingerprint == single.fingerprint
    x = digits_test.x[:1]
    keys = single.keys
    assert keys is not None
    out = back.evaluate(Encrypted.from_bytes(spec.encrypt(x, keys.secret, serialized=True).to_bytes()), keys.evaluation)
    assert np.abs(spec.decrypt(Encrypted.from_bytes(out.to_bytes()), keys.secret) - single.decrypt(single.evaluate(single.encrypt(x)))).max() <= TOL
    tampered = single.client.to_json().replace('"release_bits": 12', '"release_bits": 30')
    with pytest.raises(InputError, match="fingerprint"):
        ClientPlan.from_json(tampered)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError):
        Plan.load(tmp_path / "bad.safetensors")


def test_encrypted_weights_mode(w1_he: HEModel, digits_test: Dataset) -> None:
    """Mode (b): the host holds only the weights' non-zero pattern, and ciphertexts of the weights."""
    owner = compile(w1_he, digits_test.x[:64], mode="single", encrypted_weights=True, check_samples=2)
    assert owner.check is not None and owner.check.passed
    keys = owner.keygen()
    sealed = EncryptedWeights.from_bytes(owner.encrypt_weights().to_bytes(), keys.evaluation)
    host = owner.without_weights()
    assert host.fingerprint == owner.fingerprint and not host.weights_public
    assert all(set(np.unique(op.matrix)) <= {0.0, 1.0} for op in host.ops if hasattr(op, "matrix"))
    x = digits_test.x[:3]
    enc = owner.encrypt(x)
    t = time.process_time()
    out = host.evaluate(enc, keys.evaluation, sealed)
    per_sample = (time.process_time() - t) / len(x)
    assert per_sample < 1.0
    assert np.abs(owner.decrypt(out) - _ref(w1_he, x)).max() <= TOL
    with pytest.raises(ConfigError, match="encrypted weights"):
        host.evaluate(enc, keys.evaluation)
    with pytest.raises(ConfigError, match="mode='single'"):
        compile(w1_he, digits_test.x[:8], mode="batch", encrypted_weights=True)


def test_tenseal_is_available() -> None:
    assert tenseal().__version__
