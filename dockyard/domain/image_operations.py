"""ECR's image and layer operations (DescribeImages, BatchGetImage, PutImage, UploadLayerPart, …).

They are a second door onto `Registry`: uploads, manifest storage, tags and deletes all go through the same
methods the `/v2` routes use, so an image pushed by skopeo is described here and one put here is pulled by
skopeo.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Final

from dockyard.domain.errors import (
    DockyardError,
    EmptyUpload,
    ImageAlreadyExists,
    ImageDigestDoesNotMatch,
    ImageNotFound,
    InvalidLayerPart,
    InvalidParameter,
    LayerAlreadyExists,
    LayerInaccessible,
    LayersNotFound,
    ManifestBlobUnknown,
    ManifestReferenced,
)
from dockyard.domain.images import Registry
from dockyard.domain.manifests import parse_manifest
from dockyard.domain.names import TAG_RE, Digest, RepositoryRef
from dockyard.domain.ports import ImageRow, ManifestRecord, Repository

log = logging.getLogger("dockyard.images")

# ECR's advertised part size for the layer upload API.
PART_SIZE: Final = 10 * 1024 * 1024


@dataclass(frozen=True)
class ImageId:
    """An `ImageIdentifier` as the caller gave it (strings, unchecked until resolved)."""

    digest: str | None = None
    tag: str | None = None


@dataclass(frozen=True)
class ImageFailure:
    image_id: ImageId
    code: str
    reason: str


@dataclass(frozen=True)
class ResolvedImage:
    image_id: ImageId  # with both digest and tag as ECR echoes them
    row: ImageRow


@dataclass(frozen=True)
class LayerInfo:
    digest: str
    size: int | None  # None: not available in the repository
    media_type: str | None = None  # as a manifest of the repository that lists the layer names it


class ImageOperations:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.metadata = registry.metadata

    # --------------------------------------------------------------------------------------- queries

    def list_images(
        self, ref: RepositoryRef, after: Digest | None, limit: int, tagged: bool | None, inclusive: bool = False
    ) -> list[ImageRow]:
        return self.metadata.list_images(self.registry.repository(ref).id, after, limit, tagged, inclusive)

    def resolve(self, ref: RepositoryRef, ids: list[ImageId]) -> tuple[list[ResolvedImage], list[ImageFailure]]:
        """Find each identified image; problems become per-id failures, as ECR's batch calls report them."""
        repository = self.registry.repository(ref)
        found: list[ResolvedImage] = []
        failures: list[ImageFailure] = []
        for image_id in ids:
            try:
                found.append(self._resolve_one(repository, image_id))
            except _Failure as failure:
                failures.append(ImageFailure(image_id, failure.code, failure.reason))
        return found, failures

    def _resolve_one(self, repository: Repository, image_id: ImageId) -> ResolvedImage:
        if image_id.digest is None and image_id.tag is None:
            raise _Failure("MissingDigestAndTag", "Invalid request parameters: both tag and digest cannot be null")
        digest = _parse_digest(image_id.digest) if image_id.digest is not None else None
        if image_id.tag is not None and not TAG_RE.fullmatch(image_id.tag):
            raise _Failure("InvalidImageTag", f"Invalid image tag: {image_id.tag}")
        if image_id.tag is not None:
            record = self.metadata.resolve_tag(repository.id, image_id.tag)
            if record is None or (digest is not None and record.digest != digest):
                code = "ImageTagDoesNotMatchDigest" if record is not None else "ImageNotFound"
                raise _Failure(code, "Requested image not found")
            digest = record.digest
        assert digest is not None
        rows = self.metadata.get_images(repository.id, [digest])
        if not rows:
            raise _Failure("ImageNotFound", "Requested image not found")
        return ResolvedImage(ImageId(str(digest), image_id.tag), rows[0])

    def describe(self, ref: RepositoryRef, ids: list[ImageId]) -> list[ImageRow]:
        """DescribeImages with imageIds: any unknown image fails the whole call."""
        found, failures = self.resolve(ref, ids)
        if failures:
            raise image_not_found(ref, failures[0])
        unique: dict[Digest, ImageRow] = {item.row.manifest.digest: item.row for item in found}
        return list(unique.values())

    def batch_get(
        self, ref: RepositoryRef, ids: list[ImageId], accepted: list[str] | None, puller: str | None = None
    ) -> tuple[list[tuple[ResolvedImage, bytes]], list[ImageFailure]]:
        found, failures = self.resolve(ref, ids)
        images = []
        now = self.registry.clock()
        repository = self.registry.repository(ref)
        for item in found:
            record = item.row.manifest
            if record.storage_class == "ARCHIVE":
                failures.append(ImageFailure(item.image_id, "ImageInaccessible", "the image is archived"))
                continue
            if accepted and record.media_type not in accepted:
                failures.append(
                    ImageFailure(
                        item.image_id, "ImageNotFound", f"no manifest of an accepted type ({record.media_type})"
                    )
                )
                continue
            images.append((item, self.registry.manifest_content(repository, record)))
            self.registry.note_pull(ref, record.digest, record.last_pulled_at, now, puller)
        return images, failures

    def referrers(
        self, ref: RepositoryRef, subject: str, artifact_types: list[str], statuses: frozenset[str]
    ) -> list[ManifestRecord]:
        """ListImageReferrers: the manifests of the repository whose subject is `subject` (the records the /v2
        referrers API lists), of the given artifact types (any when empty) and statuses (ACTIVE, ARCHIVED)."""
        repository = self.registry.repository(ref)
        try:
            digest = Digest.parse(subject)
        except DockyardError:
            raise InvalidParameter(
                f"Invalid parameter at 'subjectId.imageDigest' failed to satisfy constraint: 'invalid digest "
                f"{subject[:100]}'"
            ) from None
        wanted = set(artifact_types)
        return [
            record
            for record in self.metadata.list_referrers(repository.id, digest, None)
            if (not wanted or record.artifact_type in wanted)
            and ("ARCHIVED" if record.storage_class == "ARCHIVE" else "ACTIVE") in statuses
        ]

    def set_storage_class(self, ref: RepositoryRef, image_id: ImageId, target: str) -> tuple[ImageId, str]:
        """UpdateImageStorageClass: archive an image, or restore it (at once: there is no cold tier here)."""
        repository = self.registry.repository(ref)
        found, failures = self.resolve(ref, [image_id])
        if failures:
            raise image_not_found(ref, failures[0])
        digest = Digest.parse(str(found[0].image_id.digest))
        self.metadata.set_storage_class(repository.id, digest, target, self.registry.clock())
        return found[0].image_id, "ARCHIVED" if target == "ARCHIVE" else "ACTIVE"

    # --------------------------------------------------------------------------------------- changes

    def batch_delete(self, ref: RepositoryRef, ids: list[ImageId]) -> tuple[list[ImageId], list[ImageFailure]]:
        """By tag: untag (the image goes with its last tag). By digest: the image and all its tags."""
        repository = self.registry.repository(ref)
        deleted: list[ImageId] = []
        failures: list[ImageFailure] = []
        for image_id in ids:
            try:
                deleted.extend(self._delete_one(repository, image_id))
            except _Failure as failure:
                failures.append(ImageFailure(image_id, failure.code, failure.reason))
        return deleted, failures

    def _delete_one(self, repository: Repository, image_id: ImageId) -> list[ImageId]:
        resolved = self._resolve_one(repository, image_id)
        digest = Digest.parse(str(resolved.image_id.digest))
        if image_id.tag is not None and len(resolved.row.tags) > 1:
            self.metadata.delete_tag(repository.id, image_id.tag)
            return [resolved.image_id]
        try:
            self.registry.delete_manifest(repository.ref, str(digest))
        except ManifestReferenced as error:
            raise _Failure("ImageReferencedByManifestList", error.message) from None
        if image_id.tag is not None:
            return [resolved.image_id]
        return [ImageId(str(digest), tag) for tag in resolved.row.tags] or [ImageId(str(digest))]

    def put_image(
        self,
        ref: RepositoryRef,
        manifest_text: str,
        media_type: str | None,
        tag: str | None,
        digest_text: str | None,
    ) -> tuple[ImageId, str]:
        repository = self.registry.repository(ref)
        raw = manifest_text.encode("utf-8", "surrogatepass")  # a lone surrogate then fails UTF-8 decoding: refused
        expected = _parse_put_digest(digest_text) if digest_text else None
        if not media_type and not _names_its_media_type(raw):
            raise InvalidParameter("image manifest mediatype not provided in manifest or parameter")
        # ECR takes the parameter's word for the type: a Docker manifest need not name itself when it is given.
        manifest = parse_manifest(raw, media_type, expected.algorithm if expected else "sha256", named=bool(media_type))
        if expected is not None and expected != manifest.digest:
            raise ImageDigestDoesNotMatch(
                f"Invalid parameter at 'imageDigest' failed to satisfy constraint: '{digest_text} does not "
                f"match the digest of the manifest ({manifest.digest})'"
            )
        if tag is not None and not TAG_RE.fullmatch(tag):
            raise InvalidParameter(f"Invalid parameter at 'imageTag' failed to satisfy constraint: '{tag}'")
        self._refuse_unchanged(repository, manifest.digest, tag)
        try:
            self.registry.store_manifest(repository, manifest, raw, [tag] if tag else [])
        except ManifestBlobUnknown as error:
            log.info("PutImage into %s refused: %s", ref.name, error.message)
            digests = ", ".join(item["digest"] for item in error.items)
            raise LayersNotFound(
                f"Layers with digests '[{digests}]' required for pushing image into repository with name "
                f"'{ref.name}' in the registry with id '{ref.account_id}' do not exist"
            ) from None
        return ImageId(str(manifest.digest), tag), manifest.media_type

    def _refuse_unchanged(self, repository: Repository, digest: Digest, tag: str | None) -> None:
        """PutImage of a manifest that is already there under the same tag (or untagged) is an error in ECR."""
        current = self.metadata.resolve_tag(repository.id, tag) if tag else None
        exists = current is not None and current.digest == digest
        if tag is None:
            exists = self.metadata.get_manifest(repository.id, digest) is not None
        if exists:
            raise ImageAlreadyExists(
                f"Image with digest '{digest}'{f' and tag {tag!r}' if tag else ''} already exists in the "
                f"repository with name '{repository.ref.name}' in registry with id '{repository.ref.account_id}'"
            )

    # --------------------------------------------------------------------------------------- layers

    def layer_availability(self, ref: RepositoryRef, digests: list[str]) -> tuple[list[LayerInfo], list[ImageFailure]]:
        repository = self.registry.repository(ref)
        layers, failures = [], []
        media_types = _LayerMediaTypes(self.registry, repository)
        for text in digests:
            try:
                digest = Digest.parse(text)
            except DockyardError:
                failures.append(ImageFailure(ImageId(text), "InvalidLayerDigest", f"invalid layer digest {text!r}"))
                continue
            size = self.metadata.linked_blob_size(repository.id, digest)
            layers.append(LayerInfo(text, size, media_types.of(digest) if size is not None else None))
        return layers, failures

    def upload_part(self, ref: RepositoryRef, upload_id: str, first: int, last: int, data: bytes) -> int:
        """Append one part; parts must be consecutive. Returns the last byte received."""
        self.registry.repository(ref)  # an unknown repository is RepositoryNotFound, not UploadNotFound
        if last - first + 1 != len(data):
            raise InvalidLayerPart(
                f"part {first}-{last} is {last - first + 1} bytes but {len(data)} were sent",
                detail=self._part_detail(ref, upload_id),
            )
        try:
            appender = self.registry.begin_append(ref, upload_id, first)
        except DockyardError as error:
            if error.http_status != 416:
                raise
            raise InvalidLayerPart(
                f"part starts at byte {first}; the upload expects the next part to start right after the last "
                "valid byte received",
                detail=self._part_detail(ref, upload_id),
            ) from None
        appender.write(data)
        return appender.finish() - 1

    def _part_detail(self, ref: RepositoryRef, upload_id: str) -> dict[str, object]:
        size = self.registry.upload_size(ref, upload_id)
        return {
            "registryId": ref.account_id,
            "repositoryName": ref.name,
            "uploadId": upload_id,
            "lastValidByteReceived": size - 1,
        }

    def complete_layer(self, ref: RepositoryRef, upload_id: str, digests: list[str]) -> Digest:
        repository = self.registry.repository(ref)
        digest = _parse_layer_digest(digests)
        if self.registry.upload_size(ref, upload_id) == 0:
            raise EmptyUpload(f"The upload with id '{upload_id}' contains no data")
        if self.metadata.linked_blob_size(repository.id, digest) is not None:
            self.registry.cancel_upload(ref, upload_id)
            raise LayerAlreadyExists(f"The layer '{digest}' already exists in the repository '{ref.name}'")
        self.registry.complete_upload(ref, upload_id, digest)
        return digest

    def download_check(self, ref: RepositoryRef, digest_text: str) -> Digest:
        digest = _parse_layer_digest([digest_text])
        repository = self.registry.repository(ref)
        if self.metadata.linked_blob_size(repository.id, digest) is None:
            raise LayersNotFound(
                f"Layer with digest '{digest}' does not exist in the repository with name '{ref.name}' in the "
                f"registry with id '{ref.account_id}'"
            )
        if not self.metadata.blob_referenced(repository.id, digest):
            log.info("GetDownloadUrlForLayer in %s: layer %s was uploaded but no image lists it", ref.name, digest)
            raise LayerInaccessible(
                f"The layer with digest '{digest}' in the repository with name '{ref.name}' in the registry with "
                f"id '{ref.account_id}' is not available because it is not associated with an image"
            )
        return digest


