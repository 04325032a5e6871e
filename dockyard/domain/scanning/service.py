"""Scanning as a service: the advisory database in the metadata store, the scan queue, scanning stored images.

Scans never run in the push request: a push (or StartImageScan) queues one, and a background worker claims
queued scans from the metadata store (any node may), streams the image's layers from the blob store through
`read_inventory`, matches the packages against the stored advisories and records ECR-shaped findings.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import uuid
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final

from dockyard.domain.clock import Clock, utc_now
from dockyard.domain.errors import DockyardError, LimitExceeded
from dockyard.domain.images import Registry
from dockyard.domain.manifests import ParsedManifest, parse_manifest
from dockyard.domain.names import Digest
from dockyard.domain.ports import MetadataStore, Repository, ScanRecord, VulnerabilityEntry
from dockyard.domain.registries import SCANNING, Registries
from dockyard.domain.repositories import wildcard_matches
from dockyard.domain.scanning.errors import ScanFailed
from dockyard.domain.scanning.inventory import Package, read_inventory
from dockyard.domain.scanning.matching import ScanFindings, match_packages
from dockyard.domain.scanning.osv import Ecosystem, OsvFormatError, OsvRecord, parse_record

log = logging.getLogger("dockyard.scanning")
IMPORT_BATCH: Final = 1000
MAX_RECORD_BYTES: Final = 8 * 1024 * 1024
SCAN_CLAIM: Final = timedelta(minutes=15)
SCANS_PER_IMAGE_PER_DAY: Final = 1  # ECR's basic-scanning quota for StartImageScan
SCAN_QUOTA_EXCEEDED: Final = "The scan quota per image has been exceeded. Wait and try again."  # ECR's words
INCOMPLETE: Final = "The scan is incomplete: no advisory database for ecosystem"
UPDATE_HINT: Final = "run `dockyard scan-db update` (or `dockyard scan-db import`), then scan again"
_LAYER_HINTS: Final = ("tar", "layer")


@dataclass(frozen=True)
class ImportReport:
    source: str
    written: int
    unchanged: int
    rejected: int


class VulnerabilityDatabase:
    """OSV advisories kept in the metadata store, indexed by (ecosystem, package name)."""

    def __init__(self, store: MetadataStore, clock: Clock = utc_now) -> None:
        self.store = store
        self.clock = clock

    def import_zip(self, path: Path, source_name: str | None = None) -> ImportReport:
        """Import an OSV `all.zip`; records whose `modified` stamp is unchanged are skipped (incremental).

        The whole archive is verified first, so a truncated or corrupt one is refused with nothing written
        and the database stays as it was.
        """
        self._verify(path)
        written = unchanged = rejected = 0
        batch: list[tuple[dict[str, Any], OsvRecord]] = []
        for document, record in self._records(path):
            if record is None:
                rejected += 1
                continue
            batch.append((document, record))
            if len(batch) >= IMPORT_BATCH:
                done, same = self._store(batch)
                written, unchanged, batch = written + done, unchanged + same, []
        done, same = self._store(batch)
        written, unchanged = written + done, unchanged + same
        name = source_name or path.name
        self.store.record_vulnerability_source(name, self.clock(), written + unchanged)
        return ImportReport(name, written, unchanged, rejected)

    @staticmethod
    def _verify(path: Path) -> None:
        """Read every member `_records` will read to its end, which checks its CRC-32 against the directory."""
        try:
            with zipfile.ZipFile(path) as archive:
                for member in archive.infolist():
                    if member.is_dir() or not member.filename.endswith(".json") or member.file_size > MAX_RECORD_BYTES:
                        continue
                    with archive.open(member) as stream:
                        read = 0
                        while chunk := stream.read(1 << 20):
                            read += len(chunk)
                            if read > member.file_size:  # a member that lies about its size (a zip bomb)
                                raise zipfile.BadZipFile(f"{member.filename} holds more than it declares")
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as exc:
            raise ScanFailed(f"{path} is not a readable OSV zip archive: {exc}") from None

    def _records(self, path: Path) -> Iterator[tuple[dict[str, Any], OsvRecord | None]]:
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ScanFailed(f"{path} is not a readable OSV zip archive: {exc}") from None
        with archive:
            for member in archive.infolist():
                if member.is_dir() or not member.filename.endswith(".json") or member.file_size > MAX_RECORD_BYTES:
                    continue
                try:
                    document = json.loads(archive.read(member))
                    yield document, parse_record(document)
                except (ValueError, OsvFormatError) as exc:
                    log.warning("skipping %s in %s: %s", member.filename, path, exc)
                    yield {}, None

    def _store(self, batch: list[tuple[dict[str, Any], OsvRecord]]) -> tuple[int, int]:
        known = self.store.vulnerability_modified(record.id for _, record in batch)
        fresh = [(doc, rec) for doc, rec in batch if known.get(rec.id) != rec.modified]
        entries = [
            VulnerabilityEntry(
                record.id,
                record.modified,
                json.dumps(document, separators=(",", ":")),
                tuple(sorted({(a.package.ecosystem, a.package.normalized_name) for a in record.affected})),
            )
            for document, record in fresh
            if not record.withdrawn
        ]
        return self.store.store_vulnerabilities(entries), len(batch) - len(fresh)

    def lookup(self) -> Callable[[str, str], tuple[OsvRecord, ...]]:
        """A lookup for one scan: each (ecosystem, package) is read and parsed once."""
        cache: dict[tuple[str, str], tuple[OsvRecord, ...]] = {}
        from dockyard.domain.scanning.osv import normalize_name

        def find(ecosystem: str, name: str) -> tuple[OsvRecord, ...]:
            key = (ecosystem, normalize_name(ecosystem, name))
            if key not in cache:
                cache[key] = tuple(parse_record(json.loads(d)) for d in self.store.vulnerability_documents(*key))
            return cache[key]

        return find

    def missing_ecosystems(self, ecosystems: Iterable[str]) -> set[str]:
        """The OSV ecosystems (release qualifiers aside) the database holds no advisory about."""
        return {name for name in set(ecosystems) if not self.store.has_vulnerabilities_for(name)}

    def updated_at(self) -> datetime | None:
        sources = self.store.vulnerability_sources()
        return max((imported for _, imported, _ in sources), default=None)


def _filter_matches(pattern: str, name: str) -> bool:
    """A scanning repository filter: with `*`, a wildcard match of the whole name; without, a substring."""
    return wildcard_matches(pattern, name) if "*" in pattern else pattern in name


class IteratorReader(io.RawIOBase):
    """A file object over an iterator of byte chunks: how blob-store streams feed `tarfile`."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            self._buffer = next(self._chunks, b"")
            if not self._buffer:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


