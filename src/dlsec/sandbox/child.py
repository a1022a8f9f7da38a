"""The sandbox child: isolates itself, installs audit hooks, loads one file with one loader, reports on a pipe.

Run by :mod:`dlsec.sandbox.runner` as ``python -I child.py --fd N --file PATH --loader NAME --tmp DIR ...``
(possibly under ``unshare --user --map-root-user --net --mount``). It imports nothing from dlsec, so that it runs
with the standard library and the loader's framework only. Steps, in order:

1. import the loader's framework and load a tiny benign file of the same format (a warm-up: lazy imports and code
   generation of the framework happen here, before any hook, so a benign load shows no noise);
2. isolation: inside the namespaces make every mount read-only (``mount_setattr``, recursively) and mount a small
   tmpfs on the private folder; ``no_new_privs``; resource limits on address space, CPU time, file size, processes,
   core dumps; the working directory, ``HOME`` and ``TMPDIR`` are the private folder;
3. ``sys.addaudithook``: every event the child cares about is sent as one JSON line on the pipe; at the first
   dangerous one the child writes it and ends with ``os._exit`` (raising inside a hook can be swallowed by the
   payload), unless ``--keep-going`` asks to record everything and rely on the isolation alone;
4. the load; then ``done`` (or ``error``) on the pipe and ``os._exit`` (no atexit handlers, no finalisers).

Audit hooks are no security boundary (a payload can reach the pipe, or native code that raises no event): the
operating-system isolation is what contains a payload, the hooks are what explain it.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import sys
from collections.abc import Callable
from typing import Any

STOPPED = 86
"""Exit status of a child stopped at a dangerous event."""
LOAD_FAILED = 3
SETUP_FAILED = 4
MAX_DETAIL = 300
MAX_EVENTS = 500

PROCESS = {"os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
           "pty.spawn", "os.startfile", "webbrowser.open", "_posixsubprocess.fork_exec"}  # fmt: skip
SIGNAL = {"os.kill", "os.killpg", "signal.pthread_kill"}
NETWORK_PREFIX = ("socket.", "urllib.", "http.client.", "ftplib.", "smtplib.", "poplib.", "imaplib.", "nntplib.",
                  "telnetlib.")  # fmt: skip
# events that change the file system: the positions of the arguments that are paths written to
FILE_CHANGE = {
    "os.remove": (0,), "os.rename": (0, 1), "os.mkdir": (0,), "os.rmdir": (0,), "os.chmod": (0,),
    "os.chown": (0,), "os.link": (1,), "os.symlink": (1,), "os.truncate": (0,), "os.utime": (0,),
    "os.setxattr": (0,), "os.removexattr": (0,), "os.chflags": (0,), "os.lchflags": (0,), "os.mkfifo": (0,),
    "os.mknod": (0,), "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.copymode": (1,),
    "shutil.copystat": (1,), "shutil.copytree": (1,), "shutil.move": (0, 1), "shutil.make_archive": (0,),
    "shutil.unpack_archive": (1,), "tempfile.mkstemp": (0,), "tempfile.mkdtemp": (0,),
}  # fmt: skip
CODE_EVAL = {"exec", "compile", "code.__new__", "function.__new__", "marshal.loads", "marshal.load",
             "cpython.run_command", "cpython.run_file", "cpython.run_module", "cpython.run_startup"}  # fmt: skip
NATIVE = {"ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function", "ctypes.PyObj_FromPtr",
          "ctypes.string_at", "ctypes.wstring_at", "ctypes.addressof"}  # fmt: skip
OTHER_DANGEROUS = {"sys.addaudithook", "_thread.start_new_thread", "os.setuid", "os.setgid", "os.chroot",
                   "os.add_dll_directory"}  # fmt: skip
OTHER = {"os.putenv", "os.unsetenv", "sys.settrace", "sys.setprofile", "os.chdir", "os.listdir", "os.scandir",
         "glob.glob", "os.walk", "mmap.__new__"}  # fmt: skip
_AST = ast.__file__
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class Channel:
    """JSON lines on the pipe to the parent (bounded: past :data:`MAX_EVENTS` plain events are only counted)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.sent, self.dropped = fd, 0, 0
        self._write, self._dumps = os.write, json.dumps  # bound now: a payload patching os or json changes nothing

    def send(self, msg: dict[str, Any]) -> None:
        """Write one message (best effort: a closed pipe is ignored)."""
        data = (self._dumps(msg) + "\n").encode()
        try:
            while data:
                data = data[self._write(self.fd, data) :]
        except OSError:
            pass

    def event(self, kind: str, name: str, detail: str, dangerous: bool) -> None:
        """One event; plain events past the bound are dropped and counted, dangerous ones always sent."""
        if self.sent >= MAX_EVENTS and not dangerous:
            self.dropped += 1
            return
        self.sent += 1
        self.send({"t": "event", "kind": kind, "name": name, "detail": detail[:MAX_DETAIL], "dangerous": dangerous})


