"""The seams between the domain and storage: small protocols and the value objects that cross them.

Stores return frozen dataclasses, never ORM rows or driver objects, so an adapter cannot trigger hidden
queries. Each protocol is small on purpose; one storage class may implement several of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from dockyard.domain.names import Digest, RepositoryRef

# --------------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class RepositorySettings:
    """What a repository's owner configures (ECR's CreateRepository members)."""

    tag_mutability: str = "MUTABLE"
    mutability_exclusions: tuple[str, ...] = ()
    scan_on_push: bool = False
    encryption_type: str = "AES256"
    kms_key: str | None = None


@dataclass(frozen=True)
class Repository:
    id: int
    ref: RepositoryRef
    created_at: datetime
    settings: RepositorySettings = field(default_factory=RepositorySettings)


@dataclass(frozen=True)
class UploadSession:
    id: str
    repository_id: int
    started_at: datetime


@dataclass(frozen=True)
class ManifestRecord:
    digest: Digest
    media_type: str
    size: int
    artifact_type: str | None
    subject: Digest | None
    annotations: dict[str, str]
    pushed_at: datetime
    image_size: int = 0
    config_media_type: str | None = None
    last_pulled_at: datetime | None = None
    storage_class: str = "STANDARD"  # or "ARCHIVE" (lifecycle transitions; not pullable until restored)
    last_archived_at: datetime | None = None
    last_activated_at: datetime | None = None


@dataclass(frozen=True)
class ImageRow:
    """One image (manifest) with every tag on it, as DescribeImages lists it."""

    manifest: ManifestRecord
    tags: tuple[str, ...]


@dataclass(frozen=True)
class ManifestReference:
    """An edge from a manifest to content it needs: a blob (config, layer) or a child manifest."""

    digest: Digest
    is_manifest: bool


@dataclass(frozen=True)
class Document:
    """A JSON document kept verbatim (policies, configurations), with when it was last written."""

    text: str
    updated_at: datetime


@dataclass(frozen=True)
class Template:
    """A repository creation template: the settings given to repositories created under `prefix`."""

    prefix: str
    document: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class LifecycleRow:
    """What lifecycle evaluation reads of one image, fetched in bulk (a sweep reads every repository)."""

    digest: str
    tags: tuple[str, ...]
    pushed_at: datetime
    last_pulled_at: datetime | None
    last_archived_at: datetime | None
    last_activated_at: datetime | None
    storage_class: str
    subject: str | None


@dataclass(frozen=True)
class VulnerabilityEntry:
    """One advisory to store: its id, `modified` stamp, JSON document and the (ecosystem, name) it affects."""

    id: str
    modified: str
    document: str
    packages: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ScanRecord:
    status: str  # PENDING, IN_PROGRESS, COMPLETE, FAILED, UNSUPPORTED_IMAGE
    description: str | None
    requested_at: datetime
    completed_at: datetime | None
    findings: str | None  # JSON of ECR's imageScanFindings (findings, findingSeverityCounts)
    source_updated_at: datetime | None


@dataclass(frozen=True)
class ReplicationTask:
    """One queued replication of an image to one destination registry, as a worker claimed it."""

    id: int
    repository_id: int
    source: RepositoryRef
    digest: Digest
    destination_account: str
    destination_region: str
    generation: int  # bumped when the image is pushed again; a stale claim's result is not kept
    attempts: int


@dataclass(frozen=True)
class ReplicationRecord:
    """The state of an image's replication to one destination."""

    destination_account: str
    destination_region: str
    status: str  # PENDING, IN_PROGRESS, COMPLETE, FAILED
    failure_code: str | None
    failure_reason: str | None
    requested_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True)
class UsageCounter:
    """What one repository served and received in one hour (added to what other processes counted)."""

    ref: RepositoryRef
    hour: datetime  # the start of the hour, UTC
    transfer_bytes: int = 0  # blob and manifest bytes sent by GETs (or redirected to the blob store)
    pulls: int = 0  # manifest GETs
    pushes: int = 0  # manifest PUTs


@dataclass(frozen=True)
class StoredBytes:
    """The bytes a repository stores: its distinct linked blobs plus its manifests."""

    repository_id: int
    ref: RepositoryRef
    size: int


@dataclass(frozen=True)
class RepositoryUsage:
    """One repository's usage over a time range, summed from the hourly samples and counters."""

    region: str
    name: str
    storage_byte_hours: int = 0  # the sum of the hourly storage samples
    sampled_hours: int = 0
    last_stored_bytes: int = 0  # the latest sample in the range
    transfer_bytes: int = 0
    pulls: int = 0
    pushes: int = 0


