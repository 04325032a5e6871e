"""Accounts, IAM users, user policies and access keys."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import (
    delete,
    func,
    select,
    update,
)

from dockyard.domain.ports import (
    AccessKeyInfo,
    Credential,
    IamUser,
)
from dockyard.storage.metadata.base import StoreBase
from dockyard.storage.metadata.rows import (
    user_record,
)
from dockyard.storage.metadata.schema import (
    accounts,
    creation_templates,
    credentials,
    iam_users,
    quotas,
    registry_documents,
    repositories,
    user_policies,
)


class IdentityRecords(StoreBase):
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
        self._user_policies.clear()
        return True

    def create_user(self, user: IamUser) -> bool:
        with self._write() as connection:
            result = connection.execute(
                self._insert_ignore(iam_users)
                .values(
                    account_id=user.account_id,
                    user_name=user.user_name,
                    user_id=user.user_id,
                    path=user.path,
                    created_at=user.created_at,
                )
                .returning(iam_users.c.user_name)  # rowcount is -1 for inserts on psycopg: a row back means created
            )
            return result.first() is not None

    def get_user(self, account_id: str, user_name: str) -> IamUser | None:
        query = select(iam_users).where(iam_users.c.account_id == account_id, iam_users.c.user_name == user_name)
        with self._read() as connection:
            row = connection.execute(query).first()
        return None if row is None else user_record(row)

    def list_users(self, account_id: str) -> list[IamUser]:
        query = select(iam_users).where(iam_users.c.account_id == account_id).order_by(iam_users.c.user_name)
        with self._read() as connection:
            return [user_record(row) for row in connection.execute(query)]

    def delete_user(self, account_id: str, user_name: str) -> bool:
        with self._write() as connection:
            result = connection.execute(
                delete(iam_users).where(iam_users.c.account_id == account_id, iam_users.c.user_name == user_name)
            )
        self._user_policies.invalidate((account_id, user_name))
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
        self._user_policies.invalidate((account_id, user_name))

    def user_policies(self, account_id: str, user_name: str) -> dict[str, str]:
        """Cached for the store's TTL (read on every request of the user); writes here forget them at once."""
        key = (account_id, user_name)
        return self._user_policies.get_or_load(key, lambda: self._load_user_policies(account_id, user_name))

    def _load_user_policies(self, account_id: str, user_name: str) -> dict[str, str]:
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
        self._user_policies.invalidate((account_id, user_name))
        return result.rowcount > 0

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

    def reseal(
        self, secret: Callable[[str], str], document_kind_prefix: str, document: Callable[[str], str]
    ) -> tuple[int, int]:
        """Rewrite every sealed credential secret with `secret` and every registry document whose kind starts
        with `document_kind_prefix` with `document`, in one transaction: all or nothing is re-sealed."""
        table = registry_documents
        with self._write() as connection:
            rows = connection.execute(select(credentials.c.access_key_id, credentials.c.sealed_secret)).all()
            for row in rows:
                connection.execute(
                    update(credentials)
                    .where(credentials.c.access_key_id == row.access_key_id)
                    .values(sealed_secret=secret(row.sealed_secret))
                )
            keys = (table.c.account_id, table.c.region, table.c.kind, table.c.text)
            documents = connection.execute(
                select(*keys).where(table.c.kind.startswith(document_kind_prefix, autoescape=True))
            ).all()
            for doc in documents:
                connection.execute(
                    update(table)
                    .where(table.c.account_id == doc.account_id, table.c.region == doc.region, table.c.kind == doc.kind)
                    .values(text=document(doc.text))
                )
        return len(rows), len(documents)

    def root_credential_ids(self, account_id: str) -> list[str]:
        query = select(credentials.c.access_key_id).where(
            credentials.c.account_id == account_id, credentials.c.user_name.is_(None)
        )
        with self._read() as connection:
            return list(connection.execute(query).scalars())
