"""Structured JSON logs, each line carrying the id of the request it was written for, and the access log.

The access log is one JSON line per request (time, request id, principal, method, path, status, bytes,
duration, user agent). The request path only formats the line and puts it on a queue; a thread of the
standard library's `QueueListener` writes it, so a slow stderr or disk never stalls the event loop. The
listener is stopped (and so flushed) at shutdown: a clean stop loses no line; a crash loses the few lines
still queued.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
import os
import queue
import re
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dockyard.domain.iam import Principal

REQUEST_ID: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar("request_id", default=None)
_CLIENT_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")
ACCESS_LOGGER: Final = "dockyard.access"
ACCESS_LOG_OFF: Final = "off"
ACCESS_LOG_STDERR: Final = "stderr"


@dataclass
class AccessRecord:
    """What the doors learn about a request that the access log line reports (mutable: filled as it runs)."""

    principal: str | None = None


_ACCESS: Final[contextvars.ContextVar[AccessRecord | None]] = contextvars.ContextVar("access", default=None)


def note_principal(principal: Principal | None) -> None:
    """Called by a door once it has authenticated the caller: the access line names who called."""
    record = _ACCESS.get()
    if record is not None and principal is not None:
        record.principal = principal.arn


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "requestId": REQUEST_ID.get(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class _LineFormatter(logging.Formatter):
    """Access lines arrive already serialised."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


_listener: logging.handlers.QueueListener | None = None


def configure_logging(level: int = logging.INFO, access_log: str = ACCESS_LOG_STDERR) -> None:
    """Application logs as JSON on stderr; the access log to stderr, to a file (appended, owner-only), or off."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("dockyard")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    _configure_access_log(access_log)


def _configure_access_log(destination: str) -> None:
    global _listener  # one listener per process, replaced when logging is configured again
    stop_access_log()
    access = logging.getLogger(ACCESS_LOGGER)
    access.propagate = False
    access.setLevel(logging.INFO)
    if destination == ACCESS_LOG_OFF:
        access.handlers[:] = []
        access.disabled = True
        return
    access.disabled = False
    stream: TextIO
    if destination == ACCESS_LOG_STDERR:
        stream = sys.stderr
    else:
        descriptor = os.open(Path(destination), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        stream = os.fdopen(descriptor, "a", buffering=1, encoding="utf-8")
    writer = logging.StreamHandler(stream)
    writer.setFormatter(_LineFormatter())
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    access.handlers[:] = [logging.handlers.QueueHandler(lines)]
    _listener = logging.handlers.QueueListener(lines, writer)
    _listener.start()


def stop_access_log() -> None:
    """Write what is queued and stop the writer thread (at shutdown)."""
    global _listener  # see _configure_access_log
    if _listener is not None:
        _listener.stop()
        _listener = None


_access_logger: Final = logging.getLogger(ACCESS_LOGGER)


async def with_request_id(scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
    """Run `app` with a request id (the client's X-Request-Id when well formed), echoed in the response, and
    write its access line when it is done."""
    given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"), "")
    request_id = given if _CLIENT_ID_RE.fullmatch(given) else uuid.uuid4().hex
    token = REQUEST_ID.set(request_id)
    access = AccessRecord()
    access_token = _ACCESS.set(access)
    started_at, started = time.time(), time.perf_counter()
    status, sent, declared = 0, 0, -1

    async def send_with_id(message: Message) -> None:
        nonlocal status, sent, declared
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            message["headers"] = headers
            declared = next((int(v) for k, v in headers if k.lower() == b"content-length" and v.isdigit()), -1)
        elif message["type"] == "http.response.body":
            sent += len(message.get("body", b""))
        await send(message)

    try:
        await app(scope, receive, send_with_id)
    finally:
        REQUEST_ID.reset(token)
        _ACCESS.reset(access_token)
        if _access_logger.handlers and not _access_logger.disabled:
            head = scope.get("method") == "HEAD"
            body_bytes = 0 if head else (sent or max(declared, 0))  # a file sent whole (pathsend) has no body messages
            _access_logger.info(
                json.dumps(
                    {
                        "time": datetime.fromtimestamp(started_at, UTC).isoformat(timespec="milliseconds"),
                        "type": "access",
                        "requestId": request_id,
                        "principal": access.principal,
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "query": _redacted(scope.get("query_string", b"").decode("latin-1")) or None,
                        "status": status or 500,  # no response started: the server answers 500 for us
                        "bytes": body_bytes,
                        "durationMs": round((time.perf_counter() - started) * 1000, 3),
                        "userAgent": _header(scope, b"user-agent"),
                        "remote": (scope.get("client") or ("",))[0] or None,
                    },
                    separators=(",", ":"),
                )
            )


# A presigned URL's signature is a credential until it expires: it never reaches a log.
_SECRET_PARAMETER_RE: Final = re.compile(r"(?i)((?:^|&)(?:x-amz-signature|x-amz-security-token|password|token)=)[^&]*")


def _redacted(query: str) -> str:
    return _SECRET_PARAMETER_RE.sub(r"\1REDACTED", query)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None
