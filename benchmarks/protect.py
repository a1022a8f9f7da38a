"""Protected model files (issue 6): dlsec protect against OpenSSF model-signing and tensorizer's encryption.

A safetensors file of ``--size-mb`` (default 1024) is built here. Every operation runs in a fresh child process;
its CPU time is the process time around the operation (all threads), its peak memory the child's maximum resident
set (``wait4``), and a bare child that only imports the same modules gives the baseline. Medians of ``--repeats``.

    .venv-bench/bin/python benchmarks/protect.py [--size-mb 1024] [--repeats 3] [--out benchmarks/results/protect.json]

Peers (in the ``bench`` extra): ``model-signing`` (sign and verify, ECDSA P-256 key, its default file hashing) and
``tensorizer`` (serialize with ``EncryptionParams.random()`` and deserialize with the same key; it works from tensors
in memory, so its child first loads the safetensors file, outside the timed part).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path


def child_rss(code: str, setup: str = "") -> dict:
    """Run ``setup`` (untimed) then ``code`` (timed) in a fresh interpreter: CPU and wall seconds, peak RSS (MiB)."""
    src = f"{setup}\nimport time as _t\n_c = _t.process_time(); _w = _t.perf_counter()\n{code}\n" \
          "print('@@', _t.process_time() - _c, _t.perf_counter() - _w, flush=True)\n"  # fmt: skip
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: exec the interpreter with stdout on the pipe
        os.close(r)
        os.dup2(w, 1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.execv(sys.executable, [sys.executable, "-c", src])
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"child failed: {out[-500:]}")
    line = [x for x in out.splitlines() if x.startswith("@@")][-1].split()
    return {"cpu_s": float(line[1]), "wall_s": float(line[2]), "peak_rss_mib": usage.ru_maxrss / 1024}


def make_safetensors(path: Path, size_mb: int) -> None:
    """A safetensors file of about ``size_mb`` MiB: 16 float32 tensors of random bytes, written in blocks."""
    n_tensors = 16
    per = (size_mb << 20) // n_tensors // 4 * 4
    header, off = {}, 0
    for i in range(n_tensors):
        header[f"layers.{i}.weight"] = {"dtype": "F32", "shape": [per // 4], "data_offsets": [off, off + per]}
        off += per
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        block = 8 << 20
        left = off
        while left:
            n = min(block, left)
            f.write(os.urandom(n))
            left -= n


def throughput() -> dict:
    """AES-256-GCM and SHA-256 on this machine, GB/s of CPU, 1 MiB blocks (the figures the targets build on)."""
    import hashlib

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    b = os.urandom(1 << 20)
    a = AESGCM(os.urandom(32))
    t = time.process_time()
    for i in range(1024):
        a.encrypt(i.to_bytes(12, "big"), b, b"")
    aes = 1.0737 / (time.process_time() - t)
    h = hashlib.sha256()
    t = time.process_time()
    for _ in range(1024):
        h.update(b)
    return {"aes_256_gcm_gb_s": aes, "sha256_gb_s": 1.0737 / (time.process_time() - t)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default="benchmarks/results/protect.json")
    ap.add_argument("--skip-peers", action="store_true")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dlsec-protect-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "model.safetensors"
    print(f"[{time.strftime('%H:%M:%S')}] building {args.size_mb} MiB safetensors in {work}", flush=True)
    make_safetensors(src, args.size_mb)
    size = src.stat().st_size

    from dlsec.protect import generate_signing_key, write_key_file, write_signing_key

    write_key_file(work / "team.kek")
    write_signing_key(generate_signing_key("ed25519"), work / "ed.pem")
    write_signing_key(generate_signing_key("ecdsa-p256"), work / "ec.pem")
    w = str(work)
    imp_dlsec = (
        "from dlsec.protect import KeyFile, encrypt_file, decrypt_file, sign, verify, load_private_key, load_public_key; "
        "from dlsec.protect.signing import signed_file_digest; "
        "import hashlib, cryptography.hazmat.primitives.ciphers.aead, cryptography.hazmat.primitives.serialization, "
        "cryptography.hazmat.primitives.kdf.hkdf"
    )
    ops: dict[str, tuple[str, str]] = {
        "baseline: python + dlsec.protect imported": (imp_dlsec, "pass"),
        "floor: read + SHA-256 of the file (hashlib, 1 MiB blocks)": (
            "import hashlib",
            f"h = hashlib.sha256(); f = open('{w}/model.safetensors', 'rb', buffering=0); b = bytearray(1 << 20)\n"
            "while (n := f.readinto(b)): h.update(memoryview(b)[:n])",
        ),
        "dlsec encrypt+sign (Ed25519)": (
            f"{imp_dlsec}; import os; os.path.exists('{w}/model.enc') and os.unlink('{w}/model.enc')",
            f"encrypt_file('{w}/model.safetensors', '{w}/model.enc', [KeyFile('{w}/team.kek')], sign_key=load_private_key('{w}/ed.pem'))",
        ),
        "dlsec decrypt+verify (Ed25519; the CLI's path: signature checked, one read hashed while decrypting)": (
            f"{imp_dlsec}; import os; os.path.exists('{w}/model.dec') and os.unlink('{w}/model.dec')",
            f"d = signed_file_digest('{w}/model.enc', load_public_key('{w}/ed.pem.pub')); "
            f"decrypt_file('{w}/model.enc', '{w}/model.dec', [KeyFile('{w}/team.kek')], expect_sha256=d)",
        ),
        "dlsec sign plaintext (file + per-tensor digests)": (
            imp_dlsec, f"sign('{w}/model.safetensors', load_private_key('{w}/ed.pem'), '{w}/plain.sig')",
        ),
        "dlsec sign plaintext, file digest only (--no-tensors)": (
            imp_dlsec, f"sign('{w}/model.safetensors', load_private_key('{w}/ed.pem'), '{w}/plain1.sig', tensors=False)",
        ),
        "dlsec verify plaintext": (
            imp_dlsec, f"verify('{w}/model.safetensors', load_public_key('{w}/ed.pem.pub'), '{w}/plain.sig')",
        ),
        "dlsec.load (verify, decrypt in memory, safetensors)": (
            f"{imp_dlsec}; import dlsec, torch, safetensors.torch, dlsec.models.loading, dlsec.scan",
            f"sd = dlsec.load('{w}/model.enc', key=KeyFile('{w}/team.kek'), verify_key='{w}/ed.pem.pub'); assert len(sd) == 16",
        ),
    }  # fmt: skip
    peers: dict[str, tuple[str, str]] = {
        "baseline: python + model_signing imported": ("import model_signing", "pass"),
        "model-signing sign (ECDSA P-256)": (
            "import model_signing",
            f"model_signing.signing.Config().use_elliptic_key_signer(private_key='{w}/ec.pem').sign('{w}/model.safetensors', '{w}/ms.sig')",
        ),
        "model-signing verify (ECDSA P-256)": (
            "import model_signing",
            f"model_signing.verifying.Config().use_elliptic_key_verifier(public_key='{w}/ec.pem.pub').verify('{w}/model.safetensors', '{w}/ms.sig')",
        ),
        "baseline: python + tensorizer imported, 1 GB of tensors loaded": (
            f"import tensorizer, torch; from safetensors.torch import load_file; sd = load_file('{w}/model.safetensors')",
            "pass",
        ),
        "tensorizer serialize + encrypt (from tensors in memory)": (
            f"import os; os.path.exists('{w}/model.tensors') and os.unlink('{w}/model.tensors'); "
            "from tensorizer import TensorSerializer, EncryptionParams; from safetensors.torch import load_file; "
            f"sd = load_file('{w}/model.safetensors'); enc = EncryptionParams.random(); "
            f"open('{w}/tz.key', 'wb').write(enc.key)",
            f"s = TensorSerializer('{w}/model.tensors', encryption=enc); s.write_state_dict(sd); s.close()",
        ),
        "tensorizer deserialize + decrypt (into memory)": (
            "from tensorizer import TensorDeserializer, DecryptionParams; "
            f"dec = DecryptionParams.from_key(open('{w}/tz.key', 'rb').read())",
            f"d = TensorDeserializer('{w}/model.tensors', encryption=dec, lazy_load=False); n = len(d); d.close()",
        ),
    }  # fmt: skip
    todo = dict(ops)
    if not args.skip_peers:
        todo.update(peers)
    results: dict[str, dict] = {}
    for name, (setup, code) in todo.items():
        runs = []
        for _ in range(args.repeats):
            try:
                runs.append(child_rss(code, setup))
            except Exception as exc:  # noqa: BLE001 - record a peer that fails and go on
                runs = [{"error": str(exc)[-300:]}]
                break
        if "error" in runs[0]:
            results[name] = runs[0]
        else:
            results[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]} | {"runs": runs}
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {results[name] if 'error' in results[name] else {k: round(v, 3) for k, v in results[name].items() if k != 'runs'}}", flush=True)
    same = (work / "model.dec").read_bytes() == src.read_bytes() if (work / "model.dec").exists() else None
    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "file_bytes": size,
        "round_trip_identical": same,
        "versions": {"python": platform.python_version(), **_versions()},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared; CPU time is process time of the child",
        "throughput": throughput(),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")
    _table(res)
    if not args.workdir:
        shutil.rmtree(work)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for d in ("dlsec", "cryptography", "model-signing", "tensorizer", "torch", "safetensors"):
        try:
            out[d] = version(d)
        except PackageNotFoundError:
            out[d] = None
    return out


def _table(res: dict) -> None:
    gb = res["file_bytes"] / 1e9
    print(f"\n| operation ({res['file_bytes'] / 2**20:.0f} MiB file) | CPU s (median) | wall s | GB/s of CPU | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for name, r in res["results"].items():
        if "error" in r:
            print(f"| {name} | failed: {r['error'][:80]} | | | |")
            continue
        rate = f"{gb / r['cpu_s']:.2f}" if r["cpu_s"] > 0.01 and not name.startswith("baseline") else ""
        print(f"| {name} | {r['cpu_s']:.3f} | {r['wall_s']:.3f} | {rate} | {r['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
