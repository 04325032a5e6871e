"""The replication queue: one task per (image, destination registry), claimed with SKIP LOCKED on PostgreSQL.

A task is PENDING until a worker claims it (IN_PROGRESS, with the claimant and when its claim expires), then
COMPLETE or FAILED. A claim that expired (its node died) makes the task claimable again. Pushing the image
again bumps the task's `generation`: a running worker's result for an older generation is not recorded, the
task is queued again instead, so a push during a replication is never lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import case, select, update

from dockyard.domain.names import Digest, RepositoryRef
from dockyard.domain.ports import ReplicationRecord, ReplicationTask
from dockyard.storage.metadata.base import StoreBase
from dockyard.storage.metadata.schema import replication_tasks, repositories

PENDING = "PENDING"
IN_PROGRESS = "IN_PROGRESS"


class ReplicationRecords(StoreBase):
    def request_replications(
        self, repository_id: int, digest: Digest, destinations: Iterable[tuple[str, str]], now: datetime
    ) -> None:
        table = replication_tasks
        rows = [
            {
                "repository_id": repository_id,
                "digest": str(digest),
                "destination_account": account,
                "destination_region": region,
                "status": PENDING,
                "requested_at": now,
                "generation": 0,
                "attempts": 0,
            }
            for account, region in dict.fromkeys(destinations)
        ]
        if not rows:
            return
        statement = self._insert(table)
        # A task being replicated stays claimed (no second worker starts it); its new generation makes the
        # claimant queue it again when it finishes.
        statement = statement.on_conflict_do_update(
            index_elements=[
                table.c.repository_id,
                table.c.digest,
                table.c.destination_account,
                table.c.destination_region,
            ],
            set_={
                "status": case((table.c.status == IN_PROGRESS, IN_PROGRESS), else_=PENDING),
                "generation": table.c.generation + 1,
                "requested_at": statement.excluded.requested_at,
                "completed_at": None,
                "failure_code": None,
                "failure_reason": None,
                "attempts": 0,
            },
        )
        with self._write() as connection:
            connection.execute(statement, rows)

    def claim_replication(self, owner: str, until: datetime, now: datetime) -> ReplicationTask | None:
        """Take the oldest queued task, or one whose claimant died (its claim expired)."""
        table = replication_tasks
        claimable = (table.c.status == PENDING) | ((table.c.status == IN_PROGRESS) & (table.c.claim_expires_at < now))
        query = (
            select(
                table.c.id,
                table.c.repository_id,
                table.c.digest,
                table.c.destination_account,
                table.c.destination_region,
                table.c.generation,
                table.c.attempts,
                repositories.c.account_id,
                repositories.c.region,
                repositories.c.name,
            )
            .join(repositories, repositories.c.id == table.c.repository_id)
            .where(claimable)
            .order_by(table.c.requested_at, table.c.id)
            .limit(1)
        )
        if self._dialect == "postgresql":
            query = query.with_for_update(skip_locked=True, of=table)
        with self._write() as connection:
            row = connection.execute(query).first()
            if row is None:
                return None
            # Compare-and-set on top of the lock: the row is taken only if it is still claimable.
            taken = connection.execute(
                update(table)
                .where(table.c.id == row.id, claimable)
                .values(status=IN_PROGRESS, claimed_by=owner, claim_expires_at=until, attempts=table.c.attempts + 1)
            )
            if taken.rowcount != 1:
                return None
        return ReplicationTask(
            id=row.id,
            repository_id=row.repository_id,
            source=RepositoryRef(row.account_id, row.region, row.name),
            digest=Digest.parse(row.digest),
            destination_account=row.destination_account,
            destination_region=row.destination_region,
            generation=row.generation,
            attempts=row.attempts + 1,
        )

    def finish_replication(
        self,
        task: ReplicationTask,
        owner: str,
        status: str,
        failure_code: str | None,
        failure_reason: str | None,
        now: datetime,
    ) -> None:
        table = replication_tasks
        mine = (table.c.id == task.id) & (table.c.claimed_by == owner)  # a claim lost to another node: no-op
        released = {"claimed_by": None, "claim_expires_at": None}
        with self._write() as connection:
            recorded = connection.execute(
                update(table)
                .where(mine, table.c.generation == task.generation)
                .values(
                    status=status,
                    failure_code=failure_code,
                    failure_reason=failure_reason,
                    completed_at=None if status == PENDING else now,
                    **released,
                )
            )
            if recorded.rowcount == 0:  # pushed again meanwhile: queue the newer request
                connection.execute(update(table).where(mine).values(status=PENDING, **released))

    def get_replications(self, repository_id: int, digest: Digest) -> list[ReplicationRecord]:
        table = replication_tasks
        query = (
            select(table)
            .where(table.c.repository_id == repository_id, table.c.digest == str(digest))
            .order_by(table.c.id)
        )
        with self._read() as connection:
            return [
                ReplicationRecord(
                    row.destination_account,
                    row.destination_region,
                    row.status,
                    row.failure_code,
                    row.failure_reason,
                    row.requested_at,
                    row.completed_at,
                )
                for row in connection.execute(query)
            ]
