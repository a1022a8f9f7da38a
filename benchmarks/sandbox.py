"""Sandbox benchmark: does ``dlsec sandbox`` observe every payload that runs under its loader?

    .venv-bench/bin/python benchmarks/sandbox.py        (or .venv/bin/python: needs torch, joblib, scikit-learn)

Builds the scanner benchmark's corpus (``build_corpus`` from ``benchmarks/scan.py``: malicious files with harmless
payloads such as ``os.system("true")``, and benign model files). For every file with a loader (picked as
``dlsec sandbox`` picks it):

* ground truth: the file is loaded by the same loader in a plain child process (no audit hook, no isolation)
  where the payload sinks of the corpus (``os.system``/``posix.system``, ``subprocess.Popen``, ``builtins.eval``,
  ``builtins.exec``, ``runpy._run_code``) are wrapped to record a call with the corpus's payload arguments
  (``"true"``, ``["true"]``, ``"1+1"``, ``"pass"``) and then run it: did the payload run under its loader?
* the sandbox run (``run_sandbox``, isolation on): verdict and first dangerous event.

Target: every payload that ran is observed (verdict ``dangerous``), and no benign file is flagged.
Markdown on stdout, JSON in ``benchmarks/results/sandbox.json``.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

GROUND_TRUTH = r"""
import builtins, os, posix, runpy, subprocess, sys
from dlsec.sandbox.child import LOADERS, warm_up
path, loader, fd = sys.argv[1], sys.argv[2], int(sys.argv[3])
warm_up(loader)
MARKS = ("true", ["true"], "1+1", "pass")
def hit(name, args):
    if args and args[0] in MARKS:
        os.write(fd, f"{name}\n".encode())
def wrap(name, orig):
    def f(*a, **k):
        hit(name, a)
        return orig(*a, **k)
    return f
def wrap_eval(name, orig):
    def f(source, *a, **k):
        hit(name, (source,))
        if not a and not k:  # the caller's namespaces, as the builtin would use
            caller = sys._getframe(1)
            a = (caller.f_globals, caller.f_locals)
        return orig(source, *a, **k)
    return f
posix.system = os.system = wrap("os.system", os.system)
builtins.eval = wrap_eval("builtins.eval", builtins.eval)
builtins.exec = wrap_eval("builtins.exec", builtins.exec)
runpy._run_code = wrap("runpy._run_code", runpy._run_code)
class Popen(subprocess.Popen):
    def __init__(self, *a, **k):
        hit("subprocess.Popen", a)
        super().__init__(*a, **k)
subprocess.Popen = Popen
try:
    LOADERS[loader](path)
    os.write(fd, b"!done\n")
except BaseException as exc:
    os.write(fd, f"!error {type(exc).__name__}: {str(exc)[:150]}".replace("\n", " ").encode() + b"\n")
os._exit(0)
"""


def ground_truth(path: Path, loader: str, timeout: float = 120) -> dict:
    """Load ``path`` unsandboxed with the payload sinks wrapped: which sinks ran, did the load complete."""
    r, w = os.pipe()
    work = tempfile.mkdtemp(prefix="dlsec-gt-")
    try:
        proc = subprocess.Popen([sys.executable, "-c", GROUND_TRUTH, str(path), loader, str(w)], pass_fds=(w,),
                                cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        os.close(w)
        with os.fdopen(r, "rb") as f:
            text = f.read(1 << 20).decode(errors="replace")
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = text.splitlines()
    sinks = [ln for ln in lines if not ln.startswith("!")]
    err = next((ln[7:] for ln in lines if ln.startswith("!error")), "")
    return {"payload_ran": bool(sinks), "sinks": sinks, "load_completed": "!done" in lines, "error": err}


# ----------------------------------------------------------------------------------- extra payloads (built here)
class Reduce:
    """Pickles as ``func(*args)``; never called here."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class Call(Reduce):
    """A callable stand-in (pickle wants a callable) whose pickled form is ``func(*args)``."""

    def __call__(self, *args):
        raise AssertionError("never called here")


