"""One worker's side of a graceful stop: finish what is in flight, refuse new work, then leave.

The supervisor (`dockyard.launcher`) tells each worker to drain; from then on requests that would start new
work are answered 503 with `Retry-After` (in each door's error shape) and `/readyz` says not ready, so a load
balancer moves traffic elsewhere, while requests in flight, and those that continue an upload already begun,
run to their end. Once nothing has been in flight for `QUIET_SECONDS` the worker calls its `on_idle` (which
stops it); the supervisor stops whatever is still running when the grace period ends.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Final

from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from dockyard.domain.errors import ShuttingDown
from dockyard.http import aws_json
from dockyard.http.errors import oci_error_response
from dockyard.http.iam_api import query_error_response

# A client's next chunk (or the PUT that completes an upload) follows its previous request within milliseconds
# on the same connection: the worker waits this long after the last request before it leaves, so that
# request is not cut off between two requests of one upload.
QUIET_SECONDS: Final = 0.5
RETRY_AFTER_SECONDS: Final = 5  # a restarted node (or another behind the load balancer) takes the retry

# Requests that carry on a push already under way: the rest of an upload session, and the manifest that
# names the blobs just uploaded. Everything else would start new work.
_UPLOAD_SESSION = re.compile(r"/v2/.+/blobs/uploads/[A-Za-z0-9-]+")
_MANIFEST = re.compile(r"/v2/.+/manifests/[^/]+")
_CONTINUING_TARGETS: Final = frozenset({"UploadLayerPart", "CompleteLayerUpload", "PutImage"})


class Drain:
    """Counts this worker's requests in flight and, once draining, which may still start.

    Everything runs on the event loop's thread: `begin` is called from a signal handler, which Python runs
    in the main thread (the loop's), between two bytecodes.
    """

    def __init__(self, quiet: float = QUIET_SECONDS) -> None:
        self.quiet = quiet
        self.draining = False
        self.in_flight = 0
        self.on_idle: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._since = 0.0  # monotonic time the drain began
        self._last_finished = 0.0  # monotonic time the last admitted request ended
        self._left = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop requests run on (known once the app's lifespan starts)."""
        self._loop = loop
        if self.draining:
            loop.call_soon(self._check_idle)

    def begin(self) -> None:
        """Start draining (repeated calls change nothing)."""
        if self.draining:
            return
        self.draining = True
        self._since = time.monotonic()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._check_idle)

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        self._last_finished = time.monotonic()
        if self.draining and self.in_flight == 0 and self._loop is not None:
            self._loop.call_later(self.quiet, self._check_idle)

    def _check_idle(self) -> None:
        if self._left or self.in_flight:
            return
        waited = time.monotonic() - max(self._since, self._last_finished)
        if waited < self.quiet:
            assert self._loop is not None
            self._loop.call_later(self.quiet - waited, self._check_idle)
            return
        self._left = True
        if self.on_idle is not None:
            self.on_idle()


def is_door_request(scope: Scope) -> bool:
    """A request for one of the doors (the work a drain counts and refuses), not a probe or a scrape."""
    path: str = scope["path"]
    return path == "/v2" or path.startswith("/v2/") or path == "/token" or (scope["method"] == "POST" and path == "/")


def continues_work(scope: Scope) -> bool:
    path: str = scope["path"]
    method: str = scope["method"]
    if _UPLOAD_SESSION.fullmatch(path):
        return True
    if method == "PUT" and _MANIFEST.fullmatch(path):
        return True
    target = _header(scope, b"x-amz-target")
    return method == "POST" and path == "/" and target.rpartition(".")[2] in _CONTINUING_TARGETS


def refusal(scope: Scope) -> Response:
    """503 with `Retry-After`, shaped as the door the request was meant for would answer its errors."""
    error = ShuttingDown(headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    path: str = scope["path"]
    if path == "/v2" or path.startswith("/v2/") or path == "/token":
        return oci_error_response(error, scope["method"] == "HEAD", None)
    if _header(scope, b"x-amz-target"):
        return aws_json.error_response(error)
    return query_error_response(error)


def not_ready() -> Response:
    return JSONResponse(
        {"status": "not ready", "draining": True},
        status_code=ShuttingDown.kind.http_status,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""
