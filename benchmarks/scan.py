"""Model-file scanner benchmark: dlsec ``scan`` vs picklescan, modelscan and fickling.

    .venv-bench/bin/python benchmarks/scan.py [--quick]

1. Detection: builds a corpus of malicious files (harmless payloads such as ``os.system("true")``, never executed)
   and benign model files in a temporary directory, runs every tool on every file and counts malicious files
   detected and benign files flagged. dlsec runs through its Python API at threshold HIGH (flagged = exit code 1,
   i.e. a finding at high or critical); picklescan and modelscan run as CLIs (flagged = non-zero exit status, the
   exact status is kept in the JSON); fickling runs ``fickling --check-safety`` (flagged = non-zero exit status).
2. Speed and memory: one large checkpoint (512 MB, 64 MB with ``--quick``), a folder of 1,000 small torch state
   dicts (200 with ``--quick``) and a raw 1 GB pickle of a numpy array with a payload after it (64 MB with
   ``--quick``); every tool runs as a CLI in its own process (wall time median of 3 where a run takes under a
   minute, of 5 for the folder; peak RSS measured by ``/usr/bin/time``).

Markdown on stdout, JSON in ``benchmarks/results/scan.json``.
"""

from __future__ import annotations

import argparse
import bz2
import collections
import datetime as _dt
import gzip
import io
import json
import lzma
import os
import pickle
import platform
import runpy
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
# peers run here: fickling --check-safety writes safety_results.json into its working directory
SCRATCH = tempfile.gettempdir()


