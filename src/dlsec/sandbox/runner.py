"""The parent side of a sandbox run: start the child in isolation, read its events, judge, clean up."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from dlsec.errors import InputError
from dlsec.sandbox import child as _child
from dlsec.sandbox.events import Isolation, SandboxEvent, SandboxReport
from dlsec.sandbox.loaders import get_loader, pick_loader

MAX_FILE_BYTES = 8 << 30
"""Files larger than this are refused (the loader would read all of it into the child's memory)."""
MAX_CHANNEL_BYTES = 4 << 20
"""At most this much of the child's event stream is read; the rest is drained and dropped."""
MAX_OUTPUT_BYTES = 4096
"""The tail of the child's stdout and stderr kept for an error message (read from a pipe: nothing the child prints
is stored on the host beyond this bound)."""
CHILD = os.path.abspath(_child.__file__)


@functools.cache
def namespaces_available() -> str:
    """``""`` when ``unshare`` (user, network, mount with its own ``/proc``, PID, IPC namespaces) works here, else
    why not."""
    exe = shutil.which("unshare")
    if exe is None or not sys.platform.startswith("linux"):
        return "no unshare binary (util-linux) or not Linux"
    try:
        r = subprocess.run([exe, *_UNSHARE, "true"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unshare failed: {exc}"
    if r.returncode != 0:
        return f"unshare failed: {r.stderr.decode(errors='replace').strip()[:200]}"
    try:
        _namespace_ids()
    except OSError as exc:
        return f"cannot read /proc/self/ns: {exc}"
    return ""


def _namespace_ids() -> str:
    """This process's namespaces (user, network, mount, PID, IPC), for the child to check that its own differ."""
    return ",".join(f"{ns}={os.readlink(f'/proc/self/ns/{ns}')}" for ns in ("user", "net", "mnt", "pid", "ipc"))


_UNSHARE = ("--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--mount-proc", "--ipc", "--")


def run_sandbox(
    path: str | os.PathLike[str],
    loader: str | None = None,
    *,
    timeout: float = 120.0,
    memory_mb: int = 2048,
    fsize_mb: int = 64,
    isolation: bool = True,
    keep_going: bool = False,
) -> SandboxReport:
    """Load ``path`` with ``loader`` (picked from the file when ``None``) in an isolated child; what it did.

    ``timeout`` is the wall-clock limit (the CPU limit is the same number of seconds), ``memory_mb`` the address
    space the load may add, ``fsize_mb`` the largest file (and the private tmpfs) it may write. ``isolation=False``
    skips the namespaces (the resource limits, the seccomp filter and the audit hooks stay); with ``isolation=True``
    (the default) a machine without the namespaces is refused with an :class:`InputError`, never run on the hooks
    alone. ``keep_going`` records every event instead of stopping at the first dangerous one: the isolation alone
    then contains the payload.

    A ``clean`` verdict means that the load completed and that nothing dangerous was observed by an in-process
    monitor (audit hooks, which a payload's native code can evade) under the isolation listed in the report; it is
    no proof that the file is safe.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file")
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(f"{p}: {size} bytes, more than the {MAX_FILE_BYTES} byte limit")
    if timeout <= 0 or memory_mb <= 0 or fsize_mb <= 0:
        raise InputError("timeout, memory and file-size limits must be positive")
    ld = get_loader(loader) if loader else pick_loader(p)
    if not ld.available():
        raise InputError(f"loader {ld.name} needs {', '.join(ld.requires)}, which is not installed")

    iso: list[Isolation] = []
    prefix: list[str] = []
    parent_ns = ""
    if isolation:
        why = namespaces_available()
        if why:
            raise InputError(f"no namespace isolation here ({why}); --no-isolation runs on the audit hooks, "
                             "the seccomp filter and the resource limits alone")  # fmt: skip
        prefix = [str(shutil.which("unshare")), *_UNSHARE]
        parent_ns = _namespace_ids()
    else:
        iso.append(Isolation("namespaces", False, "disabled (--no-isolation)"))
    if keep_going and not parent_ns:
        raise InputError("--keep-going lets a payload run on: it needs the namespace isolation, not in force here")
    iso.append(Isolation("wall-clock timeout", True, f"{timeout:g} s, then the process group is killed"))
    iso.append(Isolation("clean environment", True, "only PATH, HOME, TMPDIR, LANG; python -I"))

    tmp = tempfile.mkdtemp(prefix="dlsec-sandbox-")
    r, w = os.pipe()
    cmd = [
        *prefix, sys.executable, "-I", CHILD, "--fd", str(w), "--file", str(p.resolve()), "--loader", ld.name,
        "--tmp", tmp, "--memory-mb", str(memory_mb), "--cpu-s", str(max(1, int(timeout))),
        "--fsize-mb", str(fsize_mb), "--parent-ns", parent_ns, "--parent-uid", str(os.getuid()),
    ]  # fmt: skip
    if keep_going:
        cmd.append("--keep-going")
    env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # fmt: skip
    t0 = time.perf_counter()
    timed_out = False
    out_r, out_w = os.pipe()
    tail_buf = bytearray()
    drain = threading.Thread(target=_drain_tail, args=(out_r, tail_buf), daemon=True)
    try:
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w, pass_fds=(w,), cwd=tmp, env=env,
                start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(w)
            os.close(out_w)
        drain.start()
        try:
            data, timed_out, cut = _read(r, proc, t0 + timeout)
        finally:
            _kill_group(proc)
            proc.wait()
            drain.join(5)
        tail = bytes(tail_buf).decode(errors="replace")
    finally:
        os.close(r)
        if not drain.is_alive():
            os.close(out_r)
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0
    return _report(str(p), ld.name, data, proc.returncode, timed_out, tail, iso, seconds, keep_going, cut)


def _drain_tail(fd: int, tail: bytearray) -> None:
    """Read the child's stdout and stderr to end of file, keeping only the last :data:`MAX_OUTPUT_BYTES`."""
    while True:
        try:
            block = os.read(fd, 65536)
        except OSError:
            return
        if not block:
            return
        tail += block
        del tail[:-MAX_OUTPUT_BYTES]


def _read(fd: int, proc: subprocess.Popen[bytes], deadline: float) -> tuple[bytes, bool, bool]:
    """The child's messages until end of file or the deadline (then ``timed_out``); bounded: past
    :data:`MAX_CHANNEL_BYTES` the rest is drained and dropped (then ``cut``)."""
    chunks: list[bytes] = []
    total = 0
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                return b"".join(chunks), True, total > MAX_CHANNEL_BYTES
            if not sel.select(min(left, 0.5)):
                if proc.poll() is not None and not sel.select(0):
                    # the child is gone but a process it started holds the pipe: that is the end too
                    return b"".join(chunks), False, total > MAX_CHANNEL_BYTES
                continue
            block = os.read(fd, 65536)
            if not block:
                return b"".join(chunks), False, total > MAX_CHANNEL_BYTES
            if total < MAX_CHANNEL_BYTES:
                chunks.append(block[: MAX_CHANNEL_BYTES - total])
            total += len(block)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group (it leads a session of its own): nothing it started survives."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _signal_name(n: int) -> str:
    """``SIGKILL``, ``SIGRTMIN+6``, or ``signal 99``: never raises."""
    try:
        return signal.Signals(n).name
    except ValueError:
        lo, hi = getattr(signal, "SIGRTMIN", 0), getattr(signal, "SIGRTMAX", -1)
        return f"SIGRTMIN+{n - lo}" if lo <= n <= hi else f"signal {n}"


def _count(v: object) -> int | None:
    """A message's event count, or ``None`` when it is not a non-negative integer."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _report(
    path: str, loader: str, data: bytes, status: int | None, timed_out: bool, tail: str, iso: list[Isolation],
    seconds: float, keep_going: bool, cut: bool = False,
) -> SandboxReport:  # fmt: skip
    """The verdict from the child's messages and its exit status.

    ``clean`` needs the child's ``done`` message, exit status 0, no error, no dangerous event, an event stream read
    whole (``cut``: a stream past :data:`MAX_CHANNEL_BYTES` may hide events, whatever ``done`` says) and only well
    formed messages; anything else without a dangerous event is an ``error``.
    """
    events: list[SandboxEvent] = []
    blocked: SandboxEvent | None = None
    done, error, loaded, dropped, malformed = False, "", "", 0, 0
    lines = data.splitlines()
    for n, line in enumerate(lines):
        try:
            # the child writes flat objects only, each starting with its type: anything else is junk (and a deeply
            # nested line would exhaust the decoder's recursion: RecursionError, caught here like any error)
            if not line.startswith(b'{"t":'):
                raise ValueError("not a message")
            msg = json.loads(line)
        except Exception:  # noqa: BLE001
            if not (cut and n == len(lines) - 1):  # the line cut at the bound is expected; junk is not
                malformed += 1
            continue
        if not isinstance(msg, dict):
            malformed += 1
            continue
        t = msg.get("t")
        if t == "event":
            events.append(SandboxEvent(str(msg.get("kind", "")), str(msg.get("name", "")),
                                       str(msg.get("detail", "")), bool(msg.get("dangerous"))))  # fmt: skip
        elif t == "isolation":
            items = msg.get("items")
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                malformed += 1
                continue
            iso += [Isolation(str(i.get("name")), bool(i.get("in_force")), str(i.get("detail", ""))) for i in items]
        elif t == "blocked" and events and not keep_going:
            blocked = events[-1]
        elif t == "hook-error":  # the hook failed on an event: it may have missed one, so never clean
            events.append(SandboxEvent("other", "hook-error", str(msg.get("error", ""))[:300], False))
            error = error or "the audit hook failed on an event (see events)"
        elif t == "done":
            done, loaded = True, str(msg.get("loaded", ""))[:200]
        elif t == "error":
            error = f"{msg.get('stage', '')} failed: {msg.get('error', '')}"[:1000]
            if "MemoryError" in error:
                error += " (the address-space limit: raise --memory-mb)"
        elif t is not None:
            malformed += 1
        if t in ("blocked", "done", "error"):
            c = _count(msg.get("dropped", 0))
            if c is None:
                malformed += 1
            else:
                dropped = c
    if status == -signal.SIGSYS and any(i.name.startswith("seccomp") and i.in_force for i in iso):
        # only the seccomp filter sends SIGSYS (a payload's own os.kill is an audit event, stopped before)
        blocked = SandboxEvent("process", "seccomp", "the kernel filter killed the child at fork, exec, clone, "
                               "socket, io_uring, a signal to another process or ptrace (no audit event before)",
                               True)  # fmt: skip
        events.append(blocked)
        error = ""
    elif status is not None and status < 0:
        why = "timed out" if timed_out else f"killed by signal {_signal_name(-status)}"
        error = f"{why}" + (f" ({error})" if error else "")
    elif timed_out:
        error = "timed out"
    elif not done and not error and blocked is None:
        last = [ln for ln in tail.strip().splitlines() if ln.strip()]
        error = f"child ended with status {status} without a report" + (f": {last[-1][:200]}" if last else "")
    if cut:
        error = (f"the event stream passed its {MAX_CHANNEL_BYTES} byte bound: events may be missing"
                 + (f"; {error}" if error else ""))  # fmt: skip
    if malformed:
        error = f"{malformed} malformed messages from the child (forged?)" + (f"; {error}" if error else "")
    dangerous = any(e.dangerous for e in events)
    if dangerous:
        verdict = "dangerous"
    elif done and status == 0 and not error:
        verdict = "clean"
    else:
        verdict = "error"
    return SandboxReport(
        path=path, loader=loader, verdict=verdict, events=tuple(events), blocked=blocked, isolation=tuple(iso),
        exit_status=status, error=error, seconds=round(seconds, 3), events_dropped=dropped, loaded=loaded,
    )  # fmt: skip
