"""Dynamic analysis: load a model file with its format's loader in an isolated child and report what it did.

    from dlsec.sandbox import run_sandbox
    report = run_sandbox("model.pt")        # SandboxReport(verdict, events, blocked, isolation, ...)

The child runs under Python audit hooks (processes, file writes, network, imports, code evaluation, native
libraries) and stops at the first dangerous event; since audit hooks are no security boundary it also runs, where the
kernel allows, in new user, network and mount namespaces with a read-only file system except a private tmpfs, and
under resource limits. The report says which isolation was in force.
"""

from __future__ import annotations

from dlsec.sandbox.events import Isolation, SandboxEvent, SandboxReport
from dlsec.sandbox.loaders import LOADERS, Loader, pick_loader
from dlsec.sandbox.runner import run_sandbox

__all__ = ["LOADERS", "Isolation", "Loader", "SandboxEvent", "SandboxReport", "pick_loader", "run_sandbox"]