def _text(args: tuple[Any, ...]) -> str:
    parts = []
    for a in args:
        if isinstance(a, (str, bytes, int, float, tuple, list)) or a is None:
            r = repr(a)
        elif hasattr(a, "co_name"):  # a code object
            r = f"<code {a.co_name} from {getattr(a, 'co_filename', '?')}>"
        else:
            r = f"<{type(a).__name__}>"
        parts.append(r[:200])
    return ", ".join(parts)[:MAX_DETAIL]


class Monitor:
    """The audit hook: classifies events, sends them, stops the child at the first dangerous one."""

    def __init__(self, channel: Channel, tmp: str, model: str, keep_going: bool) -> None:
        self.channel, self.keep_going = channel, keep_going
        self.tmp = os.path.realpath(tmp)
        self.model = os.path.realpath(model)
        self.prefixes = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
        self.busy = False
        self.seen: set[tuple[str, str]] = set()
        self._exit = os._exit

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if self.busy:
            return
        self.busy = True
        try:
            verdict = self.classify(event, args)
            if verdict is None:
                return
            kind, dangerous, detail = verdict
            if not dangerous:
                if (event, detail) in self.seen:
                    return
                self.seen.add((event, detail))
            self.channel.event(kind, event, detail, dangerous)
            if dangerous and not self.keep_going:
                self.channel.send({"t": "blocked", "dropped": self.channel.dropped})
                self._exit(STOPPED)
        except Exception as exc:  # noqa: BLE001  (a hook must never raise into the payload's code)
            self.channel.send({"t": "hook-error", "error": f"{type(exc).__name__}: {exc}"[:MAX_DETAIL]})
        finally:
            self.busy = False

    def _path(self, p: Any) -> str | None:
        if isinstance(p, bytes):
            p = os.fsdecode(p)
        elif hasattr(p, "__fspath__"):
            p = os.fspath(p)
        if not isinstance(p, str):
            return None  # a file descriptor, or None
        return os.path.realpath(os.path.join(os.getcwd(), p))

    def _inside_tmp(self, path: str) -> bool:
        return path == self.tmp or path.startswith(self.tmp + os.sep)

    def _benign_origin(self, event: str) -> bool:
        """Whether a code-evaluation or native-library event comes from installed code doing its usual work.

        Two origins: the import of an installed module (its file under the interpreter's prefixes: dataclasses
        and namedtuples compile code, extension modules open libraries), and ``ast.parse`` (``compile`` to a
        syntax tree only, as ``ast.literal_eval`` in numpy's header parser does; compiling that tree to code raises
        its own event). Only the import machinery's ``_load_unlocked`` frame counts, with the spec it loads: a
        payload calling importlib's helpers directly, or importing a file it wrote, gets no exemption.
        """
        f = sys._getframe(1)
        while f is not None and f.f_code.co_filename == __file__:
            f = f.f_back  # type: ignore[assignment]
        if f is not None and event == "compile" and f.f_code.co_name == "parse" and f.f_code.co_filename == _AST:
            return True
        for _ in range(300):
            if f is None:
                return False
            code = f.f_code
            if code.co_name == "_load_unlocked" and code.co_filename == "<frozen importlib._bootstrap>":
                origin = getattr(f.f_locals.get("spec"), "origin", None)
                if origin in ("built-in", "frozen"):
                    return True
                return isinstance(origin, str) and os.path.realpath(origin).startswith(self.prefixes)
            f = f.f_back  # type: ignore[assignment]
        return False

    def classify(self, event: str, args: tuple[Any, ...]) -> tuple[str, bool, str] | None:
        """``(kind, dangerous, detail)`` for an event worth reporting, ``None`` otherwise."""
        if event in PROCESS:
            return "process", True, _text(args)
        if event.startswith(NETWORK_PREFIX):
            return "network", True, _text(args)
        if event == "open":
            return self._open(args)
        if event in FILE_CHANGE:
            paths = [self._path(args[i]) for i in FILE_CHANGE[event] if i < len(args)]
            outside = [p for p in paths if p is not None and not self._inside_tmp(p)]
            return "file", bool(outside), _text(args)
        if event in CODE_EVAL or event in NATIVE:
            # installed modules imported during the load compile code (dataclasses, namedtuples) and open libraries
            if not self._benign_origin(event):
                return ("code-eval" if event in CODE_EVAL else "native"), True, _text(args[:2])
            # imports are recorded on their own; a library an imported module opens is worth a line
            return ("native", False, _text(args[:2])) if event in NATIVE else None
        if event in SIGNAL:
            return "signal", True, _text(args)
        if event == "import":
            return "import", False, str(args[0])
        if event == "pickle.find_class":
            return "import", False, f"{args[0]}.{args[1]}"
        if event in OTHER_DANGEROUS:
            return "other", True, _text(args[:3])
        if event in OTHER:
            return "other", False, _text(args[:2])
        return None

    def _open(self, args: tuple[Any, ...]) -> tuple[str, bool, str] | None:
        path = self._path(args[0])
        if path is None:
            return None
        mode, flags = (args[1], args[2]) if len(args) >= 3 else (None, 0)
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE_FLAGS)
        if writes:
            inside = self._inside_tmp(path) or path == os.devnull
            return "file-write", not inside, f"{path} (mode {mode if mode is not None else oct(flags or 0)})"
        if path == self.model or path.startswith(self.prefixes) or path.endswith((".py", ".pyc", ".so")):
            return None
        return "file-read", False, path