# --------------------------------------------------------------------------------------------------- payloads
class Reduce:
    """Pickles as ``func(*args)``; never called here."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _os_system() -> Reduce:
    return Reduce(os.system, ("true",))  # pickles as posix.system on Linux


def _raw_os_system(proto: int) -> bytes:
    """Hand-built ``os.system("true")`` (the ``os`` spelling) for a protocol."""
    if proto == 0:
        return b"cos\nsystem\n(S'true'\ntR."
    if proto == 2:
        return b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
    body = b"\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x04true\x94\x85\x94R\x94."
    return bytes([0x80, proto]) + b"\x95" + len(body).to_bytes(8, "little") + body


def _memo_stack_global() -> bytes:
    """STACK_GLOBAL whose module and name come back from the memo (pushed, memoised, popped, then fetched)."""
    body = (
        b"\x8c\x02os\x94"  # memo 0
        b"\x8c\x06system\x94"  # memo 1
        b"00"  # pop both
        b"h\x00h\x01\x93"  # BINGET 0, BINGET 1, STACK_GLOBAL
        b"\x8c\x04true\x85R."
    )
    return b"\x80\x04" + body


def _methodcaller() -> bytes:
    """operator.methodcaller("system", "true")(methodcaller("get", "os")(sys.modules)): only operator and sys."""
    return (
        b"\x80\x02"
        b"coperator\nmethodcaller\n(X\x06\x00\x00\x00systemX\x04\x00\x00\x00truetR"  # mc_system
        b"(coperator\nmethodcaller\n(X\x03\x00\x00\x00getX\x02\x00\x00\x00ostR"  # mc_get
        b"(csys\nmodules\ntR"  # mc_get(sys.modules) -> os
        b"tR."  # mc_system(os)
    )


def _zip_rewrite(src: Path, dst: Path, rename=None, extra: dict[str, bytes] | None = None) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(rename(info.filename) if rename else info.filename, zin.read(info.filename))
        for name, data in (extra or {}).items():
            zout.writestr(name, data)


def build_corpus(root: Path) -> tuple[list[Path], list[Path]]:
    import joblib
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    mal, ben = root / "malicious", root / "benign"
    mal.mkdir(parents=True)
    ben.mkdir(parents=True)
    M: list[Path] = []

    def w(name: str, data: bytes) -> None:
        (mal / name).write_bytes(data)
        M.append(mal / name)

    for p in (0, 2, 4, 5):
        w(f"os_system_p{p}.pkl", _raw_os_system(p))
        w(f"posix_system_p{p}.pkl", pickle.dumps(_os_system(), protocol=p))
    w("builtins_eval.pkl", pickle.dumps(Reduce(eval, ("1+1",)), protocol=2))
    w("builtins_exec.pkl", pickle.dumps(Reduce(exec, ("pass",)), protocol=4))
    w("subprocess_popen.pkl", pickle.dumps(Reduce(subprocess.Popen, (["true"],)), protocol=2))
    w("subprocess_popen_p4.pkl", pickle.dumps(Reduce(subprocess.Popen, (["true"],)), protocol=4))
    w("runpy_run_code.pkl", pickle.dumps(Reduce(runpy._run_code, ("pass", {})), protocol=2))
    w("operator_methodcaller_sys_modules.pkl", _methodcaller())
    w("stack_global_memo.pkl", _memo_stack_global())

    sd = {"w": torch.randn(4, 4), "b": torch.zeros(4)}
    tmp = root / "tmp"
    tmp.mkdir()
    torch.save(sd, tmp / "clean.pt")
    _zip_rewrite(tmp / "clean.pt", mal / "torch_zip_extra_member.pt",
                 extra={"clean/extra/helper.pkl": pickle.dumps(_os_system(), protocol=2)})
    M.append(mal / "torch_zip_extra_member.pt")
    torch.save({**sd, "cfg": _os_system()}, tmp / "payload.pt")
    _zip_rewrite(tmp / "payload.pt", mal / "torch_zip_unusual_top_folder.pt",
                 rename=lambda n: "zz_not_archive/" + n.split("/", 1)[1])
    M.append(mal / "torch_zip_unusual_top_folder.pt")
    torch.save({**sd, "cfg": _os_system()}, mal / "torch_legacy_payload.pt", _use_new_zipfile_serialization=False)
    M.append(mal / "torch_legacy_payload.pt")

    payload = pickle.dumps(_os_system(), protocol=4)
    w("compressed.pkl.gz", gzip.compress(payload))
    w("compressed.pkl.bz2", bz2.compress(payload))
    w("compressed.pkl.xz", lzma.compress(payload))
    joblib.dump({"model": _os_system()}, mal / "joblib_zlib.joblib", compress=("zlib", 3))
    M.append(mal / "joblib_zlib.joblib")
    joblib.dump({"model": _os_system()}, mal / "joblib_lz4.joblib", compress="lz4")  # needs lz4 (dlsec's lz4 extra)
    M.append(mal / "joblib_lz4.joblib")
    # joblib writes numpy array bytes raw inside the pickle stream; the payload comes after them
    joblib.dump({"w": np.arange(64, dtype=np.float64), "cfg": _os_system()}, mal / "joblib_payload_after_array.joblib")
    M.append(mal / "joblib_payload_after_array.joblib")
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("model/payload.pkl", payload)
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w") as z:
        z.writestr("bundle/inner.zip", inner.getvalue())
    w("nested.zip", outer.getvalue())
    np.save(mal / "object_array.npy", np.array([_os_system(), 1], dtype=object), allow_pickle=True)
    M.append(mal / "object_array.npy")
    np.savez(mal / "object_array.npz", x=np.arange(3), y=np.array([_os_system(), 1], dtype=object))
    M.append(mal / "object_array.npz")
    # Archives altered the way PyTorch's zip reader (miniz) still loads and zipfile refuses or reads differently.
    plain = (tmp / "payload.pt").read_bytes()
    info = next(i for i in zipfile.ZipFile(tmp / "payload.pt").infolist() if i.filename.endswith("data.pkl"))
    n = struct.unpack("<H", plain[info.header_offset + 26 : info.header_offset + 28])[0]
    name_end = info.header_offset + 30 + n
    w("torch_zip_local_name_differs.pt", plain[: name_end - 8] + b"XXXX" + plain[name_end - 4 :])
    central = plain.index(b"PK\x01\x02" + plain[info.header_offset + 4 : info.header_offset + 6])
    while plain[central + 46 : central + 46 + len(info.filename)] != info.filename.encode():
        central = plain.index(b"PK\x01\x02", central + 4)
    crc = bytearray(plain)
    crc[info.header_offset + 14 : info.header_offset + 18] = crc[central + 16 : central + 20] = bytes(4)
    w("torch_zip_bad_crc.pt", bytes(crc))
    w("torch_zip_then_clean_zip.pt", plain + (tmp / "clean.pt").read_bytes())
    w("torch_zip_after_junk.keras", b"JUNKJUNK" + plain)
    w("model", pickle.dumps(_os_system(), protocol=2))
    w("multi_pickle.pkl", pickle.dumps({"epoch": 1}, protocol=2) + pickle.dumps(_os_system(), protocol=2))
    whole = pickle.dumps((_os_system(), b"x" * 4000), protocol=2)
    w("truncated.pkl", whole[: len(whole) - 2000])

    B: list[Path] = []
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    torch.save(net.state_dict(), ben / "state_dict.pt")
    torch.save(net.state_dict(), ben / "state_dict_legacy.pt", _use_new_zipfile_serialization=False)
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 8)).sum().backward()
    opt.step()
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 3, "loss": 0.25}, ben / "checkpoint.pt")
    torch.save(net, ben / "whole_module.pt")
    torch.save(collections.OrderedDict(net.state_dict()), ben / "ordered_dict.pt")
    np.save(ben / "array.npy", np.arange(100, dtype=np.float32))
    np.savez(ben / "arrays.npz", a=np.arange(10), b=np.ones((3, 3)))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(ben / "model.safetensors"))
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 2, 40)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(X, y)
    with open(ben / "sklearn_pipeline.pkl", "wb") as f:
        pickle.dump(pipe, f)
    joblib.dump(pipe, ben / "sklearn_pipeline.joblib")
    B += sorted(p for p in ben.iterdir())
    shutil.rmtree(tmp)
    return M, B


# --------------------------------------------------------------------------------------------------- tools
def run_measured(cmd: list[str], timeout: float = 600) -> dict:
    """Run ``cmd``; wall seconds, exit status and peak RSS (MiB) of that process alone."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=SCRATCH)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read().decode(errors="replace")
    return {"rc": proc.returncode, "s": wall, "tail": text[-400:]}


