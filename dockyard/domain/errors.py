"""Every error Dockyard can answer, defined once.

Each error kind carries its OCI Distribution code, the HTTP status the registry door answers with, and the
ECR exception name the API door answers with. The HTTP adapters only render these; no handler writes a
status number of its own (the habit of Distribution's `errcode` package).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class ErrorKind:
    """One row of the error registry."""

    oci_code: str
    http_status: int
    ecr_exception: str
    default_message: str


class DockyardError(Exception):
    """Base of every error the domain raises on purpose."""

    kind: ClassVar[ErrorKind]

    def __init__(
        self,
        message: str | None = None,
        detail: Any = None,
        items: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.kind.default_message
        self.detail = detail
        self.items = items or []  # one error entry per item where the OCI API lists each (MANIFEST_BLOB_UNKNOWN)
        self.headers = dict(headers or {})  # extra response headers, e.g. where an upload resumes
        super().__init__(self.message)

    @property
    def oci_code(self) -> str:
        return self.kind.oci_code

    @property
    def http_status(self) -> int:
        return self.kind.http_status

    @property
    def ecr_exception(self) -> str:
        return self.kind.ecr_exception


def _kind(oci: str, status: int, ecr: str, message: str) -> ErrorKind:
    return ErrorKind(oci, status, ecr, message)


class BlobUnknown(DockyardError):
    kind = _kind("BLOB_UNKNOWN", 404, "LayersNotFoundException", "blob unknown to registry")


class BlobUploadInvalid(DockyardError):
    kind = _kind("BLOB_UPLOAD_INVALID", 400, "InvalidLayerException", "blob upload invalid")


class BlobUploadUnknown(DockyardError):
    kind = _kind("BLOB_UPLOAD_UNKNOWN", 404, "UploadNotFoundException", "blob upload unknown to registry")


class RangeInvalid(DockyardError):
    kind = _kind("BLOB_UPLOAD_INVALID", 416, "InvalidLayerPartException", "invalid content range")


class RangeNotSatisfiable(DockyardError):
    """A ranged blob GET outside the blob."""

    kind = _kind("RANGE_INVALID", 416, "InvalidParameterException", "requested range not satisfiable")


class DigestInvalid(DockyardError):
    kind = _kind("DIGEST_INVALID", 400, "InvalidLayerException", "provided digest did not match uploaded content")


class DigestUnsupported(DockyardError):
    kind = _kind("UNSUPPORTED", 400, "UnsupportedImageTypeException", "digest algorithm not supported")


class SizeInvalid(DockyardError):
    kind = _kind("SIZE_INVALID", 400, "InvalidLayerException", "provided length did not match content length")


class ManifestBlobUnknown(DockyardError):
    kind = _kind(
        "MANIFEST_BLOB_UNKNOWN",
        400,
        "LayersNotFoundException",
        "manifest references a blob unknown to registry",
    )


class ManifestInvalid(DockyardError):
    kind = _kind("MANIFEST_INVALID", 400, "InvalidParameterException", "manifest invalid")


class ManifestTooLarge(DockyardError):
    kind = _kind("SIZE_INVALID", 413, "InvalidParameterException", "manifest too large")


class ManifestUnknown(DockyardError):
    kind = _kind("MANIFEST_UNKNOWN", 404, "ImageNotFoundException", "manifest unknown")


class ManifestReferenced(DockyardError):
    """Deleting a manifest an index of the same repository still lists would break that index."""

    kind = _kind("DENIED", 409, "ImageReferencedByManifestListException", "manifest is referenced by a manifest list")


class NameInvalid(DockyardError):
    kind = _kind("NAME_INVALID", 400, "InvalidParameterException", "invalid repository name")


class NameUnknown(DockyardError):
    kind = _kind("NAME_UNKNOWN", 404, "RepositoryNotFoundException", "repository name not known to registry")


class TagInvalid(DockyardError):
    kind = _kind("TAG_INVALID", 400, "InvalidParameterException", "manifest tag did not match URI")


class PaginationNumberInvalid(DockyardError):
    kind = _kind("PAGINATION_NUMBER_INVALID", 400, "InvalidParameterException", "invalid number of results requested")


class Unauthorized(DockyardError):
    kind = _kind("UNAUTHORIZED", 401, "UnrecognizedClientException", "authentication required")


class Denied(DockyardError):
    kind = _kind("DENIED", 403, "AccessDeniedException", "requested access to the resource is denied")


class Unsupported(DockyardError):
    kind = _kind("UNSUPPORTED", 405, "UnsupportedOperationException", "the operation is unsupported")


class TooManyRequests(DockyardError):
    kind = _kind("TOOMANYREQUESTS", 429, "LimitExceededException", "too many requests")


class Unavailable(DockyardError):
    kind = _kind("UNAVAILABLE", 503, "ServerException", "service unavailable")


class ShuttingDown(DockyardError):
    """The server is draining before it stops: requests that would start new work are refused (with
    `Retry-After`) while those in flight finish; a load balancer sends the retry to another node."""

    kind = _kind("UNAVAILABLE", 503, "ServiceUnavailableException", "the server is shutting down; retry shortly")


class InsufficientStorage(DockyardError):
    """The registry's storage (blob files or the metadata database) is full: writes fail, reads keep working.

    507 (RFC 4918) on the registry door, so a client can tell a full disk from an outage and retry once space
    returns; ECR has no exception of its own for it, ServerException is the nearest (a server-side problem).
    """

    kind = _kind("INSUFFICIENT_STORAGE", 507, "ServerException", "no space left on the registry's storage")


# ------------------------------------------------------------------------------------------- ECR API
# Errors that the ECR door names; the OCI code is what the registry door answers when the same rule fires there.


class InvalidParameter(DockyardError):
    kind = _kind("UNSUPPORTED", 400, "InvalidParameterException", "invalid parameter")


class Validation(DockyardError):
    kind = _kind("UNSUPPORTED", 400, "ValidationException", "the request failed validation")


class RepositoryAlreadyExists(DockyardError):
    kind = _kind("DENIED", 400, "RepositoryAlreadyExistsException", "the repository already exists")


class RepositoryNotEmpty(DockyardError):
    kind = _kind("DENIED", 400, "RepositoryNotEmptyException", "the repository contains images")


class ImageNotFound(DockyardError):
    kind = _kind("MANIFEST_UNKNOWN", 404, "ImageNotFoundException", "the image does not exist")


class ImageAlreadyExists(DockyardError):
    kind = _kind("TAG_INVALID", 400, "ImageAlreadyExistsException", "the image already exists")


class ImageTagAlreadyExists(DockyardError):
    """An immutable tag would be moved or re-pushed; ECR answers `TAG_INVALID` on the registry door."""

    kind = _kind("TAG_INVALID", 400, "ImageTagAlreadyExistsException", "the image tag already exists")


class ImageDigestDoesNotMatch(DockyardError):
    kind = _kind("DIGEST_INVALID", 400, "ImageDigestDoesNotMatchException", "the image digest does not match")


class ReferencedImagesNotFound(DockyardError):
    kind = _kind(
        "MANIFEST_BLOB_UNKNOWN",
        400,
        "ReferencedImagesNotFoundException",
        "manifest references unknown images",
    )


class InvalidLayerPart(DockyardError):
    kind = _kind("BLOB_UPLOAD_INVALID", 400, "InvalidLayerPartException", "the layer part is not valid")


class LayerAlreadyExists(DockyardError):
    kind = _kind("BLOB_UPLOAD_INVALID", 400, "LayerAlreadyExistsException", "the layer already exists")


class EmptyUpload(DockyardError):
    kind = _kind("BLOB_UPLOAD_INVALID", 400, "EmptyUploadException", "the upload contains no data")


class LayerPartTooSmall(DockyardError):
    kind = _kind("BLOB_UPLOAD_INVALID", 400, "LayerPartTooSmallException", "layer parts must be at least 5 MiB")


class LayerInaccessible(DockyardError):
    kind = _kind("BLOB_UNKNOWN", 404, "LayerInaccessibleException", "the layer is not referenced by an image")


class InvalidTagParameter(DockyardError):
    kind = _kind("UNSUPPORTED", 400, "InvalidTagParameterException", "invalid tag parameter")


class TooManyTags(DockyardError):
    kind = _kind("UNSUPPORTED", 400, "TooManyTagsException", "too many tags")


class LimitExceeded(DockyardError):
    kind = _kind("DENIED", 403, "LimitExceededException", "a service quota was exceeded")


class LayersNotFound(DockyardError):
    kind = _kind("BLOB_UNKNOWN", 404, "LayersNotFoundException", "the layer does not exist in the repository")


class RepositoryPolicyNotFound(DockyardError):
    kind = _kind("NAME_UNKNOWN", 404, "RepositoryPolicyNotFoundException", "the repository has no policy")


class RegistryPolicyNotFound(DockyardError):
    kind = _kind("NAME_UNKNOWN", 404, "RegistryPolicyNotFoundException", "the registry has no policy")


class LifecyclePolicyNotFound(DockyardError):
    kind = _kind("NAME_UNKNOWN", 404, "LifecyclePolicyNotFoundException", "the repository has no lifecycle policy")


class TemplateAlreadyExists(DockyardError):
    kind = _kind("DENIED", 400, "TemplateAlreadyExistsException", "the repository creation template already exists")


class TemplateNotFound(DockyardError):
    kind = _kind("NAME_UNKNOWN", 404, "TemplateNotFoundException", "the repository creation template does not exist")


class ImageArchived(DockyardError):
    kind = _kind(
        "DENIED", 403, "ImageArchivedException", "the image is archived; restore it with UpdateImageStorageClass"
    )


class LifecyclePolicyPreviewNotFound(DockyardError):
    kind = _kind("NAME_UNKNOWN", 404, "LifecyclePolicyPreviewNotFoundException", "no lifecycle policy preview")


class ScanNotFound(DockyardError):
    kind = _kind("NAME_UNKNOWN", 404, "ScanNotFoundException", "the image has not been scanned")


class ExclusionAlreadyExists(DockyardError):
    kind = _kind("DENIED", 400, "ExclusionAlreadyExistsException", "the pull time update exclusion already exists")


class ExclusionNotFound(DockyardError):
    kind = _kind("NAME_UNKNOWN", 404, "ExclusionNotFoundException", "the pull time update exclusion does not exist")
