"""The wired object graph one process serves from: domain services on their stores, and `prepare`.

Kept apart from the ASGI app (`dockyard.server`) so the commands that need only the stores (`dockyard serve`
before it hands over to the supervisor, `dockyard admin`, `gc`) load neither Starlette nor the HTTP doors, and
cloud SDKs (boto3/botocore) are imported only when an S3 blob store or an external KMS is configured.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from dockyard.config import Settings
from dockyard.domain.accounts import Accounts
from dockyard.domain.clock import utc_now
from dockyard.domain.encryption import RepositoryKeys
from dockyard.domain.gc import GarbageCollector
from dockyard.domain.iam import Authenticator, Authorizer, LoginTokens
from dockyard.domain.images import Registry
from dockyard.domain.keys import SecretBox
from dockyard.domain.kms import KeyService
from dockyard.domain.lifecycle_runs import LifecycleRunner
from dockyard.domain.ports import BlobStore
from dockyard.domain.registry_tokens import RegistryTokens
from dockyard.domain.replication import Replicator
from dockyard.domain.scanning.service import ImageScanner, VulnerabilityDatabase
from dockyard.domain.tokens import TokenSigner, derive_key
from dockyard.domain.usage import ROLLUP_INTERVAL, UsageLedger, UsageMeter
from dockyard.storage.audit import JsonLinesAudit
from dockyard.storage.blobs.domains import KeyDomainStores, StorageDataKeys
from dockyard.storage.blobs.filesystem import FilesystemBlobStore
from dockyard.storage.metadata import SqlMetadataStore, make_engine
from dockyard.storage.migrate import upgrade
from dockyard.storage.startup import load_master_key, prepare_data_dir, write_private_file

# What callers long imported from here.
__all__ = [
    "Services",
    "external_kms",
    "load_master_key",
    "make_blob_stores",
    "prepare",
    "write_private_file",
]

if TYPE_CHECKING:
    from dockyard.jobs.scheduler import Scheduler
    from dockyard.storage.aws_kms import AwsKmsKeys


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
        from dockyard.jobs.scheduler import Job, Scheduler  # here: only a serving worker runs the jobs

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
    import boto3  # here: only an external KMS needs the AWS SDK
    from botocore.config import Config as BotoConfig

    from dockyard.storage.aws_kms import AwsKmsKeys

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
    import boto3  # here: only an S3 blob store needs the AWS SDK
    from botocore.config import Config as BotoConfig

    from dockyard.storage.blobs.s3 import S3BlobStore

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
    prepare_data_dir(settings)
    services = Services(settings)
    upgrade(services.engine)
    return services
