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
