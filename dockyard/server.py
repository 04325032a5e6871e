"""Builds the ASGI application: wires domain services to stores, routes requests to the doors."""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import secrets
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import boto3
from botocore.config import Config as BotoConfig
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from dockyard.config import MASTER_KEY_ENV, Settings
from dockyard.domain.accounts import Accounts
from dockyard.domain.clock import utc_now
from dockyard.domain.encryption import RepositoryKeys
from dockyard.domain.gc import GarbageCollector
from dockyard.domain.iam import Authenticator, Authorizer, LoginTokens
from dockyard.domain.images import Registry
from dockyard.domain.keys import MASTER_KEY_BYTES, SecretBox
from dockyard.domain.kms import KeyService
from dockyard.domain.lifecycle_runs import LifecycleRunner
from dockyard.domain.names import Digest
from dockyard.domain.ports import BlobStore
from dockyard.domain.registries import Registries
from dockyard.domain.registry_tokens import RegistryTokens
from dockyard.domain.replication import Replicator
from dockyard.domain.scanning.service import ImageScanner, VulnerabilityDatabase
from dockyard.domain.tokens import TokenSigner, derive_key
from dockyard.domain.usage import ROLLUP_INTERVAL, UsageLedger, UsageMeter
from dockyard.http.aws_json import UnknownOperation, error_response
from dockyard.http.drain import Drain, continues_work, is_door_request, not_ready, refusal
from dockyard.http.ecr_api import ECR_TARGET, PUBLIC_TARGET, EcrDoor, PublicEcrDoor
from dockyard.http.iam_api import FORM, QueryDoor
from dockyard.http.kms_api import KMS_TARGET, KmsDoor
from dockyard.http.logs import configure_logging, stop_access_log, with_request_id
from dockyard.http.metrics import metrics_response
from dockyard.http.registry import RegistryDoor
from dockyard.jobs.queue_worker import QueueWorker
from dockyard.jobs.scheduler import Job, Scheduler
from dockyard.jobs.usage import UsageFlusher
from dockyard.storage.audit import JsonLinesAudit
from dockyard.storage.aws_kms import AwsKmsKeys
from dockyard.storage.blobs.domains import KeyDomainStores, StorageDataKeys
from dockyard.storage.blobs.filesystem import FilesystemBlobStore
from dockyard.storage.blobs.s3 import S3BlobStore
from dockyard.storage.metadata import SqlMetadataStore, make_engine
from dockyard.storage.migrate import upgrade
from dockyard.storage.private import create_private_file, make_private, private_directory


