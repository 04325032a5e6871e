"""Renders domain errors on the registry door: the OCI error JSON with the status the error registry gives."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.responses import Response

from dockyard.domain.errors import DockyardError, Unauthorized, Unavailable
from dockyard.storage.full import is_storage_full, storage_full

log = logging.getLogger("dockyard.http")


def oci_error_response(error: DockyardError, head: bool, challenge: str | None) -> Response:
    entries: list[dict[str, Any]]
    if error.items:
        entries = [{"code": error.oci_code, "message": error.kind.default_message, "detail": i} for i in error.items]
    else:
        entries = [{"code": error.oci_code, "message": error.message}]
        if error.detail is not None:
            entries[0]["detail"] = error.detail
    body = b"" if head else json.dumps({"errors": entries}).encode()
    headers = dict(error.headers)
    if isinstance(error, Unauthorized) and challenge:
        headers["WWW-Authenticate"] = challenge
    response = Response(body, status_code=error.http_status, media_type="application/json", headers=headers)
    if head:
        response.headers["content-length"] = "0"
    return response


def unexpected_error_response(exc: BaseException, head: bool) -> Response:
    """A bug or an outage: logged with its stack, answered with a spec-shaped body and no internals."""
    if is_storage_full(exc):  # a full disk the storage layer did not name itself: still the storage error
        log.warning("no space left on the registry's storage: %s", exc)
        return oci_error_response(storage_full("the request"), head, None)
    log.exception("unexpected error while serving a registry request", exc_info=exc)
    return oci_error_response(Unavailable("internal error; the request was not completed"), head, None)