@dataclass(frozen=True)
class AppliedScanning:
    """The scanning a repository gets: its effective scan on push, frequency and the rule filters that apply."""

    scan_on_push: bool
    frequency: str  # SCAN_ON_PUSH, CONTINUOUS_SCAN or MANUAL
    filters: tuple[str, ...]


class ImageScanner:
    def __init__(
        self, registry: Registry, database: VulnerabilityDatabase, clock: Clock = utc_now, owner: str | None = None
    ) -> None:
        self.registry = registry
        self.metadata = registry.metadata
        self.database = database
        self.clock = clock
        self.owner = owner or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.registries = Registries(registry.metadata, clock)
        registry.push_listeners.append(self.on_push)

    # ------------------------------------------------------------------------------------ queueing

    def on_push(self, repository: Repository, manifest: ParsedManifest) -> None:
        """Queue a scan of a pushed image when the repository or the registry's rules ask for scan on push."""
        if not manifest.is_index and self.scans_on_push(repository):
            self.metadata.request_scan(repository.id, manifest.digest, self.clock())

    def scans_on_push(self, repository: Repository) -> bool:
        if repository.settings.scan_on_push:
            return True
        ref = repository.ref
        configuration = self.registries.configuration(ref.account_id, ref.region, SCANNING, {"rules": []})
        return any(
            rule.get("scanFrequency") in ("SCAN_ON_PUSH", "CONTINUOUS_SCAN")
            and any(_filter_matches(f.get("filter", ""), ref.name) for f in rule.get("repositoryFilters", []))
            for rule in configuration.get("rules", [])
        )

    def applied_configuration(self, repository: Repository) -> AppliedScanning:
        """BatchGetRepositoryScanningConfiguration: the registry rule that applies to the repository, continuous
        scanning before scan on push (as ECR), with the filters of that rule that match its name; the
        repository's own scanOnPush flag when no rule does."""
        ref = repository.ref
        configuration = self.registries.configuration(ref.account_id, ref.region, SCANNING, {"rules": []})
        for frequency in ("CONTINUOUS_SCAN", "SCAN_ON_PUSH"):
            for rule in configuration.get("rules", []):
                if rule.get("scanFrequency") != frequency:
                    continue
                matching = [
                    str(f.get("filter", ""))
                    for f in rule.get("repositoryFilters", [])
                    if _filter_matches(f.get("filter", ""), ref.name)
                ]
                if matching:
                    return AppliedScanning(True, frequency, tuple(matching))
        if repository.settings.scan_on_push:
            return AppliedScanning(True, "SCAN_ON_PUSH", ())
        return AppliedScanning(False, "MANUAL", ())

    def start(self, repository: Repository, digest: Digest) -> ScanRecord:
        """StartImageScan: at most one scan per image per day, as ECR."""
        now = self.clock()
        previous = self.metadata.get_scans(repository.id, [digest]).get(digest)
        # A FAILED scan gave no verdict on the image (an advisory database missing, a bug, unreadable data):
        # it does not use the day's quota, so the rescan after `dockyard scan-db update` runs at once. A scan
        # still queued or running has used it, as in ECR.
        if previous is not None and previous.status != "FAILED" and now - previous.requested_at < timedelta(days=1):
            log.info(
                "StartImageScan of %s in %s refused: a scan was requested at %s (%s)",
                digest,
                repository.ref.name,
                previous.requested_at.isoformat(),
                previous.status,
            )
            raise LimitExceeded(SCAN_QUOTA_EXCEEDED)
        self.metadata.request_scan(repository.id, digest, now)
        return ScanRecord("PENDING", "The scan is waiting to start.", now, None, None, None)

    def rescan_incomplete(self) -> int:
        """After an import: queue again the scans that were FAILED for want of an ecosystem's advisories."""
        return self.metadata.requeue_failed_scans(INCOMPLETE, self.clock())

    def work_once(self) -> bool:
        """Claim and run one queued scan; False when the queue is empty."""
        now = self.clock()
        claimed = self.metadata.claim_scan(self.owner, now + SCAN_CLAIM, now)
        if claimed is None:
            return False
        repository_id, digest = claimed
        self.metadata.finish_scan(repository_id, digest, self._scan(repository_id, digest))
        return True

    # ------------------------------------------------------------------------------------ scanning

    def _scan(self, repository_id: int, digest: Digest) -> ScanRecord:
        requested = self.clock()
        try:
            findings = self.scan_image(repository_id, digest)
        except ScanFailed as error:
            status = "UNSUPPORTED_IMAGE" if error.detail == "unsupported" else "FAILED"
            return ScanRecord(status, error.message, requested, self.clock(), None, self.database.updated_at())
        except DockyardError as error:
            return ScanRecord("FAILED", error.message, requested, self.clock(), None, self.database.updated_at())
        except Exception:  # a bug or an input no reader anticipated: fail the scan, never leave it in progress
            log.exception("scan of %s failed unexpectedly", digest)
            description = "The scan failed: the image could not be analysed."
            return ScanRecord("FAILED", description, requested, self.clock(), None, self.database.updated_at())
        document = {**findings.to_ecr(), "scannedPackages": findings.scanned_packages}
        if findings.uncovered:
            # Not a clean bill of health: FAILED (no findings are served for it, as ECR) names what is missing.
            document["notEvaluated"] = dict(findings.uncovered)
            return ScanRecord(
                "FAILED",
                incomplete_description(findings),
                requested,
                self.clock(),
                json.dumps(document),
                self.database.updated_at(),
            )
        description = "The scan was completed successfully."
        if findings.unscannable:
            description += f" {len(findings.unscannable)} package(s) could not be evaluated."
        return ScanRecord(
            "COMPLETE", description, requested, self.clock(), json.dumps(document), self.database.updated_at()
        )

    def scan_image(self, repository_id: int, digest: Digest) -> ScanFindings:
        record = self.metadata.get_manifest(repository_id, digest)
        repository = self.metadata.get_repository_by_id(repository_id)
        if record is None or repository is None:
            raise ScanFailed("the image no longer exists", detail="unsupported")
        store = self.registry.store_of(repository)
        manifest = parse_manifest(self.registry.manifest_content(repository, record), record.media_type, named=True)
        if manifest.is_index:
            raise ScanFailed("Image lists are not scanned; scan each image of the list.", detail="unsupported")
        layers = [d for d in manifest.blobs[1:] if any(hint in d.media_type for hint in _LAYER_HINTS)]
        if not layers:
            raise ScanFailed(f"{manifest.config_media_type} artifacts have no layers to scan", detail="unsupported")
        streams = (io.BufferedReader(IteratorReader(store.read_blob(d.digest)), 1 << 20) for d in layers)
        return self.scan_layers(streams)

    def scan_layers(self, layers: Iterable[IO[bytes]]) -> ScanFindings:
        inventory = read_inventory(layers)
        if inventory.os is None and not inventory.packages:
            raise ScanFailed(
                "No operating system release file and no package database were found in the image.",
                detail="unsupported",
            )
        return self.match(inventory.packages)

    def match(self, packages: Sequence[Package]) -> ScanFindings:
        """Match the packages of the ecosystems the database covers; the others are counted in `uncovered`."""
        families = Counter(Ecosystem.parse(p.ecosystem).name for p in packages if p.ecosystem is not None)
        missing = self.database.missing_ecosystems(families)
        covered = [p for p in packages if p.ecosystem is None or Ecosystem.parse(p.ecosystem).name not in missing]
        findings = match_packages(covered, self.database.lookup())
        return replace(findings, uncovered=tuple(sorted((name, families[name]) for name in missing)))


def _packages(count: int) -> str:
    return f"{count} package{'' if count == 1 else 's'}"


def incomplete_description(findings: ScanFindings) -> str:
    """Why a scan is no verdict: the ecosystems without advisories, and what the covered rest showed."""
    missing = ", ".join(f"{name} ({_packages(count)} not evaluated)" for name, count in findings.uncovered)
    plural = "s" if len(findings.uncovered) > 1 else ""
    text = f"{INCOMPLETE}{plural} {missing}; {UPDATE_HINT}."
    evaluated = findings.scanned_packages + len(findings.unscannable)
    if evaluated:
        counts = ", ".join(f"{level} {count}" for level, count in findings.severity_counts.items())
        found = f"{len(findings.findings)} finding(s) ({counts})" if findings.findings else "no findings"
        text += f" Evaluated: {_packages(evaluated)} of the other ecosystems, {found}."
        if findings.unscannable:
            text += f" {len(findings.unscannable)} package(s) could not be evaluated."
    return text
