"""Payload builders for the sandbox tests: every malicious file is built here, with a harmless payload."""

from __future__ import annotations

import pickle
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dlsec.sandbox.runner import namespaces_available


class Reduce:
    """Pickles as ``func(*args)``; never called in the test process."""

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.func, self.args


def write_pickle(path: Path, obj: Any, protocol: int = 4) -> Path:
    """``obj`` pickled to ``path``."""
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


ISOLATION = not namespaces_available()
"""Namespaces in force where this machine has them; elsewhere (a CI container without user namespaces) the tests of
the monitor run on the hooks and resource limits alone (``isolation=False``), and the tests of the isolation skip."""

needs_namespaces = pytest.mark.skipif(
    bool(namespaces_available()), reason=f"no user/network/mount namespaces here: {namespaces_available()}"
)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback TCP server of the test process; a test checks that it never got a connection."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.setblocking(False)
    yield srv
    srv.close()


def accepted(srv: socket.socket) -> bool:
    """Whether a connection is waiting on ``srv``."""
    try:
        conn, _ = srv.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


# A protocol-0 pickle assembler for payloads that ``pickle.dumps`` cannot express (a global fetched by name, such as
# ``sys.modules``, used as an argument): each builds bytes, nothing here is ever loaded in the test process.
def g(module: str, name: str) -> bytes:
    """The global ``module.name``."""
    return f"c{module}\n{name}\n".encode()


def s(text: str) -> bytes:
    """A string."""
    text = text.replace("\\", "\\u005c").replace("\n", "\\u000a").replace("\r", "\\u000d")
    return b"V" + text.encode("raw_unicode_escape") + b"\n"


def n(value: int) -> bytes:
    """An integer."""
    return b"I%d\n" % value


def call(fn: bytes, *args: bytes) -> bytes:
    """``fn(*args)``."""
    return fn + b"(" + b"".join(args) + b"tR"


def tup(*items: bytes) -> bytes:
    """A tuple."""
    return b"(" + b"".join(items) + b"t"


def program(*statements: bytes) -> bytes:
    """Run the statements in order (each result dropped); the pickle's value is an empty dict."""
    return b"".join(st + b"0" for st in statements) + call(g("builtins", "dict")) + b"."