class Services:
    """The wired object graph one process serves from."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database, pool_size=settings.db_pool_size)
        self.metadata = SqlMetadataStore(self.engine)
        master_key = load_master_key(settings.data_dir)
        self.box = SecretBox(master_key)
        self.keys = KeyService(self.metadata, self.box)
        self.repository_keys = RepositoryKeys(self.keys, self._ensure_account, external_kms(settings))
        self.blobs = make_blob_stores(settings, self.repository_keys)
        self.login_tokens = LoginTokens(TokenSigner(derive_key(master_key, "ecr-login-token")), self.metadata)
        self.registry_tokens = RegistryTokens(TokenSigner(derive_key(master_key, "registry-bearer-token")))
        self.registry = Registry(
            self.metadata, self.blobs, create_on_push=settings.create_on_push, repository_keys=self.repository_keys
        )
        self.repositories = self.registry.repositories
        self.authenticator = Authenticator(self.metadata, self.box, frozenset(settings.regions))
        self.audit = JsonLinesAudit(settings.data_dir / "audit.log")
        self.authorizer = Authorizer(self.metadata, self.audit)
        self.accounts = Accounts(self.metadata, self.box)
        self.events = JsonLinesAudit(settings.data_dir / "events.log")
        self.lifecycle = LifecycleRunner(self.registry, (self.audit, self.events))
        self.vulnerabilities = VulnerabilityDatabase(self.metadata)
        self.scanner = ImageScanner(self.registry, self.vulnerabilities)
        self.replicator = Replicator(self.registry, self.authorizer)  # queues replications on push
        self.collector = GarbageCollector(self.metadata, self.blobs, grace=timedelta(seconds=settings.gc_grace))
        self.meter = UsageMeter()  # this process's transfer and request counts, flushed by UsageFlusher
        self.usage = UsageLedger(self.metadata)

    def close_logs(self) -> None:
        self.audit.close()
        self.events.close()

    def _ensure_account(self, account_id: str) -> None:
        self.metadata.ensure_account(account_id, utc_now())

    def scheduler(self) -> Scheduler:
        lease = timedelta(seconds=self.settings.job_lease)
        jobs = [
            Job("lifecycle-sweep", timedelta(seconds=self.settings.lifecycle_interval), self.lifecycle.run_all, lease),
            Job("garbage-collection", timedelta(seconds=self.settings.gc_interval), self.collector.run, lease),
            Job("usage-rollup", ROLLUP_INTERVAL, self.usage.roll_up, lease),
            Job("kms-key-rotation", timedelta(days=1), self.keys.rotate_due, lease),
        ]
        return Scheduler(self.metadata, jobs, tick_seconds=self.settings.job_tick)


def make_blob_stores(settings: Settings, repository_keys: RepositoryKeys) -> KeyDomainStores:
    """Where blobs live, per key domain: the data directory, or an S3 bucket (`s3://BUCKET[/PREFIX]`).

    The default (AES256) domain is encrypted under the registry-managed storage key unless encryption at rest
    is turned off; KMS domains always are.
    """
    raw = _raw_blob_stores(settings)
    default_keys = StorageDataKeys(repository_keys) if settings.encrypt_at_rest else None
    return KeyDomainStores(raw, repository_keys, default_keys)


def external_kms(settings: Settings) -> AwsKmsKeys | None:
    """Customer keys in the KMS at `--kms-endpoint-url`, reached with the standard AWS credential chain."""
    url = settings.kms_endpoint_url
    if url is None:
        return None
    config = BotoConfig(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=10)
    return AwsKmsKeys(lambda region: boto3.client("kms", endpoint_url=url, region_name=region, config=config))


def _raw_blob_stores(settings: Settings) -> Callable[[str | None], BlobStore]:
    """Stores under the data directory, or in an S3 bucket reached with the standard AWS credential chain,
    by sub-location (None: the root)."""
    if settings.blob_store is None:
        root = settings.blob_root
        return lambda sub: FilesystemBlobStore(root if sub is None else root / sub)
    location = urlsplit(settings.blob_store)
    if location.scheme != "s3" or not location.netloc:
        raise ValueError(f"--blob-store must be s3://BUCKET[/PREFIX], not {settings.blob_store!r}")
    client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        config=BotoConfig(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=32,  # the S3 store sends up to 16 parts at once besides the requests' own calls
        ),
    )
    redirect_seconds = 900 if settings.s3_redirect else 0
    bucket, prefix = location.netloc, location.path.strip("/")
    return lambda sub: S3BlobStore(
        bucket, prefix if sub is None else f"{prefix}/{sub}".strip("/"), client, redirect_seconds
    )


def prepare(settings: Settings) -> Services:
    """Create the data directory and apply migrations: run once before any worker starts."""
    private_directory(settings.data_dir)
    make_private(settings.data_dir)  # what an older version left readable by others
    services = Services(settings)
    upgrade(services.engine)
    return services


def load_master_key(data_dir: Path) -> bytes:
    """The master key from the environment (base64), else the data directory key file made at first start."""
    if os.environ.get(MASTER_KEY_ENV):
        key = base64.b64decode(os.environ[MASTER_KEY_ENV])
        if len(key) != MASTER_KEY_BYTES:
            raise ValueError(f"{MASTER_KEY_ENV} must be {MASTER_KEY_BYTES} bytes, base64-encoded")
        return key
    path = data_dir / "master.key"
    if not path.exists():
        write_private_file(path, base64.b64encode(secrets.token_bytes(MASTER_KEY_BYTES)) + b"\n")
    return base64.b64decode(path.read_bytes().strip())


def write_private_file(path: Path, content: bytes) -> None:
    """Create a file only its owner can read (0600), never exposing it with wider permissions."""
    with os.fdopen(create_private_file(path), "wb") as file:
        file.write(content)


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
