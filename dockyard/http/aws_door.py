"""A door for one AWS JSON 1.1 service: read, verify SigV4, validate against the model, run, serialise.

Subclasses name their service, build their call object and authorise; handlers are their methods named after
the model's operations in snake case (CreateRepository -> create_repository).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property
from typing import Any, ClassVar, Generic, TypeVar

from botocore.model import ServiceModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from dockyard.domain.clock import Clock
from dockyard.domain.errors import DockyardError, InvalidParameter, Unavailable
from dockyard.domain.iam import Authenticator
from dockyard.http import aws_json
from dockyard.http.bodies import body_chunks
from dockyard.http.errors import log
from dockyard.http.logs import note_principal
from dockyard.http.metrics import LATENCY, REQUESTS
from dockyard.http.sigv4 import JSON_SIGNED, SignedRequest, Verified, verify
from dockyard.storage.full import is_storage_full, storage_full

C = TypeVar("C")


def snake_case(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


class AwsJsonDoor(Generic[C]):
    SERVICE: ClassVar[str]
    MAX_BODY: ClassVar[int] = 1024 * 1024

    def __init__(self, authenticator: Authenticator, clock: Clock) -> None:
        self.authenticator = authenticator
        self.clock = clock

    @cached_property
    def model(self) -> ServiceModel:
        """Read at the door's first request, not at the worker's start (which it would slow by tens of ms)."""
        return aws_json.service_model(self.SERVICE)

    @cached_property
    def handlers(self) -> dict[str, Callable[[C], dict[str, Any]]]:
        return {
            name: getattr(self, snake_case(name))
            for name in self.model.operation_names
            if hasattr(self, snake_case(name))
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        operation = request.headers.get("x-amz-target", "").partition(".")[2]
        started = time.perf_counter()
        try:
            response = await self.dispatch(request, operation)
        except DockyardError as error:
            response = aws_json.error_response(error)
        except Exception as exc:
            if is_storage_full(exc):  # a full disk the storage layer did not name itself
                log.warning("no space left on the registry's storage in %s %s: %s", self.SERVICE, operation, exc)
                response = aws_json.error_response(storage_full(operation or "the request"))
            else:
                log.exception("unexpected error in %s %s", self.SERVICE, operation, exc_info=exc)
                response = aws_json.error_response(Unavailable("internal error; the request was not completed"))
        route = operation if operation in self.model.operation_names else "unknown"
        LATENCY.labels(self.SERVICE, route).observe(time.perf_counter() - started)
        REQUESTS.labels(self.SERVICE, route, request.method, str(response.status_code)).inc()
        await response(scope, receive, send)

    async def dispatch(self, request: Request, operation_name: str) -> Response:
        body = await self._read_body(request)
        operation = aws_json.operation(self.model, operation_name)
        verified = await run_in_threadpool(self._verify, request, body)
        note_principal(verified.principal)
        params = aws_json.validate(operation.input_shape, aws_json.parse_body(body))
        handler = self.handlers.get(operation.name)
        if handler is None:
            raise aws_json.NotBuilt(f"{operation.name} is not supported by this version of Dockyard")
        call = self.make_call(verified, request, params)
        result = await run_in_threadpool(self.run, operation.name, handler, call)
        return aws_json.json_response(aws_json.serialize(operation.output_shape, result))

    def make_call(self, verified: Verified, request: Request, params: dict[str, Any]) -> C:
        raise NotImplementedError

    def run(self, operation: str, handler: Callable[[C], dict[str, Any]], call: C) -> dict[str, Any]:
        """Authorise `operation` for the call, then run its handler."""
        raise NotImplementedError

    def _verify(self, request: Request, body: bytes) -> Verified:
        signed = SignedRequest(request.method, request.url.path, request.url.query, request.headers.items(), body)
        return verify(
            signed,
            self.authenticator.secret_of,
            frozenset({self.signing_name()}),
            self.clock(),
            regions=self.signing_regions(),
            required_headers=JSON_SIGNED,
        )

    def signing_name(self) -> str:
        return self.SERVICE

    def signing_regions(self) -> frozenset[str]:
        """The regions a request's credential scope may name: those the deployment serves."""
        return self.authenticator.regions

    async def _read_body(self, request: Request) -> bytes:
        parts, total = [], 0
        async for chunk in body_chunks(request):
            total += len(chunk)
            if total > self.MAX_BODY:
                raise InvalidParameter(f"the request body exceeds {self.MAX_BODY} bytes")
            parts.append(chunk)
        return b"".join(parts)
