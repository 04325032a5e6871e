"""Streaming blob push and pull over raw http.client connections.

Large bodies never pass through Python buffers on push: file bodies go out with sendfile(2) so the
client spends as little of the shared CPU as possible, and pulls are read into one reused buffer.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

MIB = 1024 * 1024
READ_BUFFER = 4 * MIB
TIMEOUT_S = 600.0


class RegistryError(RuntimeError):
    pass


@dataclass(frozen=True)
class Target:
    base_url: str
    authorization: str
    repo: str

    def url(self, path: str) -> str:
        return urljoin(self.base_url, path)


def _connect(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=TIMEOUT_S)


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _with_digest(location: str, digest: str) -> str:
    return location + ("&" if "?" in location else "?") + f"digest={digest}"


def _expect(resp: http.client.HTTPResponse, status: int, what: str) -> None:
    body = resp.read()  # always drain so the keep-alive connection can be reused
    if resp.status != status:
        raise RegistryError(f"{what}: HTTP {resp.status} (want {status}): {body[:300]!r}")


def _send_headers(conn: http.client.HTTPConnection, method: str, url: str, headers: dict[str, str]) -> None:
    conn.putrequest(method, _path(url), skip_accept_encoding=True)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()


def _next_location(target: Target, resp: http.client.HTTPResponse, what: str) -> str:
    location = resp.getheader("Location")
    if not location:
        raise RegistryError(f"{what}: no Location header")
    return target.url(location)


def _start_upload(conn: http.client.HTTPConnection, target: Target) -> str:
    url = target.url(f"/v2/{target.repo}/blobs/uploads/")
    _send_headers(conn, "POST", url, {"Authorization": target.authorization, "Content-Length": "0"})
    resp = conn.getresponse()
    _expect(resp, 202, "start upload")
    return _next_location(target, resp, "start upload")


def _finish_upload(conn: http.client.HTTPConnection, target: Target, location: str, digest: str) -> None:
    headers = {"Authorization": target.authorization, "Content-Length": "0"}
    _send_headers(conn, "PUT", _with_digest(location, digest), headers)
    _expect(conn.getresponse(), 201, "finish upload")


def push_monolithic(target: Target, path: Path, digest: str) -> float:
    """POST then one PUT carrying the whole file; returns seconds spent."""
    size = path.stat().st_size
    conn = _connect(target.base_url)
    try:
        start = time.perf_counter()
        location = _start_upload(conn, target)
        headers = {
            "Authorization": target.authorization,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        }
        _send_headers(conn, "PUT", _with_digest(location, digest), headers)
        with path.open("rb") as body:
            assert conn.sock is not None
            conn.sock.sendfile(body, 0, size)
        _expect(conn.getresponse(), 201, "monolithic PUT")
        return time.perf_counter() - start
    finally:
        conn.close()


def _patch_chunk(
    conn: http.client.HTTPConnection, target: Target, location: str, body: Path, offset: int, count: int
) -> str:
    headers = {
        "Authorization": target.authorization,
        "Content-Type": "application/octet-stream",
        "Content-Length": str(count),
        # OCI chunked uploads use an inclusive range without the "bytes=" prefix.
        "Content-Range": f"{offset}-{offset + count - 1}",
    }
    _send_headers(conn, "PATCH", location, headers)
    with body.open("rb") as f:
        assert conn.sock is not None
        conn.sock.sendfile(f, offset, count)
    resp = conn.getresponse()
    _expect(resp, 202, f"PATCH at {offset}")
    return _next_location(target, resp, "PATCH")


def push_chunked(target: Target, path: Path, digest: str, chunk_size: int) -> float:
    """POST, PATCH fixed-size chunks following each returned Location, then an empty PUT."""
    size = path.stat().st_size
    conn = _connect(target.base_url)
    try:
        start = time.perf_counter()
        location = _start_upload(conn, target)
        for offset in range(0, size, chunk_size):
            location = _patch_chunk(conn, target, location, path, offset, min(chunk_size, size - offset))
        _finish_upload(conn, target, location, digest)
        return time.perf_counter() - start
    finally:
        conn.close()


def push_stream(target: Target, blocks: Iterable[bytes], size: int) -> tuple[str, float]:
    """Push `size` bytes produced on the fly as one PATCH, hashing as we send; returns (digest, seconds).

    The digest of generated data is only known at the end, so a monolithic PUT is impossible; a single
    PATCH followed by PUT ?digest= is the streaming form the OCI spec allows.
    """
    hasher = hashlib.sha256()
    conn = _connect(target.base_url)
    try:
        start = time.perf_counter()
        location = _start_upload(conn, target)
        headers = {
            "Authorization": target.authorization,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
            "Content-Range": f"0-{size - 1}",
        }
        _send_headers(conn, "PATCH", location, headers)
        sent = 0
        for block in blocks:
            hasher.update(block)
            conn.send(block)
            sent += len(block)
        if sent != size:
            raise RegistryError(f"generator produced {sent} bytes, promised {size}")
        resp = conn.getresponse()
        _expect(resp, 202, "streamed PATCH")
        digest = f"sha256:{hasher.hexdigest()}"
        _finish_upload(conn, target, _next_location(target, resp, "streamed PATCH"), digest)
        return digest, time.perf_counter() - start
    finally:
        conn.close()


def push_bytes(target: Target, data: bytes) -> str:
    """Monolithic push of a small in-memory blob; returns its digest."""
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    conn = _connect(target.base_url)
    try:
        location = _start_upload(conn, target)
        headers = {
            "Authorization": target.authorization,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(data)),
        }
        _send_headers(conn, "PUT", _with_digest(location, digest), headers)
        conn.send(data)
        _expect(conn.getresponse(), 201, "small blob PUT")
        return digest
    finally:
        conn.close()


def put_manifest(target: Target, reference: str, manifest: bytes, media_type: str) -> None:
    url = target.url(f"/v2/{target.repo}/manifests/{reference}")
    conn = _connect(url)
    try:
        headers = {"Authorization": target.authorization, "Content-Type": media_type}
        conn.request("PUT", _path(url), body=manifest, headers=headers)
        _expect(conn.getresponse(), 201, "manifest PUT")
    finally:
        conn.close()


def _open_blob(target: Target, digest: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    url = target.url(f"/v2/{target.repo}/blobs/{digest}")
    headers = {"Authorization": target.authorization}
    for _ in range(3):  # a registry may redirect blob reads elsewhere; follow a couple of hops
        conn = _connect(url)
        conn.request("GET", _path(url), headers=headers)
        resp = conn.getresponse()
        if resp.status not in (301, 302, 303, 307, 308):
            break
        location = resp.getheader("Location", "")
        resp.read()
        conn.close()
        if urlsplit(urljoin(url, location)).netloc != urlsplit(url).netloc:
            headers = {}  # never leak credentials to another host
        url = urljoin(url, location)
    if resp.status != 200:
        body = resp.read()
        conn.close()
        raise RegistryError(f"GET blob: HTTP {resp.status}: {body[:300]!r}")
    return conn, resp


def pull(target: Target, digest: str) -> int:
    """Read a blob to the end, discarding it; returns bytes read."""
    conn, resp = _open_blob(target, digest)
    buf = memoryview(bytearray(READ_BUFFER))
    total = 0
    try:
        while n := resp.readinto(buf):
            total += n
    finally:
        conn.close()
    return total


def pull_concurrently(target: Target, digest: str, streams: int) -> tuple[int, float]:
    """Run `streams` pulls at once in threads (socket reads release the GIL); returns (bytes, seconds)."""
    counts = [0] * streams
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            counts[i] = pull(target, digest)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return sum(counts), elapsed
