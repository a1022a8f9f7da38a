"""Encrypted inference benchmark (issue 5): dlsec.he against TenSEAL written the tutorial way and batched by hand.

W1: 64-32-10 MLP on digits (standard split). W2: 2-conv, 2-dense CNN on 28x28 MNIST (``../shared/data/mnist``,
first 8,000 to train, last 2,000 to test). All times are process CPU time (``time.process_time``), medians.

    .venv/bin/python benchmarks/he.py [--quick] [--workload w1|w2|all] [--concrete-python /tmp/cml/bin/python]
        [--out benchmarks/results/he.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics as st
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import dlsec.he as H
from dlsec.data import Dataset, digits, load_data

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def cpu(fn, *a, **k):
    t = time.process_time()
    r = fn(*a, **k)
    return r, time.process_time() - t


def train(model: nn.Module, data: Dataset, epochs: int, seed: int = 0, lr: float = 3e-3) -> nn.Module:
    """Adam, batch 64, deterministic: the package's own training loop, the same recipe as the tests."""
    from dlsec.he.convert import finetune

    return finetune(model, data.x, data.y, epochs=epochs, lr=lr, seed=seed)


def accuracy(logits: np.ndarray, y: torch.Tensor) -> float:
    return float((np.asarray(logits).argmax(1) == y.numpy()).mean())


def log(*a) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


# ------------------------------------------------------------------------------------------------ dlsec


def dlsec_single(he, x_calib, x, ref, n_lat, encrypted_weights=False, **kw) -> dict:
    plan, t_compile = cpu(H.compile, he, x_calib, mode="single", encrypted_weights=encrypted_weights, **kw)
    r = plan.report
    kgs = []
    for _ in range(3):
        kp = plan.keygen()
        kgs.append(kp.seconds)
    weights = plan.encrypt_weights() if encrypted_weights else None
    host = plan.without_weights() if encrypted_weights else plan
    host.evaluate(plan.encrypt(x[:1]), kp.evaluation, weights)  # warm the plaintext cache
    lat, logits = [], []
    for i in range(len(x)):
        t = time.process_time()
        enc = plan.encrypt(x[i : i + 1])
        out = host.evaluate(enc, kp.evaluation, weights)
        got = plan.decrypt(out)
        if i < n_lat:
            lat.append(time.process_time() - t)
        logits.append(got[0])
    logits = np.array(logits)
    res = {
        "params": {"N": r.poly_modulus_degree, "coeff_mod_bit_sizes": list(r.coeff_mod_bit_sizes), "levels": r.levels_used},
        "galois_keys": len(r.galois_keys),
        "rotations_per_query": r.rotations_per_query,
        "estimated_ms": r.estimated_ms,
        "compile_s": t_compile,
        "keygen_s_median": st.median(kgs),
        "eval_key_bytes": len(kp.evaluation.to_bytes()),
        "upload_bytes": len(plan.encrypt(x[:1], serialized=True).to_bytes()),
        "download_bytes": len(out.to_bytes()),
        "latency_ms_median": st.median(lat) * 1e3,
        "latency_samples": len(lat),
        "n_eval": len(x),
        "agreement": float((logits.argmax(1) == ref.argmax(1)).mean()),
        "max_logit_error": float(np.abs(logits - ref).max()),
    }
    if encrypted_weights:
        res["encrypted_weight_bytes"] = len(weights.to_bytes())
    return res, logits


def batch_figures(rows, n, up, down, got, ref) -> dict:
    """The figures every batched implementation reports: medians of (total, encrypt, evaluate, decrypt) CPU seconds
    over the repeats, cost per sample, bytes, and agreement with the plaintext logits ``ref``."""
    m = np.median(np.array(rows), 0)
    return {
        "n_samples": n,
        "total_s_median": m[0],
        "encrypt_s": m[1],
        "evaluate_s": m[2],
        "decrypt_s": m[3],
        "ms_per_sample": m[0] / n * 1e3,
        "upload_bytes": up,
        "download_bytes": down,
        "agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
        "max_logit_error": float(np.abs(got - ref).max()),
    }


