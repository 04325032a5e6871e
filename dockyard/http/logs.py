"""Structured JSON logs, each line carrying the id of the request it was written for."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar("request_id", default=None)
_CLIENT_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")


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


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("dockyard")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


async def with_request_id(scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
    """Run `app` with a request id (the client's X-Request-Id when well formed), echoed in the response."""
    given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"), "")
    request_id = given if _CLIENT_ID_RE.fullmatch(given) else uuid.uuid4().hex
    token = REQUEST_ID.set(request_id)

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
        await send(message)

    try:
        await app(scope, receive, send_with_id)
    finally:
        REQUEST_ID.reset(token)
