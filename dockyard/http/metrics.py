"""Prometheus metrics of the HTTP doors, served at `/metrics`."""

from __future__ import annotations

from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
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


def metrics_response() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
