"""Chunked blob uploads driven by hand over HTTP, including a PATCH whose body stalls mid-way."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import httpx

from tests.support.images import sha256

MiB = 1024 * 1024


def blob_of(size: int, seed: int) -> tuple[bytes, str]:
    """`size` incompressible bytes, deterministic per seed, and their digest."""
    data = random.Random(seed).randbytes(size)
    return data, sha256(data)


def received(response: httpx.Response) -> int:
    """Bytes an upload holds according to the `Range: 0-<last>` header of a 202/204 answer."""
    first, _, last = response.headers["range"].removeprefix("bytes=").partition("-")
    assert first == "0", response.headers["range"]
    return int(last) + 1


def start_upload(http: httpx.Client, name: str) -> str:
    response = http.post(f"/v2/{name}/blobs/uploads/")
    assert response.status_code == 202, response.text
    location: str = response.headers["location"]
    return location


def patch_chunk(http: httpx.Client, location: str, data: bytes, start: int) -> httpx.Response:
    """PATCH `data` as the chunk starting at byte `start`; asserts the 202 and returns it."""
    response = http.patch(
        location,
        content=data,
        headers={
            "Content-Range": f"{start}-{start + len(data) - 1}",
            "Content-Type": "application/octet-stream",
        },
    )
    chunk = f"{start}-{start + len(data) - 1}"
    assert response.status_code == 202, f"PATCH {chunk}: {response.status_code} {response.text}"
    assert received(response) == start + len(data)
    return response


def upload_chunks(http: httpx.Client, location: str, data: bytes, start: int, chunk: int) -> str:
    """PATCH `data[start:]` in `chunk`-sized pieces; returns the latest Location."""
    offset = start
    while offset < len(data):
        piece = data[offset : offset + chunk]
        location = patch_chunk(http, location, piece, offset).headers["location"]
        offset += len(piece)
    return location


class StalledPatch(threading.Thread):
    """One PATCH of `data[start:]` (with Content-Range and Content-Length) from a thread.

    It sends `send_first` bytes, sets `sent`, then holds the rest of the body back until `release` is set:
    while it waits, the request is in flight on the server.
    """

    PIECE = MiB

    def __init__(self, url: str, headers: dict[str, str], data: bytes, start: int, send_first: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.headers = headers
        self.data = data
        self.start_at = start
        self.send_first = send_first
        self.sent = threading.Event()
        self.release = threading.Event()
        self.response: httpx.Response | None = None
        self.error: Exception | None = None

    def body(self) -> Iterator[bytes]:
        end = self.start_at + self.send_first
        for offset in range(self.start_at, end, self.PIECE):
            yield self.data[offset : min(offset + self.PIECE, end)]
        self.sent.set()
        if not self.release.wait(timeout=60):
            return  # never released: end the body short; the server sees a truncated request
        for offset in range(end, len(self.data), self.PIECE):
            yield self.data[offset : offset + self.PIECE]

    def run(self) -> None:
        headers = {
            **self.headers,
            "Content-Range": f"{self.start_at}-{len(self.data) - 1}",
            "Content-Length": str(len(self.data) - self.start_at),
            "Content-Type": "application/octet-stream",
        }
        try:
            with httpx.Client(timeout=60) as client:
                self.response = client.patch(self.url, content=self.body(), headers=headers)
        except httpx.TransportError as exc:
            self.error = exc
        finally:
            self.sent.set()  # never leave the test waiting, whatever happened

    def finish(self, timeout: float = 60) -> None:
        self.release.set()
        self.join(timeout)
        assert not self.is_alive(), "the stalled PATCH did not end"