# ------------------------------------------------------------------------------------------------- loaders
def _torch(path: str) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)  # dlsec: ignore[DLS102] - the sandbox runs the file's own loader, isolated


def _torchscript(path: str) -> Any:
    import torch

    return torch.jit.load(path, map_location="cpu")


def _pickle(path: str) -> Any:
    import pickle

    with open(path, "rb") as f:
        return pickle.load(f)  # noqa: S301  (the point: see what loading does, inside the sandbox)  # dlsec: ignore[DLS201] - the sandbox runs the file's own loader, isolated


def _joblib(path: str) -> Any:
    import joblib

    return joblib.load(path)  # dlsec: ignore[DLS201] - the sandbox runs the file's own loader, isolated


def _numpy(path: str) -> Any:
    import numpy as np

    obj = np.load(path, allow_pickle=True)  # dlsec: ignore[DLS301] - the sandbox runs the file's own loader, isolated
    if isinstance(obj, np.lib.npyio.NpzFile):  # members are read lazily: read them all
        with obj:
            return {k: obj[k] for k in obj.files}
    return obj


def _keras(path: str) -> Any:
    import keras

    return keras.models.load_model(path)


def _safetensors(path: str) -> Any:
    from safetensors.numpy import load_file

    return load_file(path)


LOADERS: dict[str, Callable[[str], Any]] = {
    "torch": _torch, "torchscript": _torchscript, "pickle": _pickle, "joblib": _joblib, "numpy": _numpy,
    "keras": _keras, "safetensors": _safetensors,
}  # fmt: skip