def build_extra(root: Path, port: int) -> list[tuple[Path, Path | None]]:
    """Payloads that aim at the hooks' blind spots or at the isolation; each leaves a marker file when it runs
    (``None``: it connects to the benchmark's loopback listener instead)."""
    import _posixsubprocess
    import builtins
    import ctypes
    import importlib._bootstrap as bootstrap
    import operator
    import pickle
    import socket

    d = root / "extra"
    (d / "markers").mkdir(parents=True)
    out: list[tuple[Path, Path | None]] = []

    def add(name: str, make) -> None:
        marker = d / "markers" / name
        (d / f"{name}.pkl").write_bytes(pickle.dumps(make(str(marker)), protocol=4))
        out.append((d / f"{name}.pkl", marker))

    add("os_system_touch", lambda m: Reduce(os.system, (f"touch {m}",)))
    add("popen_touch", lambda m: Reduce(subprocess.Popen, (["touch", m],)))
    add("exec_open_write", lambda m: Reduce(builtins.exec, (f"open({m!r}, 'w').write('x')",)))
    add("exec_via_importlib_helper",
        lambda m: Reduce(bootstrap._call_with_frames_removed, (builtins.exec, f"open({m!r}, 'w').write('x')")))
    add("builtins_open_write", lambda m: Reduce(builtins.open, (m, "w")))
    add("os_mkdir", lambda m: Reduce(os.mkdir, (m,)))

    def fork_exec(m: str) -> Reduce:  # no audit event at all: only the kernel filter sees it
        pipe = Reduce(os.pipe, ())
        r = Reduce(Call(operator.itemgetter, (0,)), (pipe,))
        w = Reduce(Call(operator.itemgetter, (1,)), (pipe,))
        exe = b"/usr/bin/touch"
        return Reduce(_posixsubprocess.fork_exec, ([exe, os.fsencode(m)], (exe,), True, (w,), None, None, -1, -1,
                      -1, -1, -1, -1, r, w, False, False, -1, -1, None, -1, -1, None, False))  # fmt: skip

    add("posixsubprocess_fork_exec", fork_exec)
    add("ctypes_libc_system",
        lambda m: Reduce(Call(getattr, (Reduce(ctypes.CDLL, (None,)), "system")), (f"touch {m}".encode(),)))
    (d / "socket_connect.pkl").write_bytes(
        pickle.dumps(Reduce(socket.create_connection, (("127.0.0.1", port), 2)), protocol=4))
    out.append((d / "socket_connect.pkl", None))
    return out


