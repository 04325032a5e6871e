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

    def __init__(self, message: str | None = None, detail: Any = None, **headers: str) -> None:
        self.message = message or self.kind.default_message
        self.detail = detail
        self.headers = headers
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
    kind = _kind(
        "DIGEST_INVALID", 400, "InvalidLayerException", "provided digest did not match uploaded content"
    )


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

    kind = _kind(
        "DENIED", 409, "ImageReferencedByManifestListException", "manifest is referenced by a manifest list"
    )


class NameInvalid(DockyardError):
    kind = _kind("NAME_INVALID", 400, "InvalidParameterException", "invalid repository name")


class NameUnknown(DockyardError):
    kind = _kind("NAME_UNKNOWN", 404, "RepositoryNotFoundException", "repository name not known to registry")


class TagInvalid(DockyardError):
    kind = _kind("TAG_INVALID", 400, "InvalidParameterException", "manifest tag did not match URI")


class PaginationNumberInvalid(DockyardError):
    kind = _kind(
        "PAGINATION_NUMBER_INVALID", 400, "InvalidParameterException", "invalid number of results requested"
    )


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
