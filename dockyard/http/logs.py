"""Structured JSON logs, each line carrying the id of the request it was written for, and the access log.

The access log is one JSON line per request (time, request id, principal, method, path, status, bytes,
duration, user agent). The request path only formats the line and appends it to an in-memory list (no
system call, no thread woken: waking a writer per line cost more than the rest of a manifest GET); a writer
thread writes what has gathered every `ACCESS_FLUSH_SECONDS` in one write, sooner once `ACCESS_BATCH_LINES`
wait, so a slow stderr or disk never stalls the event loop. The list is bounded (`ACCESS_MAX_LINES`; beyond
it lines are dropped, counted and reported). The writer is stopped (and so flushed) at shutdown: a clean stop
loses no line; a crash loses at most the last flush interval's lines.

Request ids are a per-process random prefix and a counter: unique without a random read per request.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import re
import sys
import threading
import time
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


ACCESS_FLUSH_SECONDS: Final = 0.2
ACCESS_BATCH_LINES: Final = 2048  # this many waiting wake the writer before its interval is up
ACCESS_MAX_LINES: Final = 200_000  # held while the destination does not take them; beyond, lines are dropped


class AccessWriter:
    """Access lines gathered on the request path and written by one thread, many at a time."""

    def __init__(
        self, stream: TextIO, interval: float = ACCESS_FLUSH_SECONDS, max_lines: int = ACCESS_MAX_LINES
    ) -> None:
        self.stream = stream
        self.interval = interval
        self.max_lines = max_lines
        self.dropped = 0
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
        self._thread.start()

    def add(self, line: str) -> None:
        with self._lock:
            if len(self._lines) >= self.max_lines:
                self.dropped += 1
                dropped = self.dropped
                waiting = 0
            else:
                self._lines.append(line)
                dropped = 0
                waiting = len(self._lines)
        if waiting == ACCESS_BATCH_LINES:
            self._wake.set()
        if dropped == 1 or (dropped and dropped % 10_000 == 0):
            logging.getLogger("dockyard").error("access log: %d line(s) DROPPED (the writer is behind)", dropped)

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._write()
        self._write()

    def _write(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        if not lines:
            return
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except (OSError, ValueError) as error:  # a full disk, a closed stream: reported, never raised at callers
            self.dropped += len(lines)
            logging.getLogger("dockyard").error("access log: %d line(s) DROPPED: %s", len(lines), error)

    def stop(self) -> None:
        """Write what is gathered and end the thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join()


_writer: AccessWriter | None = None


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
    global _writer  # one writer per process, replaced when logging is configured again
    stop_access_log()
    if destination == ACCESS_LOG_OFF:
        return
    stream: TextIO
    if destination == ACCESS_LOG_STDERR:
        stream = sys.stderr
    else:
        descriptor = os.open(Path(destination), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        stream = os.fdopen(descriptor, "a", buffering=1, encoding="utf-8")
    _writer = AccessWriter(stream)


def stop_access_log() -> None:
    """Write what is queued and stop the writer thread (at shutdown)."""
    global _writer  # see _configure_access_log
    if _writer is not None:
        _writer.stop()
        _writer = None


def _new_id_prefix() -> None:
    global _id_prefix, _id_counter  # per process: a forked worker draws its own prefix
    _id_prefix = os.urandom(8).hex()
    _id_counter = itertools.count()


_id_prefix = ""
_id_counter = itertools.count()
_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)


def new_request_id() -> str:
    """32 hex digits (as a uuid4's were): the process's random prefix and a counter."""
    return f"{_id_prefix}{next(_id_counter) & 0xFFFFFFFFFFFFFFFF:016x}"


async def with_request_id(scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
    """Run `app` with a request id (the client's X-Request-Id when well formed), echoed in the response, and
    write its access line when it is done."""
    given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"), "")
    request_id = given if given and _CLIENT_ID_RE.fullmatch(given) else new_request_id()
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
        writer = _writer
        if writer is not None:
            head = scope.get("method") == "HEAD"
            body_bytes = 0 if head else (sent or max(declared, 0))  # a file sent whole (pathsend) has no body messages
            writer.add(
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