def extra_truth(path: Path, marker: Path | None, listener, timeout: float = 60) -> bool:
    """Load unsandboxed (a plain child, the pickle loader): did the payload act (marker written, or connected)?"""
    code = "import sys; from dlsec.sandbox.child import LOADERS; LOADERS['pickle'](sys.argv[1])"
    work = tempfile.mkdtemp(prefix="dlsec-gt-")
    try:
        subprocess.run([sys.executable, "-c", code, str(path)], cwd=work, capture_output=True, timeout=timeout,
                       check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
    time.sleep(0.2)  # a process the payload started may still be running
    return _acted(marker, listener)


def _acted(marker: Path | None, listener) -> bool:
    if marker is None:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True
    if marker.exists():
        if marker.is_dir():
            marker.rmdir()
        else:
            marker.unlink()
        return True
    return False


def run_extra(root: Path) -> list[dict]:
    """Every extra payload: ground truth, then the sandbox (isolation on), then with ``keep_going`` (the hooks only
    record, the payload goes on: the isolation alone must hold), and whether the payload acted in either run."""
    import socket

    from dlsec.sandbox import run_sandbox
    from dlsec.sandbox.runner import namespaces_available

    rows = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.setblocking(False)
        for path, marker in build_extra(root, listener.getsockname()[1]):
            truth = extra_truth(path, marker, listener)
            rep = run_sandbox(path, "pickle")
            time.sleep(0.2)
            escaped = _acted(marker, listener)
            first = rep.dangerous[0] if rep.dangerous else None
            row = {
                "file": f"extra/{path.name}", "payload_ran": truth, "verdict": rep.verdict, "s": rep.seconds,
                "first_dangerous": f"{first.name}: {first.detail}" if first else None, "error": rep.error,
                "acted_in_sandbox": escaped,
            }  # fmt: skip
            if not namespaces_available():  # the hooks record and let the payload go on: isolation alone holds
                kg = run_sandbox(path, "pickle", keep_going=True)
                time.sleep(0.2)
                row["keep_going"] = {"verdict": kg.verdict, "events": [f"{e.name}: {e.detail}" for e in kg.dangerous],
                                     "error": kg.error}  # fmt: skip
                row["acted_in_sandbox"] = escaped = escaped or _acted(marker, listener)
            rows.append(row)
            print(f"  {rows[-1]['file']:50} ran={truth!s:5} {rep.verdict:9} escaped={escaped} "
                  f"{rows[-1]['first_dangerous'] or rep.error}", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    from dlsec.errors import InputError
    from dlsec.sandbox import pick_loader, run_sandbox
    from dlsec.sandbox.runner import namespaces_available

    spec = importlib.util.spec_from_file_location("scan_bench", HERE / "scan.py")
    assert spec and spec.loader
    scan_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scan_bench)
    root = Path(tempfile.mkdtemp(prefix="dlsec-sandboxbench-"))
    rows = []
    try:
        mal, ben = scan_bench.build_corpus(root)
        for p in mal + ben:
            row: dict = {"file": f"{p.parent.name}/{p.name}", "malicious": p.parent.name == "malicious"}
            try:
                loader = pick_loader(p).name
            except InputError as exc:
                row.update(loader=None, reason=str(exc).split(": ", 1)[-1])
                rows.append(row)
                print(f"  {row['file']:50} no loader", file=sys.stderr, flush=True)
                continue
            row["loader"] = loader
            row["truth"] = ground_truth(p, loader)
            rep = run_sandbox(p, loader)
            first = rep.dangerous[0] if rep.dangerous else None
            row["sandbox"] = {
                "verdict": rep.verdict, "exit_status": rep.exit_status, "s": rep.seconds, "error": rep.error,
                "first_dangerous": f"{first.name}: {first.detail}" if first else None,
                "events": len(rep.events),
            }  # fmt: skip
            row["isolation"] = [i.name for i in rep.isolation if i.in_force]
            rows.append(row)
            print(f"  {row['file']:50} {loader:8} ran={row['truth']['payload_ran']!s:5} {rep.verdict:9} "
                  f"{rep.seconds:5.2f}s {row['sandbox']['first_dangerous'] or rep.error}", file=sys.stderr, flush=True)
        extra = run_extra(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    loaded = [r for r in rows if r["loader"]]
    ran = [r for r in loaded if r["truth"]["payload_ran"]]
    not_ran = [r for r in loaded if r["malicious"] and not r["truth"]["payload_ran"]]
    benign = [r for r in loaded if not r["malicious"]]
    summary = {
        "files": len(rows), "with_loader": len(loaded),
        "payload_ran": len(ran), "payload_ran_observed": sum(r["sandbox"]["verdict"] == "dangerous" for r in ran),
        "missed": [r["file"] for r in ran if r["sandbox"]["verdict"] != "dangerous"],
        "malicious_payload_not_run": len(not_ran),
        "malicious_payload_not_run_verdicts": {v: sum(r["sandbox"]["verdict"] == v for r in not_ran)
                                               for v in ("clean", "dangerous", "error")},
        "benign": len(benign),
        "benign_verdicts": {v: sum(r["sandbox"]["verdict"] == v for r in benign) for v in ("clean", "dangerous", "error")},
        "benign_flagged": [r["file"] for r in benign if r["sandbox"]["verdict"] == "dangerous"],
        "no_loader": [r["file"] for r in rows if not r["loader"]],
        "median_s_per_file": statistics.median(r["sandbox"]["s"] for r in loaded) if loaded else None,
        "extra_payload_ran": sum(r["payload_ran"] for r in extra),
        "extra_observed": sum(r["payload_ran"] and r["verdict"] == "dangerous" for r in extra),
        "extra_acted_in_sandbox": [r["file"] for r in extra if r["acted_in_sandbox"]],
        "median_s_by_loader": {ld: statistics.median(r["sandbox"]["s"] for r in loaded if r["loader"] == ld)
                               for ld in sorted({r["loader"] for r in loaded})},
    }  # fmt: skip
    try:
        from importlib.metadata import version

        versions = {pkg: version(pkg) for pkg in ("dlsec", "torch", "numpy", "joblib")}
    except Exception:  # noqa: BLE001
        versions = {}
    doc = {
        "command": "benchmarks/sandbox.py",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "kernel": platform.release(), "namespaces": namespaces_available() or "available",
        "versions": versions, "summary": summary, "rows": rows, "extra": extra,
    }  # fmt: skip
    out = HERE / "results" / "sandbox.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=str))
    print(markdown(doc))


def markdown(doc: dict) -> str:
    """Summary counts and one row per file."""
    s = doc["summary"]
    L = [
        f"`{doc['command']}`, {doc['date']}, Python {doc['python']}, kernel {doc['kernel']}, "
        f"namespaces: {doc['namespaces']}, versions {doc['versions']}", "",
        "| measure | value |", "|---|---|",
        f"| malicious files whose payload ran under its loader (ground truth) | {s['payload_ran']} |",
        f"| ... observed by the sandbox (verdict dangerous) | {s['payload_ran_observed']}/{s['payload_ran']} |",
        f"| malicious files whose payload did not run under its loader | {s['malicious_payload_not_run']} "
        f"(sandbox verdicts {s['malicious_payload_not_run_verdicts']}) |",
        f"| benign files: sandbox verdicts | {s['benign_verdicts']} of {s['benign']} |",
        f"| files without a loader | {len(s['no_loader'])} ({', '.join(s['no_loader'])}) |",
        f"| median seconds per file (all / by loader) | {s['median_s_per_file']:.2f} / "
        + ", ".join(f"{k} {v:.2f}" for k, v in s["median_s_by_loader"].items()) + " |",
        f"| extra payloads (built here, aimed at the hooks' blind spots) that ran unsandboxed | "
        f"{s['extra_payload_ran']}/{len(doc['extra'])} |",
        f"| ... observed by the sandbox | {s['extra_observed']}/{s['extra_payload_ran']} |",
        f"| ... that acted from inside the sandbox, stopping at the first event or with --keep-going "
        f"(marker written outside, or connection made) | "
        f"{len(s['extra_acted_in_sandbox'])} {s['extra_acted_in_sandbox'] or ''} |",
        "", "| file | loader | payload ran | load completed | sandbox | first dangerous event / error | s |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in doc["rows"]:
        if not r["loader"]:
            L.append(f"| {r['file']} | none | | | | {r['reason'][:80]} | |")
            continue
        t, sb = r["truth"], r["sandbox"]
        what = (sb["first_dangerous"] or sb["error"] or "").replace("|", "\\|")[:90]
        bad = r["malicious"] and t["payload_ran"] and sb["verdict"] != "dangerous"
        bad = bad or (not r["malicious"] and sb["verdict"] == "dangerous")
        L.append(f"| {r['file']} | {r['loader']} | {'yes' if t['payload_ran'] else 'no'} | "
                 f"{'yes' if t['load_completed'] else 'no'} | {sb['verdict']}{' **X**' if bad else ''} | {what} | "
                 f"{sb['s']:.2f} |")  # fmt: skip
    L += ["", "| extra file | payload ran unsandboxed | sandbox | acted inside the sandbox | first dangerous event | s "
          "| --keep-going: dangerous events, error |", "|---|---|---|---|---|---|---|"]
    for r in doc["extra"]:
        what = (r["first_dangerous"] or r["error"] or "").replace("|", "\\|")[:90]
        bad = (r["payload_ran"] and r["verdict"] != "dangerous") or r["acted_in_sandbox"]
        L.append(f"| {r['file']} | {'yes' if r['payload_ran'] else 'no'} | {r['verdict']}{' **X**' if bad else ''} | "
                 f"{'YES' if r['acted_in_sandbox'] else 'no'} | {what} | {r['s']:.2f} | {_kg(r)} |")  # fmt: skip
    return "\n".join(L)


def _kg(row: dict) -> str:
    kg = row.get("keep_going")
    if not kg:
        return "not run (no namespaces)"
    names = [e.split(":", 1)[0] for e in kg["events"]]
    return (", ".join(names) + (f"; {kg['error']}" if kg["error"] else "")).replace("|", "\\|")[:110]


if __name__ == "__main__":
    main()