def warm_up(loader: str) -> None:
    """Load a tiny benign file of the loader's format, so the framework's lazy work happens before the hook."""
    import pickle

    pickle.loads(pickle.dumps({"a": [1, 2.0, "x", (None,)]}, protocol=4))  # dlsec: ignore[DLS201] - the sandbox runs the file's own loader, isolated
    if loader in ("torch", "torchscript"):
        import collections

        import torch

        torch.set_num_threads(1)
        obj = {"w": torch.zeros(2), "o": collections.OrderedDict(b=torch.ones(1)), "m": torch.nn.Linear(1, 1)}
        for new in (True, False):
            buf = io.BytesIO()
            torch.save(obj, buf, _use_new_zipfile_serialization=new)
            buf.seek(0)
            torch.load(buf, map_location="cpu", weights_only=False)  # dlsec: ignore[DLS102] - the sandbox runs the file's own loader, isolated
    elif loader == "numpy":
        import numpy as np

        buf = io.BytesIO()
        np.save(buf, np.array([{"a": 1}, 1], dtype=object), allow_pickle=True)
        buf.seek(0)
        np.load(buf, allow_pickle=True)  # dlsec: ignore[DLS301] - the sandbox runs the file's own loader, isolated
        buf = io.BytesIO()
        np.savez(buf, a=np.arange(2))
        buf.seek(0)
        with np.load(buf) as z:
            z["a"]
    elif loader == "joblib":
        import joblib
        import numpy as np

        for compress in (0, 3):
            buf = io.BytesIO()
            joblib.dump({"a": np.arange(4.0)}, buf, compress=compress)
            buf.seek(0)
            joblib.load(buf)  # dlsec: ignore[DLS201] - the sandbox runs the file's own loader, isolated
    elif loader == "safetensors":
        import numpy as np
        from safetensors.numpy import load, save

        load(save({"a": np.zeros(2, np.float32)}))
    elif loader == "keras":
        import keras  # noqa: F401


# ----------------------------------------------------------------------------------------------- isolation
def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _errno() -> str:
    import ctypes

    return os.strerror(ctypes.get_errno())


def read_only_root(tmp: str, tmpfs_mb: int) -> list[dict[str, Any]]:
    """Inside a mount namespace: every mount read-only (recursively), then a fresh tmpfs on ``tmp``."""
    import ctypes

    libc = _libc()

    class MountAttr(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]

    out = []
    attr = MountAttr(1, 0, 0, 0)  # MOUNT_ATTR_RDONLY
    # mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, &attr, sizeof attr): syscall 442 on every architecture
    rc = libc.syscall(442, -100, b"/", 0x8000, ctypes.byref(attr), ctypes.sizeof(attr))
    out.append({"name": "read-only filesystem", "in_force": rc == 0,
                "detail": "every mount read-only except the private folder" if rc == 0
                else f"mount_setattr failed: {_errno()}"})  # fmt: skip
    rc = libc.mount(b"tmpfs", os.fsencode(tmp), b"tmpfs", 0, f"size={tmpfs_mb}m,mode=0700".encode())
    out.append({"name": "private tmpfs", "in_force": rc == 0,
                "detail": f"{tmpfs_mb} MiB tmpfs as cwd, HOME and TMPDIR" if rc == 0
                else f"mount tmpfs failed: {_errno()}; a fresh folder instead"})  # fmt: skip
    return out


