"""A fake OSV API on 127.0.0.1 (threaded ``http.server``): querybatch with paging, vulns/{id}, query."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dlsec.audit.osv import normalize_name, parse_record, public_version


class FakeOsv:
    """Answers from a list of OSV records; ``page_size`` ids per querybatch result page; logs every request."""

    def __init__(self, records: list[dict[str, Any]], page_size: int = 1000, fail: int | None = None) -> None:
        self.records = {r["id"]: r for r in records}
        self.page_size = page_size
        self.fail = fail
        self.log: list[tuple[str, str, Any]] = []

    def ids_for(self, name: str, version: str) -> list[str]:
        v = public_version(version)
        return sorted(
            rid for rid, r in self.records.items() if parse_record(r).affects(normalize_name(name), v)
        )

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.log.append(("POST", self.path, body))
                if fake.fail:
                    return self._send(fake.fail, {"message": "boom"})
                if self.path == "/v1/querybatch":
                    results = []
                    for q in body["queries"]:
                        ids = fake.ids_for(q["package"]["name"], q["version"])
                        start = int(q.get("page_token") or 0)
                        page = ids[start : start + fake.page_size]
                        res: dict[str, Any] = {
                            "vulns": [{"id": i, "modified": "2025-01-01T00:00:00Z"} for i in page]
                        }
                        if start + fake.page_size < len(ids):
                            res["next_page_token"] = str(start + fake.page_size)
                        results.append(res)
                    return self._send(200, {"results": results})
                if self.path == "/v1/query":  # pip-audit's endpoint: full records in one answer
                    ids = fake.ids_for(body["package"]["name"], body["version"])
                    return self._send(200, {"vulns": [fake.records[i] for i in ids]} if ids else {})
                return self._send(404, {"message": "not found"})

            def do_GET(self) -> None:
                fake.log.append(("GET", self.path, None))
                rid = self.path.rsplit("/", 1)[-1]
                if self.path.startswith("/v1/vulns/") and rid in fake.records:
                    return self._send(200, fake.records[rid])
                return self._send(404, {"message": "not found"})

        return Handler


@contextmanager
def serve(fake: FakeOsv) -> Iterator[str]:
    """Run ``fake`` on an ephemeral loopback port; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