@dataclass(frozen=True)
class IamUser:
    account_id: str
    user_name: str
    user_id: str
    path: str
    created_at: datetime

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:user{self.path}{self.user_name}"


@dataclass(frozen=True)
class AccessKeyInfo:
    """An access key without its secret."""

    access_key_id: str
    account_id: str
    user_name: str | None
    created_at: datetime


@dataclass(frozen=True)
class Credential:
    access_key_id: str
    sealed_secret: str
    account_id: str
    user_name: str | None  # None for the account's root user


# --------------------------------------------------------------------------------------------- blobs


class UploadWriter(Protocol):
    """Appends bytes to an upload in progress. `close` makes what was written part of the upload."""

    def truncate(self, size: int) -> None:
        """Drop the upload's bytes from `size` on, before this writer writes anything: e.g. a tail that a
        writer which died left cut short. Takes effect at once (also if the writer is discarded later)."""
        ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def discard(self) -> None: ...


class BlobStore(Protocol):
    """Content-addressed bytes plus the staging area for uploads in progress.

    Contract (tests/unit/storage/test_blob_store_contract.py runs it against every implementation):
    a blob is readable only after `commit_upload` or `put_blob` returned, and only with the bytes whose
    digest it carries; committing a digest that already exists keeps one copy; a crash at any point leaves
    garbage, never a half-written visible blob.
    """

    def blob_size(self, digest: Digest) -> int | None: ...

    def read_blob(self, digest: Digest, offset: int = 0, length: int | None = None) -> Iterator[bytes]: ...

    def local_path(self, digest: Digest) -> str | None:
        """A file path the server may send with zero-copy, or None when the store has none to offer."""
        ...

    def redirect_url(self, digest: Digest) -> str | None:
        """A URL (with its own authorisation, e.g. presigned) clients may fetch the blob from instead."""
        ...

    def put_blob(self, digest: Digest, data: bytes) -> None: ...

    def delete_blob(self, digest: Digest) -> None: ...

    def start_upload(self, upload_id: str) -> None: ...

    def upload_size(self, upload_id: str) -> int | None: ...

    def append_upload(self, upload_id: str) -> UploadWriter: ...

    def read_upload(self, upload_id: str) -> Iterator[bytes]: ...

    def commit_upload(self, upload_id: str, digest: Digest) -> None:
        """Durably publish the upload under `digest` (the caller verified it) and drop the upload."""
        ...

    def abort_upload(self, upload_id: str) -> None: ...

    def stored_blobs(self) -> Iterator[tuple[Digest, datetime]]:
        """Every stored blob with when it was last written (for the garbage collector's sweep)."""
        ...


@dataclass(frozen=True)
class KeyDomain:
    """Repositories whose content is encrypted under one key and deduplicated together, never across domains.

    `kms_key_arn` None is the registry-managed domain (ECR's AES256); otherwise the customer key (ECR's KMS)
    that wraps every data key of the domain's blobs and manifests.
    """

    kms_key_arn: str | None = None

    @property
    def name(self) -> str:
        """A stable name safe as a path segment: "default", or "kms-" and the key's id (a UUID)."""
        if self.kms_key_arn is None:
            return "default"
        return "kms-" + self.kms_key_arn.rsplit("/", 1)[-1]


class BlobStores(Protocol):
    """One blob store per key domain: a blob stored in one domain is never read through another."""

    def store(self, domain: KeyDomain) -> BlobStore: ...

    def check_usable(self, domain: KeyDomain) -> None:
        """Raise the domain error saying why content under this domain's key cannot be read or written now
        (a disabled or deleted key); return when it can."""
        ...

    def domains(self) -> list[KeyDomain]:
        """Every domain that may hold content (the garbage collector sweeps each)."""
        ...

    def sweep_leftovers(
        self, domain: KeyDomain, written_before: datetime, is_live_upload: Callable[[str], bool]
    ) -> int:
        """Delete the domain's partial files that failed writes and killed processes left behind, untouched
        since `written_before` (upload files only when `is_live_upload` says no session owns them); returns
        how many went. Stores without such files (an object store) return 0."""
        ...


@runtime_checkable
class LeftoverSweeper(Protocol):
    """A raw store that keeps partial files of its own (the filesystem store's tmp/ and uploads/)."""

    def sweep_leftovers(self, written_before: datetime, is_live_upload: Callable[[str], bool]) -> int: ...


# --------------------------------------------------------------------------------------------- metadata


