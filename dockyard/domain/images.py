"""Images: uploads, blob commit, manifest put, tags, deletes, mounts and referrers.

The `/v2` routes and the ECR layer/image operations are two doors onto this module; nothing about an image
is implemented twice. Nothing here knows HTTP: adapters hand in parsed values and stream bytes through the
`BlobAppender` this module gives them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from dockyard.domain.account_settings import AccountSettings
from dockyard.domain.cache import ByteLru
from dockyard.domain.clock import Clock, utc_now
from dockyard.domain.encryption import RepositoryKeys, key_domain
from dockyard.domain.errors import (
    BlobUnknown,
    BlobUploadUnknown,
    DigestInvalid,
    ImageArchived,
    InsufficientStorage,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestReferenced,
    ManifestUnknown,
    PaginationNumberInvalid,
    RangeInvalid,
    ReferencedImagesNotFound,
    SizeInvalid,
)
from dockyard.domain.manifests import OCI_INDEX, ParsedManifest, parse_manifest
from dockyard.domain.names import Digest, RepositoryRef, check_tag, is_digest_reference, is_tag, parse_decimal
from dockyard.domain.ports import (
    BlobStore,
    BlobStores,
    ManifestRecord,
    ManifestReference,
    MetadataStore,
    Repository,
    UploadSession,
    UploadWriter,
)
from dockyard.domain.repositories import Repositories, immutability_guard

log = logging.getLogger("dockyard.images")
MAX_PAGE: Final = 1000
PULL_RECORD_INTERVAL: Final = timedelta(hours=1)
# Repositories an anonymous mount looks at: a bound on the authorisation checks one POST can cost. Past it the
# client uploads the blob, which is always a correct answer to a mount.
MOUNT_CANDIDATES: Final = 100
MANIFEST_CACHE_BYTES: Final = 64 * 1024 * 1024
# Layers that live elsewhere by design (Windows foreign layers): never uploaded, so never required.
_NON_DISTRIBUTABLE_MARKERS: Final = ("foreign", "nondistributable")


@dataclass(frozen=True)
class Removed:
    """What a manifest delete removed: the image's digest and the tags that went with it (all of them by
    digest, the one named by tag), for the audit line."""

    digest: Digest
    tags: tuple[str, ...]

    def response_elements(self) -> dict[str, Any]:
        """CloudTrail's shape for BatchDeleteImage: one image id per tag, or the bare digest."""
        ids = [{"imageDigest": str(self.digest), "imageTag": tag} for tag in self.tags]
        return {"imageIds": ids or [{"imageDigest": str(self.digest)}]}


@dataclass(frozen=True)
class Page:
    items: list[str]
    has_more: bool


@dataclass(frozen=True)
class StoredManifest:
    record: ManifestRecord
    content: bytes


@dataclass(frozen=True)
class PushedManifest:
    digest: Digest
    subject: Digest | None
    tags: tuple[str, ...] = ()  # the tags the push set


def page_size(requested: str | None) -> int:
    """`n` of tag and catalog listings: a non-negative integer, clamped to MAX_PAGE."""
    if requested is None or requested == "":
        return MAX_PAGE
    number = parse_decimal(requested)
    if number is None:
        raise PaginationNumberInvalid(f"n must be a non-negative integer of at most 19 digits, not {requested[:40]!r}")
    return min(number, MAX_PAGE)


class RunningHashes:
    """sha256 states of uploads in progress, kept per process as an optimisation only.

    hashlib cannot serialise a hash state, so another process (or this one after a restart) that lacks the
    state for an upload recomputes it from the stored bytes; correctness never depends on this cache.
    """

    def __init__(self) -> None:
        self._states: dict[str, tuple[int, Any]] = {}
        self._lock = threading.Lock()

    def take(self, upload_id: str, size: int) -> Any | None:
        with self._lock:
            entry = self._states.pop(upload_id, None)
        if entry is None or entry[0] != size:
            return None
        return entry[1]

    def put(self, upload_id: str, size: int, hasher: Any) -> None:
        with self._lock:
            self._states[upload_id] = (size, hasher)

    def forget(self, upload_id: str) -> None:
        with self._lock:
            self._states.pop(upload_id, None)