def limits(memory_mb: int, cpu_s: int, fsize_mb: int, root: bool) -> list[dict[str, Any]]:
    """Resource limits: address space (current size plus ``memory_mb``), CPU seconds, file size, core dumps."""
    import resource

    out = []
    vm = -1
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    vm = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    wanted = [
        ("RLIMIT_AS", vm + (memory_mb << 20), f"{memory_mb} MiB beyond the {vm >> 20} MiB mapped before the load"),
        ("RLIMIT_CPU", cpu_s, f"{cpu_s} s of CPU"),
        ("RLIMIT_FSIZE", fsize_mb << 20, f"files up to {fsize_mb} MiB"),
        ("RLIMIT_CORE", 0, "no core dumps"),
        ("RLIMIT_NPROC", 0, "no new processes or threads"),
    ]
    for name, value, detail in wanted:
        if name == "RLIMIT_AS" and vm < 0:
            out.append({"name": name, "in_force": False, "detail": "size of the process unknown (no /proc)"})
            continue
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
            if name == "RLIMIT_NPROC" and root:  # the kernel exempts the real root user
                out.append({"name": name, "in_force": False, "detail": "set, but root (outside) is exempt"})
            else:
                out.append({"name": name, "in_force": True, "detail": detail})
        except (ValueError, OSError, AttributeError) as exc:
            out.append({"name": name, "in_force": False, "detail": f"setrlimit failed: {exc}"})
    return out


def no_new_privs() -> dict[str, Any]:
    """``prctl(PR_SET_NO_NEW_PRIVS)``: no setuid binary can raise privileges."""
    if not sys.platform.startswith("linux"):
        return {"name": "no_new_privs", "in_force": False, "detail": "Linux only"}
    rc = _libc().prctl(38, 1, 0, 0, 0)
    return {"name": "no_new_privs", "in_force": rc == 0, "detail": "" if rc == 0 else _errno()}


# seccomp: (audit arch, syscalls that start a program or a process, clone, clone3) per architecture
_SECCOMP_ARCH = {
    "x86_64": (0xC000003E, (57, 58, 59, 322), 56, 435),  # fork, vfork, execve, execveat
    "aarch64": (0xC00000B7, (221, 281), 220, 435),  # execve, execveat (no fork or vfork)
}
_RET_ALLOW, _RET_KILL_PROCESS, _RET_ENOSYS = 0x7FFF0000, 0x80000000, 0x00050000 | 38
_CLONE_THREAD = 0x00010000


def seccomp_filter() -> list[tuple[int, int, int, int]]:
    """The BPF program: kill the process at fork, vfork, execve, execveat and at clone without CLONE_THREAD.

    ``clone3`` (its flags are in memory, out of a filter's reach) answers ENOSYS, so that the C library falls back
    to ``clone`` for threads. Instructions are ``(code, jt, jf, k)``; the filter is for this machine's architecture.
    """
    import platform

    arch, deny, clone, clone3 = _SECCOMP_ARCH[platform.machine()]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    n = len(deny)
    # layout: 0 ld arch, 1 jeq arch, 2 ld nr, 3 jge x32, 4..4+n-1 jeq deny, then clone3, clone, ld flags, jset,
    # allow, kill, enosys
    allow = 4 + n + 4
    kill, enosys = allow + 1, allow + 2

    def to(target: int, at: int) -> int:
        return target - at - 1

    prog = [(ld, 0, 0, 4), (jeq, 0, to(kill, 1), arch), (ld, 0, 0, 0), (jge, to(kill, 3), 0, 0x40000000)]
    for i, nr in enumerate(deny):
        prog.append((jeq, to(kill, 4 + i), 0, nr))
    at = 4 + n
    prog.append((jeq, to(enosys, at), 0, clone3))
    prog.append((jeq, 0, to(allow, at + 1), clone))
    prog.append((ld, 0, 0, 16))  # clone's flags (low 32 bits of the first argument)
    prog.append((jset, to(allow, at + 3), to(kill, at + 3), _CLONE_THREAD))
    prog += [(ret, 0, 0, _RET_ALLOW), (ret, 0, 0, _RET_KILL_PROCESS), (ret, 0, 0, _RET_ENOSYS)]
    return prog


def no_processes() -> dict[str, Any]:
    """Install :func:`seccomp_filter` (needs ``no_new_privs``): no new process or program, whatever the caller."""
    import ctypes
    import platform

    name = "seccomp: no new processes"
    if not sys.platform.startswith("linux") or platform.machine() not in _SECCOMP_ARCH:
        return {"name": name, "in_force": False, "detail": f"no filter for {platform.machine()}"}

    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]

    insns = seccomp_filter()
    arr = (Insn * len(insns))(*[Insn(*i) for i in insns])
    prog = Prog(len(insns), arr)
    rc = _libc().prctl(22, 2, ctypes.byref(prog), 0, 0)  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    return {"name": name, "in_force": rc == 0,
            "detail": "fork, exec and non-thread clone kill the child (SIGSYS)" if rc == 0
            else f"prctl(PR_SET_SECCOMP) failed: {_errno()}"}  # fmt: skip