class _Failure(Exception):
    def __init__(self, code: str, reason: str) -> None:
        self.code, self.reason = code, reason
        super().__init__(reason)


def _parse_digest(text: str) -> Digest:
    try:
        return Digest.parse(text)
    except DockyardError:
        raise _Failure("InvalidImageDigest", f"Invalid image digest: {text}") from None


def _parse_put_digest(text: str) -> Digest:
    try:
        return Digest.parse(text)
    except DockyardError:
        raise InvalidParameter(f"Invalid parameter at 'imageDigest' failed to satisfy constraint: '{text}'") from None


def _parse_layer_digest(digests: list[str]) -> Digest:
    for text in digests:
        try:
            return Digest.parse(text)
        except DockyardError:
            continue
    raise InvalidParameter(f"Invalid parameter at 'layerDigests': no supported digest in {digests}")


def describe_id(image_id: ImageId) -> str:
    """An image id as ECR's messages render it (Java's rendering: an absent member is 'null')."""
    return f"{{imageDigest:'{image_id.digest or 'null'}', imageTag:'{image_id.tag or 'null'}'}}"


def image_not_found(ref: RepositoryRef, failure: ImageFailure) -> ImageNotFound:
    """ECR's ImageNotFoundException for an id that resolved to nothing; why it failed goes to the log."""
    log.info("image %s not found in %s: %s (%s)", failure.image_id, ref.name, failure.reason, failure.code)
    return ImageNotFound(
        f"The image with imageId {describe_id(failure.image_id)} does not exist within the repository with name "
        f"'{ref.name}' in the registry with id '{ref.account_id}'"
    )