class BlobAppender:
    """Receives one request's worth of upload bytes: hashes while writing, then records the new size."""

    def __init__(self, upload_id: str, writer: UploadWriter, hasher: Any, size: int, hashes: RunningHashes):
        self.upload_id = upload_id
        self.size = size
        self._writer = writer
        self._hasher = hasher
        self._hashes = hashes

    def write(self, data: bytes) -> None:
        self._hasher.update(data)
        self._writer.write(data)
        self.size += len(data)

    def finish(self) -> int:
        self._writer.close()
        self._hashes.put(self.upload_id, self.size, self._hasher)
        return self.size

    def abandon(self) -> None:
        """Keep what was written (the upload stays resumable) but forget the hash state."""
        self._writer.close()
        self._hashes.forget(self.upload_id)


class Registry:
    """The image model behind both doors."""

    def __init__(
        self,
        metadata: MetadataStore,
        blobs: BlobStores,
        clock: Clock = utc_now,
        create_on_push: bool = True,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        repository_keys: RepositoryKeys | None = None,
    ) -> None:
        self.metadata = metadata
        self.blobs = blobs
        self.clock = clock
        self.new_id = new_id
        self.hashes = RunningHashes()
        # Pull times being written: concurrent pulls of one image wait for no second write of the same hour.
        self._recording: set[tuple[RepositoryRef, Digest]] = set()
        self._recording_lock = threading.Lock()
        self.manifest_cache = ByteLru(MANIFEST_CACHE_BYTES)
        # Told of every manifest stored, after it is stored (e.g. to queue a scan); must be quick.
        self.push_listeners: list[Callable[[Repository, ParsedManifest], None]] = []
        self.repositories = Repositories(metadata, clock, create_on_push, repository_keys)
        self.account_settings = AccountSettings(metadata, clock)  # BLOB_MOUNTING, pull-time update exclusions

    # ----------------------------------------------------------------------------------- repositories

    def repository(self, ref: RepositoryRef) -> Repository:
        return self.repositories.get(ref)

    def repository_for_push(self, ref: RepositoryRef) -> Repository:
        return self.repositories.for_push(ref)

    def store_of(self, repository: Repository) -> BlobStore:
        """Where the repository's content lives: its key domain's store, once its key is known usable."""
        domain = key_domain(repository.settings)
        self.blobs.check_usable(domain)
        return self.blobs.store(domain)

    def blob_store_for(self, ref: RepositoryRef) -> BlobStore:
        """The store to read a blob of `ref` from (the caller checked the blob is linked to it)."""
        return self.store_of(self.repository(ref))

    def catalog(
        self, account_id: str, region: str, after: str | None, limit: int, visible: Callable[[str], bool]
    ) -> Page:
        """Repository names after `after`, only those `visible` says the caller may see."""
        names: list[str] = []
        cursor = after
        while len(names) <= limit:
            batch = self.metadata.list_repository_names(account_id, region, cursor, MAX_PAGE)
            names.extend(name for name in batch if visible(name))
            if len(batch) < MAX_PAGE:
                break
            cursor = batch[-1]
        return Page(names[:limit], len(names) > limit)

    # ----------------------------------------------------------------------------------- blobs

    def blob_size(self, ref: RepositoryRef, digest: Digest) -> int:
        """The size a blob HEAD/GET answers (through the store's pull cache: docs/architecture.md)."""
        size = self.metadata.pull_linked_blob_size(self.repository(ref).id, digest)
        if size is None:
            raise BlobUnknown(f"blob {digest} unknown to repository", detail={"digest": str(digest)})
        return size

    def delete_blob(self, ref: RepositoryRef, digest: Digest) -> None:
        if not self.metadata.unlink_blob(self.repository(ref).id, digest):
            raise BlobUnknown(f"blob {digest} unknown to repository", detail={"digest": str(digest)})

    def mount_blob(self, target: RepositoryRef, digest: Digest, source: RepositoryRef) -> bool:
        """Link a blob another repository holds; False when it cannot be mounted (the caller uploads)."""
        source_repository = self.metadata.get_repository(source)
        if source_repository is None:
            return False
        size = self.metadata.linked_blob_size(source_repository.id, digest)
        if size is None:
            return False
        repository = self.repository_for_push(target)
        if key_domain(repository.settings) != key_domain(source_repository.settings):
            return False  # content never crosses keys: the client uploads it again, encrypted under the target's
        self.store_of(repository)  # a mount into a repository whose key is disabled is refused like an upload
        self.metadata.link_blob(repository.id, digest, size, self.clock())
        return True

    def mount_from_any(self, target: RepositoryRef, digest: Digest, readable: Callable[[RepositoryRef], bool]) -> bool:
        """An anonymous mount (`mount` without `from`): link the blob from a repository of the target's registry
        that holds it and that the caller may read (`readable`); False when there is none (the caller uploads).

        A repository the caller may not read is passed over exactly as one without the blob, so the answer never
        tells whether a blob exists where the caller cannot look."""
        holders = self.metadata.repositories_linking_blob(target.account_id, target.region, digest, MOUNT_CANDIDATES)
        return any(readable(source.ref) and self.mount_blob(target, digest, source.ref) for source in holders)

    # ----------------------------------------------------------------------------------- uploads

    def start_upload(self, ref: RepositoryRef) -> str:
        repository = self.repository_for_push(ref)
        upload_id = self.new_id()
        store = self.store_of(repository)
        store.start_upload(upload_id)
        try:
            self.metadata.create_upload(UploadSession(upload_id, repository.id, self.clock()))
        except BaseException:
            store.abort_upload(upload_id)  # e.g. a full database: no session will ever name this file
            raise
        return upload_id

    def upload_size(self, ref: RepositoryRef, upload_id: str) -> int:
        _, repository = self._session(ref, upload_id)
        size = self.store_of(repository).upload_size(upload_id)
        if size is None:
            raise BlobUploadUnknown(detail={"upload": upload_id})
        return size

    def begin_append(self, ref: RepositoryRef, upload_id: str, start: int | None) -> BlobAppender:
        """Open the upload for one chunk; `start` is the chunk's first byte when the client said it."""
        store = self.store_of(self._session(ref, upload_id)[1])  # append_upload checks the bytes exist
        # One appender per upload at a time: the store's writer is exclusive and the size is read while it is
        # held, so two requests claiming the same Content-Range cannot both pass the check.
        writer = store.append_upload(upload_id)
        size = self.upload_size(ref, upload_id)
        if start is not None and start != size:
            writer.close()
            raise RangeInvalid(
                f"chunk starts at byte {start} but {size} bytes have been received",
                detail={"received": size},
            )
        hasher = self.hashes.take(upload_id, size) or self._rehash(store, upload_id, "sha256")
        return BlobAppender(upload_id, writer, hasher, size, self.hashes)

    def complete_upload(self, ref: RepositoryRef, upload_id: str, digest: Digest) -> int:
        session, repository = self._session(ref, upload_id)
        store = self.store_of(repository)
        size = self.upload_size(ref, upload_id)
        cached = self.hashes.take(upload_id, size)  # always taken: a state left behind would go stale
        hasher = cached if digest.algorithm == "sha256" else None
        if hasher is None:
            hasher = self._rehash(store, upload_id, digest.algorithm)
        if hasher.hexdigest() != digest.hex:
            self.cancel_upload(ref, upload_id)
            raise DigestInvalid(f"uploaded content does not match digest {digest}", detail={"digest": str(digest)})
        store.commit_upload(upload_id, digest)
        self.metadata.link_blob(session.repository_id, digest, size, self.clock())
        self.metadata.delete_upload(upload_id)
        return size

    def cancel_upload(self, ref: RepositoryRef, upload_id: str) -> None:
        _, repository = self._session(ref, upload_id)
        self.hashes.forget(upload_id)
        self.blobs.store(key_domain(repository.settings)).abort_upload(upload_id)  # works whatever the key's state
        self.metadata.delete_upload(upload_id)

    def check_declared_size(self, declared: int | None, received: int) -> None:
        if declared is not None and declared != received:
            raise SizeInvalid(f"Content-Length says {declared} bytes but {received} arrived")

    def _session(self, ref: RepositoryRef, upload_id: str) -> tuple[UploadSession, Repository]:
        session = self.metadata.get_upload(upload_id)
        repository = self.metadata.get_repository(ref)
        if session is None or repository is None or session.repository_id != repository.id:
            raise BlobUploadUnknown(detail={"upload": upload_id})
        return session, repository

    @staticmethod
    def _rehash(store: BlobStore, upload_id: str, algorithm: str) -> Any:
        hasher = hashlib.new(algorithm)
        for chunk in store.read_upload(upload_id):
            hasher.update(chunk)
        return hasher

    # ----------------------------------------------------------------------------------- manifests

    def put_manifest(
        self, ref: RepositoryRef, reference: str, raw: bytes, content_type: str | None, tag_params: Sequence[str] = ()
    ) -> PushedManifest:
        """The registry door's manifest PUT: by tag or by digest, plus any `tag=` parameters (all tags are set in
        one transaction); re-pushing identical bytes is a no-op.

        A manifest pushed by digest is stored under that digest's algorithm, and so are its tags: a sha512 push
        is reported, resolved and deleted by its sha512 digest."""
        by_digest = is_digest_reference(reference)
        expected = Digest.parse(reference) if by_digest else None
        named = [] if by_digest else [check_tag(reference)]
        tags = list(dict.fromkeys([*named, *(check_tag(tag) for tag in tag_params)]))
        manifest = parse_manifest(raw, content_type, expected.algorithm if expected else "sha256")
        if expected is not None and expected != manifest.digest:
            raise DigestInvalid(
                f"manifest digest {manifest.digest} does not match {expected}", detail={"digest": reference}
            )
        return self.store_manifest(self.repository_for_push(ref), manifest, raw, tags)

    def store_manifest(
        self, repository: Repository, manifest: ParsedManifest, raw: bytes, tags: list[str]
    ) -> PushedManifest:
        """Store a parsed manifest under `tags`, atomically, refusing immutable tag moves and missing content."""
        self._check_sizes(repository, manifest)
        record = self._record(repository, manifest)
        if self.metadata.get_manifest(repository.id, manifest.digest) is None:
            count = self.metadata.count_manifests(repository.id)
            self.repositories.quotas.check(repository.ref.account_id, "images-per-repository", count)
        self.store_of(repository).put_blob(manifest.digest, raw)
        missing = self.metadata.put_manifest(
            repository.id, record, _references(manifest), tags, immutability_guard(repository)
        )
        if missing:
            _raise_missing(manifest, missing)
        for listener in self.push_listeners:
            listener(repository, manifest)
        subject = manifest.subject.digest if manifest.subject else None
        return PushedManifest(manifest.digest, subject, tuple(tags))

    def manifest(self, ref: RepositoryRef, reference: str) -> ManifestRecord:
        """The record a pull serves (through the store's pull cache: docs/architecture.md)."""
        repository = self.repository(ref)
        if is_digest_reference(reference):
            record = self.metadata.pull_manifest(repository.id, Digest.parse(reference))
        else:
            # A tag that could never have been pushed names nothing: unknown (404), as the spec's pull wants.
            record = self.metadata.pull_manifest(repository.id, reference) if is_tag(reference) else None
        if record is None:
            raise ManifestUnknown(f"manifest {reference!r} unknown", detail={"reference": reference})
        if record.storage_class == "ARCHIVE":
            raise ImageArchived(
                f"image {record.digest} in {ref.name} is archived; restore it with "
                "`aws ecr update-image-storage-class --target-storage-class STANDARD` before pulling it",
                detail={"digest": str(record.digest)},
            )
        return record

    @staticmethod
    def pull_needs_recording(last: datetime | None, now: datetime) -> bool:
        """lastRecordedPullTime is refreshed at most hourly per image, so pulls stay (nearly) read-only and
        cheap; ECR itself refreshes it only daily."""
        return last is None or now - last >= PULL_RECORD_INTERVAL

    def note_pull(
        self, ref: RepositoryRef, digest: Digest, last: datetime | None, now: datetime, puller: str | None = None
    ) -> None:
        """Record a pull by `puller` (a principal ARN) when it is due (at most hourly per image), unless the
        registry excludes the puller (a cached lookup). The write is awaited by the pull that makes it, so
        DescribeImages shows a pull at once; pulls of the image meanwhile do not write it again."""
        if not self.pull_needs_recording(last, now):
            return
        if self.account_settings.pull_time_excluded(ref.account_id, ref.region, puller):
            return
        key = (ref, digest)
        with self._recording_lock:
            if key in self._recording:
                return  # another pull is writing this hour's time right now
            self._recording.add(key)
        try:
            repository = self.metadata.get_repository(ref)
            if repository is not None:
                self.metadata.record_pull(repository.id, digest, now)
        except InsufficientStorage as error:
            # A pull is a read: a full disk must not fail it. The next pull records the time again.
            log.warning("the pull of %s in %s was not recorded: %s", digest, ref, error.message)
        finally:
            with self._recording_lock:
                self._recording.discard(key)

    def manifest_content(self, repository: Repository, record: ManifestRecord) -> bytes:
        store = self.store_of(repository)
        content = self.manifest_cache.get(record.digest)
        if content is None:
            content = b"".join(store.read_blob(record.digest))
            self.manifest_cache.put(record.digest, content)
        return content

    def cached_manifest_content(self, repository: Repository, record: ManifestRecord) -> bytes | None:
        """The manifest's bytes when they are in memory (manifests are immutable: cached by digest), once the
        repository's key is known usable (a disabled key hides cached content too)."""
        content = self.manifest_cache.get(record.digest)
        if content is not None:
            self.blobs.check_usable(key_domain(repository.settings))
        return content

    def delete_manifest(self, ref: RepositoryRef, reference: str) -> Removed:
        repository = self.repository(ref)
        if not is_digest_reference(reference):
            tagged = self.metadata.resolve_tag(repository.id, reference) if is_tag(reference) else None
            if tagged is None or not self.metadata.delete_tag(repository.id, reference):
                raise ManifestUnknown(f"tag {reference!r} unknown", detail={"tag": reference})
            return Removed(tagged.digest, (reference,))
        digest = Digest.parse(reference)
        parents = self.metadata.manifest_parents(repository.id, digest)
        if parents:
            raise ManifestReferenced(
                f"manifest {digest} is listed by index {parents[0]}; delete the index first",
                detail={"digest": str(digest), "referencedBy": [str(p) for p in parents]},
            )
        tags = self.metadata.tags_of(repository.id, digest)  # they go with it: the audit line names them
        if not self.metadata.delete_manifest(repository.id, digest):
            raise ManifestUnknown(f"manifest {digest} unknown", detail={"digest": reference})
        return Removed(digest, tuple(tags))

    def tags(self, ref: RepositoryRef, after: str | None, limit: int) -> Page:
        names = self.metadata.list_tags(self.repository(ref).id, after, limit + 1)
        return Page(names[:limit], len(names) > limit)

    def referrers(self, ref: RepositoryRef, subject: Digest, artifact_type: str | None) -> dict[str, Any]:
        """The referrers index of `subject`: 200 with an empty list even when nothing refers to it."""
        repository = self.metadata.get_repository(ref)
        records = [] if repository is None else self.metadata.list_referrers(repository.id, subject, artifact_type)
        return {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [_referrer_entry(record) for record in records],
        }

    def copy_image(
        self, source: Repository, digest: Digest, tags: list[str], destination: Repository
    ) -> PushedManifest:
        """Put image `digest` of `source` into `destination` under `tags` as a push would, an index's child
        manifests first (replication). Blobs are linked within one key domain and re-encrypted into the
        destination's across domains (`copy_blob`). Tags already on the image there are left alone, so a
        repeated copy changes nothing, even in an immutable repository."""
        record = self.metadata.get_manifest(source.id, digest)
        if record is None:
            raise ManifestUnknown(f"manifest {digest} unknown", detail={"digest": str(digest)})
        raw = self.manifest_content(source, record)
        manifest = parse_manifest(raw, record.media_type, digest.algorithm, named=True)  # stored: its type is known
        for child in manifest.children:
            if self.metadata.get_manifest(destination.id, child.digest) is None:
                self.copy_image(source, child.digest, [], destination)
        for reference in _references(manifest):
            if not reference.is_manifest:  # one the source lacks is reported missing by store_manifest
                self.copy_blob(source, reference.digest, destination)
        current = {tag: self.metadata.resolve_tag(destination.id, tag) for tag in tags}
        new_tags = [tag for tag, found in current.items() if found is None or found.digest != digest]
        if not new_tags and self.metadata.get_manifest(destination.id, digest) is not None:
            return PushedManifest(digest, record.subject)  # already there: no second push (nor scan)
        return self.store_manifest(destination, manifest, raw, new_tags)

    def copy_blob(self, source: Repository, digest: Digest, destination: Repository) -> None:
        """Give `destination` a blob of `source`: a link within one key domain; across domains the bytes are
        streamed through a fresh upload into the destination's store (decrypted under the source's key,
        encrypted under the destination's) and verified against the digest before they are published."""
        if self.metadata.linked_blob_size(destination.id, digest) is not None:
            return
        if self.mount_blob(destination.ref, digest, source.ref):
            return
        size = self.metadata.linked_blob_size(source.id, digest)
        if size is None:
            return
        reading, writing = self.store_of(source), self.store_of(destination)
        upload_id = self.new_id()
        writing.start_upload(upload_id)
        self.metadata.create_upload(UploadSession(upload_id, destination.id, self.clock()))  # GC finds leftovers
        hasher = hashlib.new(digest.algorithm)
        writer = writing.append_upload(upload_id)
        try:
            try:
                for chunk in reading.read_blob(digest):
                    hasher.update(chunk)
                    writer.write(chunk)
            except BaseException:
                writer.discard()
                raise
            writer.close()
            if hasher.hexdigest() != digest.hex:
                raise DigestInvalid(
                    f"stored content of {digest} does not match its digest", detail={"digest": str(digest)}
                )
            writing.commit_upload(upload_id, digest)
        except BaseException:
            writing.abort_upload(upload_id)
            self.metadata.delete_upload(upload_id)
            raise
        self.metadata.link_blob(destination.id, digest, size, self.clock())
        self.metadata.delete_upload(upload_id)

    def _check_sizes(self, repository: Repository, manifest: ParsedManifest) -> None:
        """Each descriptor's size must be the size of the content it names (clients check it on pull, so a wrong
        one would be stored and then fail every pull). Content the repository lacks is reported by the store."""
        references = _references(manifest)
        actual = self.metadata.linked_blob_sizes(repository.id, [r.digest for r in references if not r.is_manifest])
        for child in manifest.children:
            record = self.metadata.get_manifest(repository.id, child.digest)
            if record is not None:
                actual[child.digest] = record.size
        wrong = [
            {"digest": str(d.digest), "size": d.size, "actualSize": actual[d.digest]}
            for d in (*manifest.blobs, *manifest.children)
            if d.digest in actual and actual[d.digest] != d.size
        ]
        if wrong:
            raise ManifestInvalid(
                "descriptor sizes do not match the content: "
                + ", ".join(f"{w['digest']} is {w['actualSize']} bytes, not {w['size']}" for w in wrong),
                items=wrong,
            )

    def _record(self, repository: Repository, manifest: ParsedManifest) -> ManifestRecord:
        return ManifestRecord(
            digest=manifest.digest,
            media_type=manifest.media_type,
            size=manifest.size,
            artifact_type=manifest.artifact_type,
            subject=manifest.subject.digest if manifest.subject else None,
            annotations=manifest.annotations,
            pushed_at=self.clock(),
            image_size=self._image_size(repository, manifest),
            config_media_type=manifest.config_media_type,
        )

    def _image_size(self, repository: Repository, manifest: ParsedManifest) -> int:
        """ECR's imageSizeInBytes: the layers of an image; for an index, its largest image."""
        if not manifest.is_index:
            return sum(layer.size for layer in manifest.blobs[1:])
        children = [self.metadata.get_manifest(repository.id, child.digest) for child in manifest.children]
        return max((child.image_size for child in children if child is not None), default=0)


def _raise_missing(manifest: ParsedManifest, missing: list[Digest]) -> None:
    children = {child.digest for child in manifest.children}
    missing_children = [d for d in missing if d in children]
    if missing_children:
        raise ReferencedImagesNotFound(
            "manifest references images unknown to the repository: " + ", ".join(map(str, missing_children)),
            items=[{"digest": str(d)} for d in missing_children],
        )
    raise ManifestBlobUnknown(
        "manifest references blobs unknown to the repository: " + ", ".join(map(str, missing)),
        items=[{"digest": str(d)} for d in missing],
    )


def _references(manifest: ParsedManifest) -> list[ManifestReference]:
    blobs = [
        ManifestReference(d.digest, is_manifest=False)
        for d in manifest.blobs
        if not any(marker in d.media_type for marker in _NON_DISTRIBUTABLE_MARKERS)
    ]
    return blobs + [ManifestReference(d.digest, is_manifest=True) for d in manifest.children]


def _referrer_entry(record: ManifestRecord) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "mediaType": record.media_type,
        "digest": str(record.digest),
        "size": record.size,
    }
    if record.artifact_type:
        entry["artifactType"] = record.artifact_type
    if record.annotations:
        entry["annotations"] = record.annotations
    return entry
