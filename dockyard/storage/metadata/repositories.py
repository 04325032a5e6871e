"""Repositories and their settings."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import (
    delete,
    func,
    select,
    update,
)

from dockyard.domain.names import RepositoryRef
from dockyard.domain.ports import (
    Repository,
    RepositorySettings,
)
from dockyard.storage.metadata.base import StoreBase
from dockyard.storage.metadata.rows import (
    repository_record,
    settings_row,
)
from dockyard.storage.metadata.schema import (
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    repository_documents,
    repository_tags,
    tags,
    uploads,
)


class RepositoryRecords(StoreBase):
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
        return None if row is None else repository_record(row)

    def get_repository_by_id(self, repository_id: int) -> Repository | None:
        with self._read() as connection:
            row = connection.execute(select(repositories).where(repositories.c.id == repository_id)).first()
        return None if row is None else repository_record(row)

    def create_repository(
        self, ref: RepositoryRef, now: datetime, settings: RepositorySettings | None = None
    ) -> tuple[Repository, bool]:
        with self._write() as connection:
            result = connection.execute(
                self._insert_ignore(repositories)
                .values(
                    account_id=ref.account_id,
                    region=ref.region,
                    name=ref.name,
                    created_at=now,
                    **settings_row(settings or RepositorySettings()),
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
            return [repository_record(row) for row in connection.execute(query)]

    def list_repository_names(self, account_id: str, region: str, after: str | None, limit: int) -> list[str]:
        return [repository.ref.name for repository in self.list_repositories(account_id, region, after, limit)]

    def update_settings(self, repository_id: int, settings: RepositorySettings) -> None:
        with self._write() as connection:
            connection.execute(
                update(repositories).where(repositories.c.id == repository_id).values(**settings_row(settings))
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
        for cache in (self._repositories, self._documents):
            cache.clear()
        self._forget_content()

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
