"""Dynamic analysis: load a model file with its format's loader in an isolated child and report what it did.

    from dlsec.sandbox import run_sandbox
    report = run_sandbox("model.pt")        # SandboxReport(verdict, events, blocked, isolation, ...)

The child runs under Python audit hooks (processes, file writes, network, imports, dangerous pickle globals, code
evaluation, native libraries, interpreter introspection) and stops at the first dangerous event; since audit hooks
are no security boundary it also runs in new user, network, mount, PID and IPC namespaces with a read-only file
system except a private tmpfs (the host's ``/tmp``, ``/run`` and ``/dev/shm`` hidden), under a seccomp filter and
resource limits. Where the kernel has no such namespaces the run is refused unless ``isolation=False`` asks for the
hooks, the filter and the limits alone. The report says which isolation was in force; a ``clean`` verdict means that
nothing dangerous was observed by the in-process monitor under that isolation, no proof that the file is safe.
"""

from __future__ import annotations

from dlsec.sandbox.events import Isolation, SandboxEvent, SandboxReport
from dlsec.sandbox.loaders import LOADERS, Loader, pick_loader
from dlsec.sandbox.runner import run_sandbox

__all__ = ["LOADERS", "Isolation", "Loader", "SandboxEvent", "SandboxReport", "pick_loader", "run_sandbox"]
