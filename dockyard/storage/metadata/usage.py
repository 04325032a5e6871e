"""Usage: hourly transfer/request counters (added to by every process) and hourly storage samples.

Both tables key rows by names as well as ids and have no foreign keys: a bill is history, so the rows of a
deleted repository stay. Counters are added with one upsert (`transfer_bytes = transfer_bytes + excluded…`),
so processes flushing at the same moment never lose a count; rows are written in key order, so two PostgreSQL
transactions lock them in the same order and cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select

from dockyard.domain.names import RepositoryRef
from dockyard.domain.ports import RepositoryUsage, StoredBytes, UsageCounter
from dockyard.storage.metadata.base import StoreBase
from dockyard.storage.metadata.schema import (
    blobs,
    manifests,
    repositories,
    repository_blobs,
    storage_samples,
    usage_counters,
)


class UsageRecords(StoreBase):
    def add_usage(self, counters: Iterable[UsageCounter]) -> None:
        merged: dict[tuple[str, datetime, str, str], list[int]] = {}
        for counter in counters:
            key = (counter.ref.account_id, counter.hour, counter.ref.region, counter.ref.name)
            totals = merged.setdefault(key, [0, 0, 0])  # one row per key: PostgreSQL updates a row once a statement
            totals[0] += counter.transfer_bytes
            totals[1] += counter.pulls
            totals[2] += counter.pushes
        if not merged:
            return
        rows = [
            {
                "account_id": account,
                "hour": hour,
                "region": region,
                "repository": name,
                "transfer_bytes": transfer,
                "pulls": pulls,
                "pushes": pushes,
            }
            for (account, hour, region, name), (transfer, pulls, pushes) in sorted(merged.items())
        ]
        table = usage_counters
        statement = self._insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.account_id, table.c.hour, table.c.region, table.c.repository],
            set_={name: table.c[name] + statement.excluded[name] for name in ("transfer_bytes", "pulls", "pushes")},
        )
        with self._write() as connection:
            connection.execute(statement, rows)

    def repository_storage(self) -> list[StoredBytes]:
        linked = (
            select(repository_blobs.c.repository_id, func.sum(blobs.c.size).label("size"))
            .join(blobs, blobs.c.digest == repository_blobs.c.digest)
            .group_by(repository_blobs.c.repository_id)
            .subquery()
        )
        listed = (
            select(manifests.c.repository_id, func.sum(manifests.c.size).label("size"))
            .group_by(manifests.c.repository_id)
            .subquery()
        )
        query = (
            select(
                repositories.c.id,
                repositories.c.account_id,
                repositories.c.region,
                repositories.c.name,
                func.coalesce(linked.c.size, 0).label("blob_bytes"),
                func.coalesce(listed.c.size, 0).label("manifest_bytes"),
            )
            .outerjoin(linked, linked.c.repository_id == repositories.c.id)
            .outerjoin(listed, listed.c.repository_id == repositories.c.id)
            .order_by(repositories.c.id)
        )
        with self._read() as connection:
            return [
                StoredBytes(
                    row.id,
                    RepositoryRef(row.account_id, row.region, row.name),
                    int(row.blob_bytes) + int(row.manifest_bytes),  # PostgreSQL sums bigints as numeric
                )
                for row in connection.execute(query)
            ]

    def put_storage_samples(self, hour: datetime, samples: Iterable[StoredBytes]) -> None:
        rows = [
            {
                "repository_id": sample.repository_id,
                "hour": hour,
                "account_id": sample.ref.account_id,
                "region": sample.ref.region,
                "repository": sample.ref.name,
                "bytes": sample.size,
            }
            for sample in sorted(samples, key=lambda sample: sample.repository_id)
        ]
        if not rows:
            return
        table = storage_samples
        statement = self._insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.repository_id, table.c.hour],
            set_={name: statement.excluded[name] for name in ("account_id", "region", "repository", "bytes")},
        )
        with self._write() as connection:
            connection.execute(statement, rows)

    def usage_totals(self, account_id: str, start: datetime, end: datetime) -> list[RepositoryUsage]:
        counters = usage_counters
        counted = (
            select(
                counters.c.region,
                counters.c.repository,
                func.sum(counters.c.transfer_bytes).label("transfer_bytes"),
                func.sum(counters.c.pulls).label("pulls"),
                func.sum(counters.c.pushes).label("pushes"),
            )
            .where(counters.c.account_id == account_id, counters.c.hour >= start, counters.c.hour < end)
            .group_by(counters.c.region, counters.c.repository)
        )
        samples = storage_samples
        in_range = and_(samples.c.account_id == account_id, samples.c.hour >= start, samples.c.hour < end)
        sampled = (
            select(
                samples.c.region,
                samples.c.repository,
                func.sum(samples.c.bytes).label("byte_hours"),
                func.count(samples.c.hour.distinct()).label("hours"),
                func.max(samples.c.hour).label("last_hour"),
            )
            .where(in_range)
            .group_by(samples.c.region, samples.c.repository)
            .subquery()
        )
        # The latest sample's bytes; two repositories of one name (deleted, then created again) in one hour add up.
        last = (
            select(samples.c.region, samples.c.repository, func.sum(samples.c.bytes).label("last_bytes"))
            .join(
                sampled,
                and_(
                    sampled.c.region == samples.c.region,
                    sampled.c.repository == samples.c.repository,
                    sampled.c.last_hour == samples.c.hour,
                ),
            )
            .where(in_range)
            .group_by(samples.c.region, samples.c.repository)
            .subquery()
        )
        stored = select(
            sampled.c.region, sampled.c.repository, sampled.c.byte_hours, sampled.c.hours, last.c.last_bytes
        ).join(last, and_(last.c.region == sampled.c.region, last.c.repository == sampled.c.repository))
        with self.engine.connect() as connection, connection.begin():  # both sums from one snapshot
            transfer_rows = connection.execute(counted).all()
            storage_rows = connection.execute(stored).all()
        return _merged(transfer_rows, storage_rows)


def _merged(transfer_rows: Sequence[Any], storage_rows: Sequence[Any]) -> list[RepositoryUsage]:
    """Rows of the two sums (SQLAlchemy `Row`s), by (region, repository name)."""
    usage: dict[tuple[str, str], RepositoryUsage] = {}
    for row in storage_rows:
        key = (row.region, row.repository)
        usage[key] = RepositoryUsage(
            row.region,
            row.repository,
            storage_byte_hours=int(row.byte_hours),
            sampled_hours=int(row.hours),
            last_stored_bytes=int(row.last_bytes),
        )
    for row in transfer_rows:
        key = (row.region, row.repository)
        known = usage.get(key, RepositoryUsage(row.region, row.repository))
        usage[key] = RepositoryUsage(
            known.region,
            known.name,
            known.storage_byte_hours,
            known.sampled_hours,
            known.last_stored_bytes,
            int(row.transfer_bytes),
            int(row.pulls),
            int(row.pushes),
        )
    return [usage[key] for key in sorted(usage)]