def dlsec_batch(he, x_calib, x, ref, repeats, batch_size=None, fill=False) -> dict:
    """Batch packing; ``fill`` repeats the test images until the query is full (the plan's samples_per_query)."""
    plan, t_compile = cpu(H.compile, he, x_calib, mode="batch", batch_size=batch_size)
    r = plan.report
    if fill:
        reps = -(-r.samples_per_query // len(x))
        x = x.repeat(reps, *([1] * (x.dim() - 1)))[: r.samples_per_query]
        ref = np.tile(ref, (reps, 1))[: r.samples_per_query]
    kp = plan.keygen()
    rows = []
    for _ in range(repeats):
        enc, te = cpu(plan.encrypt, x)
        out, tv = cpu(plan.evaluate, enc, kp.evaluation)
        got, td = cpu(plan.decrypt, out)
        rows.append((te + tv + td, te, tv, td))
    return {
        "batch_size": batch_size or r.samples_per_query,
        "samples_per_query": r.samples_per_query,
        "params": {"N": r.poly_modulus_degree, "coeff_mod_bit_sizes": list(r.coeff_mod_bit_sizes), "levels": r.levels_used},
        "galois_keys": len(r.galois_keys),
        "compile_s": t_compile,
        "keygen_s": kp.seconds,
        "eval_key_bytes": len(kp.evaluation.to_bytes()),
        **batch_figures(rows, len(x), len(plan.encrypt(x, serialized=True).to_bytes()), len(out.to_bytes()), got, ref),
    }, got


# ------------------------------------------------------------------------------------------------ TenSEAL


def mlp_weights(he) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(W1, b1, W2, b2, (c0, c1, c2)) of the HE-friendly MLP: logits = W2 p(W1 x + b1) + b2, p(z) = c0 + c1 z + c2 z^2."""
    lins = [m for m in he.modules() if isinstance(m, nn.Linear)]
    acts = [m for m in he.modules() if isinstance(m, H.PolyActivation)]
    assert len(lins) == 2 and len(acts) == 1, "expected Linear, PolyActivation, Linear"
    z = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)
    with torch.no_grad():
        p0, p1, pm = (float(v) for v in acts[0].double()(z))
    acts[0].float()
    c0, c2 = p0, (p1 + pm) / 2 - p0
    c1 = (p1 - pm) / 2
    w = [m.weight.detach().double().numpy() for m in lins]
    b = [m.bias.detach().double().numpy() for m in lins]
    return w[0], b[0], w[1], b[1], (c0, c1, c2)


def fold(he):
    """Fold the polynomial into the layers so the model is W2' (W1 x + b1)^2 + b2' (the tutorial's square)."""
    W1, b1, W2, b2, (c0, c1, c2) = mlp_weights(he)
    # c2 (z + c1/(2 c2))^2 + c0 - c1^2/(4 c2)
    s = c1 / (2 * c2)
    return W1, b1 + s, W2 * c2, b2 + W2.sum(1) * (c0 - c2 * s * s)


def ctx_bytes(ctx, **kw) -> int:
    return len(ctx.serialize(save_public_key=False, save_secret_key=False, **kw))


def tenseal_tutorial(he, x, ref, n_lat) -> dict:
    """Per sample: enc_x.mm(W1) + b1, square, .mm(W2) + b2, as TenSEAL's tutorials write it (all rotation keys)."""
    import tenseal as ts

    W1, b1, W2, b2 = fold(he)
    t = time.process_time()
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[40, 21, 21, 21, 21, 21, 21, 40], n_threads=1)
    ctx.global_scale = 2**21
    ctx.generate_galois_keys()
    keygen = time.process_time() - t
    base = ctx_bytes(ctx, save_galois_keys=False, save_relin_keys=False)
    keys = ctx_bytes(ctx, save_galois_keys=True, save_relin_keys=True) - base
    W1t, W2t, b1l, b2l = W1.T.tolist(), W2.T.tolist(), b1.tolist(), b2.tolist()
    flat = x.reshape(len(x), -1).double().numpy()
    lat, logits = [], []
    for i, row in enumerate(flat):
        t = time.process_time()
        enc = ts.ckks_vector(ctx, row.tolist())
        up = enc.serialize()
        o = enc.mm(W1t) + b1l
        o.square_()
        o = o.mm(W2t) + b2l
        down = o.serialize()
        got = np.array(o.decrypt())
        if i < n_lat:
            lat.append(time.process_time() - t)
        logits.append(got)
    logits = np.array(logits)
    return {
        "params": {"N": 8192, "coeff_mod_bit_sizes": [40, 21, 21, 21, 21, 21, 21, 40], "scale_bits": 21},
        "keygen_s": keygen,
        "eval_key_bytes": keys,
        "upload_bytes": len(up),
        "download_bytes": len(down),
        "latency_ms_median": st.median(lat) * 1e3,
        "latency_samples": len(lat),
        "n_eval": len(x),
        "agreement": float((logits.argmax(1) == ref.argmax(1)).mean()),
        "max_logit_error": float(np.abs(logits - ref).max()),
    }, logits


def tenseal_batched(he, x, ref, repeats) -> dict:
    """By hand: one ciphertext per input feature holding every sample, scalar products (no rotation keys)."""
    import tenseal as ts

    W1, b1, W2, b2 = fold(he)
    bits = [50, 35, 35, 35, 50]
    t = time.process_time()
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=bits, n_threads=1)
    ctx.global_scale = 2**35
    keygen = time.process_time() - t
    keys = ctx_bytes(ctx, save_galois_keys=False, save_relin_keys=True) - ctx_bytes(ctx, save_galois_keys=False, save_relin_keys=False)
    flat = x.reshape(len(x), -1).double().numpy()
    assert len(flat) <= 4096
    rows = []
    for _ in range(repeats):
        t0 = time.process_time()
        cols = [ts.ckks_vector(ctx, flat[:, j].tolist()) for j in range(flat.shape[1])]
        up = sum(len(c.serialize()) for c in cols)
        t1 = time.process_time()
        hidden = []
        for k in range(W1.shape[0]):
            acc = None
            for j, c in enumerate(cols):
                if W1[k, j] != 0.0:
                    term = c * float(W1[k, j])
                    acc = term if acc is None else acc + term
            acc = acc + float(b1[k])
            acc.square_()
            hidden.append(acc)
        outs = []
        for m in range(W2.shape[0]):
            acc = None
            for k, h in enumerate(hidden):
                term = h * float(W2[m, k])
                acc = term if acc is None else acc + term
            outs.append(acc + float(b2[m]))
        t2 = time.process_time()
        down = sum(len(o.serialize()) for o in outs)
        logits = np.array([o.decrypt() for o in outs]).T
        t3 = time.process_time()
        rows.append((t3 - t0, t1 - t0, t2 - t1, t3 - t2))
    return {
        "params": {"N": 8192, "coeff_mod_bit_sizes": bits, "scale_bits": 35},
        "keygen_s": keygen,
        "eval_key_bytes": keys,
        **batch_figures(rows, len(x), up, down, logits, ref),
    }


