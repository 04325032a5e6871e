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

Every method returns the frozen value objects of `dockyard.domain.ports`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
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
    create_engine,
    delete,
    event,
    false,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from dockyard.domain.cache import TtlCache
from dockyard.domain.names import Digest, RepositoryRef
from dockyard.domain.ports import (
    AccessKeyInfo,
    Credential,
    Document,
    IamUser,
    ImageRow,
    ManifestRecord,
    ManifestReference,
    Repository,
    RepositorySettings,
    ScanRecord,
    TagGuard,
    Template,
    UploadSession,
    VulnerabilityEntry,
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


def make_engine(url: str, pool_size: int = 10) -> Engine:
    """An engine with the per-backend settings Dockyard relies on."""
    if url.startswith("sqlite"):
        engine = create_engine(url, pool_size=pool_size, max_overflow=2 * pool_size)
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, and BEGIN IMMEDIATE for writes.

    pysqlite's own transaction handling is switched off so that a write transaction takes the write lock
    when it begins: a deferred transaction that reads first and writes later fails with SQLITE_BUSY instead
    of waiting when another writer committed in between.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if options.get("single_read"):
            return  # one SELECT is atomic by itself: no BEGIN/COMMIT round trips on the hot read path
        connection.exec_driver_sql(f"BEGIN {'IMMEDIATE' if options.get('writes') else 'DEFERRED'}")


class SqlMetadataStore:
    """Implements every metadata protocol of `dockyard.domain.ports` over one SQLAlchemy engine."""

    def __init__(self, engine: Engine, cache_ttl: float = 1.0) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        # Repositories and their documents are read on every request and change rarely (see TtlCache).
        self._repositories: TtlCache[Repository | None] = TtlCache(cache_ttl)
        self._documents: TtlCache[Document | None] = TtlCache(cache_ttl)
        # Blob links and manifests by digest are immutable until deleted: positive answers are cached the
        # same way (a miss is never cached: an upload may link the blob a moment later).
        self._links: TtlCache[int | None] = TtlCache(cache_ttl, max_entries=100_000)
        self._manifests: TtlCache[ManifestRecord | None] = TtlCache(cache_ttl, max_entries=100_000)

    # ------------------------------------------------------------------------------------ plumbing

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection for one read. On SQLite a single SELECT runs without an explicit transaction."""
        with self.engine.connect() as connection:
            yield connection.execution_options(single_read=True)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            connection = connection.execution_options(writes=True)
            with connection.begin():
                yield connection

    def _insert(self, table: Table) -> Any:
        dialect_insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        return dialect_insert(table)

    def _insert_ignore(self, table: Table) -> Insert:
        statement: Insert = self._insert(table).on_conflict_do_nothing()
        return statement

    # ------------------------------------------------------------------------------------ repositories

    def get_repository(self, ref: RepositoryRef) -> Repository | None:
        return self._repositories.get_or_load(ref, lambda: self._load_repository(ref))

    def _load_repository(self, ref: RepositoryRef) -> Repository | None:
        with self._read() as connection:
            row = connection.execute(
                select(repositories).where(
                    repositories.c.account_id == ref.account_id,
                    repositories.c.region == ref.region,
                    repositories.c.name == ref.name,
                )
            ).first()
        return None if row is None else _repository(row)

    def create_repository(
        self, ref: RepositoryRef, now: datetime, settings: RepositorySettings | None = None
    ) -> tuple[Repository, bool]:
        with self._write() as connection:
            result = connection.execute(
                self._insert_ignore(repositories).values(
                    account_id=ref.account_id,
                    region=ref.region,
                    name=ref.name,
                    created_at=now,
                    **_settings_row(settings or RepositorySettings()),
                )
                .returning(repositories.c.id)  # a row comes back only when this insert created it
            )
            inserted = result.first() is not None
        self._repositories.invalidate(ref)
        created = self.get_repository(ref)
        assert created is not None, "a repository row vanished right after its insert"
        return created, inserted

    def list_repositories(self, account_id: str, region: str, after: str | None, limit: int) -> list[Repository]:
        query = (
            select(repositories)
            .where(repositories.c.account_id == account_id, repositories.c.region == region)
            .order_by(repositories.c.name)
            .limit(limit)
        )
        if after is not None:
            query = query.where(repositories.c.name > after)
        with self._read() as connection:
            return [_repository(row) for row in connection.execute(query)]

    def list_repository_names(self, account_id: str, region: str, after: str | None, limit: int) -> list[str]:
        return [repository.ref.name for repository in self.list_repositories(account_id, region, after, limit)]

    def update_settings(self, repository_id: int, settings: RepositorySettings) -> None:
        with self._write() as connection:
            connection.execute(
                update(repositories).where(repositories.c.id == repository_id).values(**_settings_row(settings))
            )
        self._repositories.clear()

    def delete_repository(self, repository_id: int) -> None:
        with self._write() as connection:
            for table in (
                tags,
                manifest_references,
                manifests,
                repository_blobs,
                uploads,
                repository_tags,
                repository_documents,
            ):
                connection.execute(delete(table).where(table.c.repository_id == repository_id))
            connection.execute(delete(repositories).where(repositories.c.id == repository_id))
        for cache in (self._repositories, self._documents, self._links, self._manifests):
            cache.clear()

    def count_manifests(self, repository_id: int) -> int:
        query = select(func.count()).select_from(manifests).where(manifests.c.repository_id == repository_id)
        with self._read() as connection:
            return int(connection.execute(query).scalar_one())

    def get_resource_tags(self, repository_id: int) -> dict[str, str]:
        query = select(repository_tags.c.key, repository_tags.c.value).where(
            repository_tags.c.repository_id == repository_id
        )
        with self._read() as connection:
            return {row.key: row.value for row in connection.execute(query)}

    def set_resource_tags(self, repository_id: int, new_tags: dict[str, str], removed: Iterable[str]) -> None:
        with self._write() as connection:
            removed = list(removed)
            if removed:
                connection.execute(
                    delete(repository_tags).where(
                        repository_tags.c.repository_id == repository_id, repository_tags.c.key.in_(removed)
                    )
                )
            for key, value in new_tags.items():
                statement = self._insert(repository_tags).values(repository_id=repository_id, key=key, value=value)
                connection.execute(
                    statement.on_conflict_do_update(
                        index_elements=[repository_tags.c.repository_id, repository_tags.c.key],
                        set_={"value": statement.excluded.value},
                    )
                )

    # ------------------------------------------------------------------------------------ blobs

    def linked_blob_size(self, repository_id: int, digest: Digest) -> int | None:
        key = (repository_id, digest)
        size = self._links.get_or_load(key, lambda: self._load_linked_blob_size(repository_id, digest))
        if size is None:
            self._links.invalidate(key)
        return size

    def _load_linked_blob_size(self, repository_id: int, digest: Digest) -> int | None:
        with self._read() as connection:
            size: int | None = connection.execute(
                _LINKED_BLOB_SIZE, {"repository_id": repository_id, "digest": str(digest)}
            ).scalar()
        return size

    def link_blob(self, repository_id: int, digest: Digest, size: int, now: datetime) -> None:
        with self._write() as connection:
            connection.execute(self._insert_ignore(blobs).values(digest=str(digest), size=size, created_at=now))
            connection.execute(
                self._insert_ignore(repository_blobs).values(
                    repository_id=repository_id, digest=str(digest), linked_at=now
                )
            )

    def unlink_blob(self, repository_id: int, digest: Digest) -> bool:
        self._links.invalidate((repository_id, digest))
        with self._write() as connection:
            result = connection.execute(
                delete(repository_blobs).where(
                    repository_blobs.c.repository_id == repository_id,
                    repository_blobs.c.digest == str(digest),
                )
            )
        return result.rowcount > 0

    # ------------------------------------------------------------------------------------ uploads

    def create_upload(self, session: UploadSession) -> None:
        with self._write() as connection:
            connection.execute(
                uploads.insert().values(
                    id=session.id, repository_id=session.repository_id, started_at=session.started_at
                )
            )

    def get_upload(self, upload_id: str) -> UploadSession | None:
        with self._read() as connection:
            row = connection.execute(select(uploads).where(uploads.c.id == upload_id)).first()
        return None if row is None else UploadSession(row.id, row.repository_id, row.started_at)

    def delete_upload(self, upload_id: str) -> None:
        with self._write() as connection:
            connection.execute(delete(uploads).where(uploads.c.id == upload_id))

    # ------------------------------------------------------------------------------------ manifests

    def get_manifest(self, repository_id: int, digest: Digest) -> ManifestRecord | None:
        key = (repository_id, digest)
        record = self._manifests.get_or_load(key, lambda: self._load_manifest(repository_id, digest))
        if record is None:
            self._manifests.invalidate(key)
        return record

    def _load_manifest(self, repository_id: int, digest: Digest) -> ManifestRecord | None:
        with self._read() as connection:
            row = connection.execute(_GET_MANIFEST, {"repository_id": repository_id, "digest": str(digest)}).first()
        return None if row is None else _manifest_record(row)

    def resolve_tag(self, repository_id: int, tag: str) -> ManifestRecord | None:
        with self._read() as connection:
            row = connection.execute(_RESOLVE_TAG, {"repository_id": repository_id, "tag": tag}).first()
        return None if row is None else _manifest_record(row)

    def put_manifest(
        self,
        repository_id: int,
        record: ManifestRecord,
        references: Iterable[ManifestReference],
        tag_names: Iterable[str],
        guard: TagGuard | None = None,
    ) -> list[Digest]:
        references = list(references)
        tag_names = list(tag_names)
        with self._write() as connection:
            missing = self._missing_references(connection, repository_id, references)
            if missing:
                return missing
            if guard is not None:
                for name in tag_names:
                    guard(name, self._tag_target(connection, repository_id, name))
            connection.execute(self._insert_ignore(manifests).values(**_manifest_row(repository_id, record)))
            if references:
                connection.execute(
                    self._insert_ignore(manifest_references),
                    [
                        {
                            "repository_id": repository_id,
                            "parent_digest": str(record.digest),
                            "child_digest": str(ref.digest),
                            "is_manifest": ref.is_manifest,
                        }
                        for ref in references
                    ],
                )
            for name in tag_names:
                self._set_tag(connection, repository_id, name, record)
        return []

    def _tag_target(self, connection: Connection, repository_id: int, name: str) -> Digest | None:
        current = connection.execute(
            select(tags.c.digest).where(tags.c.repository_id == repository_id, tags.c.name == name)
        ).scalar()
        return None if current is None else Digest.parse(current)

    def _set_tag(self, connection: Connection, repository_id: int, name: str, record: ManifestRecord) -> None:
        statement = self._insert(tags).values(
            repository_id=repository_id, name=name, digest=str(record.digest), updated_at=record.pushed_at
        )
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=[tags.c.repository_id, tags.c.name],
                set_={"digest": statement.excluded.digest, "updated_at": statement.excluded.updated_at},
            )
        )

    def _missing_references(
        self, connection: Connection, repository_id: int, references: Sequence[ManifestReference]
    ) -> list[Digest]:
        wanted_blobs = {str(r.digest) for r in references if not r.is_manifest}
        wanted_manifests = {str(r.digest) for r in references if r.is_manifest}
        found: set[str] = set()
        if wanted_blobs:
            found |= set(
                connection.execute(
                    select(repository_blobs.c.digest).where(
                        repository_blobs.c.repository_id == repository_id,
                        repository_blobs.c.digest.in_(wanted_blobs),
                    )
                ).scalars()
            )
        if wanted_manifests:
            found |= set(
                connection.execute(
                    select(manifests.c.digest).where(
                        manifests.c.repository_id == repository_id, manifests.c.digest.in_(wanted_manifests)
                    )
                ).scalars()
            )
        return sorted({Digest.parse(d) for d in (wanted_blobs | wanted_manifests) - found})

    def delete_tag(self, repository_id: int, tag: str) -> bool:
        with self._write() as connection:
            result = connection.execute(delete(tags).where(tags.c.repository_id == repository_id, tags.c.name == tag))
        return result.rowcount > 0

    def delete_manifest(self, repository_id: int, digest: Digest) -> bool:
        self._manifests.invalidate((repository_id, digest))
        with self._write() as connection:
            connection.execute(delete(tags).where(tags.c.repository_id == repository_id, tags.c.digest == str(digest)))
            connection.execute(
                delete(manifest_references).where(
                    manifest_references.c.repository_id == repository_id,
                    manifest_references.c.parent_digest == str(digest),
                )
            )
            result = connection.execute(
                delete(manifests).where(manifests.c.repository_id == repository_id, manifests.c.digest == str(digest))
            )
        return result.rowcount > 0

    def manifest_parents(self, repository_id: int, digest: Digest) -> list[Digest]:
        query = select(manifest_references.c.parent_digest).where(
            manifest_references.c.repository_id == repository_id,
            manifest_references.c.child_digest == str(digest),
            manifest_references.c.is_manifest.is_(True),
        )
        with self._read() as connection:
            return [Digest.parse(d) for d in connection.execute(query).scalars()]

    def list_tags(self, repository_id: int, after: str | None, limit: int) -> list[str]:
        query = select(tags.c.name).where(tags.c.repository_id == repository_id).order_by(tags.c.name).limit(limit)
        if after is not None:
            query = query.where(tags.c.name > after)
        with self._read() as connection:
            return list(connection.execute(query).scalars())

    def list_images(
        self, repository_id: int, after: Digest | None, limit: int, tagged: bool | None, inclusive: bool = False
    ) -> list[ImageRow]:
        query = select(manifests).where(manifests.c.repository_id == repository_id)
        if after is not None:
            query = query.where(manifests.c.digest >= str(after) if inclusive else manifests.c.digest > str(after))
        if tagged is not None:
            has_tag = (
                select(tags.c.name)
                .where(tags.c.repository_id == manifests.c.repository_id, tags.c.digest == manifests.c.digest)
                .exists()
            )
            query = query.where(has_tag if tagged else ~has_tag)
        query = query.order_by(manifests.c.digest).limit(limit)
        with self._read() as connection:
            records = [_manifest_record(row) for row in connection.execute(query)]
            return self._with_tags(connection, repository_id, records)

    def get_images(self, repository_id: int, digests: Iterable[Digest]) -> list[ImageRow]:
        wanted = sorted({str(d) for d in digests})
        query = select(manifests).where(manifests.c.repository_id == repository_id, manifests.c.digest.in_(wanted))
        with self._read() as connection:
            records = [_manifest_record(row) for row in connection.execute(query)]
            return self._with_tags(connection, repository_id, records)

    def _with_tags(self, connection: Connection, repository_id: int, records: list[ManifestRecord]) -> list[ImageRow]:
        if not records:
            return []
        query = (
            select(tags.c.digest, tags.c.name)
            .where(tags.c.repository_id == repository_id, tags.c.digest.in_([str(r.digest) for r in records]))
            .order_by(tags.c.name)
        )
        names: dict[str, list[str]] = {}
        for row in connection.execute(query):
            names.setdefault(row.digest, []).append(row.name)
        return [ImageRow(record, tuple(names.get(str(record.digest), ()))) for record in records]

    def tags_of(self, repository_id: int, digest: Digest) -> list[str]:
        query = (
            select(tags.c.name)
            .where(tags.c.repository_id == repository_id, tags.c.digest == str(digest))
            .order_by(tags.c.name)
        )
        with self._read() as connection:
            return list(connection.execute(query).scalars())

    def record_pull(self, repository_id: int, digest: Digest, now: datetime) -> None:
        self._manifests.invalidate((repository_id, digest))
        with self._write() as connection:
            connection.execute(
                update(manifests)
                .where(manifests.c.repository_id == repository_id, manifests.c.digest == str(digest))
                .values(last_pulled_at=now)
            )

    def list_referrers(self, repository_id: int, subject: Digest, artifact_type: str | None) -> list[ManifestRecord]:
        query = (
            select(manifests)
            .where(manifests.c.repository_id == repository_id, manifests.c.subject_digest == str(subject))
            .order_by(manifests.c.pushed_at, manifests.c.digest)
        )
        if artifact_type is not None:
            query = query.where(manifests.c.artifact_type == artifact_type)
        with self._read() as connection:
            return [_manifest_record(row) for row in connection.execute(query)]

    # ------------------------------------------------------------------------------------ documents

    def get_repository_document(self, repository_id: int, kind: str) -> Document | None:
        key = (repository_id, kind)
        return self._documents.get_or_load(key, lambda: self._load_repository_document(repository_id, kind))

    def _load_repository_document(self, repository_id: int, kind: str) -> Document | None:
        table = repository_documents
        query = select(table.c.text, table.c.updated_at).where(
            table.c.repository_id == repository_id, table.c.kind == kind
        )
        with self._read() as connection:
            row = connection.execute(query).first()
        return None if row is None else Document(row.text, row.updated_at)

    def put_repository_document(self, repository_id: int, kind: str, text: str, now: datetime) -> None:
        keys = {"repository_id": repository_id, "kind": kind}
        self._upsert(repository_documents, keys, {"text": text, "updated_at": now})
        self._documents.invalidate((repository_id, kind))

    def delete_repository_document(self, repository_id: int, kind: str) -> bool:
        table = repository_documents
        with self._write() as connection:
            result = connection.execute(
                delete(table).where(table.c.repository_id == repository_id, table.c.kind == kind)
            )
        self._documents.invalidate((repository_id, kind))
        return result.rowcount > 0

    def get_registry_document(self, account_id: str, region: str, kind: str) -> Document | None:
        table = registry_documents
        query = select(table.c.text, table.c.updated_at).where(
            table.c.account_id == account_id, table.c.region == region, table.c.kind == kind
        )
        with self._read() as connection:
            row = connection.execute(query).first()
        return None if row is None else Document(row.text, row.updated_at)

    def put_registry_document(self, account_id: str, region: str, kind: str, text: str, now: datetime) -> None:
        keys = {"account_id": account_id, "region": region, "kind": kind}
        self._upsert(registry_documents, keys, {"text": text, "updated_at": now})

    def find_registry_document(self, region: str, kind: str, text: str) -> str | None:
        """The account whose registry holds this exact document (e.g. who owns a public alias)."""
        table = registry_documents
        query = select(table.c.account_id).where(table.c.region == region, table.c.kind == kind, table.c.text == text)
        with self._read() as connection:
            account: str | None = connection.execute(query).scalar()
        return account

    def delete_registry_document(self, account_id: str, region: str, kind: str) -> bool:
        table = registry_documents
        with self._write() as connection:
            result = connection.execute(
                delete(table).where(table.c.account_id == account_id, table.c.region == region, table.c.kind == kind)
            )
        return result.rowcount > 0

    def _upsert(self, table: Table, keys: dict[str, Any], values: dict[str, Any]) -> None:
        statement = self._insert(table).values(**keys, **values)
        with self._write() as connection:
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=[table.c[name] for name in keys],
                    set_={name: statement.excluded[name] for name in values},
                )
            )

    # ------------------------------------------------------------------------------------ templates

    def list_templates(self, account_id: str, region: str) -> list[Template]:
        table = creation_templates
        query = select(table).where(table.c.account_id == account_id, table.c.region == region).order_by(table.c.prefix)
        with self._read() as connection:
            return [_template(row) for row in connection.execute(query)]

    def put_template(self, account_id: str, region: str, template: Template, create: bool) -> bool:
        """Insert (create=True; False when the prefix exists) or replace (create=False; False when absent)."""
        table = creation_templates
        row = {
            "document": json.dumps(template.document),
            "updated_at": template.updated_at,
        }
        with self._write() as connection:
            if create:
                result = connection.execute(
                    self._insert_ignore(table).values(
                        account_id=account_id,
                        region=region,
                        prefix=template.prefix,
                        created_at=template.created_at,
                        **row,
                    )
                )
            else:
                result = connection.execute(
                    update(table)
                    .where(
                        table.c.account_id == account_id, table.c.region == region, table.c.prefix == template.prefix
                    )
                    .values(**row)
                )
        return result.rowcount > 0

    def delete_template(self, account_id: str, region: str, prefix: str) -> bool:
        table = creation_templates
        with self._write() as connection:
            result = connection.execute(
                delete(table).where(
                    table.c.account_id == account_id, table.c.region == region, table.c.prefix == prefix
                )
            )
        return result.rowcount > 0

    # ------------------------------------------------------------------------------------ quotas

    def get_quota(self, account_id: str, name: str) -> int | None:
        query = select(quotas.c.value).where(quotas.c.account_id == account_id, quotas.c.name == name)
        with self._read() as connection:
            value = connection.execute(query).scalar()
        return None if value is None else int(value)

    def set_quota(self, account_id: str, name: str, value: int) -> None:
        self._upsert(quotas, {"account_id": account_id, "name": name}, {"value": value})

    def count_repositories(self, account_id: str, region: str) -> int:
        query = (
            select(func.count())
            .select_from(repositories)
            .where(repositories.c.account_id == account_id, repositories.c.region == region)
        )
        with self._read() as connection:
            return int(connection.execute(query).scalar_one())

    # ------------------------------------------------------------------------------------ lifecycle

    def set_storage_class(self, repository_id: int, digest: Digest, storage_class: str, now: datetime) -> None:
        stamp = {"last_archived_at": now} if storage_class == "ARCHIVE" else {"last_activated_at": now}
        with self._write() as connection:
            connection.execute(
                update(manifests)
                .where(manifests.c.repository_id == repository_id, manifests.c.digest == str(digest))
                .values(storage_class=storage_class, **stamp)
            )
        self._manifests.invalidate((repository_id, digest))

    def manifest_children(self, repository_id: int) -> dict[Digest, list[Digest]]:
        """Every index of the repository with the manifests it lists."""
        query = select(manifest_references.c.parent_digest, manifest_references.c.child_digest).where(
            manifest_references.c.repository_id == repository_id, manifest_references.c.is_manifest.is_(True)
        )
        children: dict[Digest, list[Digest]] = {}
        with self._read() as connection:
            for row in connection.execute(query):
                children.setdefault(Digest.parse(row.parent_digest), []).append(Digest.parse(row.child_digest))
        return children

    def repositories_with_document(self, kind: str) -> list[Repository]:
        query = select(repositories).join(
            repository_documents,
            and_(repository_documents.c.repository_id == repositories.c.id, repository_documents.c.kind == kind),
        )
        with self._read() as connection:
            return [_repository(row) for row in connection.execute(query)]

    # ------------------------------------------------------------------------------------ garbage collection

    def expired_uploads(self, started_before: datetime) -> list[UploadSession]:
        query = select(uploads).where(uploads.c.started_at < started_before)
        with self._read() as connection:
            return [UploadSession(row.id, row.repository_id, row.started_at) for row in connection.execute(query)]

    def delete_unreferenced_links(self, linked_before: datetime) -> int:
        """Unlink blobs no manifest of their repository references any more (older than the grace period)."""
        referenced = (
            select(manifest_references.c.child_digest)
            .where(
                manifest_references.c.repository_id == repository_blobs.c.repository_id,
                manifest_references.c.child_digest == repository_blobs.c.digest,
            )
            .exists()
        )
        with self._write() as connection:
            result = connection.execute(
                delete(repository_blobs).where(repository_blobs.c.linked_at < linked_before, ~referenced)
            )
        self._links.clear()
        return result.rowcount

    def delete_orphan_blob_rows(self, created_before: datetime) -> int:
        linked = select(repository_blobs.c.digest).where(repository_blobs.c.digest == blobs.c.digest).exists()
        with self._write() as connection:
            result = connection.execute(delete(blobs).where(blobs.c.created_at < created_before, ~linked))
        return result.rowcount

    def referenced_digests(self, digests: Iterable[Digest]) -> set[Digest]:
        """Which of `digests` the metadata still needs: known blobs or manifest contents of any repository."""
        wanted = [str(d) for d in digests]
        with self._read() as connection:
            found = set(connection.execute(select(blobs.c.digest).where(blobs.c.digest.in_(wanted))).scalars())
            found |= set(connection.execute(select(manifests.c.digest).where(manifests.c.digest.in_(wanted))).scalars())
        return {Digest.parse(d) for d in found}

    # ------------------------------------------------------------------------------------ vulnerabilities

    def vulnerability_modified(self, ids: Iterable[str]) -> dict[str, str]:
        wanted = list(ids)
        query = select(vulnerabilities.c.id, vulnerabilities.c.modified).where(vulnerabilities.c.id.in_(wanted))
        with self._read() as connection:
            return {row.id: row.modified for row in connection.execute(query)}

    def store_vulnerabilities(self, entries: Iterable[VulnerabilityEntry]) -> int:
        """Insert or replace advisories (one transaction per batch); returns how many were written."""
        entries = list(entries)
        if not entries:
            return 0
        ids = [entry.id for entry in entries]
        with self._write() as connection:
            connection.execute(delete(vulnerability_packages).where(vulnerability_packages.c.vulnerability_id.in_(ids)))
            connection.execute(delete(vulnerabilities).where(vulnerabilities.c.id.in_(ids)))
            connection.execute(
                vulnerabilities.insert(),
                [{"id": e.id, "modified": e.modified, "document": e.document} for e in entries],
            )
            rows = [
                {"ecosystem": ecosystem, "name": name, "vulnerability_id": e.id}
                for e in entries
                for ecosystem, name in e.packages
            ]
            if rows:
                connection.execute(vulnerability_packages.insert(), rows)
        return len(entries)

    def vulnerability_documents(self, ecosystem: str, name: str) -> list[str]:
        query = (
            select(vulnerabilities.c.document)
            .join(vulnerability_packages, vulnerability_packages.c.vulnerability_id == vulnerabilities.c.id)
            .where(vulnerability_packages.c.ecosystem == ecosystem, vulnerability_packages.c.name == name)
        )
        with self._read() as connection:
            return list(connection.execute(query).scalars())

    def record_vulnerability_source(self, name: str, imported_at: datetime, records: int) -> None:
        self._upsert(vulnerability_sources, {"name": name}, {"imported_at": imported_at, "records": records})

    def vulnerability_sources(self) -> list[tuple[str, datetime, int]]:
        with self._read() as connection:
            rows = connection.execute(select(vulnerability_sources).order_by(vulnerability_sources.c.name))
            return [(row.name, row.imported_at, row.records) for row in rows]

    def count_vulnerabilities(self) -> int:
        with self._read() as connection:
            return int(connection.execute(select(func.count()).select_from(vulnerabilities)).scalar_one())

    # ------------------------------------------------------------------------------------ image scans

    def request_scan(self, repository_id: int, digest: Digest, now: datetime) -> None:
        """Queue a scan (PENDING), replacing the previous result of the image."""
        values = {
            "status": "PENDING",
            "description": "The scan is waiting to start.",
            "requested_at": now,
            "completed_at": None,
            "findings": None,
            "claimed_by": None,
            "claim_expires_at": None,
        }
        self._upsert(image_scans, {"repository_id": repository_id, "digest": str(digest)}, values)

    def claim_scan(self, owner: str, until: datetime, now: datetime) -> tuple[int, Digest] | None:
        """Take the oldest pending scan, or one whose claimant died (its claim expired)."""
        table = image_scans
        claimable = (table.c.status == "PENDING") | (
            (table.c.status == "IN_PROGRESS") & (table.c.claim_expires_at < now)
        )
        with self._write() as connection:
            query = select(table.c.repository_id, table.c.digest).where(claimable).order_by(table.c.requested_at)
            if self._dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            row = connection.execute(query.limit(1)).first()
            if row is None:
                return None
            connection.execute(
                update(table)
                .where(table.c.repository_id == row.repository_id, table.c.digest == row.digest)
                .values(
                    status="IN_PROGRESS",
                    description="The scan is in progress.",
                    claimed_by=owner,
                    claim_expires_at=until,
                )
            )
        return row.repository_id, Digest.parse(row.digest)

    def finish_scan(self, repository_id: int, digest: Digest, result: ScanRecord) -> None:
        with self._write() as connection:
            connection.execute(
                update(image_scans)
                .where(image_scans.c.repository_id == repository_id, image_scans.c.digest == str(digest))
                .values(
                    status=result.status,
                    description=result.description,
                    completed_at=result.completed_at,
                    findings=result.findings,
                    source_updated_at=result.source_updated_at,
                    claimed_by=None,
                    claim_expires_at=None,
                )
            )

    def get_scans(self, repository_id: int, digests: Iterable[Digest]) -> dict[Digest, ScanRecord]:
        wanted = [str(d) for d in digests]
        query = select(image_scans).where(
            image_scans.c.repository_id == repository_id, image_scans.c.digest.in_(wanted)
        )
        with self._read() as connection:
            return {
                Digest.parse(row.digest): ScanRecord(
                    row.status, row.description, row.requested_at, row.completed_at, row.findings, row.source_updated_at
                )
                for row in connection.execute(query)
            }

    # ------------------------------------------------------------------------------------ leases and jobs

    def try_lease(self, name: str, owner: str, until: datetime, now: datetime) -> bool:
        """Take the named lease if it is free, expired, or already ours; one transaction decides."""
        with self._write() as connection:
            row = connection.execute(select(leases).where(leases.c.name == name)).first()
            if row is None:
                connection.execute(leases.insert().values(name=name, owner=owner, expires_at=until))
                return True
            if row.owner != owner and row.expires_at > now:
                return False
            connection.execute(update(leases).where(leases.c.name == name).values(owner=owner, expires_at=until))
            return True

    def release_lease(self, name: str, owner: str) -> None:
        with self._write() as connection:
            connection.execute(delete(leases).where(leases.c.name == name, leases.c.owner == owner))

    def job_last_run(self, name: str) -> datetime | None:
        with self._read() as connection:
            value: datetime | None = connection.execute(
                select(job_runs.c.last_run_at).where(job_runs.c.name == name)
            ).scalar()
        return value

    def set_job_last_run(self, name: str, when: datetime) -> None:
        self._upsert(job_runs, {"name": name}, {"last_run_at": when})

    # ------------------------------------------------------------------------------------ IAM

    def list_accounts(self) -> list[str]:
        with self._read() as connection:
            return list(connection.execute(select(accounts.c.id).order_by(accounts.c.id)).scalars())

    def delete_account(self, account_id: str) -> bool:
        with self._write() as connection:
            if connection.execute(
                select(func.count()).select_from(repositories).where(repositories.c.account_id == account_id)
            ).scalar_one():
                return False
            for table in (user_policies, credentials, iam_users, registry_documents, creation_templates, quotas):
                connection.execute(delete(table).where(table.c.account_id == account_id))
            connection.execute(delete(accounts).where(accounts.c.id == account_id))
        return True

    def create_user(self, user: IamUser) -> bool:
        with self._write() as connection:
            result = connection.execute(
                self._insert_ignore(iam_users).values(
                    account_id=user.account_id,
                    user_name=user.user_name,
                    user_id=user.user_id,
                    path=user.path,
                    created_at=user.created_at,
                )
            )
        return result.rowcount > 0

    def get_user(self, account_id: str, user_name: str) -> IamUser | None:
        query = select(iam_users).where(iam_users.c.account_id == account_id, iam_users.c.user_name == user_name)
        with self._read() as connection:
            row = connection.execute(query).first()
        return None if row is None else _user(row)

    def list_users(self, account_id: str) -> list[IamUser]:
        query = select(iam_users).where(iam_users.c.account_id == account_id).order_by(iam_users.c.user_name)
        with self._read() as connection:
            return [_user(row) for row in connection.execute(query)]

    def delete_user(self, account_id: str, user_name: str) -> bool:
        with self._write() as connection:
            result = connection.execute(
                delete(iam_users).where(iam_users.c.account_id == account_id, iam_users.c.user_name == user_name)
            )
        return result.rowcount > 0

    def list_access_keys(self, account_id: str, user_name: str | None) -> list[AccessKeyInfo]:
        owner = credentials.c.user_name.is_(None) if user_name is None else credentials.c.user_name == user_name
        query = (
            select(credentials.c.access_key_id, credentials.c.user_name, credentials.c.created_at)
            .where(credentials.c.account_id == account_id, owner)
            .order_by(credentials.c.created_at)
        )
        with self._read() as connection:
            return [
                AccessKeyInfo(row.access_key_id, account_id, row.user_name, row.created_at)
                for row in connection.execute(query)
            ]

    def delete_credential(self, access_key_id: str) -> bool:
        with self._write() as connection:
            result = connection.execute(delete(credentials).where(credentials.c.access_key_id == access_key_id))
        return result.rowcount > 0

    def put_user_policy(self, account_id: str, user_name: str, policy_name: str, document: str) -> None:
        keys = {"account_id": account_id, "user_name": user_name, "policy_name": policy_name}
        self._upsert(user_policies, keys, {"document": document})

    def user_policies(self, account_id: str, user_name: str) -> dict[str, str]:
        table = user_policies
        query = (
            select(table.c.policy_name, table.c.document)
            .where(table.c.account_id == account_id, table.c.user_name == user_name)
            .order_by(table.c.policy_name)
        )
        with self._read() as connection:
            return {row.policy_name: row.document for row in connection.execute(query)}

    def delete_user_policy(self, account_id: str, user_name: str, policy_name: str) -> bool:
        table = user_policies
        with self._write() as connection:
            result = connection.execute(
                delete(table).where(
                    table.c.account_id == account_id, table.c.user_name == user_name, table.c.policy_name == policy_name
                )
            )
        return result.rowcount > 0

    # ------------------------------------------------------------------------------------ credentials

    def get_credential(self, access_key_id: str) -> Credential | None:
        with self._read() as connection:
            row = connection.execute(select(credentials).where(credentials.c.access_key_id == access_key_id)).first()
        if row is None:
            return None
        return Credential(row.access_key_id, row.sealed_secret, row.account_id, row.user_name)

    def ensure_account(self, account_id: str, now: datetime) -> None:
        with self._write() as connection:
            connection.execute(self._insert_ignore(accounts).values(id=account_id, created_at=now))

    def add_credential(self, credential: Credential, now: datetime) -> None:
        with self._write() as connection:
            connection.execute(
                credentials.insert().values(
                    access_key_id=credential.access_key_id,
                    account_id=credential.account_id,
                    user_name=credential.user_name,
                    sealed_secret=credential.sealed_secret,
                    created_at=now,
                )
            )

    def root_credential_ids(self, account_id: str) -> list[str]:
        query = select(credentials.c.access_key_id).where(
            credentials.c.account_id == account_id, credentials.c.user_name.is_(None)
        )
        with self._read() as connection:
            return list(connection.execute(query).scalars())


def _manifest_row(repository_id: int, record: ManifestRecord) -> dict[str, Any]:
    return {
        "repository_id": repository_id,
        "digest": str(record.digest),
        "media_type": record.media_type,
        "size": record.size,
        "artifact_type": record.artifact_type,
        "subject_digest": str(record.subject) if record.subject else None,
        "annotations": json.dumps(record.annotations) if record.annotations else None,
        "pushed_at": record.pushed_at,
        "image_size": record.image_size,
        "config_media_type": record.config_media_type,
        "last_pulled_at": record.last_pulled_at,
        "storage_class": record.storage_class,
        "last_archived_at": record.last_archived_at,
        "last_activated_at": record.last_activated_at,
    }


def _manifest_record(row: Any) -> ManifestRecord:
    return ManifestRecord(
        digest=Digest.parse(row.digest),
        media_type=row.media_type,
        size=row.size,
        artifact_type=row.artifact_type,
        subject=Digest.parse(row.subject_digest) if row.subject_digest else None,
        annotations=json.loads(row.annotations) if row.annotations else {},
        pushed_at=row.pushed_at,
        image_size=row.image_size,
        config_media_type=row.config_media_type,
        last_pulled_at=row.last_pulled_at,
        storage_class=row.storage_class,
        last_archived_at=row.last_archived_at,
        last_activated_at=row.last_activated_at,
    )


def _user(row: Any) -> IamUser:
    return IamUser(row.account_id, row.user_name, row.user_id, row.path, row.created_at)


def _template(row: Any) -> Template:
    return Template(row.prefix, json.loads(row.document), row.created_at, row.updated_at)


def _settings_row(settings: RepositorySettings) -> dict[str, Any]:
    return {
        "tag_mutability": settings.tag_mutability,
        "mutability_exclusions": json.dumps(list(settings.mutability_exclusions))
        if settings.mutability_exclusions
        else None,
        "scan_on_push": settings.scan_on_push,
        "encryption_type": settings.encryption_type,
        "kms_key": settings.kms_key,
    }


def _repository(row: Any) -> Repository:
    settings = RepositorySettings(
        tag_mutability=row.tag_mutability,
        mutability_exclusions=tuple(json.loads(row.mutability_exclusions)) if row.mutability_exclusions else (),
        scan_on_push=bool(row.scan_on_push),
        encryption_type=row.encryption_type,
        kms_key=row.kms_key,
    )
    return Repository(row.id, RepositoryRef(row.account_id, row.region, row.name), row.created_at, settings)
