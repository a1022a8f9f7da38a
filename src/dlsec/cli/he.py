"""``dlsec he``: encrypted inference (CKKS through TenSEAL) from the command line.

``convert`` makes a model HE-friendly, ``compile`` writes a checked plan (one safetensors file: weights as
tensors, the rest as JSON), ``keygen`` writes the client's secret context and the server's public evaluation
context, ``serve`` answers encrypted queries over HTTP, ``infer`` encrypts, sends, decrypts and prints
predictions, and ``run`` does all of it in one process for a demo.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from dlsec.cli.common import console, err_console
from dlsec.errors import ConfigError, DataError, InputError

DEMO_LIMIT = 100


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only (a secret context)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _read(path: str, what: str, limit: int = 1 << 30) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} not found: {p}")
    if p.stat().st_size > limit:
        raise InputError(f"{what} {p} is over the {limit}-byte limit")
    return p.read_bytes()


def _url(server: Any) -> str:
    host, port = server.server_address[:2]
    return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"


def _demo_mlp(seed: int = 0) -> torch.nn.Module:
    """W1 of the benchmark: a 64-32-10 ReLU MLP trained on the digits train split (a few seconds)."""
    from dlsec.data import digits

    torch.manual_seed(seed)
    data = digits("train")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(20):
        perm = torch.randperm(len(data.x), generator=g)
        for i in range(0, len(perm), 64):
            idx = perm[i : i + 64]
            loss = torch.nn.functional.cross_entropy(model(data.x[idx]), data.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _load_any_model(spec: str | None, weights: str | None) -> torch.nn.Module:
    """An HE model file, ``mlp`` (the demo MLP, trained here), or any ``dlsec`` model spec."""
    from dlsec.he import load_he_model
    from dlsec.models import load_model

    if spec is None:
        raise ConfigError("--model is required")
    if spec == "mlp":
        return _demo_mlp()
    p = Path(spec)
    if p.suffix == ".safetensors" and p.is_file() and weights is None:
        return load_he_model(p)
    return load_model(spec, weights)


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _print_report(plan: Any) -> None:
    r = plan.report
    console.print(
        f"plan: {r.mode}{' (encrypted weights)' if r.encrypted_weights else ''}, N={r.poly_modulus_degree}, "
        f"modulus {'+'.join(map(str, r.coeff_mod_bit_sizes))} bits, scale 2^{r.scale_bits}, "
        f"levels {r.levels_used}/{r.levels_available}, {r.samples_per_query} sample(s) per query"
    )
    console.print(
        f"  {r.input_ciphertexts} input / {r.output_ciphertexts} output ciphertexts; {r.rotations_per_query} rotations and "
        f"{r.products_per_query} products per query; {len(r.galois_keys)} Galois keys"
    )
    console.print(
        f"  evaluation keys ~{r.evaluation_key_bytes / 1e6:.1f} MB, upload ~{r.upload_bytes / 1e3:.0f} kB, "
        f"download ~{r.download_bytes / 1e3:.0f} kB per query; estimated {r.estimated_ms:.0f} ms per query"
    )
    if r.over_key_budget:
        console.print(
            f"  note: the Galois keys (~{r.galois_key_bytes / 1e6:.1f} MB) exceed the key budget "
            f"({r.key_budget_bytes / 1e6:.1f} MB); no smaller set of keys serves this plan"
        )
    if plan.check is not None:
        c = plan.check
        console.print(
            f"  differential check on {c.samples} samples: argmax agreement {c.agreement:.2%}, max logit error "
            f"{c.max_logit_error:.2e} ({'passed' if c.passed else 'FAILED'}; {c.seconds_per_query * 1e3:.0f} ms per query)"
        )


@click.group()
def he() -> None:
    """Encrypted inference: run a model on CKKS-encrypted inputs (and, optionally, encrypted weights)."""


@he.command("convert")
@click.option("--model", "model_spec", required=True, help="model: package.module:factory (with --weights), FILE.pt2, or mlp (the demo MLP)")
@click.option("--weights", type=click.Path(dir_okay=False), help="weights for a factory model")
@click.option("--data", "data_spec", default="digits", show_default=True, help="calibration and fine-tuning data (its train split)")
@click.option("--limit", type=int, help="use only the first N training points")
@click.option("--activation", type=click.Choice(["poly2", "poly4", "square"]), default="poly2", show_default=True, help="what replaces ReLU")
@click.option("--margin", type=float, default=0.1, show_default=True, help="widen each calibrated range by this fraction")
@click.option("--epochs", type=int, default=3, show_default=True, help="fine-tuning epochs (0: none)")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="fine-tuning learning rate (Adam)")
@click.option("--seed", type=int, default=0, show_default=True, help="fine-tuning seed")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the HE-friendly model (safetensors)")
def convert_cmd(
    model_spec: str, weights: str | None, data_spec: str, limit: int | None, activation: str, margin: float, epochs: int, lr: float, seed: int, out: str
) -> None:
    """Make a model HE-friendly: BatchNorm folded, ReLU replaced by a polynomial, then fine-tuned."""
    from dlsec.data import load_data
    from dlsec.he import convert, save_he_model

    model = _load_any_model(model_spec, weights)
    train = load_data(data_spec, "train").head(limit)
    he_model = convert(model, train.x, activation=activation, margin=margin, train=(train.x, train.y), epochs=epochs, seed=seed)
    save_he_model(he_model, out)
    test = load_data(data_spec, "test")
    console.print(
        f"accuracy on {test.name}: original {_accuracy(model, test.x, test.y):.2%}, HE-friendly {_accuracy(he_model, test.x, test.y):.2%}"
    )
    for fit in he_model.fits:
        console.print(f"  {fit.source}: range [{fit.lo:.3g}, {fit.hi:.3g}], coefficients {[round(c, 5) for c in fit.coeffs]}")
    console.print(f"HE model written to {out}")


@he.command("compile")
@click.option("--model", "model_spec", required=True, help="an HE model from 'dlsec he convert', or any model spec (converted here, no fine-tuning)")
@click.option("--weights", type=click.Path(dir_okay=False), help="weights for a factory model")
@click.option("--data", "data_spec", default="digits", show_default=True, help="calibration data (its train split)")
@click.option("--limit", type=int, default=512, show_default=True, help="calibration points")
@click.option("--mode", type=click.Choice(["single", "batch"]), default="single", show_default=True, help="single: latency; batch: one sample per slot")
@click.option("--encrypted-weights", is_flag=True, help="mode (b): the weights are encrypted by their owner too")
@click.option("--batch-size", type=int, help="batch mode: samples per query (fewer than N/2 packs more features per ciphertext)")
@click.option("--activation", type=click.Choice(["poly2", "poly4", "square"]), default="poly2", show_default=True, help="for a model not yet converted")
@click.option("--scale-bits", type=int, help="CKKS scale (default: the largest the smallest secure ring allows)")
@click.option("--check-samples", type=int, help="differential check samples (default: 16 single, all batch)")
@click.option("--max-error", type=float, default=1e-3, show_default=True, help="differential check: largest logit error")
@click.option("--min-agreement", type=float, default=1.0, show_default=True, help="differential check: least argmax agreement")
@click.option("--release-bits", type=int, default=12, show_default=True, help="decrypted outputs are rounded to 2^-N")
@click.option("--release-noise", type=float, default=0.0, show_default=True, help="std of Gaussian noise added to decrypted outputs before rounding (noise flooding against IND-CPA-D key recovery)")
@click.option("--key-budget-mb", type=int, default=16, show_default=True, help="Galois keys above this: power-of-two keys, composed rotations")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the plan (safetensors + JSON)")
@click.option("--host-plan", type=click.Path(dir_okay=False), help="with --encrypted-weights: also write the weightless plan the host serves")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="write the report and check as JSON ('-' for stdout)")
def compile_cmd(
    model_spec: str,
    weights: str | None,
    data_spec: str,
    limit: int,
    mode: str,
    encrypted_weights: bool,
    batch_size: int | None,
    activation: str,
    scale_bits: int | None,
    check_samples: int | None,
    max_error: float,
    min_agreement: float,
    release_bits: int,
    release_noise: float,
    key_budget_mb: int,
    out: str,
    host_plan: str | None,
    json_out: str | None,
) -> None:
    """Compile a model to a plan: parameters, packing, rotations; checked against plaintext before it is written."""
    from dlsec.data import load_data
    from dlsec.he import compile as he_compile

    model = _load_any_model(model_spec, weights)
    calib = load_data(data_spec, "train").head(limit)
    plan = he_compile(
        model,
        calib.x,
        mode=mode,
        encrypted_weights=encrypted_weights,
        batch_size=batch_size,
        activation=activation,
        scale_bits=scale_bits,
        check_samples=check_samples,
        max_error=max_error,
        min_agreement=min_agreement,
        release_bits=release_bits,
        release_noise=release_noise,
        key_budget_bytes=max(0, key_budget_mb) << 20,
    )
    plan.save(out)
    if host_plan:
        if not encrypted_weights:
            raise ConfigError("--host-plan needs --encrypted-weights")
        plan.without_weights().save(host_plan)
    doc = {"report": plan.report.to_dict(), "check": plan.check.to_dict() if plan.check else None, "fingerprint": plan.fingerprint}
    if json_out == "-":
        click.echo(json.dumps(doc, indent=2))
        return
    _print_report(plan)
    if json_out:
        Path(json_out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    console.print(f"plan written to {out}" + (f", host plan to {host_plan}" if host_plan else ""))


@he.command("keygen")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), help="the plan file")
@click.option("--server", "url", help="or: fetch the client spec from this server")
@click.option("--secret", "secret_out", default="client.secret", show_default=True, type=click.Path(dir_okay=False), help="secret context (stays with the client)")
@click.option("--evaluation", "eval_out", default="server.eval", show_default=True, type=click.Path(dir_okay=False), help="public evaluation context (for the server)")
def keygen_cmd(plan_path: str | None, url: str | None, secret_out: str, eval_out: str) -> None:
    """Write the client's secret context and the server's public evaluation context for a plan."""
    from dlsec.he import Plan
    from dlsec.he.server import HEClient

    if (plan_path is None) == (url is None):
        raise ConfigError("give exactly one of --plan and --server")
    client = Plan.load(plan_path).client if plan_path else HEClient(str(url)).plan()
    keys = client.keygen()
    _write_private(Path(secret_out), keys.secret.to_bytes())
    ev = keys.evaluation.to_bytes()
    Path(eval_out).write_bytes(ev)
    console.print(
        f"keys in {keys.seconds:.2f} s: secret context {secret_out} (keep it), evaluation context {eval_out} "
        f"({len(ev) / 1e6:.1f} MB, no secret key, {len(keys.evaluation.rotations)} rotation keys)"
    )


@he.command("serve")
@click.option("--plan", "plan_path", required=True, type=click.Path(dir_okay=False), help="the plan (or, mode b, the host plan)")
@click.option("--host", default="127.0.0.1", show_default=True, help="interface to bind (loopback by default)")
@click.option("--port", type=int, default=8734, show_default=True, help="port (0: any free one)")
@click.option("--max-request-mb", type=int, default=256, show_default=True, help="largest request body")
@click.option("--max-keys", type=int, default=16, show_default=True, help="evaluation contexts kept")
def serve_cmd(plan_path: str, host: str, port: int, max_request_mb: int, max_keys: int) -> None:
    """Serve a plan over HTTP: clients upload a public evaluation context, then send ciphertexts."""
    from dlsec.he import Plan
    from dlsec.he.server import Limits, make_server

    if max_request_mb < 1 or max_keys < 1:
        raise ConfigError("--max-request-mb and --max-keys must be positive")
    plan = Plan.load(plan_path)
    limits = Limits(max_key_bytes=max_request_mb << 20, max_request_bytes=max_request_mb << 20, max_weight_bytes=max_request_mb << 20, max_keys=max_keys)
    server = make_server(plan, host, port, limits)
    err_console.print(f"serving plan {plan.fingerprint} ({plan.mode}) on {_url(server)} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _predict(client_plan: Any, secret: Any, send: Any, x: torch.Tensor) -> np.ndarray:
    """Encrypt ``x`` in requests of at most 64 queries, send each, decrypt; returns the released logits."""
    chunk = 64 if client_plan.mode == "single" else client_plan.samples_per_query * 4
    outs = []
    for i in range(0, len(x), chunk):
        enc = client_plan.encrypt(x[i : i + chunk], secret, serialized=True)
        outs.append(client_plan.decrypt(send(enc), secret))
    return np.concatenate(outs)


def _summary(logits: np.ndarray, y: torch.Tensor | None, seconds: float, json_out: bool, extra: dict[str, Any] | None = None) -> None:
    pred = logits.argmax(1)
    doc: dict[str, Any] = {"predictions": pred.tolist(), "seconds": seconds, **(extra or {})}
    if y is not None:
        doc["accuracy"] = float((pred == y.numpy()).mean())
    if json_out:
        click.echo(json.dumps(doc))
        return
    shown = " ".join(map(str, pred[:40].tolist())) + (" ..." if len(pred) > 40 else "")
    console.print(f"predictions ({len(pred)}): {shown}")
    if y is not None:
        console.print(f"accuracy {doc['accuracy']:.2%}")
    for k, v in (extra or {}).items():
        console.print(f"{k.replace('_', ' ')}: {v:.3g}" if isinstance(v, float) else f"{k.replace('_', ' ')}: {v}")
    console.print(f"{seconds:.2f} s ({seconds / max(1, len(pred)) * 1e3:.1f} ms per sample)")


@he.command("infer")
@click.option("--server", "url", required=True, help="the server URL, e.g. http://127.0.0.1:8734")
@click.option("--data", "data_spec", default="digits", show_default=True, help="inputs: digits, npz:PATH, idx:DIR, ... (test split)")
@click.option("--limit", type=int, help="use only the first N points")
@click.option("--secret", "secret_path", type=click.Path(dir_okay=False), help="secret context from keygen (default: fresh keys in memory)")
@click.option("--evaluation", "eval_path", type=click.Path(dir_okay=False), help="the matching evaluation context (with --secret)")
@click.option("--owner-plan", type=click.Path(dir_okay=False), help="mode (b): the plan with the weights, to encrypt and upload them")
@click.option("--json", "json_out", is_flag=True, help="print the predictions as JSON")
def infer_cmd(url: str, data_spec: str, limit: int | None, secret_path: str | None, eval_path: str | None, owner_plan: str | None, json_out: bool) -> None:
    """Encrypt inputs, send them to a server, decrypt and print the predictions."""
    from dlsec.data import load_data
    from dlsec.he import Plan
    from dlsec.he.seal import EvalKeys, SecretKeys
    from dlsec.he.server import HEClient

    client = HEClient(url)
    spec = client.plan()
    data = load_data(data_spec).head(limit)
    if secret_path:
        if not eval_path:
            raise ConfigError("--secret needs --evaluation (the context the server gets)")
        secret = SecretKeys.from_bytes(_read(secret_path, "secret context"))
        evaluation = EvalKeys.from_bytes(_read(eval_path, "evaluation context"))
    else:
        pair = spec.keygen()
        secret, evaluation = pair.secret, pair.evaluation
    spec.check_keys(secret)
    spec.check_keys(evaluation)
    t = time.perf_counter()
    key_id = client.upload_keys(evaluation)
    if spec.encrypted_weights:
        if not owner_plan:
            raise ConfigError("this server evaluates on encrypted weights: give --owner-plan (the plan with the weights)")
        plan = Plan.load(owner_plan)
        if plan.fingerprint != spec.fingerprint:
            raise ConfigError("--owner-plan is not the plan the server runs")
        client.upload_weights(key_id, plan.encrypt_weights(secret))
    logits = _predict(spec, secret, lambda enc: client.infer(key_id, enc), data.x)
    _summary(logits, data.y, time.perf_counter() - t, json_out)


@he.command("run")
@click.option("--model", "model_spec", default="mlp", show_default=True, help="mlp (the digits MLP, trained here), an HE model file, or a model spec")
@click.option("--weights", type=click.Path(dir_okay=False), help="weights for a factory model")
@click.option("--data", "data_spec", default="digits", show_default=True, help="data: train split to convert and calibrate, test split to run")
@click.option("--limit", type=int, help=f"test points (default {DEMO_LIMIT} single, all batch)")
@click.option("--mode", type=click.Choice(["single", "batch"]), default="single", show_default=True, help="packing")
@click.option("--encrypted-weights", is_flag=True, help="mode (b): weights encrypted too")
@click.option("--activation", type=click.Choice(["poly2", "poly4", "square"]), default="poly2", show_default=True, help="what replaces ReLU")
@click.option("--epochs", type=int, default=3, show_default=True, help="fine-tuning epochs after conversion")
@click.option("--http", "over_http", is_flag=True, help="go through a loopback HTTP server (ephemeral port) like a real client")
@click.option("--json", "json_out", is_flag=True, help="print the result as JSON")
def run_cmd(
    model_spec: str, weights: str | None, data_spec: str, limit: int | None, mode: str, encrypted_weights: bool, activation: str, epochs: int, over_http: bool, json_out: bool
) -> None:
    """The whole pipeline in one process: convert, compile (checked), keygen, encrypt, evaluate, decrypt."""
    from dlsec.data import load_data
    from dlsec.he import HEModel, convert
    from dlsec.he import compile as he_compile
    from dlsec.he.server import HEClient, make_server

    model = _load_any_model(model_spec, weights)
    train = load_data(data_spec, "train")
    test = load_data(data_spec, "test").head(limit if limit is not None else (DEMO_LIMIT if mode == "single" else None))
    he_model = model if isinstance(model, HEModel) else convert(model, train.x, activation=activation, train=(train.x, train.y), epochs=epochs)
    plan = he_compile(
        he_model,
        train.x[:512],
        mode=mode,
        encrypted_weights=encrypted_weights,
        batch_size=len(test.x) if mode == "batch" else None,
        check_samples=4 if mode == "single" else None,
    )
    if not json_out:
        _print_report(plan)
    keys = plan.keygen()
    t = time.perf_counter()
    if over_http:
        host = plan.without_weights() if encrypted_weights else plan
        server = make_server(host, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            client = HEClient(_url(server))
            spec = client.plan()
            key_id = client.upload_keys(keys.evaluation)
            if encrypted_weights:
                client.upload_weights(key_id, plan.encrypt_weights())
            logits = _predict(spec, keys.secret, lambda enc: client.infer(key_id, enc), test.x)
        finally:
            server.shutdown()
            server.server_close()
    else:
        if encrypted_weights:
            plan.encrypt_weights()
        logits = plan.decrypt(plan.evaluate(plan.encrypt(test.x)))
    seconds = time.perf_counter() - t
    with torch.no_grad():
        ref = he_model.double()(test.x.double()).numpy()
    he_model.float()
    if not len(logits) == len(ref):
        raise DataError("internal error: output count mismatch")
    extra = {
        "agreement_with_plaintext": float((logits.argmax(1) == ref.argmax(1)).mean()),
        "max_logit_error": float(np.abs(logits - ref).max()),
        "keygen_seconds": keys.seconds,
    }
    _summary(logits, test.y, seconds, json_out, extra)
