"""Tables and the hot read statements of the metadata store (the schema's one definition; Alembic
migrations in storage/migrations mirror it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    and_,
    bindparam,
    false,
    select,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ordered_text(length: int) -> String:
    """Text compared and sorted in byte order on every backend (PostgreSQL's default collation is not)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


DIGEST = _ordered_text(200)
metadata_obj = MetaData()

accounts = Table(
    "accounts",
    metadata_obj,
    Column("id", String(12), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

credentials = Table(
    "credentials",
    metadata_obj,
    Column("access_key_id", String(128), primary_key=True),
    Column("account_id", String(12), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("user_name", String(64), nullable=True),
    Column("sealed_secret", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_credentials_account", "account_id"),
)

iam_users = Table(
    "iam_users",
    metadata_obj,
    Column("account_id", String(12), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("user_name", String(64), primary_key=True),
    Column("user_id", String(32), nullable=False, unique=True),
    Column("path", String(512), nullable=False, server_default="/"),
    Column("created_at", UTCDateTime(), nullable=False),
)

user_policies = Table(
    "user_policies",
    metadata_obj,
    Column("account_id", String(12), primary_key=True),
    Column("user_name", String(64), primary_key=True),
    Column("policy_name", String(128), primary_key=True),
    Column("document", Text, nullable=False),
    ForeignKeyConstraint(
        ["account_id", "user_name"], ["iam_users.account_id", "iam_users.user_name"], ondelete="CASCADE"
    ),
)

repositories = Table(
    "repositories",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", String(12), ForeignKey("accounts.id"), nullable=False),
    Column("region", String(32), nullable=False),
    Column("name", _ordered_text(256), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("tag_mutability", String(32), nullable=False, server_default="MUTABLE"),
    Column("mutability_exclusions", Text, nullable=True),
    Column("scan_on_push", Boolean, nullable=False, server_default=false()),
    Column("encryption_type", String(16), nullable=False, server_default="AES256"),
    Column("kms_key", String(2048), nullable=True),
    UniqueConstraint("account_id", "region", "name", name="uq_repositories_account_region_name"),
    sqlite_autoincrement=True,  # ids are never reused: caches and references keyed by id stay unambiguous
)

repository_tags = Table(
    "repository_tags",
    metadata_obj,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", String(256), nullable=False),
)

blobs = Table(
    "blobs",
    metadata_obj,
    Column("digest", DIGEST, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

repository_blobs = Table(
    "repository_blobs",
    metadata_obj,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", DIGEST, ForeignKey("blobs.digest"), primary_key=True),
    Column("linked_at", UTCDateTime(), nullable=False),
    Index("ix_repository_blobs_digest", "digest"),
)

manifests = Table(
    "manifests",
    metadata_obj,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", DIGEST, primary_key=True),
    Column("media_type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("artifact_type", String(255), nullable=True),
    Column("subject_digest", DIGEST, nullable=True),
    Column("annotations", Text, nullable=True),
    Column("pushed_at", UTCDateTime(), nullable=False),
    Column("image_size", BigInteger, nullable=False, server_default="0"),
    Column("config_media_type", String(255), nullable=True),
    Column("last_pulled_at", UTCDateTime(), nullable=True),
    Column("storage_class", String(16), nullable=False, server_default="STANDARD"),
    Column("last_archived_at", UTCDateTime(), nullable=True),
    Column("last_activated_at", UTCDateTime(), nullable=True),
    Index("ix_manifests_subject", "repository_id", "subject_digest"),
)

manifest_references = Table(
    "manifest_references",
    metadata_obj,
    Column("repository_id", Integer, primary_key=True),
    Column("parent_digest", DIGEST, primary_key=True),
    Column("child_digest", DIGEST, primary_key=True),
    Column("is_manifest", Boolean, nullable=False),
    ForeignKeyConstraint(
        ["repository_id", "parent_digest"],
        ["manifests.repository_id", "manifests.digest"],
        ondelete="CASCADE",
    ),
    Index("ix_manifest_references_child", "repository_id", "child_digest"),
)

tags = Table(
    "tags",
    metadata_obj,
    Column("repository_id", Integer, primary_key=True),
    Column("name", _ordered_text(128), primary_key=True),
    Column("digest", DIGEST, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    ForeignKeyConstraint(
        ["repository_id", "digest"], ["manifests.repository_id", "manifests.digest"], ondelete="CASCADE"
    ),
    Index("ix_tags_digest", "repository_id", "digest"),
)

repository_documents = Table(
    "repository_documents",
    metadata_obj,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(64), primary_key=True),
    Column("text", Text, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

registry_documents = Table(
    "registry_documents",
    metadata_obj,
    Column("account_id", String(12), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("region", String(32), primary_key=True),
    Column("kind", String(64), primary_key=True),
    Column("text", Text, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

creation_templates = Table(
    "creation_templates",
    metadata_obj,
    Column("account_id", String(12), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("region", String(32), primary_key=True),
    Column("prefix", String(256), primary_key=True),
    Column("document", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

quotas = Table(
    "quotas",
    metadata_obj,
    Column("account_id", String(12), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

leases = Table(
    "leases",
    metadata_obj,
    Column("name", String(256), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)

# Registry-wide settings every node shares (the default account): written once, by the first node to start.
registry_settings = Table(
    "registry_settings",
    metadata_obj,
    Column("name", String(64), primary_key=True),
    Column("value", String(1024), nullable=False),
)

job_runs = Table(
    "job_runs",
    metadata_obj,
    Column("name", String(256), primary_key=True),
    Column("last_run_at", UTCDateTime(), nullable=False),
)

vulnerabilities = Table(
    "vulnerabilities",
    metadata_obj,
    Column("id", String(128), primary_key=True),
    Column("modified", String(64), nullable=False),
    Column("document", Text, nullable=False),
)

vulnerability_packages = Table(
    "vulnerability_packages",
    metadata_obj,
    Column("ecosystem", String(128), primary_key=True),
    Column("name", String(512), primary_key=True),
    Column("vulnerability_id", String(128), ForeignKey("vulnerabilities.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_vulnerability_packages_vulnerability", "vulnerability_id"),
)

vulnerability_sources = Table(
    "vulnerability_sources",
    metadata_obj,
    Column("name", String(512), primary_key=True),
    Column("imported_at", UTCDateTime(), nullable=False),
    Column("records", Integer, nullable=False),
)

image_scans = Table(
    "image_scans",
    metadata_obj,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", DIGEST, primary_key=True),
    Column("status", String(32), nullable=False),
    Column("description", Text, nullable=True),
    Column("requested_at", UTCDateTime(), nullable=False),
    Column("completed_at", UTCDateTime(), nullable=True),
    Column("findings", Text, nullable=True),
    Column("source_updated_at", UTCDateTime(), nullable=True),
    Column("claimed_by", String(64), nullable=True),
    Column("claim_expires_at", UTCDateTime(), nullable=True),
    Index("ix_image_scans_status", "status"),
)

replication_tasks = Table(
    "replication_tasks",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("digest", DIGEST, nullable=False),
    Column("destination_account", String(12), nullable=False),
    Column("destination_region", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("failure_code", String(64), nullable=True),
    Column("failure_reason", Text, nullable=True),
    Column("requested_at", UTCDateTime(), nullable=False),
    Column("completed_at", UTCDateTime(), nullable=True),
    Column("generation", Integer, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("claimed_by", String(64), nullable=True),
    Column("claim_expires_at", UTCDateTime(), nullable=True),
    UniqueConstraint(
        "repository_id", "digest", "destination_account", "destination_region", name="uq_replication_tasks_target"
    ),
    Index("ix_replication_tasks_status", "status", "requested_at"),
    sqlite_autoincrement=True,
)

# Usage is kept by name, not by a foreign key: bills are historical, rows outlive their repository.
usage_counters = Table(
    "usage_counters",
    metadata_obj,
    Column("account_id", String(12), primary_key=True),
    Column("hour", UTCDateTime(), primary_key=True),
    Column("region", String(32), primary_key=True),
    Column("repository", _ordered_text(256), primary_key=True),
    Column("transfer_bytes", BigInteger, nullable=False, server_default="0"),
    Column("pulls", BigInteger, nullable=False, server_default="0"),
    Column("pushes", BigInteger, nullable=False, server_default="0"),
)

storage_samples = Table(
    "storage_samples",
    metadata_obj,
    Column("repository_id", Integer, primary_key=True, autoincrement=False),  # ids are never reused
    Column("hour", UTCDateTime(), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("repository", _ordered_text(256), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Index("ix_storage_samples_account_hour", "account_id", "hour"),
)

uploads = Table(
    "uploads",
    metadata_obj,
    Column("id", String(36), primary_key=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
)


# Statements of the hot read paths, built once: building a statement costs more than running it on SQLite.
_RESOLVE_TAG: Final = (
    select(manifests)
    .join(tags, and_(tags.c.repository_id == manifests.c.repository_id, tags.c.digest == manifests.c.digest))
    .where(tags.c.repository_id == bindparam("repository_id"), tags.c.name == bindparam("tag"))
)
_GET_MANIFEST: Final = select(manifests).where(
    manifests.c.repository_id == bindparam("repository_id"), manifests.c.digest == bindparam("digest")
)
_LINKED_BLOB_SIZE: Final = (
    select(blobs.c.size)
    .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
    .where(repository_blobs.c.repository_id == bindparam("repository_id"), blobs.c.digest == bindparam("digest"))
)