def _names_its_media_type(raw: bytes) -> bool:
    """Whether the manifest document names its type (`null` or "" name none); a document that is not a JSON
    object is parse_manifest's to refuse, with its own reason."""
    try:
        document = json.loads(raw)
    except ValueError:
        return True
    return not isinstance(document, dict) or document.get("mediaType") not in (None, "")


class _LayerMediaTypes:
    """The media type of layers as the manifests that list them say, reading each manifest at most once."""

    def __init__(self, registry: Registry, repository: Repository) -> None:
        self.registry, self.repository = registry, repository
        self.known: dict[Digest, str] = {}
        self.read: set[Digest] = set()

    def of(self, digest: Digest) -> str | None:
        if digest not in self.known:
            parent = self.registry.metadata.blob_parent(self.repository.id, digest)
            if parent is not None and parent not in self.read:
                self.read.add(parent)
                self._learn(parent)
        return self.known.get(digest)

    def _learn(self, digest: Digest) -> None:
        record = self.registry.metadata.get_manifest(self.repository.id, digest)
        if record is None:  # deleted meanwhile: the type is unknown, which the answer may leave out
            return
        try:
            content = self.registry.manifest_content(self.repository, record)
            parsed = parse_manifest(content, record.media_type, named=True)
        except DockyardError:
            return
        for descriptor in parsed.blobs:
            self.known.setdefault(descriptor.digest, descriptor.media_type)
