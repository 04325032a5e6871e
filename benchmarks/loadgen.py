"""A small closed-loop HTTP/1.1 keep-alive load generator for HEAD requests.

wrk cannot drive HEAD: it waits for the Content-Length bytes that a HEAD response announces but never
sends. This generator keeps N connections busy, one request in flight per connection (no pipelining),
for a fixed duration, and records latencies in a fixed-size log histogram so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

GRACE_S = 5.0  # how long in-flight requests may finish after the deadline before they count as errors


class LatencyHistogram:
    """Latencies in log buckets of 1% width from 1 us to about 7 minutes: constant memory, ~1% error."""

    GROWTH = 1.01
    BUCKETS = 2000

    def __init__(self) -> None:
        self.counts = [0] * self.BUCKETS
        self.total = 0
        self._log_growth = math.log(self.GROWTH)

    def record(self, seconds: float) -> None:
        micros = max(seconds * 1e6, 1.0)
        bucket = min(int(math.log(micros) / self._log_growth), self.BUCKETS - 1)
        self.counts[bucket] += 1
        self.total += 1

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100) in seconds, taken at the geometric middle of its bucket."""
        if not self.total:
            return math.nan
        rank = math.ceil(self.total * q / 100)
        seen = 0
        for bucket, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return float(self.GROWTH ** (bucket + 0.5) / 1e6)
        return math.nan


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    histogram: LatencyHistogram = field(repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def p50_ms(self) -> float:
        return self.histogram.percentile(50) * 1e3

    @property
    def p99_ms(self) -> float:
        return self.histogram.percentile(99) * 1e3


@dataclass
class _Stats:
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    ok: int = 0
    errors: int = 0


class _HeadClient(asyncio.Protocol):
    """One keep-alive connection: send a request, wait for the header block, repeat until the deadline.

    A HEAD response never carries a body, so the end of the header block is the end of the response.
    """

    def __init__(self, request: bytes, stats: _Stats, deadline: float, done: asyncio.Future[None]) -> None:
        self.request = request
        self.stats = stats
        self.deadline = deadline
        self.done = done
        self.buffer = bytearray()
        self.pending = False
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.pending = True
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        del self.buffer[: end + 4]
        now = time.perf_counter()
        self.pending = False
        if head[9:10] == b"2":  # "http/1.1 2xx"
            self.stats.ok += 1
            self.stats.histogram.record(now - self.sent_at)
        else:
            self.stats.errors += 1
        if now >= self.deadline or b"\r\nconnection: close" in head:
            assert self.transport is not None
            self.transport.close()
        else:
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pending:  # the server dropped a request we were waiting on
            self.pending = False
            self.stats.errors += 1
        if not self.done.done():
            self.done.set_result(None)


async def _one_connection(host: str, port: int, request: bytes, stats: _Stats, deadline: float) -> None:
    """Open one connection and drive it until the deadline or until the server closes it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    client = _HeadClient(request, stats, deadline, done)
    await loop.create_connection(lambda: client, host, port)
    try:
        await done
    finally:
        if client.transport is not None:
            client.transport.abort()
        if client.pending:  # cancelled at the grace limit with a request still outstanding
            client.pending = False
            stats.errors += 1


async def _connection_loop(host: str, port: int, request: bytes, stats: _Stats, deadline: float) -> None:
    """Keep one connection slot busy until the deadline, reconnecting if the server closes it."""
    while time.perf_counter() < deadline:
        try:
            await _one_connection(host, port, request, stats, deadline)
        except OSError:
            stats.errors += 1
            await asyncio.sleep(0.01)


async def _run(url: str, headers: dict[str, str], connections: int, duration: float) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [
        f"HEAD {parts.path} HTTP/1.1",
        f"Host: {host}:{port}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    stats = _Stats()
    start = time.perf_counter()
    deadline = start + duration
    loop_args = (host, port, request, stats, deadline)
    tasks = [asyncio.create_task(_connection_loop(*loop_args)) for _ in range(connections)]
    _, late = await asyncio.wait(tasks, timeout=duration + GRACE_S)
    for task in late:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*late, return_exceptions=True)
    elapsed = time.perf_counter() - start
    return LoadResult(requests=stats.ok, errors=stats.errors, seconds=elapsed, histogram=stats.histogram)


def run_head_load(
    url: str,
    headers: dict[str, str],
    connections: int = 64,
    duration: float = 10.0,
) -> LoadResult:
    """Drive HEAD requests at `url` from `connections` keep-alive connections for `duration` seconds."""
    return asyncio.run(_run(url, headers, connections, duration))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("-c", "--connections", type=int, default=64)
    parser.add_argument("-d", "--duration", type=float, default=10.0)
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    args = parser.parse_args()
    pairs = (h.split(":", 1) for h in args.header)
    hdrs = {name.strip(): value.strip() for name, value in pairs}
    res = run_head_load(args.url, hdrs, args.connections, args.duration)
    print(f"{res.rps:.0f} req/s  p50 {res.p50_ms:.2f} ms  p99 {res.p99_ms:.2f} ms  errors {res.errors}")