class RepositoryStore(Protocol):
    def get_repository(self, ref: RepositoryRef) -> Repository | None: ...

    def get_repository_by_id(self, repository_id: int) -> Repository | None: ...

    def create_repository(
        self, ref: RepositoryRef, now: datetime, settings: RepositorySettings | None = None
    ) -> tuple[Repository, bool]:
        """Create the repository; returns it and whether this call created it (False: it existed)."""
        ...

    def list_repositories(self, account_id: str, region: str, after: str | None, limit: int) -> list[Repository]: ...

    def list_repository_names(self, account_id: str, region: str, after: str | None, limit: int) -> list[str]: ...

    def update_settings(self, repository_id: int, settings: RepositorySettings) -> None: ...

    def delete_repository(self, repository_id: int) -> None:
        """Delete the repository with its tags, manifests, blob links and uploads."""
        ...

    def count_manifests(self, repository_id: int) -> int: ...

    def get_resource_tags(self, repository_id: int) -> dict[str, str]: ...

    def set_resource_tags(self, repository_id: int, new_tags: dict[str, str], removed: Iterable[str]) -> None: ...


class BlobLinkStore(Protocol):
    def linked_blob_size(self, repository_id: int, digest: Digest) -> int | None: ...

    def pull_linked_blob_size(self, repository_id: int, digest: Digest) -> int | None:
        """`linked_blob_size` for a blob HEAD/GET, possibly from a short-lived cache (see the store)."""
        ...

    def linked_blob_sizes(self, repository_id: int, digests: Iterable[Digest]) -> dict[Digest, int]:
        """The sizes of those of `digests` linked to the repository, in one query."""
        ...

    def link_blob(self, repository_id: int, digest: Digest, size: int, now: datetime) -> None: ...

    def unlink_blob(self, repository_id: int, digest: Digest) -> bool: ...

    def repositories_linking_blob(self, account_id: str, region: str, digest: Digest, limit: int) -> list[Repository]:
        """Repositories of one registry the blob is linked to, by name (an anonymous mount's candidates)."""
        ...


class UploadStore(Protocol):
    def create_upload(self, session: UploadSession) -> None: ...

    def get_upload(self, upload_id: str) -> UploadSession | None: ...

    def delete_upload(self, upload_id: str) -> None: ...


TagGuard = Callable[[str, "Digest | None"], None]
"""Called inside the manifest transaction with a tag and the digest it points at now (None: new tag).

It raises to refuse the move (tag immutability); nothing is written then."""


class ManifestStore(Protocol):
    def get_manifest(self, repository_id: int, digest: Digest) -> ManifestRecord | None: ...

    def resolve_tag(self, repository_id: int, tag: str) -> ManifestRecord | None: ...

    def pull_manifest(self, repository_id: int, reference: Digest | str) -> ManifestRecord | None:
        """The record a pull of a digest or tag serves, possibly from a short-lived cache (see the store)."""
        ...

    def put_manifest(
        self,
        repository_id: int,
        record: ManifestRecord,
        references: Iterable[ManifestReference],
        tag_names: Iterable[str],
        guard: TagGuard | None = None,
    ) -> list[Digest]:
        """Store the manifest, its references and tags in one transaction.

        Returns the references missing from the repository; when any is missing nothing is written.
        """
        ...

    def delete_tag(self, repository_id: int, tag: str) -> bool: ...

    def delete_manifest(self, repository_id: int, digest: Digest) -> bool:
        """Delete the manifest and every tag on it."""
        ...

    def delete_manifests(self, repository_id: int, digests: Sequence[Digest]) -> int: ...

    def blob_referenced(self, repository_id: int, digest: Digest) -> bool:
        """Whether a manifest of the repository lists `digest` as its config or one of its layers."""
        ...

    def manifest_parents(self, repository_id: int, digest: Digest) -> list[Digest]:
        """The manifests of the repository that list `digest` as a child."""
        ...

    def blob_parent(self, repository_id: int, digest: Digest) -> Digest | None:
        """One manifest of the repository that lists `digest` as its config or a layer (None: none does)."""
        ...

    def list_tags(self, repository_id: int, after: str | None, limit: int) -> list[str]: ...

    def list_images(
        self, repository_id: int, after: Digest | None, limit: int, tagged: bool | None, inclusive: bool = False
    ) -> list[ImageRow]:
        """Images ordered by digest after `after` (or from it, when inclusive); `tagged` True/False filters."""
        ...

    def get_images(self, repository_id: int, digests: Iterable[Digest]) -> list[ImageRow]: ...

    def tags_of(self, repository_id: int, digest: Digest) -> list[str]: ...

    def record_pull(self, repository_id: int, digest: Digest, now: datetime) -> None: ...

    def list_referrers(
        self, repository_id: int, subject: Digest, artifact_type: str | None
    ) -> list[ManifestRecord]: ...


