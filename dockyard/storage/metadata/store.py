"""The metadata store: SQLAlchemy Core tables and a transactional store over SQLite (default) or PostgreSQL.

Schema (owned here; Alembic migrations in storage/migrations mirror it):

    accounts             12-digit account ids
    credentials          access keys; the secret is sealed with the master key, never stored in clear
    iam_users            IAM users of an account
    user_policies        inline identity policies of IAM users
    repositories         one row per (account, region, name)
    blobs                one row per digest in the whole store: content is kept once
    repository_blobs     which blobs a repository may serve (uploaded or mounted into it)
    manifests            one row per (repository, digest); the bytes live in the blob store
    manifest_references  edges manifest -> blob / child manifest, for validation, deletes and GC
    tags                 (repository, tag) -> manifest digest; last writer wins
    uploads              upload sessions in progress (their bytes live in the blob store)
    repository_tags      resource tags (Key/Value) of repositories
    repository_documents per-repository JSON documents by kind (lifecycle policy, repository policy)
    registry_documents   per-registry (account, region) JSON documents by kind (registry policy, replication…)
    creation_templates   repository creation templates by prefix
    quotas               per-account quota overrides
    leases               named, expiring leases: one node at a time runs a background job
    job_runs             when each background job last completed
    vulnerabilities      OSV advisories (the record's JSON), vulnerability_packages indexes them by
                         (ecosystem, package name); vulnerability_sources records each import
    image_scans          one scan per (repository, image): status, findings, the scan queue's claims
    replication_tasks    one per (image, destination registry): the replication queue, its claims and outcome
    usage_counters       per (account, hour, region, repository name): bytes sent, pulls, pushes
    storage_samples      per (repository, hour): the bytes it stored (with its name: kept after deletion)

Every method returns the frozen value objects of `dockyard.domain.ports`.
"""

from __future__ import annotations

from dockyard.storage.metadata.content import ContentRecords
from dockyard.storage.metadata.documents import DocumentRecords
from dockyard.storage.metadata.identities import IdentityRecords
from dockyard.storage.metadata.operations import OperationRecords
from dockyard.storage.metadata.replication import ReplicationRecords
from dockyard.storage.metadata.repositories import RepositoryRecords
from dockyard.storage.metadata.scans import ScanRecords
from dockyard.storage.metadata.usage import UsageRecords


class SqlMetadataStore(
    RepositoryRecords,
    ContentRecords,
    DocumentRecords,
    OperationRecords,
    ScanRecords,
    ReplicationRecords,
    UsageRecords,
    IdentityRecords,
):
    """Implements every metadata protocol of `dockyard.domain.ports` over one SQLAlchemy engine."""