def run_rss(cmd: list[str], timeout: float = 600) -> dict:
    """Wall seconds, exit status and peak RSS (MiB) of ``cmd`` alone, measured by ``/usr/bin/time``.

    (``os.wait4`` on a child forked from this process reports this process's own RSS high-water mark, which the
    child inherits across fork and exec, so a small wrapper process does the measuring.)
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        r = run_measured(["/usr/bin/time", "-f", "%M", "-o", tf.name, *cmd], timeout=timeout)
        lines = [ln for ln in Path(tf.name).read_text().split() if ln.strip().isdigit()]
    r["rss_mib"] = int(lines[-1]) / 1024 if lines else float("nan")
    return r


CLI = {
    "dlsec": lambda p: [str(BIN / "dlsec"), "scan", str(p)],
    "picklescan": lambda p: [str(BIN / "picklescan"), "-p", str(p)],
    "modelscan": lambda p: [str(BIN / "modelscan"), "-p", str(p)],
    "fickling": lambda p: [str(BIN / "fickling"), "--check-safety", str(p)],
}
# dlsec's scanner without its CLI (the CLI imports every subcommand, torch included): speed table only
API = (
    "import sys; from dlsec.scan import Severity, scan_path; "
    "sys.exit(scan_path(sys.argv[1]).exit_code(Severity.HIGH))"
)
SPEED = {**CLI, "dlsec (scan module only)": lambda p: [sys.executable, "-c", API, str(p)]}


def detect(paths: list[Path]) -> dict:
    from dlsec.scan import Severity, scan_path

    rows, totals = [], {t: 0.0 for t in CLI}
    for p in paths:
        row = {"file": f"{p.parent.name}/{p.name}", "malicious": p.parent.name == "malicious"}
        t0 = time.perf_counter()
        rep = scan_path(p)
        dt = time.perf_counter() - t0
        totals["dlsec"] += dt
        rc = rep.exit_code(Severity.HIGH)
        row["dlsec"] = {
            "rc": rc, "flagged": rc == 1, "s": dt,
            "max_severity": max((f.severity for f in rep.findings), default=None) and
            max(f.severity for f in rep.findings).name,
            "findings": [f"{f.severity.name} {f.member} {f.message}" for f in rep.findings][:6],
            "errors": [e.message for e in rep.errors][:3],
            "skipped": [s.reason for s in rep.skipped][:3],
        }
        for tool in ("picklescan", "modelscan", "fickling"):
            r = run_measured(CLI[tool](p), timeout=120)
            totals[tool] += r["s"]
            row[tool] = {"rc": r["rc"], "flagged": r["rc"] != 0, "s": r["s"], "tail": r["tail"][-200:]}
        rows.append(row)
        print(f"  {row['file']:55} " + " ".join(f"{t}={row[t]['rc']}" for t in CLI), file=sys.stderr, flush=True)
    summary = {}
    for t in CLI:
        m = [r for r in rows if r["malicious"]]
        b = [r for r in rows if not r["malicious"]]
        summary[t] = {
            "malicious_detected": sum(r[t]["flagged"] for r in m), "malicious_total": len(m),
            "benign_flagged": sum(r[t]["flagged"] for r in b), "benign_total": len(b),
            "seconds": totals[t],
            "missed": [r["file"] for r in m if not r[t]["flagged"]],
            "false_positives": [r["file"] for r in b if r[t]["flagged"]],
        }
    return {"rows": rows, "summary": summary}


def speed(path: Path, label: str, tools: list[str], repeats: int = 3) -> dict:
    res = {}
    for t in tools:
        runs = [run_rss(SPEED[t](path))]
        if runs[0]["s"] < 60:
            runs += [run_rss(SPEED[t](path)) for _ in range(repeats - 1)]
        res[t] = {
            "median_s": statistics.median(r["s"] for r in runs), "runs": len(runs),
            "peak_rss_mib": max(r["rss_mib"] for r in runs), "rc": [r["rc"] for r in runs],
            "tail": runs[0]["tail"][-200:],
        }
        print(f"  {label:12} {t:10} {res[t]['median_s']:7.2f}s  {res[t]['peak_rss_mib']:7.0f} MiB  rc={res[t]['rc']}",
              file=sys.stderr, flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    versions = {}
    for pkg in ("dlsec", "picklescan", "modelscan", "fickling", "torch"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:  # noqa: BLE001
            versions[pkg] = "?"
    root = Path(tempfile.mkdtemp(prefix="dlsec-scanbench-"))
    try:
        print("building corpus", file=sys.stderr)
        M, B = build_corpus(root)
        det = detect(M + B)

        n_big = (16 if args.quick else 128) * 1024 * 1024
        big = root / "big" / "checkpoint.pt"
        big.parent.mkdir()
        torch.save({"w": torch.zeros(n_big)}, big)
        n_small = 200 if args.quick else 1000
        folder = root / "folder"
        folder.mkdir()
        for i in range(n_small):
            torch.save({"w": torch.full((8, 8), float(i)), "b": torch.zeros(8)}, folder / f"m{i:04d}.pt")
        import numpy as np

        raw = root / "raw" / "array.pkl"
        raw.parent.mkdir()
        with open(raw, "wb") as f:  # numpy writes the array's bytes into the pickle; the payload comes after them
            pickle.dump({"w": np.zeros((64 if args.quick else 1024) << 18, np.float32), "cfg": _os_system()}, f, 4)
        print("speed", file=sys.stderr)
        sp = {
            "big": {"bytes": big.stat().st_size, "tools": speed(big, "big", list(SPEED))},
            # fickling's CLI takes one file, not a directory
            "folder": {"files": n_small, "tools": speed(folder, "folder", ["dlsec", "dlsec (scan module only)", "picklescan", "modelscan"], repeats=5)},
            "raw": {"bytes": raw.stat().st_size, "tools": speed(raw, "raw", ["dlsec", "dlsec (scan module only)", "picklescan", "modelscan"])},
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)

    doc = {
        "command": "benchmarks/scan.py" + (" --quick" if args.quick else ""),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "versions": versions, "detection": det, "speed": sp,
    }
    out = HERE / "results" / "scan.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=str))
    print(markdown(doc))


def markdown(doc: dict) -> str:
    s = doc["detection"]["summary"]
    L = [f"`{doc['command']}`, {doc['date']}, versions {doc['versions']}", "",
         "| tool | malicious detected | benign flagged | total s (dlsec: in-process API; others: CLI processes) |", "|---|---|---|---|"]
    for t, v in s.items():
        L.append(f"| {t} | {v['malicious_detected']}/{v['malicious_total']} | {v['benign_flagged']}/{v['benign_total']}"
                 f" | {v['seconds']:.2f} |")
    L += ["", "| file | " + " | ".join(CLI) + " |", "|---|" + "---|" * len(CLI)]
    for r in doc["detection"]["rows"]:
        cells = []
        for t in CLI:
            flag = r[t]["flagged"]
            ok = flag == r["malicious"]
            cells.append(f"{'flag' if flag else 'pass'} (rc {r[t]['rc']}){'' if ok else ' **X**'}")
        L.append(f"| {r['file']} | " + " | ".join(cells) + " |")
    sp = doc["speed"]
    L += ["", f"Speed (median wall s / peak RSS MiB): big = {sp['big']['bytes'] / 2**20:.0f} MiB checkpoint, "
          f"folder = {sp['folder']['files']} small state dicts", "",
          f"raw = {sp['raw']['bytes'] / 2**20:.0f} MiB pickle of a numpy array with a payload after it", "",
          "| tool | big s | big MiB | folder s | folder MiB | raw s | raw MiB |", "|---|---|---|---|---|---|---|"]
    for t in SPEED:
        cells = []
        for key in ("big", "folder", "raw"):
            r = sp[key]["tools"].get(t)
            cells.append(f"{r['median_s']:.2f} (rc {r['rc'][0]}) | {r['peak_rss_mib']:.0f}" if r else "n/a | n/a")
        L.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(L)


if __name__ == "__main__":
    main()