# ------------------------------------------------------------------------------------------------ workloads


def w1(args) -> dict:
    torch.manual_seed(0)
    tr, te = digits("train"), digits("test")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    epochs = 3 if args.quick else 20
    _, t_train = cpu(train, model, tr, epochs)
    he, t_conv = cpu(H.convert, model, tr.x, activation="poly2", train=(tr.x, tr.y), epochs=1 if args.quick else 3)
    with torch.no_grad():
        relu_logits = model(te.x).numpy()
        ref = he.double()(te.x.double()).numpy()
    he.float()
    x = te.x[:20] if args.quick else te.x
    refx, yx = ref[: len(x)], te.y[: len(x)]
    n_lat = len(x)
    out = {
        "model": "Flatten, Linear(64,32), ReLU, Linear(32,10); HE: poly2 fit of ReLU + fine-tune",
        "train": {"epochs": epochs, "train_s": t_train, "convert_finetune_s": t_conv, "n_train": len(tr.x), "n_test": len(te.x)},
        "accuracy": {"relu": accuracy(relu_logits, te.y), "he_plaintext": accuracy(ref, te.y)},
    }
    log("W1 accuracy", out["accuracy"])
    res, logits = dlsec_single(he, tr.x, x, refx, n_lat, check_samples=8)
    res["accuracy_encrypted"] = accuracy(logits, yx)
    out["dlsec_single"] = res
    log("W1 dlsec single", res)
    nb = 10 if args.quick else 100
    res, _ = dlsec_single(he, tr.x, x[:nb], refx[:nb], n_lat, encrypted_weights=True, check_samples=4)
    out["dlsec_mode_b"] = res
    log("W1 dlsec mode b", res)
    for name, bs, fill in (("dlsec_batch", None, False), ("dlsec_batch_full_query", None, True), ("dlsec_batch_fit", len(x), False)):
        res, got = dlsec_batch(he, x, x, refx, 1 if args.quick else 3, batch_size=bs, fill=fill)
        if not fill:
            res["accuracy_encrypted"] = accuracy(got, yx)
        out[name] = res
        log("W1", name, res)
    res = tenseal_batched(he, x, refx, 1 if args.quick else 3)
    out["tenseal_batched_by_hand"] = res
    log("W1 tenseal batched", res)
    n_tut = 5 if args.quick else args.tutorial_samples
    res, logits = tenseal_tutorial(he, x[:n_tut], refx[:n_tut], n_tut)
    res["accuracy_encrypted"] = accuracy(logits, yx[:n_tut])
    res["accuracy_he_plaintext_same_images"] = accuracy(refx[:n_tut], yx[:n_tut])
    out["tenseal_tutorial"] = res
    log("W1 tenseal tutorial", res)
    if args.concrete_python:
        out["concrete_ml"] = concrete_ml(args.concrete_python, 3 if args.quick else args.concrete_samples)
        log("W1 concrete-ml", out["concrete_ml"].get("fhe", out["concrete_ml"]))
    return out


