"""Dependency-audit benchmark: ``dlsec audit`` (offline) side by side with pip-audit.

    .venv-bench/bin/python benchmarks/audit.py [--quick] [--runs N]

1. Builds fake site-packages folders of 50 and 300 distributions (``name-version.dist-info/METADATA``), a few of
   them deep-learning packages at vulnerable versions, including ``torch 2.5.1+cu121`` (a local version label).
2. Offline: ``pip-audit --path SITE`` with its default service (PyPI) and with ``-s osv``; there is no network
   here: the exit status, the last line of stderr and the number of dependencies it reports as not audited are
   recorded (with ``-s pypi`` it skips every dependency and still prints "No known vulnerabilities found").
3. With a fake OSV service on 127.0.0.1 (``POST /v1/query``, the endpoint pip-audit's ``OsvService`` posts to)
   serving the same OSV records dlsec ships, pip-audit runs through its Python API (``Auditor`` with
   ``OsvService(osv_url=...)`` and ``PipSource(paths=[SITE])``) in a fresh process; dlsec runs
   ``dlsec audit --path SITE --format json`` in a fresh process with its shipped database (offline).
   The fake server evaluates ``ECOSYSTEM`` ranges on the version *as sent* with ``packaging`` (for
   ``2.5.1+cu121`` that is ``< 2.6.0``); how the real OSV API treats local labels is not reproduced here.

Each tool runs ``--runs`` times (default 5, 3 with ``--quick``); medians of wall time and of the child's CPU time
(user + system) are reported with ratios, the number of findings (package, advisory) each tool reports and whether
each one reports the ``+cu121`` torch. Markdown on stdout, JSON in ``benchmarks/results/audit.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from packaging.version import Version

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ADVISORIES = ROOT / "src" / "dlsec" / "audit" / "data" / "advisories.json"

VULNERABLE = {
    "torch": "2.5.1+cu121",
    "keras": "3.8.0",
    "transformers": "4.36.0",
    "joblib": "1.1.1",
    "numpy": "1.16.0",
    "PyYAML": "5.3.1",
    "vllm": "0.8.4",
    "onnx": "1.15.0",
}
"""Deep-learning packages at versions affected by advisories in the shipped database."""

PEER = """
import json, sys
from pathlib import Path
from pip_audit._audit import Auditor
from pip_audit._dependency_source import PipSource
from pip_audit._service import OsvService
svc = OsvService(cache_dir=Path(sys.argv[3]), timeout=30, osv_url=sys.argv[2])
found = []
for dep, vulns in Auditor(svc).audit(PipSource(paths=[Path(sys.argv[1])])):
    for v in vulns:
        found.append([dep.canonical_name, str(getattr(dep, "version", "")), v.id])
