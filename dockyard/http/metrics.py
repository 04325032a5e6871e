"""Prometheus metrics of the HTTP doors, served at `/metrics`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.responses import Response

REGISTRY: Final = CollectorRegistry()

REQUESTS: Final = Counter(
    "dockyard_http_requests",
    "Requests served, by door, route and status.",
    ["door", "route", "method", "status"],
    registry=REGISTRY,
)
LATENCY: Final = Histogram(
    "dockyard_http_request_seconds",
    "Time to the first response byte, by door and route.",
    ["door", "route"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


BYTES_RECEIVED: Final = Counter(
    "dockyard_blob_bytes_received", "Blob bytes received by uploads (registry door).", registry=REGISTRY
)
BYTES_SENT: Final = Counter(
    "dockyard_blob_bytes_sent", "Blob bytes sent by blob GETs (registry door).", registry=REGISTRY
)
UPLOAD_SESSIONS: Final = Gauge(
    "dockyard_upload_sessions", "Upload sessions open in the metadata store (all nodes).", registry=REGISTRY
)
SCAN_QUEUE: Final = Gauge("dockyard_scan_queue_depth", "Image scans waiting or running (all nodes).", registry=REGISTRY)


def metrics_response(counts: Callable[[], tuple[int, int]] | None = None) -> Response:
    """The exposition; `counts` gives (open upload sessions, queued scans), read at scrape time."""
    if counts is not None:
        sessions, queued = counts()
        UPLOAD_SESSIONS.set(sessions)
        SCAN_QUEUE.set(queued)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