def concrete_ml(python: str, samples: int) -> dict:
    """The Concrete-ML row in this same run: ``he_concrete.py`` under the interpreter of Concrete-ML's own venv
    (it pins an older torch), its JSON merged here."""
    import subprocess
    import tempfile

    script = Path(__file__).resolve().parent / "he_concrete.py"
    with tempfile.TemporaryDirectory() as d:
        dst = Path(d) / "concrete.json"
        cmd = [python, str(script), "--samples", str(samples), "--out", str(dst)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"error": repr(exc), "command": " ".join(cmd)}
        if r.returncode != 0 or not dst.exists():
            return {"error": (r.stderr or r.stdout).strip()[-500:], "command": " ".join(cmd)}
        doc = json.loads(dst.read_text())
    return {"command": " ".join(cmd), "versions": doc.get("versions"), **doc["w1"]}


def w2(args) -> dict:
    d = load_data(f"idx:{MNIST}", "test")
    tr, te = Dataset(d.x[:8000], d.y[:8000], "train8000"), Dataset(d.x[8000:], d.y[8000:], "test2000")
    if args.quick:
        tr, te = Dataset(tr.x[:1000], tr.y[:1000], "q"), Dataset(te.x[:200], te.y[:200], "q")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(784, 64), nn.Linear(64, 10),
    )  # fmt: skip
    epochs = 1 if args.quick else args.w2_epochs
    _, t_train = cpu(train, model, tr, epochs)
    he, t_conv = cpu(H.convert, model, tr.x[:2000], activation="poly2", train=(tr.x, tr.y), epochs=1 if args.quick else 3)
    with torch.no_grad():
        relu_logits = model(te.x).numpy()
        ref = he.double()(te.x.double()).numpy()
    he.float()
    n_enc = 3 if args.quick else args.w2_samples
    x, refx, yx = te.x[:n_enc], ref[:n_enc], te.y[:n_enc]
    out = {
        "model": "Conv(1,8,4,s2,p1), ReLU, Conv(8,16,4,s2,p1), ReLU, Flatten, Linear(784,64), Linear(64,10); HE: poly2 + fine-tune",
        "train": {"epochs": epochs, "train_s": t_train, "convert_finetune_s": t_conv, "n_train": len(tr.x), "n_test": len(te.x)},
        "accuracy": {
            "relu": accuracy(relu_logits, te.y),
            "he_plaintext": accuracy(ref, te.y),
            "relu_on_encrypted_subset": accuracy(relu_logits[:n_enc], yx),
            "he_plaintext_on_encrypted_subset": accuracy(refx, yx),
        },
        "encrypted_subset": f"first {n_enc} of the 2,000 test images",
    }
    log("W2 accuracy", out["accuracy"])
    n_def = 2 if args.quick else args.w2_default_samples
    for name, n, kw in (("dlsec_single_256MB_keys", n_enc, {"key_budget_bytes": 256 << 20}), ("dlsec_single", n_def, {})):
        try:
            res, logits = dlsec_single(he, te.x[:64], x[:n], refx[:n], n, check_samples=1, max_error=1e-2, **kw)
            res["accuracy_encrypted"] = accuracy(logits, yx[:n])
            res["accuracy_he_plaintext_same_images"] = accuracy(refx[:n], yx[:n])
            res["accuracy_relu_same_images"] = accuracy(relu_logits[:n], yx[:n])
        except Exception as exc:  # noqa: BLE001 - record and go on
            res = {"error": repr(exc)}
        out[name] = res
        log("W2", name, res)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    ap.add_argument("--workload", choices=("w1", "w2", "all"), default="all")
    ap.add_argument("--tutorial-samples", type=int, default=50, help="W1 images run TenSEAL tutorial-style (slow)")
    ap.add_argument("--w2-epochs", type=int, default=10)
    ap.add_argument("--w2-samples", type=int, default=200, help="W2 test images evaluated encrypted (256 MB key plan)")
    ap.add_argument("--w2-default-samples", type=int, default=50, help="W2 test images, plan with the default key budget")
    ap.add_argument("--concrete-python", default=None, help="W1: also run Concrete-ML (he_concrete.py) with this interpreter, in this run")
    ap.add_argument("--concrete-samples", type=int, default=20, help="W1 images run under Concrete-ML (slow)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import tenseal

    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "tenseal": tenseal.__version__, "numpy": np.__version__},
        "machine": f"{platform.machine()}, shared and loaded; process CPU time, torch 1 thread, SEAL n_threads=1",
        "quick": args.quick,
    }
    out = Path(args.out or f"benchmarks/results/he{'.quick' if args.quick else ''}{'' if args.workload == 'all' else '.' + args.workload}.json")
    for wl in ("w1", "w2") if args.workload == "all" else (args.workload,):
        res[wl] = (w1 if wl == "w1" else w2)(args)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1, default=float) + "\n")
        log("wrote", out)


if __name__ == "__main__":
    main()
