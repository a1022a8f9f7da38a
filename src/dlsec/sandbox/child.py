"""The sandbox child: isolates itself, installs audit hooks, loads one file with one loader, reports on a pipe.

Run by :mod:`dlsec.sandbox.runner` as ``python -I child.py --fd N --file PATH --loader NAME --tmp DIR ...``
(under ``unshare --user --map-root-user --net --mount --pid --fork --mount-proc --ipc`` unless the caller turned
the namespaces off). It runs with the standard library and the loader's framework; from dlsec it imports only the
static scanner's verdict on a pickle global (``dlsec.scan.pickle.classify``, before the hook, when importable), so
that a global the scanner calls dangerous is dangerous here too. Steps, in order:

1. import the loader's framework and load a tiny benign file of the same format (a warm-up: lazy imports and code
   generation of the framework happen here, before any hook, so a benign load shows no noise);
2. isolation: inside the namespaces make every mount read-only (``mount_setattr``, recursively), cover ``/tmp``,
   ``/var/tmp``, ``/run``, ``/var/run`` and ``/dev/shm`` with empty read-only tmpfs mounts (the host's UNIX sockets there are out
   of reach) and mount a small tmpfs on the private folder; ``no_new_privs``; resource limits on address space, CPU
   time, file size, processes, core dumps; a seccomp filter that kills the child at fork, exec, a socket of the
   UNIX or IP families, io_uring and a signal to another process; the working directory, ``HOME`` and ``TMPDIR`` are the
   private folder;
3. ``sys.addaudithook``: every event the child cares about is sent as one JSON line on the pipe; at the first
   dangerous one the child writes it and ends with ``os._exit`` (raising inside a hook can be swallowed by the
   payload), unless ``--keep-going`` asks to record everything and rely on the isolation alone. The hook, its tables
   and the channel are closure state (:func:`make_monitor`, :func:`make_channel`): nothing the child's module names
   changes them, and the pickle globals, events and introspection a payload would need to reach them are dangerous;
4. the load; then ``done`` (or ``error``) on the pipe and ``os._exit`` (no atexit handlers, no finalisers).

Audit hooks are no security boundary (a payload's native code raises no event): the operating-system isolation is
what contains a payload, the hooks are what explain it. A ``clean`` report means that this in-process monitor
observed nothing dangerous under the isolation the report lists, no more.

What remains: native code (an extension module reached through an allowed global, or a loader's own C code) can
still do whatever the kernel allows under the filter and the namespaces: read what the read-only root shows, write
into the private tmpfs, use the system calls the filter lets through, all without an audit event. Pickle globals
that reach native writers, name resolvers and foreign-function interfaces (``_cffi_backend``, ``ctypes``) are
dangerous, but such a list is never complete. The next step is a minimal root (``pivot_root`` onto a tree holding
only the interpreter, the framework and the model) or Landlock rules, so that what native code can reach is what
the load needs, not the host's file system minus a few hidden folders.
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import sys
from collections.abc import Callable
from typing import Any, cast

STOPPED = 86
"""Exit status of a child stopped at a dangerous event."""
LOAD_FAILED = 3
SETUP_FAILED = 4
MAX_DETAIL = 300
MAX_EVENTS = 500

# Everything the audit hook uses is closure state of the functions below (built once, when the hook is installed):
# no module-level table, class or instance that a payload could rebind (a module's attributes and, in Python 3.11,
# a class's attributes change without an audit event).


def make_channel(fd: int) -> tuple[Callable[[dict[str, Any]], None], Callable[[str, str, str, bool], None],
                                   Callable[[], int]]:  # fmt: skip
    """``(send, event, dropped)`` on the pipe ``fd``: JSON lines, bounded.

    ``send(msg)`` writes one message (best effort: a closed pipe is ignored); ``event(kind, name, detail,
    dangerous)`` one event, where plain events past :data:`MAX_EVENTS` are dropped and counted (``dropped()``) and
    dangerous ones always sent. The encoder is a closure over builtins bound now, not ``json.dumps`` (whose encoder
    class a payload could patch).
    """
    import json.encoder

    write, esc = os.write, json.encoder.encode_basestring_ascii
    type_, str_, int_, float_, bool_ = type, str, int, float, bool
    list_, tuple_, dict_ = list, tuple, dict
    state = [0, 0]  # sent, dropped
    limit, max_detail = MAX_EVENTS, MAX_DETAIL

    def enc(v: Any) -> str:
        t = type_(v)
        if v is None or t is bool_:
            return "null" if v is None else ("true" if v else "false")
        if t is int_:
            return int_.__repr__(v)
        if t is float_:
            return float_.__repr__(v)
        if t is str_:
            return esc(v)
        if t is list_ or t is tuple_:
            return "[" + ", ".join([enc(x) for x in v]) + "]"
        if t is dict_:
            return "{" + ", ".join([esc(str_(k)) + ": " + enc(x) for k, x in dict_.items(v)]) + "}"
        return esc("<" + t.__name__ + ">")

    def send(msg: dict[str, Any]) -> None:
        data = (enc(msg) + "\n").encode()
        try:
            while data:
                data = data[write(fd, data) :]
        except OSError:
            pass

    def event(kind: str, name: str, detail: str, dangerous: bool) -> None:
        if state[0] >= limit and not dangerous:
            state[1] += 1
            return
        state[0] += 1
        send({"t": "event", "kind": kind, "name": name, "detail": detail[:max_detail], "dangerous": dangerous})

    def dropped() -> int:
        return state[1]

    return send, event, dropped


def make_monitor(
    event: Callable[[str, str, str, bool], None], send: Callable[[dict[str, Any]], None], dropped: Callable[[], int],
    tmp: str, model: str, keep_going: bool,
) -> tuple[Callable[[str, tuple[Any, ...]], None], Callable[[str, tuple[Any, ...]], tuple[str, bool, str] | None]]:  # fmt: skip
    """``(hook, classify)``: the audit hook (for ``sys.addaudithook``) and its classification of one event.

    ``classify(event, args)`` is ``(kind, dangerous, detail)`` for an event worth reporting, ``None`` otherwise. The
    hook sends each such event (plain ones once), and at the first dangerous one sends ``blocked`` and ends the child
    with ``os._exit`` unless ``keep_going``. Every table, helper and builtin the hook uses is bound here, in its
    closure: once installed, nothing reachable by name from the child's module changes what it does.
    """
    import pathlib
    import re
    import stat
    import types

    # bound now: the hook reads no module attribute at call time
    realpath, join, getcwd, fsdecode, fspath = os.path.realpath, os.path.join, os.getcwd, os.fsdecode, os.fspath
    os_stat, s_isdir, readlink, exit_, getframe = os.stat, stat.S_ISDIR, os.readlink, os._exit, sys._getframe
    sys_modules, sep, devnull = sys.modules, os.sep, os.devnull
    type_, isinstance_, repr_, str_, len_, any_, tuple_, int_ = type, isinstance, repr, str, len, any, tuple, int
    bytes_, float_, list_, bool_, frozenset_, set_ = bytes, float, list, bool, frozenset, set
    module_t, function_t, builtin_t, type_t = types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type
    mt, tt = cast(Any, types.ModuleType), cast(Any, type)
    module_dict = mt.__dict__["__dict__"].__get__
    type_qualname = tt.__dict__["__qualname__"].__get__
    type_dict, type_mro, type_module = tt.__dict__["__dict__"].__get__, tt.__dict__["__mro__"].__get__, tt.__dict__["__module__"].__get__
    fd_dir = re.compile(r"^/(proc/(self|thread-self|\d+)(/task/\d+)?/(fd|fdinfo)|dev/fd)(/|$)").match
    own_file, own_module, ast_file = __file__, __name__, _AST
    own_module_obj = sys.modules.get(__name__)
    o_write = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    o_dir = getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_PATH", 0)

    tmp, model = realpath(tmp), realpath(model)
    prefixes = tuple_({realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
    process = frozenset_({"os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                          "os.forkpty", "pty.spawn", "os.startfile", "webbrowser.open",
                          "_posixsubprocess.fork_exec"})  # fmt: skip
    signal_ = frozenset_({"os.kill", "os.killpg", "signal.pthread_kill", "signal.pidfd_send_signal"})
    network_prefix = ("socket.", "urllib.", "http.client.", "ftplib.", "smtplib.", "poplib.", "imaplib.",
                      "nntplib.", "telnetlib.", "ssl.")  # fmt: skip
    # events that change the file system: positions of the paths written to, and of the dir_fd arguments
    file_change = {
        "os.remove": ((0,), (1,)), "os.rename": ((0, 1), (2, 3)), "os.mkdir": ((0,), (2,)), "os.rmdir": ((0,), (1,)),
        "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)), "os.link": ((0, 1), (2, 3)), "os.symlink": ((1,), (2,)),
        "os.truncate": ((0,), ()), "os.utime": ((0,), (3,)), "os.setxattr": ((0,), ()), "os.removexattr": ((0,), ()),
        "os.chflags": ((0,), ()), "os.lchflags": ((0,), ()), "os.mkfifo": ((0,), (2,)), "os.mknod": ((0,), (3,)),
        "shutil.rmtree": ((0,), (1,)), "shutil.copyfile": ((1,), ()), "shutil.copymode": ((1,), ()),
        "shutil.copystat": ((1,), ()), "shutil.copytree": ((1,), ()), "shutil.move": ((0, 1), ()),
        "shutil.make_archive": ((0,), ()), "shutil.unpack_archive": ((1,), ()), "tempfile.mkstemp": ((0,), ()),
        "tempfile.mkdtemp": ((0,), ()),
    }  # fmt: skip
    code_eval = frozenset_({"exec", "compile", "code.__new__", "function.__new__", "marshal.loads", "marshal.load",
                            "marshal.dumps", "cpython.run_command", "cpython.run_file", "cpython.run_module",
                            "cpython.run_startup", "cpython.run_interactivehook"})  # fmt: skip
    # reaching the interpreter's internals: the hook's own state, frames, every object
    introspect = frozenset_({"sys._getframe", "sys._current_frames", "sys._current_exceptions", "gc.get_objects",
                             "gc.get_referrers", "gc.get_referents", "object.__getattr__", "sys.settrace",
                             "sys.setprofile", "sys._setprofileallthreads", "sys._settraceallthreads"})  # fmt: skip
    other_dangerous = frozenset_({"sys.addaudithook", "_thread.start_new_thread", "os.setuid", "os.setgid",
                                  "os.chroot", "os.add_dll_directory", "sys.unraisablehook",
                                  "sys.excepthook"})  # fmt: skip
    other = frozenset_({"os.putenv", "os.unsetenv", "os.chdir", "glob.glob", "os.walk", "mmap.__new__"})
    # pickle.find_class: modules whose every global is dangerous, and dangerous globals of other modules
    bad_modules = frozenset_({"__main__", own_module, "sys", "os", "posix", "nt", "subprocess", "_posixsubprocess",
                              "socket", "_socket", "ctypes", "_ctypes", "importlib", "runpy", "gc", "sqlite3",
                              "_sqlite3", "shutil", "pty", "signal", "_signal", "code", "codeop", "marshal",
                              "multiprocessing", "_multiprocessing", "_thread", "webbrowser", "commands",
                              "popen2", "ssl", "_ssl", "urllib", "http", "ftplib", "smtplib", "telnetlib",
                              "dlsec", "_cffi_backend", "cffi", "pydoc", "pkgutil", "unittest.mock", "logging.config",
                              "shelve", "dbm", "torch.serialization", "scipy.io", "numpy.lib.npyio",
                              "numpy.lib._npyio_impl", "numpy.lib.format", "numpy.lib._format_impl"})  # fmt: skip
    bad_names = frozenset_(
        {f"{m}.{n}" for m in ("builtins", "__builtin__") for n in ("getattr", "setattr", "delattr", "exec", "eval",
         "compile", "__import__", "open", "globals", "vars", "locals", "breakpoint", "input", "execfile", "file")}
        | {"types.FunctionType", "types.CodeType", "types.LambdaType", "types.ModuleType", "operator.attrgetter",
           "operator.methodcaller", "io.open", "_io.open", "io.FileIO", "_io.FileIO", "io.open_code", "codecs.open",
           "_operator.attrgetter", "_operator.methodcaller", "pickle.loads", "pickle.load", "_pickle.loads",
           "_pickle.load", "pickle.dump", "_pickle.dump", "pickle.Pickler", "_pickle.Pickler", "pickle._Pickler",
           "pickle._dump", "pickle._load", "pickle._loads", "joblib.dump", "torch.save", "torch.jit.save",
           "numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.savetxt", "numpy.memmap"})  # fmt: skip
    # native-code file writers (no ``open`` audit event): names of these roots that write files, whatever the alias
    writer_parts = {"numpy": frozenset_({"save", "savez", "savez_compressed", "savetxt", "tofile", "memmap",
                                         "open_memmap", "dump"}),
                    "joblib": frozenset_({"dump"}), "torch": frozenset_({"save"}),
                    "pickle": frozenset_({"dump", "Pickler", "_Pickler", "_dump"}),
                    "_pickle": frozenset_({"dump", "Pickler"})}  # fmt: skip
    # the static scanner's verdict (dlsec.scan.pickle.classify), imported before the hook; globals it calls dangerous
    # are dangerous here too, except these, whose effects the hook observes itself (the callee of a partial is a
    # global of its own; a nested torch.load of bytes raises its own find_class events)
    scanner: Callable[[str, str], tuple[str, str]] | None = None
    try:
        import _compat_pickle  # noqa: F401  (the scanner imports it lazily: now, not inside the hook)

        from dlsec.scan.pickle import classify as scanner
    except Exception:  # noqa: BLE001  (dlsec not importable here: the hook's own tables only)
        scanner = None
    scanner_ok = frozenset_({"functools.partial", "torch.storage._load_from_bytes"})
    alias_parts = frozenset_({"sys", "_sys", "os", "_os", "modules", "builtins", "_builtins", "posixpath", "ntpath",
                              "subprocess", "importlib", "_bootstrap", "_bootstrap_external", "ctypes"})  # fmt: skip
    dunder_ok = frozenset_({"__newobj__", "__newobj_ex__"})
    bad_objects = tuple_(o for o in (getattr, setattr, delattr, exec, eval, compile, __import__, open, globals, vars,
                                     locals, breakpoint, input, types.FunctionType, types.CodeType,
                                     types.ModuleType))  # fmt: skip
    missing, getattr_, code_t = object(), getattr, types.CodeType
    pure_path, dir_entry = pathlib.PurePath, os.DirEntry
    max_detail, stopped = MAX_DETAIL, STOPPED
    busy = [False]
    seen: set[tuple[str, str]] = set_()

    def text(args: Any, depth: int = 0) -> str:  # noqa: C901
        """Bounded text of arguments: only plain values are rendered (no payload ``__repr__`` runs in the hook)."""
        parts = []
        for a in args:
            t = type_(a)
            if t is str_ or t is bytes_ or t is int_ or t is float_ or t is bool_ or a is None:
                r = repr_(a)
            elif (t is tuple_ or t is list_) and depth < 3:
                inner = text(a, depth + 1)
                r = f"({inner})" if t is tuple_ else f"[{inner}]"
            elif t is code_t:
                r = f"<code {a.co_name} from {a.co_filename}>"
            else:
                r = f"<{t.__name__}>"
            parts.append(r[:200])
        return ", ".join(parts)[:max_detail]

    def path_of(p: Any) -> str | None:
        t = type_(p)
        if t is bytes_:
            p = fsdecode(p)
        elif t is int_:  # a descriptor: judged by what it is open on
            try:
                p = readlink(f"/proc/self/fd/{p}")
            except OSError:
                return "<unknown descriptor>"
            return p if p.startswith("/") else "<not a file>"
        elif t is not str_ and p is not None:
            # only path types whose __fspath__ is known code: no payload-chosen code runs inside the hook (where
            # its own events would go unseen); any other object is a path the hook cannot judge
            if t is not dir_entry and not any_(k is pure_path for k in type_mro(t)):
                return "<path object>"
            p = fspath(p)
        if type_(p) is not str_:
            return None
        return realpath(join(getcwd(), p))

    def inside(path: str) -> bool:
        return path == tmp or path.startswith(tmp + sep)

    def benign_origin(event_name: str) -> bool:
        """Whether the event comes from installed code doing its usual work (see :func:`make_monitor`'s notes).

        Two origins: the import of an installed module (its file under the interpreter's prefixes: dataclasses
        and namedtuples compile code, extension modules open libraries), and ``ast.parse`` (``compile`` to a syntax
        tree only, as ``ast.literal_eval`` in numpy's header parser does). Only the import machinery's
        ``_load_unlocked`` frame counts, with the spec it loads: a payload calling importlib's helpers directly, or
        importing a file it wrote, gets no exemption.
        """
        f: Any = getframe(1)
        while f is not None and f.f_code.co_filename == own_file:
            f = f.f_back
        if f is not None and event_name == "compile" and f.f_code.co_name == "parse" and f.f_code.co_filename == ast_file:
            return True
        for _ in range(300):
            if f is None:
                return False
            code = f.f_code
            if code.co_name == "_load_unlocked" and code.co_filename == "<frozen importlib._bootstrap>":
                origin: Any = getattr_(f.f_locals.get("spec"), "origin", None)
                if origin in ("built-in", "frozen"):
                    return True
                return type_(origin) is str_ and realpath(origin).startswith(prefixes)
            f = f.f_back
        return False

    def resolve(module: str, name: str) -> list[Any]:
        """The objects ``find_class(module, name)`` walks through, where ``module`` is imported (no code runs)."""
        cur: Any = sys_modules.get(module)
        if cur is None:
            return []
        out = []
        for part in name.split("."):
            if isinstance_(cur, module_t):
                cur = module_dict(cur).get(part, missing)
            elif isinstance_(cur, type_t):
                for k in type_mro(cur):
                    d = type_dict(k)
                    if part in d:
                        cur = d[part]
                        break
                else:
                    cur = missing
            else:
                break
            if cur is missing:
                break
            out.append(cur)
        return out

    def bad_module(module: str) -> bool:
        """``module`` or a package above it is in ``bad_modules``."""
        parts = module.split(".")
        return any_(".".join(parts[: i + 1]) in bad_modules for i in range(len_(parts)))

    def bad_name(module: str, name: str) -> bool:
        if bad_module(module) or f"{module}.{name}" in bad_names:
            return True
        root, parts = module.split(".")[0], name.split(".")
        writers = writer_parts.get(root)
        if writers is not None and any_(p in writers for p in parts):
            return True
        return root == "safetensors" and any_(p.startswith("save") for p in parts)

    def scanner_says(module: str, name: str) -> bool:
        if scanner is None or f"{module}.{name}" in scanner_ok:
            return False
        try:
            return bool_(scanner(module, name)[0] == "dangerous")
        except Exception:  # noqa: BLE001  (the scanner is a second opinion: its failure is no verdict)
            return False

    def bad_global(module: str, name: str) -> bool:
        if type_(module) is not str_ or type_(name) is not str_:
            return True
        if bad_name(module, name) or scanner_says(module, name):
            return True
        for part in name.split("."):
            if part in alias_parts or (part.startswith("__") and part.endswith("__") and part not in dunder_ok):
                return True
        for obj in resolve(module, name):
            if isinstance_(obj, module_t) or any_(obj is b for b in bad_objects):
                return True
            t = type_(obj)
            mod: Any = None
            qual: Any = None
            if t is function_t or t is builtin_t:
                mod, qual = obj.__module__, obj.__qualname__
            elif isinstance_(obj, type_t):
                mod, qual = module_of(obj), type_qualname(obj)
            if type_(mod) is str_ and bad_module(mod):
                return True
            if type_(mod) is str_ and type_(qual) is str_ and bad_name(mod, qual):  # a writer under another name
                return True
        return False

    def own_object(obj: Any) -> bool:
        """This module (by identity), or a class or function of this file: what the hook's own code is made of.

        Other modules are no part of the hook (it reads no module attribute when it runs): installed code changes
        them (torch sets a module's ``__class__`` when imported), so they are not judged here.
        """
        if isinstance_(obj, module_t):
            return obj is own_module_obj
        if type_(obj) is function_t:
            return obj.__code__.co_filename == own_file or obj.__module__ == own_module
        if isinstance_(obj, type_t):
            return module_of(obj) == own_module
        return False

    def module_of(cls: Any) -> Any:
        try:
            return type_module(cls)
        except AttributeError:  # a class without ``__module__``
            return None

    def open_event(args: tuple[Any, ...]) -> tuple[str, bool, str] | None:
        if not args or type_(args[0]) is int_:
            return None  # open() of a descriptor: its opening was the event
        path = path_of(args[0])
        if path is None:
            return None
        mode: Any = args[1] if len_(args) >= 3 else None
        flags: Any = args[2] if len_(args) >= 3 else 0
        flags = flags if type_(flags) is int_ else 0
        if fd_dir(path):  # the descriptors of this process: the report pipe among them
            return "other", True, f"{path} (the process's descriptors)"
        writes = any_(c in mode for c in "wax+") if type_(mode) is str_ else bool_(flags & o_write)
        if writes:
            ok = inside(path) or path == devnull
            return "file-write", not ok, f"{path} (mode {mode if mode is not None else oct(flags)})"
        if mode is None and not inside(path):  # os.open: a directory descriptor makes dir_fd paths escape checks
            try:
                is_dir = bool_(flags & o_dir) or s_isdir(os_stat(path).st_mode)
            except OSError:
                is_dir = bool_(flags & o_dir)
            if is_dir:
                return "file", True, f"{path} (a directory descriptor outside the private folder)"
        if path == model or path.startswith(prefixes) or path.endswith((".py", ".pyc", ".so")):
            return None
        return "file-read", False, path

    def classify(ev: str, args: tuple[Any, ...]) -> tuple[str, bool, str] | None:
        if ev in process:
            return "process", True, text(args)
        if ev.startswith(network_prefix):
            return "network", True, text(args)
        if ev == "open":
            return open_event(args)
        if ev in file_change:
            written, dir_fds = file_change[ev]
            if any_(i < len_(args) and args[i] is not None and args[i] != -1 for i in dir_fds):
                return "file", True, text(args) + " (a dir_fd: relative to a descriptor, out of the path checks)"
            paths = [path_of(args[i]) for i in written if i < len_(args)]
            return "file", any_(p is not None and not inside(p) for p in paths), text(args)
        if ev in ("os.listdir", "os.scandir"):
            p = path_of(args[0]) if args else None
            if p is not None and fd_dir(p):
                return "other", True, f"{p} (the process's descriptors)"
            return "other", False, text(args[:1])
        if ev == "pickle.find_class":
            if len_(args) < 2 or type_(args[0]) is not str_ or type_(args[1]) is not str_:
                return "global", True, text(args[:2])  # not what an unpickler passes
            detail = f"{args[0]}.{args[1]}"[:max_detail]
            if bad_global(args[0], args[1]):
                return "global", True, detail
            return "import", False, detail
        if ev in ("object.__setattr__", "object.__delattr__"):
            target = args[0] if args else None
            name = args[1] if len_(args) > 1 else None
            # a function's code swapped: dangerous unless an installed module does it while it is imported
            swap = type_(target) is function_t and name == "__code__" and not benign_origin(ev)
            if own_object(target) or swap:
                return "other", True, f"{ev} on {text(args[:2])}"
            return None
        if ev in code_eval or ev.startswith("ctypes.") or ev in introspect or ev.startswith("sqlite3."):
            # installed modules imported during the load compile code (dataclasses, namedtuples), open libraries
            # and look at frames (typing, enum): that is their usual work
            kind = "code-eval" if ev in code_eval else "native" if ev.startswith("ctypes.") else "other"
            if ev.startswith("sqlite3.") or not benign_origin(ev):
                return kind, True, text(args[:2])
            return ("native", False, text(args[:2])) if kind == "native" else None
        if ev in signal_:
            return "signal", True, text(args)
        if ev == "import":
            return "import", False, str_(args[0])
        if ev in other_dangerous:
            return "other", True, text(args[:3])
        if ev in other:
            return "other", False, text(args[:2])
        return None

    def hook(ev: str, args: tuple[Any, ...]) -> None:
        if busy[0]:
            return
        busy[0] = True
        try:
            verdict = classify(ev, args)
            if verdict is None:
                return
            kind, dangerous, detail = verdict
            if not dangerous:
                if (ev, detail) in seen:
                    return
                seen.add((ev, detail))
            event(kind, ev, detail, dangerous)
            if dangerous and not keep_going:
                send({"t": "blocked", "dropped": dropped()})
                exit_(stopped)
        except Exception as exc:  # noqa: BLE001  (a hook must never raise into the payload's code)
            send({"t": "hook-error", "error": f"{type_(exc).__name__}: {exc}"[:max_detail]})
        finally:
            busy[0] = False

    return hook, classify


_AST = ast.__file__


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


HIDDEN = ("/tmp", "/var/tmp", "/run", "/var/run", "/dev/shm")
"""Folders a fresh empty tmpfs covers inside the mount namespace: the host's sockets, FIFOs and shared memory there
are out of reach (a read-only mount does not stop a ``connect`` to a UNIX socket file)."""


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def read_only_root(tmp: str, tmpfs_mb: int, model: str = "") -> list[dict[str, Any]]:
    """Inside a mount namespace: every mount read-only (recursively), host folders with sockets hidden, then a fresh
    tmpfs on ``tmp``.

    :data:`HIDDEN` folders (not a symbolic link, not holding the interpreter) get an empty tmpfs each, read-only
    once the paths the child needs are in place: the private folder ``tmp`` (its tmpfs mounted at the same path) and
    the ``model`` file (bind-mounted, read-only, at the same path, from a descriptor opened before).
    """
    import ctypes

    libc = _libc()

    class MountAttr(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]

    def rdonly(path: str, recursive: bool) -> int:
        # mount_setattr(AT_FDCWD, path, AT_RECURSIVE?, &attr, sizeof attr): syscall 442 on every architecture
        attr = MountAttr(1, 0, 0, 0)  # MOUNT_ATTR_RDONLY
        return int(libc.syscall(442, -100, os.fsencode(path), 0x8000 if recursive else 0, ctypes.byref(attr),
                                ctypes.sizeof(attr)))  # fmt: skip

    out = []
    rc = rdonly("/", True)
    out.append({"name": "read-only filesystem", "in_force": rc == 0,
                "detail": "every mount read-only except the private folder" if rc == 0
                else f"mount_setattr failed: {_errno()}"})  # fmt: skip
    model_fd = os.open(model, os.O_RDONLY | os.O_CLOEXEC) if model else -1
    # what the child still needs under a hidden folder (a virtual environment in /tmp, say): bound back, read-only
    keep = sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path)
                   if p and os.path.isdir(p)})  # fmt: skip
    keep = [k for k in keep if not any(k != o and _under(k, o) for o in keep)]
    hidden, skipped = [], []
    try:
        for d in HIDDEN:
            if os.path.islink(d) or not os.path.isdir(d):
                continue
            inner = [k for k in keep if _under(k, d)]
            if d in inner:  # the whole folder is needed: it cannot be hidden
                skipped.append(f"{d} (holds the interpreter)")
                continue
            fds = [(k, os.open(k, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) for k in inner]
            try:
                if libc.mount(b"tmpfs", os.fsencode(d), b"tmpfs", 0, b"size=1m,mode=0755") != 0:
                    skipped.append(f"{d} ({_errno()})")
                    continue
                for k, fd in fds:
                    os.makedirs(k, exist_ok=True)
                    if libc.mount(f"/proc/self/fd/{fd}".encode(), os.fsencode(k), None, 0x1000 | 0x4000, None) != 0:
                        raise OSError(f"bind mount of {k} failed: {_errno()}")  # MS_BIND | MS_REC
                    rdonly(k, True)
            finally:
                for _, fd in fds:
                    os.close(fd)
            hidden.append(d)
            if model and _under(model, d):  # the model file, at its own path, read-only
                os.makedirs(os.path.dirname(model), exist_ok=True)
                os.close(os.open(model, os.O_WRONLY | os.O_CREAT, 0o400))
                if libc.mount(f"/proc/self/fd/{model_fd}".encode(), os.fsencode(model), None, 0x1000, None) != 0:
                    raise OSError(f"bind mount of the model failed: {_errno()}")  # MS_BIND
                rdonly(model, False)
            if _under(tmp, d):
                os.makedirs(tmp, mode=0o700, exist_ok=True)
    finally:
        if model_fd >= 0:
            os.close(model_fd)
    rc = libc.mount(b"tmpfs", os.fsencode(tmp), b"tmpfs", 0, f"size={tmpfs_mb}m,mode=0700".encode())
    out.append({"name": "private tmpfs", "in_force": rc == 0,
                "detail": f"{tmpfs_mb} MiB tmpfs as cwd, HOME and TMPDIR" if rc == 0
                else f"mount tmpfs failed: {_errno()}; a fresh folder instead"})  # fmt: skip
    ro = all(rdonly(d, False) == 0 for d in hidden)
    out.append({"name": "host sockets hidden", "in_force": bool(hidden) and ro and not skipped,
                "detail": f"empty read-only tmpfs on {', '.join(hidden) or 'nothing'}"
                + (f"; not hidden: {', '.join(skipped)}" if skipped else "")
                + ("" if ro else "; not all read-only")})  # fmt: skip
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


# seccomp, per architecture: audit arch; syscalls that always kill (fork, vfork, execve, execveat, ptrace,
# process_vm_writev, tkill, rt_sigqueueinfo, rt_tgsigqueueinfo, pidfd_open, pidfd_send_signal, io_uring_setup,
# io_uring_enter, io_uring_register: io_uring opens sockets without the socket syscall); clone; clone3;
# socket; kill; tgkill
_SECCOMP_ARCH = {
    "x86_64": (0xC000003E, (57, 58, 59, 322, 101, 311, 200, 129, 297, 434, 424, 425, 426, 427), 56, 435, 41, 62, 234),
    "aarch64": (0xC00000B7, (221, 281, 117, 271, 130, 138, 240, 434, 424, 425, 426, 427), 220, 435, 198, 129, 131),
}
_RET_ALLOW, _RET_KILL_PROCESS, _RET_ENOSYS = 0x7FFF0000, 0x80000000, 0x00050000 | 38
_CLONE_THREAD = 0x00010000
_SOCKET_FAMILIES = (1, 2, 10)  # AF_UNIX, AF_INET, AF_INET6


def seccomp_filter(pid: int, machine: str | None = None) -> list[tuple[int, int, int, int]]:
    """The BPF program: kill the process at any syscall that starts a process or a program, opens a socket to the
    outside or signals another process.

    Killed: fork, vfork, execve, execveat, clone without CLONE_THREAD; ``socket`` of AF_UNIX, AF_INET, AF_INET6;
    ``kill`` and ``tgkill`` of any process but ``pid`` (this one); tkill, rt_sigqueueinfo, rt_tgsigqueueinfo,
    pidfd_open, pidfd_send_signal, ptrace, process_vm_writev, io_uring_setup, io_uring_enter, io_uring_register
    (``IORING_OP_SOCKET`` would open a socket past the ``socket`` rule). ``clone3`` (its flags are in memory, out of a
    filter's reach) answers ENOSYS, so that the C library falls back to ``clone`` for threads. Instructions are
    ``(code, jt, jf, k)``; the filter is for ``machine`` (this machine's architecture by default).
    """
    import platform

    arch, deny, clone, clone3, socket, kill, tgkill = _SECCOMP_ARCH[machine or platform.machine()]
    ld, jeq, jge, jset, ret, ja = 0x20, 0x15, 0x35, 0x45, 0x06, 0x05
    # symbolic program: jump targets are labels, resolved below
    prog: list[Any] = [
        (ld, 0, 0, 4), (jeq, 0, "kill", arch), (ld, 0, 0, 0), (jge, "kill", 0, 0x40000000),
        *[(jeq, "kill", 0, nr) for nr in deny],
        (jeq, "enosys", 0, clone3), (jeq, "clone", 0, clone), (jeq, "socket", 0, socket),
        (jeq, "pid", 0, kill), (jeq, "pid", 0, tgkill), (ret, 0, 0, _RET_ALLOW),
        "clone", (ld, 0, 0, 16), (jset, "allow", "kill", _CLONE_THREAD),  # the low 32 bits of the first argument
        "socket", (ld, 0, 0, 16), *[(jeq, "kill", 0, f) for f in _SOCKET_FAMILIES], (ja, 0, 0, "allow"),
        "pid", (ld, 0, 0, 16), (jeq, "allow", "kill", pid & 0xFFFFFFFF),
        "allow", (ret, 0, 0, _RET_ALLOW), "kill", (ret, 0, 0, _RET_KILL_PROCESS), "enosys", (ret, 0, 0, _RET_ENOSYS),
    ]  # fmt: skip
    labels: dict[str, int] = {}
    at = 0
    for item in prog:
        if isinstance(item, str):
            labels[item] = at
        else:
            at += 1
    insns = [i for i in prog if not isinstance(i, str)]
    out = []
    for pc, (code, jt, jf, k) in enumerate(insns):

        def rel(target: Any, pc: int = pc, limit: int = 1 << 32 if code == ja else 256) -> int:
            if isinstance(target, str):
                off = labels[target] - pc - 1
                if not 0 <= off < limit:
                    raise ValueError(f"seccomp jump out of range: {target}")
                return off
            return int(target)

        if code == ja:
            out.append((code, 0, 0, rel(k)))
        else:
            out.append((code, rel(jt), rel(jf), k))
    return out


def no_processes() -> dict[str, Any]:
    """Install :func:`seccomp_filter` (needs ``no_new_privs``): no new process or program, no socket, no signal to
    another process, whatever the caller."""
    import ctypes
    import platform

    name = "seccomp: no new processes"
    if not sys.platform.startswith("linux") or platform.machine() not in _SECCOMP_ARCH:
        return {"name": name, "in_force": False, "detail": f"no filter for {platform.machine()}"}

    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]

    insns = seccomp_filter(os.getpid())
    arr = (Insn * len(insns))(*[Insn(*i) for i in insns])
    prog = Prog(len(insns), arr)
    rc = _libc().prctl(22, 2, ctypes.byref(prog), 0, 0)  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    return {"name": name, "in_force": rc == 0,
            "detail": "fork, exec, non-thread clone, sockets (unix, inet, inet6), signals to other processes and "
            "ptrace, io_uring kill the child (SIGSYS)" if rc == 0
            else f"prctl(PR_SET_SECCOMP) failed: {_errno()}"}  # fmt: skip


_NS = ("user", "net", "mnt", "pid", "ipc")


def namespaces(parent: str) -> dict[str, Any]:
    """Whether the user, network, mount, PID and IPC namespaces differ from the parent's (``parent``: ``user=..``)."""
    theirs = dict(p.split("=", 1) for p in parent.split(",") if "=" in p)
    mine = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in _NS}
    new = [ns for ns in mine if theirs.get(ns) and theirs[ns] != mine[ns]]
    ok = len(new) == len(_NS)
    return {"name": "namespaces", "in_force": ok,
            "detail": "new user, network (no interface up), mount (own /proc), PID and IPC namespaces" if ok
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
    send, event, dropped = make_channel(_hide(a.fd))
    exit_ = os._exit
    sys.argv[1:] = []  # the pipe's number is no longer written anywhere a payload would look first
    try:
        warm_up(a.loader)
        iso: list[dict[str, Any]] = []
        if a.parent_ns:
            ns = namespaces(a.parent_ns)
            iso.append(ns)
            if ns["in_force"]:
                iso += read_only_root(a.tmp, a.fsize_mb, a.file)
        if a.keep_going and sum(i["in_force"] for i in iso if i["name"] in _CONTAINED) != len(_CONTAINED):
            raise RuntimeError("keep-going without namespaces, a read-only file system and a private tmpfs")
        iso.append(no_new_privs())
        os.chdir(a.tmp)
        os.environ.update(HOME=a.tmp, TMPDIR=a.tmp)
        import tempfile

        tempfile.tempdir = a.tmp
        iso += limits(a.memory_mb, a.cpu_s, a.fsize_mb, a.parent_uid == 0)
        iso.append(no_processes())
        send({"t": "isolation", "items": iso})
        load = LOADERS[a.loader]
        hook = make_monitor(event, send, dropped, a.tmp, a.file, a.keep_going)[0]
        sys.addaudithook(hook)
        del hook  # the hook and its tables are reachable from its closure only
    except Exception as exc:  # noqa: BLE001
        send({"t": "error", "stage": "setup", "error": f"{type(exc).__name__}: {exc}"[:MAX_DETAIL]})
        exit_(SETUP_FAILED)
    try:
        obj = load(a.file)
    except BaseException as exc:  # noqa: BLE001  (SystemExit from a payload is a load failure too)
        send({"t": "error", "stage": "load", "error": f"{type(exc).__name__}: {exc}"[:MAX_DETAIL],
              "dropped": dropped()})  # fmt: skip
        exit_(LOAD_FAILED)
    send({"t": "done", "loaded": type(obj).__name__, "dropped": dropped()})
    exit_(0)


if __name__ == "__main__":
    main()
