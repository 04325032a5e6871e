"""A local stand-in for OSV's public bucket: `<Ecosystem>/all.zip` over real HTTP on 127.0.0.1, with faults.

Each object is served with its Content-Length; a test can state a longer length than it sends (a transfer
that breaks off), add headers (a wrong `x-goog-hash`), or leave an ecosystem out (404). The server runs in a
thread of the test process and is always shut down by the context manager that started it.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.osv_oracle import ECOSYSTEM_ZIPS, OSV_FIXTURES


@dataclass
class Served:
    body: bytes
    declared_length: int | None = None  # the Content-Length to state when it is not len(body)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class OsvMirror:
    objects: dict[str, Served] = field(default_factory=dict)
    requested: list[str] = field(default_factory=list)
    url: str = ""

    @classmethod
    def of_fixtures(cls) -> OsvMirror:
        mirror = cls()
        for name in ECOSYSTEM_ZIPS:
            mirror.put(name, (OSV_FIXTURES / f"{name}-all.zip").read_bytes())
        return mirror

    @staticmethod
    def path_of(ecosystem: str) -> str:
        return f"/{urllib.parse.quote(ecosystem)}/all.zip"

    def put(
        self, ecosystem: str, body: bytes, declared_length: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        self.objects[self.path_of(ecosystem)] = Served(body, declared_length, headers or {})

    def remove(self, ecosystem: str) -> None:
        del self.objects[self.path_of(ecosystem)]

    @contextlib.contextmanager
    def running(self) -> Iterator[OsvMirror]:
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.requested.append(self.path)
                served = mirror.objects.get(self.path)
                if served is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(served.declared_length or len(served.body)))
                for name, value in served.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(served.body)  # HTTP/1.0: the connection closes after the body

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, name="osv-mirror", daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
