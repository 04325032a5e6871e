"""Builds the ASGI application: routes requests to the doors over the wired services (`dockyard.services`)."""

from __future__ import annotations

import asyncio
import gc

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from dockyard.config import Settings
from dockyard.domain.names import Digest
from dockyard.domain.registries import Registries
from dockyard.http.aws_json import UnknownOperation, error_response
from dockyard.http.drain import Drain, continues_work, is_door_request, not_ready, refusal
from dockyard.http.ecr_api import ECR_TARGET, PUBLIC_TARGET, EcrDoor, PublicEcrDoor
from dockyard.http.iam_api import FORM, QueryDoor
from dockyard.http.kms_api import KMS_TARGET, KmsDoor
from dockyard.http.logs import configure_logging, stop_access_log, with_request_id
from dockyard.http.metrics import metrics_response
from dockyard.http.registry import RegistryDoor
from dockyard.jobs.queue_worker import QueueWorker
from dockyard.jobs.usage import UsageFlusher
from dockyard.services import (
    Services,
    external_kms,
    load_master_key,
    make_blob_stores,
    prepare,
    write_private_file,
)

# What callers (and tests) long imported from here; the graph itself lives in `dockyard.services`.
__all__ = [
    "Dockyard",
    "Services",
    "create_app",
    "external_kms",
    "load_master_key",
    "make_blob_stores",
    "prepare",
    "write_private_file",
]


class Dockyard:
    """The one ASGI app: `/v2/…` goes to the registry door; health checks; everything else is 404."""

    def __init__(self, services: Services) -> None:
        settings = services.settings
        self.services = services
        self.drain = Drain()  # the supervisor starts it before a graceful stop (dockyard.launcher)
        self.registry_door: ASGIApp = RegistryDoor(
            services.registry,
            services.authenticator,
            services.login_tokens,
            services.authorizer,
            settings.default_account,
            settings.default_region,
            realm=settings.public_url,
            bearer=services.registry_tokens if settings.auth_challenge == "bearer" else None,
            public_accounts=Registries(services.metadata).account_for_alias,
            meter=services.meter,
        )

        self.ecr_door: ASGIApp = EcrDoor(
            services.registry,
            services.repositories,
            services.authenticator,
            services.login_tokens,
            services.authorizer,
            services.scanner,
            meter=services.meter,
        )

        self.public_door: ASGIApp = PublicEcrDoor(
            services.registry,
            services.repositories,
            services.authenticator,
            services.login_tokens,
            services.authorizer,
            services.scanner,
            meter=services.meter,
        )
        self.kms_door: ASGIApp = KmsDoor(services.keys, services.authenticator, services.authorizer)
        self.query_door: ASGIApp = QueryDoor(services.accounts, services.authenticator, services.authorizer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        await with_request_id(scope, receive, send, self._route)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_door_request(scope):
            if self.drain.draining and scope["path"] == "/readyz":
                await not_ready()(scope, receive, send)  # a load balancer stops sending traffic here
                return
            await self._serve(scope, receive, send)
            return
        if self.drain.draining and not continues_work(scope):
            await refusal(scope)(scope, receive, send)
            return
        self.drain.enter()
        try:
            await self._serve(scope, receive, send)
        finally:
            self.drain.leave()

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == "/v2" or path.startswith("/v2/") or path == "/token":
            await self.registry_door(scope, receive, send)
            return
        if scope["method"] == "POST" and path == "/":
            target = _header(scope, b"x-amz-target")
            if target.startswith(ECR_TARGET + "."):
                await self.ecr_door(scope, receive, send)
                return
            if target.startswith(PUBLIC_TARGET + "."):
                await self.public_door(scope, receive, send)
                return
            if target.startswith(KMS_TARGET + "."):
                await self.kms_door(scope, receive, send)
                return
            if target:
                unknown = UnknownOperation(f"Unknown target {target!r}: no such service or operation here")
                await error_response(unknown)(scope, receive, send)
                return
            if _header(scope, b"content-type").startswith(FORM):
                await self.query_door(scope, receive, send)
                return
        response: Response
        if path == "/healthz":
            response = JSONResponse({"status": "ok"})
        elif path == "/readyz":
            response = await run_in_threadpool(self._readiness)
        elif path == "/metrics":
            response = await run_in_threadpool(metrics_response, self.services.metadata.work_in_progress)
        else:
            response = JSONResponse({"message": "not found"}, status_code=404)
        await response(scope, receive, send)

    def _readiness(self) -> Response:
        """Ready when the metadata store answers a query and the blob store answers a lookup."""
        checks: dict[str, str] = {}
        try:
            self.services.metadata.count_vulnerabilities()
            checks["metadata"] = "ok"
        except Exception as exc:  # a readiness probe reports any failure, whatever its type
            checks["metadata"] = f"unavailable: {type(exc).__name__}"
        try:
            self.services.blobs.default.blob_size(Digest.of(b"dockyard readiness probe"))
            checks["blobs"] = "ok"
        except Exception as exc:  # likewise
            checks["blobs"] = f"unavailable: {type(exc).__name__}"
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse({"status": "ready" if ready else "not ready", **checks}, status_code=200 if ready else 503)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Background jobs start with the server and stop before it exits."""
        background = self.services.settings.background_jobs
        scheduler = self.services.scheduler() if background else None
        scans = QueueWorker("scan", self.services.scanner.work_once) if background else None
        replication = QueueWorker("replication", self.services.replicator.work_once) if background else None
        usage = UsageFlusher(self.services.meter, self.services.metadata)  # every process meters what it serves
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # What startup built (modules, routes, services) lives as long as the process: kept out of the
                # collector's generations, a full collection no longer walks it (shorter pauses, lower p99).
                gc.freeze()
                self.drain.bind(asyncio.get_running_loop())
                usage.start()
                if scheduler is not None and scans is not None:
                    scheduler.start()
                    scans.start()
                if replication is not None:
                    replication.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if scheduler is not None and scans is not None:
                    await scheduler.stop()
                    await scans.stop()
                if replication is not None:
                    await replication.stop()
                await usage.stop()  # flushes what this process counted
                stop_access_log()  # writes the lines still queued
                # Lines still queued (a disk that was full) are written now, or counted and logged as lost.
                await run_in_threadpool(self.services.close_logs)
                await send({"type": "lifespan.shutdown.complete"})
                return


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def create_app() -> Dockyard:
    """The factory each server worker calls; settings arrive through the environment."""
    settings = Settings.from_environment()
    configure_logging(access_log=settings.access_log)
    return Dockyard(Services(settings))
