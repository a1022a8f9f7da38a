"""An HTTP service that evaluates a plan on ciphertexts, and the client that talks to it.

Endpoints (bodies are raw bytes in the :mod:`dlsec.he.wire` container or JSON; nothing is pickled):

* ``GET /v1/plan``: the client spec (JSON, :meth:`~dlsec.he.plan.ClientPlan.to_json`; no weights).
* ``POST /v1/keys``: a public evaluation context (:meth:`~dlsec.he.seal.EvalKeys.to_bytes`) -> ``{"key_id": ...}``.
  A context holding a secret key is refused (403): the server must never be able to decrypt.
* ``POST /v1/weights/KEY_ID``: mode (b), the owner's encrypted weights for that key.
* ``POST /v1/infer/KEY_ID``: input ciphertexts -> output ciphertexts.

Every request needs a ``Content-Length`` within the limits (411/413 otherwise, read before nothing else);
malformed bodies are answered 400 with a one-line JSON error, never a crash; at most ``max_keys`` evaluation
contexts are kept (least recently used dropped). The server binds the loopback interface unless told otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dlsec.errors import ConfigError, DlsecError, InputError
from dlsec.he.plan import ClientPlan, Encrypted, EncryptedWeights, Plan
from dlsec.he.seal import EvalKeys

__all__ = ["HEClient", "HEService", "Limits", "make_server"]

log = logging.getLogger("dlsec.he.server")


@dataclass(frozen=True)
class Limits:
    """Request bounds: evaluation contexts, ciphertext bodies, encrypted weights, contexts kept, queries per request."""

    max_key_bytes: int = 256 << 20
    max_request_bytes: int = 256 << 20
    max_weight_bytes: int = 512 << 20
    max_keys: int = 16
    max_queries: int = 64


class HEService:
    """The server's state: the plan, registered evaluation contexts and (mode b) encrypted weights."""

    def __init__(self, plan: Plan, limits: Limits | None = None) -> None:
        self.plan = plan
        self.limits = limits or Limits()
        self._keys: OrderedDict[str, tuple[EvalKeys, EncryptedWeights | None]] = OrderedDict()
        self._lock = threading.Lock()

    def spec(self) -> bytes:
        """The client spec."""
        return self.plan.client.to_json().encode()

    def register_keys(self, body: bytes) -> str:
        """Load (and check) a public evaluation context; return its id (a hash of the body)."""
        keys = EvalKeys.from_bytes(body, self.limits.max_key_bytes)
        self.plan.client.check_keys(keys)
        key_id = hashlib.sha256(body).hexdigest()[:32]
        with self._lock:
            self._keys[key_id] = (keys, self._keys.get(key_id, (keys, None))[1])
            self._keys.move_to_end(key_id)
            while len(self._keys) > self.limits.max_keys:
                self._keys.popitem(last=False)
        return key_id

    def _get(self, key_id: str) -> tuple[EvalKeys, EncryptedWeights | None]:
        with self._lock:
            if key_id not in self._keys:
                raise KeyError(key_id)
            self._keys.move_to_end(key_id)
            return self._keys[key_id]

    def register_weights(self, key_id: str, body: bytes) -> None:
        """Mode (b): store the owner's encrypted weights for ``key_id``."""
        if not self.plan.encrypted_weights:
            raise ConfigError("this server's plan uses plaintext weights")
        keys, _ = self._get(key_id)
        weights = EncryptedWeights.from_bytes(body, keys, self.limits.max_weight_bytes)
        if weights.fingerprint != self.plan.fingerprint:
            raise InputError("the encrypted weights were made for another plan")
        with self._lock:
            self._keys[key_id] = (keys, weights)

    def infer(self, key_id: str, body: bytes) -> bytes:
        """Evaluate the queries in ``body`` with the evaluation context ``key_id``."""
        keys, weights = self._get(key_id)
        enc = Encrypted.from_bytes(body, self.limits.max_request_bytes)
        if len(enc.samples) > self.limits.max_queries:
            raise InputError(f"at most {self.limits.max_queries} queries per request")
        if self.plan.encrypted_weights and weights is None:
            raise ConfigError("upload the encrypted weights first (POST /v1/weights/KEY_ID)")
        return self.plan.evaluate(enc, keys, weights).to_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code: int, message: str) -> None:
        self._send(code, json.dumps({"error": " ".join(message.split())}).encode())

    def _body(self, limit: int) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            self._error(411, "Content-Length required")
            return None
        n = int(length)
        if n > limit:
            self.close_connection = True
            self._error(413, f"request body of {n} bytes is over the {limit}-byte limit")
            return None
        data = self.rfile.read(n)
        if len(data) != n:
            self.close_connection = True
            self._error(400, "truncated request body")
            return None
        return data

    def do_GET(self) -> None:
        if self.path == "/v1/plan":
            self._send(200, self.server.service.spec())
        else:
            self._error(404, f"no such endpoint: {self.path}")

    def do_POST(self) -> None:
        svc = self.server.service
        parts = self.path.strip("/").split("/")
        try:
            if parts == ["v1", "keys"]:
                body = self._body(svc.limits.max_key_bytes)
                if body is not None:
                    self._send(200, json.dumps({"key_id": svc.register_keys(body)}).encode())
            elif len(parts) == 3 and parts[:2] == ["v1", "infer"]:
                body = self._body(svc.limits.max_request_bytes)
                if body is not None:
                    self._send(200, svc.infer(parts[2], body), "application/octet-stream")
            elif len(parts) == 3 and parts[:2] == ["v1", "weights"]:
                body = self._body(svc.limits.max_weight_bytes)
                if body is not None:
                    svc.register_weights(parts[2], body)
                    self._send(200, b'{"ok": true}')
            else:
                self.close_connection = True
                self._error(404, f"no such endpoint: {self.path}")
        except KeyError:
            self._error(404, "unknown key id: POST the evaluation context to /v1/keys first")
        except ConfigError as exc:
            self._error(403 if "secret key" in str(exc) else 400, str(exc))
        except DlsecError as exc:
            self._error(400, str(exc))
        except Exception:
            log.exception("unexpected error")
            self._error(500, "internal error")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], service: HEService) -> None:
        self.service = service
        super().__init__(address, _Handler)