print(json.dumps(found))
"""

DLSEC = """
import sys
from dlsec.cli import COMMANDS, main
COMMANDS.setdefault("audit", "dlsec.cli.audit:audit")
main(["audit", "--no-env", "--format", "json", "--path", sys.argv[1]])
"""


def build_site(root: Path, n: int) -> Path:
    """``n`` distributions: the vulnerable deep-learning ones, then filler packages ``filler-pkg-NNN 1.0.N``."""
    root.mkdir(parents=True)
    dists = dict(VULNERABLE)
    for i in range(n - len(dists)):
        dists[f"filler-pkg-{i:03d}"] = f"1.0.{i}"
    for name, version in dists.items():
        d = root / f"{name.replace('-', '_')}-{version}.dist-info"
        d.mkdir()
        (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (d / "RECORD").write_text("")
        (d / "INSTALLER").write_text("pip\n")
    return root


def _affects(rec: dict[str, Any], name: str, version: str) -> bool:
    """Range evaluation of one OSV record for (name, version as sent), per the OSV schema."""
    norm = name.lower().replace("_", "-").replace(".", "-")
    v = Version(version)
    for aff in rec.get("affected", []):
        pkg = aff.get("package", {})
        if pkg.get("ecosystem") != "PyPI" or pkg.get("name", "").lower().replace("_", "-") != norm:
            continue
        for r in aff.get("ranges", []):
            if r.get("type") != "ECOSYSTEM":
                continue
            hit = False
            for ev in r["events"]:
                ((kind, ver),) = ev.items()
                if kind == "introduced" and (ver == "0" or v >= Version(ver)):
                    hit = True
                elif kind == "fixed" and v >= Version(ver):
                    hit = False
            if hit:
                return True
    return False


class FakeOsv:
    """``POST /v1/query`` on loopback answering from a list of OSV records; counts requests."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.requests = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake.requests += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                name, version = body["package"]["name"], body["version"]
                vulns = [r for r in fake.records if _affects(r, name, version)]
                data = json.dumps({"vulns": vulns} if vulns else {}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/query"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOsv:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def timed_run(cmd: list[str], timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run ``cmd``; (result, wall seconds, child CPU seconds user+system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, wall, cpu


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (300 characters at most)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def bench_size(n: int, runs: int, work: Path, records: list[dict[str, Any]], py: str) -> dict[str, Any]:
    """Both tools on one ``n``-package environment: offline pip-audit attempts, then timed runs of each."""
    site = build_site(work / f"site{n}", n)
    out: dict[str, Any] = {"packages": n, "vulnerable_packages": sorted(VULNERABLE)}
    pip_audit = shutil.which("pip-audit", path=str(Path(py).parent)) or str(Path(py).parent / "pip-audit")
    offline: dict[str, Any] = {}
    for service in ("pypi", "osv"):
        proc, wall, _ = timed_run(
            [pip_audit, "--path", str(site), "-s", service, "--timeout", "5"], timeout=180
        )
        offline[service] = {
            "exit_status": proc.returncode,
            "wall_s": round(wall, 2),
            "stderr_last": last_line(proc.stderr),
            "dependencies_not_audited": proc.stdout.count("could not be audited"),
        }
    out["pip_audit_offline"] = offline

    walls: dict[str, list[float]] = {"dlsec": [], "pip-audit": []}
    cpus: dict[str, list[float]] = {"dlsec": [], "pip-audit": []}
    found: dict[str, list[list[str]]] = {}
    with FakeOsv(records) as fake:
        for i in range(runs):
            proc, wall, cpu = timed_run([py, "-c", DLSEC, str(site)])
            if proc.returncode not in (0, 1):
                raise RuntimeError(f"dlsec audit failed: {proc.stderr}")
            doc = json.loads(proc.stdout)
            found["dlsec"] = sorted([v["package"], v["version"], v["id"]] for v in doc["vulnerabilities"])
            walls["dlsec"].append(wall)
            cpus["dlsec"].append(cpu)
            cache = work / f"cache{n}-{i}"  # a fresh cache each run: every query reaches the fake server
            proc, wall, cpu = timed_run([py, "-c", PEER, str(site), fake.url, str(cache)])
            if proc.returncode != 0:
                raise RuntimeError(f"pip-audit failed: {proc.stderr}")
            found["pip-audit"] = sorted(json.loads(proc.stdout))
            walls["pip-audit"].append(wall)
            cpus["pip-audit"].append(cpu)
        out["fake_osv_requests_per_pip_audit_run"] = fake.requests // runs
    for tool in ("dlsec", "pip-audit"):
        out[tool] = {
            "wall_s_median": round(statistics.median(walls[tool]), 3),
            "cpu_s_median": round(statistics.median(cpus[tool]), 3),
            "wall_s_all": [round(x, 3) for x in walls[tool]],
            "findings": len(found[tool]),
            "vulnerable_packages_found": sorted({f[0] for f in found[tool]}),
            "finds_torch_cu121": any(f[0] == "torch" and "+cu121" in f[1] for f in found[tool]),
            "ids": found[tool],
        }
    out["ratio_wall_pip_audit_over_dlsec"] = round(
        out["pip-audit"]["wall_s_median"] / out["dlsec"]["wall_s_median"], 2
    )
    out["ratio_cpu_pip_audit_over_dlsec"] = round(
        out["pip-audit"]["cpu_s_median"] / max(out["dlsec"]["cpu_s_median"], 1e-6), 2
    )
    return out


def markdown(results: dict[str, Any]) -> str:
    """The Markdown table printed at the end."""
    rows = [
        "| packages | tool | wall s (median) | CPU s (median) | findings | finds torch 2.5.1+cu121 | offline without a server |",
        "|---:|---|---:|---:|---:|---|---|",
    ]
    for r in results["sizes"]:
        off = r["pip_audit_offline"]
        for tool in ("dlsec", "pip-audit"):
            t = r[tool]
            offline = (
                "works (shipped database)"
                if tool == "dlsec"
                else "; ".join(
                    f"-s {s}: exit {o['exit_status']}, {o['dependencies_not_audited']} not audited"
                    for s, o in off.items()
                )
            )
            rows.append(
                f"| {r['packages']} | {tool} | {t['wall_s_median']:.3f} | {t['cpu_s_median']:.3f} | {t['findings']} | "
                f"{'yes' if t['finds_torch_cu121'] else 'no'} | {offline} |"
            )
        rows.append(
            f"| {r['packages']} | ratio pip-audit/dlsec | {r['ratio_wall_pip_audit_over_dlsec']}x | "
            f"{r['ratio_cpu_pip_audit_over_dlsec']}x | | | |"
        )
    return "\n".join(rows)


def main() -> None:
    """Parse arguments, run both sizes, write the JSON and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 runs per tool")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "audit.json"))
    args = ap.parse_args()
    runs = args.runs or (3 if args.quick else 5)
    records = json.loads(ADVISORIES.read_text())
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="dlsec-audit-bench-") as tmp:
        sizes = [bench_size(n, runs, Path(tmp), records, py) for n in (50, 300)]
    import pip_audit

    results = {
        "benchmark": "audit",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "pip_audit_version": pip_audit.__version__,
        "runs_per_tool": runs,
        "advisories_served": len(records),
        "command": f"{Path(py).name} benchmarks/audit.py"
        + (" --quick" if args.quick else "")
        + (f" --runs {args.runs}" if args.runs else ""),
        "notes": [
            "dlsec: fresh process, `dlsec audit --no-env --format json --path SITE`, shipped database, no network",
            "pip-audit: fresh process, Auditor(OsvService(osv_url=<loopback fake>), PipSource(paths=[SITE])), "
            "empty cache each run",
            "the fake OSV evaluates ECOSYSTEM ranges on the version as sent (packaging); the real OSV API's "
            "handling of local version labels is not reproduced",
        ],
        "sizes": sizes,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
