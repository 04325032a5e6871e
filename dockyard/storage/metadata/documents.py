"""Policy and configuration documents, creation templates, quotas."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import (
    delete,
    func,
    select,
    update,
)

from dockyard.domain.ports import (
    Document,
    Template,
)
from dockyard.storage.metadata.base import StoreBase
from dockyard.storage.metadata.rows import (
    template_record,
)
from dockyard.storage.metadata.schema import (
    creation_templates,
    quotas,
    registry_documents,
    repositories,
    repository_documents,
)


class DocumentRecords(StoreBase):
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

    def create_registry_document(self, account_id: str, region: str, kind: str, text: str, now: datetime) -> bool:
        table = registry_documents
        statement = (
            self._insert_ignore(table)
            .values(account_id=account_id, region=region, kind=kind, text=text, updated_at=now)
            .returning(table.c.kind)  # rowcount is -1 for inserts on psycopg: a row back means created
        )
        with self._write() as connection:
            return connection.execute(statement).first() is not None

    def find_registry_document(self, region: str, kind: str, text: str) -> str | None:
        """The account whose registry holds this exact document (e.g. who owns a public alias)."""
        table = registry_documents
        query = select(table.c.account_id).where(table.c.region == region, table.c.kind == kind, table.c.text == text)
        with self._read() as connection:
            account: str | None = connection.execute(query).scalar()
        return account

    def list_registry_documents(
        self, account_id: str | None, region: str | None, kind_prefix: str
    ) -> list[tuple[str, str]]:
        """(kind, text) of the registry documents whose kind starts with `kind_prefix` (None: any account/region)."""
        table = registry_documents
        query = select(table.c.kind, table.c.text).where(table.c.kind.startswith(kind_prefix, autoescape=True))
        if account_id is not None:
            query = query.where(table.c.account_id == account_id)
        if region is not None:
            query = query.where(table.c.region == region)
        with self._read() as connection:
            return [(row.kind, row.text) for row in connection.execute(query.order_by(table.c.kind))]

    def delete_registry_document(self, account_id: str, region: str, kind: str) -> bool:
        table = registry_documents
        with self._write() as connection:
            result = connection.execute(
                delete(table).where(table.c.account_id == account_id, table.c.region == region, table.c.kind == kind)
            )
        return result.rowcount > 0

    def list_templates(self, account_id: str, region: str) -> list[Template]:
        table = creation_templates
        query = select(table).where(table.c.account_id == account_id, table.c.region == region).order_by(table.c.prefix)
        with self._read() as connection:
            return [template_record(row) for row in connection.execute(query)]

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
                    self._insert_ignore(table)
                    .values(
                        account_id=account_id,
                        region=region,
                        prefix=template.prefix,
                        created_at=template.created_at,
                        **row,
                    )
                    .returning(table.c.prefix)  # rowcount is -1 for inserts on psycopg: a row back means created
                )
                return result.first() is not None
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