class DocumentStore(Protocol):
    def get_repository_document(self, repository_id: int, kind: str) -> Document | None: ...

    def put_repository_document(self, repository_id: int, kind: str, text: str, now: datetime) -> None: ...

    def delete_repository_document(self, repository_id: int, kind: str) -> bool: ...

    def get_registry_document(self, account_id: str, region: str, kind: str) -> Document | None: ...

    def put_registry_document(self, account_id: str, region: str, kind: str, text: str, now: datetime) -> None: ...

    def create_registry_document(self, account_id: str, region: str, kind: str, text: str, now: datetime) -> bool:
        """Insert the document only when the registry has none of this kind: False when it has."""
        ...

    def delete_registry_document(self, account_id: str, region: str, kind: str) -> bool: ...

    def find_registry_document(self, region: str, kind: str, text: str) -> str | None: ...

    def list_registry_documents(
        self, account_id: str | None, region: str | None, kind_prefix: str
    ) -> list[tuple[str, str]]: ...


class TemplateStore(Protocol):
    def list_templates(self, account_id: str, region: str) -> list[Template]: ...

    def put_template(self, account_id: str, region: str, template: Template, create: bool) -> bool: ...

    def delete_template(self, account_id: str, region: str, prefix: str) -> bool: ...


class QuotaStore(Protocol):
    def get_quota(self, account_id: str, name: str) -> int | None: ...

    def set_quota(self, account_id: str, name: str, value: int) -> None: ...

    def count_repositories(self, account_id: str, region: str) -> int: ...


class CredentialStore(Protocol):
    def get_credential(self, access_key_id: str) -> Credential | None: ...

    def ensure_account(self, account_id: str, now: datetime) -> None: ...

    def add_credential(self, credential: Credential, now: datetime) -> None: ...

    def root_credential_ids(self, account_id: str) -> list[str]: ...

    def registry_setting(self, name: str) -> str | None: ...

    def settle_registry_setting(self, name: str, proposed: str) -> str:
        """The setting's value: `proposed` if none was stored yet (then stored, once for every node)."""
        ...

    def reseal(
        self, secret: Callable[[str], str], document_kind_prefix: str, document: Callable[[str], str]
    ) -> tuple[int, int]:
        """Rewrite every sealed secret, and the documents of a kind, in one transaction; the counts of each."""
        ...


class LifecycleStore(Protocol):
    def set_storage_class(self, repository_id: int, digest: Digest, storage_class: str, now: datetime) -> None: ...

    def manifest_children(self, repository_id: int) -> dict[Digest, list[Digest]]: ...

    def lifecycle_rows(self, repository_id: int) -> list[LifecycleRow]: ...

    def repositories_with_document(self, kind: str) -> list[Repository]: ...


class CollectorStore(Protocol):
    def work_in_progress(self) -> tuple[int, int]: ...

    def expired_uploads(self, started_before: datetime) -> list[UploadSession]: ...

    def delete_unreferenced_links(self, linked_before: datetime) -> int: ...

    def delete_orphan_blob_rows(self, created_before: datetime) -> int: ...

    def referenced_digests(
        self, digests: Iterable[Digest], unlinked_before: datetime | None = None, domain: KeyDomain | None = None
    ) -> set[Digest]:
        """Which of `digests` the metadata needs; with `unlinked_before`, as if the collector had just
        unlinked the unreferenced links and orphan blob rows older than that (a dry run); with `domain`, needed
        by that key domain's repositories."""
        ...


class ScanStore(Protocol):
    def vulnerability_modified(self, ids: Iterable[str]) -> dict[str, str]: ...

    def store_vulnerabilities(self, entries: Iterable[VulnerabilityEntry]) -> int: ...

    def vulnerability_documents(self, ecosystem: str, name: str) -> list[str]: ...

    def record_vulnerability_source(self, name: str, imported_at: datetime, records: int) -> None: ...

    def vulnerability_sources(self) -> list[tuple[str, datetime, int]]: ...

    def count_vulnerabilities(self) -> int: ...

    def has_vulnerabilities_for(self, ecosystem: str) -> bool:
        """Whether any advisory concerns the OSV ecosystem `ecosystem` or one of its releases (`Debian:12`)."""
        ...

    def request_scan(self, repository_id: int, digest: Digest, now: datetime) -> None: ...

    def requeue_failed_scans(self, description_prefix: str, now: datetime) -> int:
        """Queue again (PENDING) every FAILED scan whose description starts so; returns how many."""
        ...

    def claim_scan(self, owner: str, until: datetime, now: datetime) -> tuple[int, Digest] | None: ...

    def finish_scan(self, repository_id: int, digest: Digest, result: ScanRecord) -> None: ...

    def get_scans(self, repository_id: int, digests: Iterable[Digest]) -> dict[Digest, ScanRecord]: ...


