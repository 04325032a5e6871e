"""The OSV advisory database and the image scan queue."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    delete,
    func,
    select,
    update,
)

from dockyard.domain.names import Digest
from dockyard.domain.ports import (
    ScanRecord,
    VulnerabilityEntry,
)
from dockyard.storage.metadata.base import StoreBase
from dockyard.storage.metadata.schema import (
    image_scans,
    vulnerabilities,
    vulnerability_packages,
    vulnerability_sources,
)


class ScanRecords(StoreBase):
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

    def has_vulnerabilities_for(self, ecosystem: str) -> bool:
        # `Debian` or `Debian:<release>`: a range on the primary key's leading column (`;` follows `:`), which
        # SQLite answers from the index. The range holds in byte order only: PostgreSQL's linguistic
        # collations skip punctuation, so there it compares in "C".
        column: ColumnElement[Any] = vulnerability_packages.c.ecosystem
        if self._dialect == "postgresql":
            column = column.collate("C")
        query = (
            select(column)
            .where((column == ecosystem) | ((column > f"{ecosystem}:") & (column < f"{ecosystem};")))
            .limit(1)
        )
        with self._read() as connection:
            return connection.execute(query).first() is not None

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

    def requeue_failed_scans(self, description_prefix: str, now: datetime) -> int:
        table = image_scans
        query = (
            update(table)
            .where(table.c.status == "FAILED", table.c.description.startswith(description_prefix, autoescape=True))
            .values(
                status="PENDING",
                description="The scan is waiting to start.",
                requested_at=now,
                completed_at=None,
                findings=None,
                claimed_by=None,
                claim_expires_at=None,
            )
        )
        with self._write() as connection:
            return int(connection.execute(query).rowcount)

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