def namespaces(parent: str) -> dict[str, Any]:
    """Whether the user, network and mount namespaces differ from the parent's (``parent``: ``user:..,net:..``)."""
    theirs = dict(p.split("=", 1) for p in parent.split(",") if "=" in p)
    mine = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in ("user", "net", "mnt")}
    new = [ns for ns in mine if theirs.get(ns) and theirs[ns] != mine[ns]]
    ok = len(new) == 3
    return {"name": "namespaces", "in_force": ok,
            "detail": "new user, network (no interface up) and mount namespaces" if ok
            else f"new: {', '.join(new) or 'none'}"}  # fmt: skip


def _hide(fd: int) -> int:
    """The pipe moved to a random descriptor number (a blind payload cannot guess where to forge a report).

    Only a speed bump: code in this process can find the pipe (``/proc/self/fd``); the isolation, not the report,
    is the boundary, and a forged ``done`` cannot undo a dangerous event sent before it.
    """
    import fcntl
    import secrets

    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100 + secrets.randbelow(800))
    os.close(fd)
    return new


_CONTAINED = ("namespaces", "read-only filesystem", "private tmpfs")


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, isolate, hook, load; never returns normally (``os._exit``)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--loader", required=True, choices=sorted(LOADERS))
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--memory-mb", type=int, default=2048)
    ap.add_argument("--cpu-s", type=int, default=60)
    ap.add_argument("--fsize-mb", type=int, default=64)
    ap.add_argument("--parent-ns", default="")
    ap.add_argument("--parent-uid", type=int, default=0)
    ap.add_argument("--keep-going", action="store_true")
    a = ap.parse_args(argv)
    channel = Channel(_hide(a.fd))
    sys.argv[1:] = []  # the pipe's number is no longer written anywhere a payload would look first
    try:
        warm_up(a.loader)
        iso: list[dict[str, Any]] = []
        if a.parent_ns:
            ns = namespaces(a.parent_ns)
            iso.append(ns)
            if ns["in_force"]:
                iso += read_only_root(a.tmp, a.fsize_mb)
        if a.keep_going and sum(i["in_force"] for i in iso if i["name"] in _CONTAINED) != len(_CONTAINED):
            raise RuntimeError("keep-going without namespaces, a read-only file system and a private tmpfs")
        iso.append(no_new_privs())
        os.chdir(a.tmp)
        os.environ.update(HOME=a.tmp, TMPDIR=a.tmp)
        import tempfile

        tempfile.tempdir = a.tmp
        iso += limits(a.memory_mb, a.cpu_s, a.fsize_mb, a.parent_uid == 0)
        iso.append(no_processes())
        channel.send({"t": "isolation", "items": iso})
        sys.addaudithook(Monitor(channel, a.tmp, a.file, a.keep_going))
    except Exception as exc:  # noqa: BLE001
        channel.send({"t": "error", "stage": "setup", "error": f"{type(exc).__name__}: {exc}"[:MAX_DETAIL]})
        os._exit(SETUP_FAILED)
    try:
        obj = LOADERS[a.loader](a.file)
    except BaseException as exc:  # noqa: BLE001  (SystemExit from a payload is a load failure too)
        channel.send({"t": "error", "stage": "load", "error": f"{type(exc).__name__}: {exc}"[:MAX_DETAIL],
                      "dropped": channel.dropped})  # fmt: skip
        os._exit(LOAD_FAILED)
    channel.send({"t": "done", "loaded": type(obj).__name__, "dropped": channel.dropped})
    os._exit(0)


if __name__ == "__main__":
    main()
