"""HTTP/1.1 over a bare socket, for requests no client library will send: broken chunked framing, header
bytes outside ASCII, transfer codings a server must refuse."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names; the last value wins (enough for these tests)
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(
    host: str, port: int, method: str, target: str, headers: list[tuple[str, bytes]], body: bytes = b""
) -> RawResponse:
    """Send exactly these bytes (`body` is sent as is: frame it yourself) and read the answer to EOF."""
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n".encode()
    head += b"".join(name.encode() + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"
    with socket.create_connection((host, port), timeout=30) as connection:
        connection.sendall(head + body)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    header_block, _, payload = rest.partition(b"\r\n\r\n")
    parsed = {}
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        parsed[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if parsed.get("transfer-encoding", "").lower() == "chunked":
        payload = _unchunk(payload)
    return RawResponse(int(status_line.split()[1]), parsed, payload)


def _unchunk(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body, data = body + data[:size], data[size + 2 :]
    return body
