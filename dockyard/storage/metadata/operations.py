"""What background work needs: storage classes, garbage collection queries, leases and job runs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    func,
    or_,
    select,
    update,
)

from dockyard.domain.encryption import KMS_TYPES
from dockyard.domain.names import Digest
from dockyard.domain.ports import (
    KeyDomain,
    LifecycleRow,
    Repository,
    UploadSession,
)
from dockyard.storage.metadata.base import StoreBase
from dockyard.storage.metadata.rows import (
    repository_record,
)
from dockyard.storage.metadata.schema import (
    blobs,
    image_scans,
    job_runs,
    leases,
    manifest_references,
    manifests,
    registry_settings,
    repositories,
    repository_blobs,
    repository_documents,
    tags,
    uploads,
)


class OperationRecords(StoreBase):
    def set_storage_class(self, repository_id: int, digest: Digest, storage_class: str, now: datetime) -> None:
        stamp = {"last_archived_at": now} if storage_class == "ARCHIVE" else {"last_activated_at": now}
        with self._write() as connection:
            connection.execute(
                update(manifests)
                .where(manifests.c.repository_id == repository_id, manifests.c.digest == str(digest))
                .values(storage_class=storage_class, **stamp)
            )
        self._forget_content()  # an archived image must not be pulled from the cache

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

    def lifecycle_rows(self, repository_id: int) -> list[LifecycleRow]:
        """Every image of the repository with its tags: two plain queries, no per-row parsing."""
        columns = (
            manifests.c.digest,
            manifests.c.pushed_at,
            manifests.c.last_pulled_at,
            manifests.c.last_archived_at,
            manifests.c.last_activated_at,
            manifests.c.storage_class,
            manifests.c.subject_digest,
        )
        with self._read() as connection:
            rows = connection.execute(select(*columns).where(manifests.c.repository_id == repository_id)).all()
            names: dict[str, list[str]] = {}
            tag_query = select(tags.c.digest, tags.c.name).where(tags.c.repository_id == repository_id)
            for digest, name in connection.execute(tag_query):
                names.setdefault(digest, []).append(name)
        return [LifecycleRow(row[0], tuple(sorted(names.get(row[0], ()))), *row[1:6], row[6]) for row in rows]

    def repositories_with_document(self, kind: str) -> list[Repository]:
        query = select(repositories).join(
            repository_documents,
            and_(repository_documents.c.repository_id == repositories.c.id, repository_documents.c.kind == kind),
        )
        with self._read() as connection:
            return [repository_record(row) for row in connection.execute(query)]

    def work_in_progress(self) -> tuple[int, int]:
        """(open upload sessions, scans waiting or running), for the metrics endpoint."""
        with self._read() as connection:
            sessions = connection.execute(select(func.count()).select_from(uploads)).scalar_one()
            queued = connection.execute(
                select(func.count())
                .select_from(image_scans)
                .where(image_scans.c.status.in_(("PENDING", "IN_PROGRESS")))
            ).scalar_one()
        return int(sessions), int(queued)

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
        self._forget_content()
        return result.rowcount

    def delete_orphan_blob_rows(self, created_before: datetime) -> int:
        linked = select(repository_blobs.c.digest).where(repository_blobs.c.digest == blobs.c.digest).exists()
        with self._write() as connection:
            result = connection.execute(delete(blobs).where(blobs.c.created_at < created_before, ~linked))
        return result.rowcount

    def referenced_digests(
        self, digests: Iterable[Digest], unlinked_before: datetime | None = None, domain: KeyDomain | None = None
    ) -> set[Digest]:
        """Which of `digests` the metadata still needs: known blobs or manifest contents of any repository.

        With `unlinked_before` (a dry run), blob rows count only where they would survive
        `delete_unreferenced_links` and `delete_orphan_blob_rows` with that time. With `domain`, only links and
        manifests of that key domain's repositories count (a blob row alone says nothing about which domains
        hold a copy).
        """
        wanted = [str(d) for d in digests]
        referenced = (
            select(manifest_references.c.child_digest)
            .where(
                manifest_references.c.repository_id == repository_blobs.c.repository_id,
                manifest_references.c.child_digest == repository_blobs.c.digest,
            )
            .exists()
        )
        contents = select(manifests.c.digest).where(manifests.c.digest.in_(wanted))
        if domain is None:
            known = select(blobs.c.digest).where(blobs.c.digest.in_(wanted))
            if unlinked_before is not None:
                kept_link = (
                    select(repository_blobs.c.digest)
                    .where(
                        repository_blobs.c.digest == blobs.c.digest,
                        (repository_blobs.c.linked_at >= unlinked_before) | referenced,
                    )
                    .exists()
                )
                known = known.where(kept_link | (blobs.c.created_at >= unlinked_before))
        else:
            in_domain = _in_domain(domain)
            known = (
                select(repository_blobs.c.digest)
                .join(repositories, repositories.c.id == repository_blobs.c.repository_id)
                .where(repository_blobs.c.digest.in_(wanted), in_domain)
            )
            if unlinked_before is not None:
                known = known.where((repository_blobs.c.linked_at >= unlinked_before) | referenced)
            contents = contents.join(repositories, repositories.c.id == manifests.c.repository_id).where(in_domain)
        with self._read() as connection:
            found = set(connection.execute(known).scalars())
            found |= set(connection.execute(contents).scalars())
        return {Digest.parse(d) for d in found}

    def try_lease(self, name: str, owner: str, until: datetime, now: datetime) -> bool:
        """Take the named lease if it is free, expired, or already ours. Each step is one atomic statement, so
        of nodes asking at the same moment exactly one gets it and none fails (a read-then-insert raced).
        RETURNING says whether a row was written: rowcount is -1 for these inserts on psycopg."""
        with self._write() as connection:
            inserted = connection.execute(
                self._insert_ignore(leases).values(name=name, owner=owner, expires_at=until).returning(leases.c.name)
            ).first()
            if inserted is not None:
                return True
            taken = connection.execute(
                update(leases)
                .where(leases.c.name == name, or_(leases.c.owner == owner, leases.c.expires_at <= now))
                .values(owner=owner, expires_at=until)
                .returning(leases.c.name)
            ).first()
            return taken is not None

    def renew_lease(self, name: str, owner: str, until: datetime) -> bool:
        """Extend the named lease to `until` if `owner` still holds it, in one atomic UPDATE; False when it is
        lost (taken over or gone). A lease past its expiry that no node took is still `owner`'s: nobody ran
        the job meanwhile, so renewing it is safe."""
        with self._write() as connection:
            renewed = connection.execute(
                update(leases)
                .where(leases.c.name == name, leases.c.owner == owner)
                .values(expires_at=until)
                .returning(leases.c.name)
            ).first()
            return renewed is not None

    def release_lease(self, name: str, owner: str) -> None:
        with self._write() as connection:
            connection.execute(delete(leases).where(leases.c.name == name, leases.c.owner == owner))

    def finish_leased_job(self, name: str, lease: str, owner: str, when: datetime) -> None:
        statement = self._insert(job_runs).values(name=name, last_run_at=when)
        with self._write() as connection:
            connection.execute(
                statement.on_conflict_do_update(index_elements=[job_runs.c.name], set_={"last_run_at": when})
            )
            connection.execute(delete(leases).where(leases.c.name == lease, leases.c.owner == owner))

    def job_last_run(self, name: str) -> datetime | None:
        with self._read() as connection:
            value: datetime | None = connection.execute(
                select(job_runs.c.last_run_at).where(job_runs.c.name == name)
            ).scalar()
        return value

    def set_job_last_run(self, name: str, when: datetime) -> None:
        self._upsert(job_runs, {"name": name}, {"last_run_at": when})

    def registry_setting(self, name: str) -> str | None:
        with self._read() as connection:
            value: str | None = connection.execute(
                select(registry_settings.c.value).where(registry_settings.c.name == name)
            ).scalar()
        return value

    def settle_registry_setting(self, name: str, proposed: str) -> str:
        # INSERT … ON CONFLICT DO NOTHING, then read, in one transaction: of nodes starting at once, one
        # inserts and the others wait for its commit (PostgreSQL's unique index; SQLite's write lock), then
        # all read the same row.
        with self._write() as connection:
            connection.execute(self._insert_ignore(registry_settings).values(name=name, value=proposed))
            value: str = connection.execute(
                select(registry_settings.c.value).where(registry_settings.c.name == name)
            ).scalar_one()
        return value


def _in_domain(domain: KeyDomain) -> ColumnElement[bool]:
    """Repositories whose content lives in `domain` (as `dockyard.domain.encryption.key_domain` decides)."""
    kms = repositories.c.encryption_type.in_(sorted(KMS_TYPES)) & repositories.c.kms_key.is_not(None)
    if domain.kms_key_arn is None:
        return ~kms
    return kms & (repositories.c.kms_key == domain.kms_key_arn)