class ReplicationStore(Protocol):
    """The replication queue: one task per (image, destination registry), claimed by one worker at a time."""

    def request_replications(
        self, repository_id: int, digest: Digest, destinations: Iterable[tuple[str, str]], now: datetime
    ) -> None:
        """Queue the image for each (account, region); a task already queued or running is requested again."""
        ...

    def claim_replication(self, owner: str, until: datetime, now: datetime) -> ReplicationTask | None: ...

    def finish_replication(
        self,
        task: ReplicationTask,
        owner: str,
        status: str,
        failure_code: str | None,
        failure_reason: str | None,
        now: datetime,
    ) -> None:
        """Record the outcome of a task `owner` claimed (PENDING puts it back); if the image was requested
        again meanwhile, the task is queued again instead; if the claim was lost, nothing is recorded."""
        ...

    def get_replications(self, repository_id: int, digest: Digest) -> list[ReplicationRecord]: ...


class UsageStore(Protocol):
    """Hourly usage: transfer and request counters, storage samples, and their sums for reports."""

    def add_usage(self, counters: Iterable[UsageCounter]) -> None:
        """Add to each (repository, hour)'s counters, created at zero; concurrent adders never lose a count."""
        ...

    def repository_storage(self) -> list[StoredBytes]:
        """What every repository stores now, in one aggregate query."""
        ...

    def put_storage_samples(self, hour: datetime, samples: Iterable[StoredBytes]) -> None:
        """Record each repository's sample for `hour`, replacing one recorded earlier in the same hour."""
        ...

    def usage_totals(self, account_id: str, start: datetime, end: datetime) -> list[RepositoryUsage]:
        """Per (region, repository name) of the account, the sums over the hours in [start, end); repositories
        deleted since are included (their samples and counters are kept)."""
        ...


class LeaseStore(Protocol):
    """Leases make background work run on one node at a time; a dead node's lease simply expires."""

    def try_lease(self, name: str, owner: str, until: datetime, now: datetime) -> bool: ...

    def renew_lease(self, name: str, owner: str, until: datetime) -> bool:
        """Extend a lease `owner` still holds to `until`; False when it was lost to another owner or released."""
        ...

    def release_lease(self, name: str, owner: str) -> None: ...

    def job_last_run(self, name: str) -> datetime | None: ...

    def finish_leased_job(self, name: str, lease: str, owner: str, when: datetime) -> None:
        """Record the job's run and release its lease, in one transaction."""
        ...

    def set_job_last_run(self, name: str, when: datetime) -> None: ...


class IamStore(Protocol):
    def list_accounts(self) -> list[str]: ...

    def delete_account(self, account_id: str) -> bool:
        """Delete an account with its users and keys; False (nothing deleted) while it owns repositories."""
        ...

    def create_user(self, user: IamUser) -> bool: ...

    def get_user(self, account_id: str, user_name: str) -> IamUser | None: ...

    def list_users(self, account_id: str) -> list[IamUser]: ...

    def delete_user(self, account_id: str, user_name: str) -> bool: ...

    def list_access_keys(self, account_id: str, user_name: str | None) -> list[AccessKeyInfo]: ...

    def delete_credential(self, access_key_id: str) -> bool: ...

    def put_user_policy(self, account_id: str, user_name: str, policy_name: str, document: str) -> None: ...

    def user_policies(self, account_id: str, user_name: str) -> dict[str, str]: ...

    def delete_user_policy(self, account_id: str, user_name: str, policy_name: str) -> bool: ...


class MetadataStore(
    RepositoryStore,
    BlobLinkStore,
    UploadStore,
    ManifestStore,
    DocumentStore,
    TemplateStore,
    QuotaStore,
    CredentialStore,
    IamStore,
    LifecycleStore,
    CollectorStore,
    ScanStore,
    ReplicationStore,
    UsageStore,
    LeaseStore,
    Protocol,
):
    """Everything the registry core keeps about content; SQLite or PostgreSQL behind the same code."""
