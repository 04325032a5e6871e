"""Online garbage collection: no read-only window, a grace period protects work in flight.

Mark and sweep, with the metadata store as the mark: a blob stored in a key domain is garbage when no
repository of that domain links it and none stores a manifest under its digest (each domain is swept on its
own: a copy under key A is not kept alive by a repository on key B). Each step only touches what is older
than the grace period, so an upload or a manifest put in progress (whose blobs were linked or written moments
ago) is never robbed. Partial files that failed writes (a full disk) and killed processes left in a store are
swept the same way once older than the grace period.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Final

from dockyard.domain.clock import Clock, utc_now
from dockyard.domain.encryption import key_domain
from dockyard.domain.ports import BlobStores, KeyDomain, MetadataStore

log = logging.getLogger("dockyard.gc")
DEFAULT_GRACE: Final = timedelta(hours=1)
DEFAULT_UPLOAD_TTL: Final = timedelta(days=7)
_BATCH: Final = 500


@dataclass(frozen=True)
class GcReport:
    expired_uploads: int
    unlinked: int
    blob_rows: int
    deleted_blobs: int
    kept_blobs: int
    leftover_files: int = 0  # partial files of failed writes (a full disk) and of killed processes


class GarbageCollector:
    def __init__(
        self,
        metadata: MetadataStore,
        blobs: BlobStores,
        clock: Clock = utc_now,
        grace: timedelta = DEFAULT_GRACE,
        upload_ttl: timedelta = DEFAULT_UPLOAD_TTL,
    ) -> None:
        self.metadata = metadata
        self.blobs = blobs
        self.clock = clock
        self.grace = grace
        self.upload_ttl = upload_ttl

    def run(self, dry_run: bool = False) -> GcReport:
        now = self.clock()
        expired = self.metadata.expired_uploads(now - self.upload_ttl)
        unlinked = blob_rows = 0
        if not dry_run:
            for session in expired:
                repository = self.metadata.get_repository_by_id(session.repository_id)
                domain = KeyDomain() if repository is None else key_domain(repository.settings)
                self.blobs.store(domain).abort_upload(session.id)
                self.metadata.delete_upload(session.id)
            unlinked = self.metadata.delete_unreferenced_links(now - self.grace)
            blob_rows = self.metadata.delete_orphan_blob_rows(now - self.grace)
        deleted = kept = leftovers = 0
        for domain in self.blobs.domains():
            swept = self._sweep(domain, now - self.grace, dry_run)
            deleted, kept = deleted + swept[0], kept + swept[1]
            if not dry_run:
                leftovers += self.blobs.sweep_leftovers(domain, now - self.grace, self._is_live_upload)
        report = GcReport(len(expired), unlinked, blob_rows, deleted, kept, leftovers)
        log.info("garbage collection: %s", report)
        return report

    def _is_live_upload(self, upload_id: str) -> bool:
        return self.metadata.get_upload(upload_id) is not None

    def _sweep(self, domain: KeyDomain, written_before: datetime, dry_run: bool) -> tuple[int, int]:
        """Delete a domain's stored blobs that its repositories no longer need, written before the grace."""
        deleted = kept = 0
        store = self.blobs.store(domain)
        candidates = ((d, w) for d, w in store.stored_blobs() if w < written_before)
        while batch := list(islice(candidates, _BATCH)):
            before = written_before if dry_run else None
            needed = self.metadata.referenced_digests((d for d, _ in batch), before, domain)
            for digest, _ in batch:
                if digest in needed:
                    kept += 1
                    continue
                if not dry_run:
                    store.delete_blob(digest)
                deleted += 1
        return deleted, kept
