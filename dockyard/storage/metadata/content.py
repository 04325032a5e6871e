"""Blob links, upload sessions, manifests, tags and referrers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import (
    Connection,
    delete,
    select,
    update,
)

from dockyard.domain.names import Digest
from dockyard.domain.ports import (
    ImageRow,
    ManifestRecord,
    ManifestReference,
    Repository,
    TagGuard,
    UploadSession,
)
from dockyard.storage.metadata.base import StoreBase
from dockyard.storage.metadata.rows import (
    manifest_record,
    manifest_row,
    repository_record,
)
from dockyard.storage.metadata.schema import (
    _GET_MANIFEST,
    _LINKED_BLOB_SIZE,
    _RESOLVE_TAG,
    blobs,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    tags,
    uploads,
)


class ContentRecords(StoreBase):
    def linked_blob_size(self, repository_id: int, digest: Digest) -> int | None:
        # Not cached: a link removed by another process (the collector, another node) must be seen at once,
        # or a client would skip uploading a blob its manifest then finds missing.
        return self._load_linked_blob_size(repository_id, digest)

    def pull_linked_blob_size(self, repository_id: int, digest: Digest) -> int | None:
        """`linked_blob_size` for a HEAD/GET of the blob: cached only where every writer is heard at once (SQLite,
        through `SharedGeneration`), since a client told a removed link still exists skips the upload and then
        has its manifest refused; on PostgreSQL every node asks the database."""
        if self._shared is None:
            return self._load_linked_blob_size(repository_id, digest)
        key = (repository_id, digest)
        generation = self._pull_generation()
        size = self._pull_links.get_or_load(key, lambda: self._load_linked_blob_size(repository_id, digest))
        if size is None or generation != self._pull_generation():
            self._pull_links.invalidate(key)
        return size

    def _load_linked_blob_size(self, repository_id: int, digest: Digest) -> int | None:
        with self._read() as connection:
            size: int | None = connection.execute(
                _LINKED_BLOB_SIZE, {"repository_id": repository_id, "digest": str(digest)}
            ).scalar()
        return size

    def linked_blob_sizes(self, repository_id: int, digests: Iterable[Digest]) -> dict[Digest, int]:
        wanted = sorted({str(digest) for digest in digests})
        if not wanted:
            return {}
        with self._read() as connection:
            rows = connection.execute(
                select(blobs.c.digest, blobs.c.size)
                .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
                .where(repository_blobs.c.repository_id == repository_id, blobs.c.digest.in_(wanted))
            ).all()
        return {Digest.parse(row.digest): row.size for row in rows}

    def link_blob(self, repository_id: int, digest: Digest, size: int, now: datetime) -> None:
        with self._write() as connection:
            connection.execute(self._insert_ignore(blobs).values(digest=str(digest), size=size, created_at=now))
            # Linked again (uploaded or mounted anew): the collector's grace period restarts from now.
            link = self._insert(repository_blobs).values(repository_id=repository_id, digest=str(digest), linked_at=now)
            connection.execute(
                link.on_conflict_do_update(
                    index_elements=[repository_blobs.c.repository_id, repository_blobs.c.digest],
                    set_={"linked_at": now},
                )
            )

    def unlink_blob(self, repository_id: int, digest: Digest) -> bool:
        with self._write() as connection:
            result = connection.execute(
                delete(repository_blobs).where(
                    repository_blobs.c.repository_id == repository_id,
                    repository_blobs.c.digest == str(digest),
                )
            )
        self._forget_content()
        return result.rowcount > 0

    def repositories_linking_blob(self, account_id: str, region: str, digest: Digest, limit: int) -> list[Repository]:
        query = (
            select(repositories)
            .join(repository_blobs, repository_blobs.c.repository_id == repositories.c.id)
            .where(
                repositories.c.account_id == account_id,
                repositories.c.region == region,
                repository_blobs.c.digest == str(digest),
            )
            .order_by(repositories.c.name)
            .limit(limit)
        )
        with self._read() as connection:
            return [repository_record(row) for row in connection.execute(query)]

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

    def get_manifest(self, repository_id: int, digest: Digest) -> ManifestRecord | None:
        # Not cached: an expired or deleted image must disappear from every door (and node) at once.
        return self._load_manifest(repository_id, digest)

    def _load_manifest(self, repository_id: int, digest: Digest) -> ManifestRecord | None:
        with self._read() as connection:
            row = connection.execute(_GET_MANIFEST, {"repository_id": repository_id, "digest": str(digest)}).first()
        return None if row is None else manifest_record(row)

    def pull_manifest(self, repository_id: int, reference: Digest | str) -> ManifestRecord | None:
        """`get_manifest` (a Digest) or `resolve_tag` (a tag) for a pull, through the pull cache: an image deleted,
        expired, archived or re-tagged through this store is forgotten at once, through another node within
        the cache's TTL."""
        key = (repository_id, reference)
        generation = self._pull_generation()
        if isinstance(reference, Digest):
            digest = reference
            record = self._pull_records.get_or_load(key, lambda: self._load_manifest(repository_id, digest))
        else:
            tag = reference
            record = self._pull_records.get_or_load(key, lambda: self.resolve_tag(repository_id, tag))
        if record is None or generation != self._pull_generation():
            self._pull_records.invalidate(key)
        return record

    def resolve_tag(self, repository_id: int, tag: str) -> ManifestRecord | None:
        with self._read() as connection:
            row = connection.execute(_RESOLVE_TAG, {"repository_id": repository_id, "tag": tag}).first()
        return None if row is None else manifest_record(row)

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
            connection.execute(self._insert_ignore(manifests).values(**manifest_row(repository_id, record)))
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
        self._forget_content()  # a tag moved: its cached record is another image's now
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
        self._forget_content()
        return result.rowcount > 0

    def delete_manifest(self, repository_id: int, digest: Digest) -> bool:
        return self.delete_manifests(repository_id, [digest]) > 0

    def delete_manifests(self, repository_id: int, digests: Sequence[Digest]) -> int:
        """Delete manifests with their tags and references in one transaction; returns how many existed."""
        wanted = [str(d) for d in digests]
        with self._write() as connection:
            connection.execute(delete(tags).where(tags.c.repository_id == repository_id, tags.c.digest.in_(wanted)))
            connection.execute(
                delete(manifest_references).where(
                    manifest_references.c.repository_id == repository_id,
                    manifest_references.c.parent_digest.in_(wanted),
                )
            )
            result = connection.execute(
                delete(manifests).where(manifests.c.repository_id == repository_id, manifests.c.digest.in_(wanted))
            )
        self._forget_content()
        return result.rowcount

    def blob_referenced(self, repository_id: int, digest: Digest) -> bool:
        query = select(manifest_references.c.parent_digest).where(
            manifest_references.c.repository_id == repository_id,
            manifest_references.c.child_digest == str(digest),
            manifest_references.c.is_manifest.is_(False),
        )
        with self._read() as connection:
            return connection.execute(query.limit(1)).first() is not None

    def blob_parent(self, repository_id: int, digest: Digest) -> Digest | None:
        query = select(manifest_references.c.parent_digest).where(
            manifest_references.c.repository_id == repository_id,
            manifest_references.c.child_digest == str(digest),
            manifest_references.c.is_manifest.is_(False),
        )
        with self._read() as connection:
            parent = connection.execute(query.limit(1)).scalar()
        return None if parent is None else Digest.parse(parent)

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
            records = [manifest_record(row) for row in connection.execute(query)]
            return self._with_tags(connection, repository_id, records)

    def get_images(self, repository_id: int, digests: Iterable[Digest]) -> list[ImageRow]:
        wanted = sorted({str(d) for d in digests})
        query = select(manifests).where(manifests.c.repository_id == repository_id, manifests.c.digest.in_(wanted))
        with self._read() as connection:
            records = [manifest_record(row) for row in connection.execute(query)]
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
        with self._write() as connection:
            connection.execute(
                update(manifests)
                .where(manifests.c.repository_id == repository_id, manifests.c.digest == str(digest))
                .values(last_pulled_at=now)
            )
        self._forget_content()  # the cached record's last_pulled_at is now old

    def list_referrers(self, repository_id: int, subject: Digest, artifact_type: str | None) -> list[ManifestRecord]:
        query = (
            select(manifests)
            .where(manifests.c.repository_id == repository_id, manifests.c.subject_digest == str(subject))
            .order_by(manifests.c.pushed_at, manifests.c.digest)
        )
        if artifact_type is not None:
            query = query.where(manifests.c.artifact_type == artifact_type)
        with self._read() as connection:
            return [manifest_record(row) for row in connection.execute(query)]
