"""The HTTP service on loopback: round trip, and every kind of bad request answered 4xx without a crash."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from dlsec.data import Dataset
from dlsec.errors import InputError
from dlsec.he import Encrypted, Plan
from dlsec.he.server import HEClient, Limits, make_server
from dlsec.he.wire import pack

pytest.importorskip("tenseal")


@pytest.fixture()
def server(single: Plan) -> Iterator[Any]:
    srv = make_server(single, "127.0.0.1", 0, Limits(max_request_bytes=2 << 20, max_key_bytes=64 << 20))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url(srv: Any) -> str:
    host, port = srv.server_address[:2]
    return f"http://{host}:{port}"


def post(srv: Any, path: str, body: bytes | None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        if body is None:
            conn.putrequest("POST", path)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            conn.endheaders()
        else:
            conn.request("POST", path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_binds_loopback_with_ephemeral_port(server: Any) -> None:
    host, port = server.server_address[:2]
    assert host == "127.0.0.1" and port > 0


def test_round_trip(server: Any, single: Plan, digits_test: Dataset) -> None:
    client = HEClient(url(server))
    spec = client.plan()
    assert spec.fingerprint == single.fingerprint and spec.gathers is not None
    keys = spec.keygen()
    key_id = client.upload_keys(keys.evaluation)
    x = digits_test.x[:3]
    out = client.infer(key_id, spec.encrypt(x, keys.secret, serialized=True))
    got = spec.decrypt(out, keys.secret)
    assert single.keys is not None
    local = single.decrypt(single.evaluate(single.encrypt(x)))
    assert np.abs(got - local).max() <= 2e-3 and (got.argmax(1) == local.argmax(1)).all()


def test_rejects_secret_key_context(server: Any, single: Plan) -> None:
    assert single.keys is not None
    secret_ctx = single.keys.secret.context.serialize(save_secret_key=True)
    forged = pack("eval-context", {"params": single.params.to_dict(), "rotations": []}, {"context": secret_ctx})
    code, body = post(server, "/v1/keys", forged)
    assert code == 403 and b"secret key" in body
    with pytest.raises(InputError, match="403"):
        HEClient(url(server))._request("/v1/keys", forged)


def test_rejects_oversized_and_malformed(server: Any, single: Plan) -> None:
    assert single.keys is not None
    code, body = post(server, "/v1/keys", single.keys.evaluation.to_bytes())
    assert code == 200
    key_id = json.loads(body)["key_id"]
    # oversized: refused from its Content-Length, before the body is read
    code, body = post(server, f"/v1/infer/{key_id}", None, {"Content-Length": str(3 << 20)})
    assert code == 413
    try:
        code, _ = post(server, f"/v1/infer/{key_id}", b"x" * ((2 << 20) + 1))
        assert code == 413
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered 413 from the Content-Length and closed while the body was still being sent
    # no length
    code, _ = post(server, f"/v1/infer/{key_id}", None, {})
    assert code == 411
    # malformed containers and ciphertexts
    good = single.encrypt(torch.zeros(1, 1, 8, 8), serialized=True)
    garbage_ct = Encrypted("input", single.fingerprint, (1,), blobs=((b"\x5e\xa1" * 300,),)).to_bytes()
    wrong_count = Encrypted("input", single.fingerprint, (1,), blobs=(good.blobs[0] * 2,)).to_bytes()
    for bad in (b"", b"junk", good.to_bytes()[:-7], garbage_ct, wrong_count, b"DLSECHE1\x00\x00\x00\x05[1,2]"):
        code, body = post(server, f"/v1/infer/{key_id}", bad)
        assert code == 400, (bad[:20], body)
        assert json.loads(body)["error"]
    code, _ = post(server, "/v1/keys", b"DLSECHE1 not really")
    assert code == 400
    code, _ = post(server, "/v1/infer/unknown", good.to_bytes())
    assert code == 404
    code, _ = post(server, "/v1/nothing", b"")
    assert code == 404
    # still serving
    code, body = post(server, f"/v1/infer/{key_id}", good.to_bytes())
    assert code == 200 and body.startswith(b"DLSECHE1")


def test_client_errors_are_input_errors() -> None:
    with pytest.raises(InputError, match="cannot reach"):
        HEClient("http://127.0.0.1:9", timeout=2).plan()
    from dlsec.errors import ConfigError

    with pytest.raises(ConfigError):
        HEClient("file:///etc/passwd")