def make_server(plan: Plan, host: str = "127.0.0.1", port: int = 0, limits: Limits | None = None) -> ThreadingHTTPServer:
    """An HTTP server for ``plan`` on ``host:port`` (port 0: an ephemeral one; see ``server.server_address``)."""
    if not plan.weights_public and not plan.encrypted_weights:
        raise ConfigError("this plan holds no weights")
    try:
        return _Server((host, port), HEService(plan, limits))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from None


class HEClient:
    """Talks to an :class:`HEService`: fetches the client spec, uploads keys (and weights), runs queries."""

    def __init__(self, url: str, timeout: float = 600.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--server must be an http(s) URL, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _request(self, path: str, body: bytes | None = None) -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method="POST" if body is not None else "GET")
        if body is not None:
            req.add_header("Content-Type", "application/octet-stream")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - http(s) checked above
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                msg = json.loads(exc.read()).get("error", "")
            except Exception:
                msg = ""
            raise InputError(f"server answered {exc.code}: {msg or exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise InputError(f"cannot reach {self.url}: {getattr(exc, 'reason', exc)}") from None

    def plan(self) -> ClientPlan:
        """The server's client spec."""
        return ClientPlan.from_json(self._request("/v1/plan"))

    def upload_keys(self, evaluation: EvalKeys) -> str:
        """Register the public evaluation context; returns its key id."""
        reply = json.loads(self._request("/v1/keys", evaluation.to_bytes()))
        return str(reply["key_id"])

    def upload_weights(self, key_id: str, weights: EncryptedWeights) -> None:
        """Mode (b): the owner's encrypted weights."""
        self._request(f"/v1/weights/{key_id}", weights.to_bytes())

    def infer(self, key_id: str, enc: Encrypted) -> Encrypted:
        """Send encrypted queries, receive the encrypted outputs."""
        return Encrypted.from_bytes(self._request(f"/v1/infer/{key_id}", enc.to_bytes()))
