"""Parse and validate manifests and indexes, and list what they reference.

The digest of a manifest is the hash of the exact bytes pushed; nothing here re-serialises JSON.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from dockyard.domain.errors import DigestInvalid, DigestUnsupported, ManifestInvalid, ManifestTooLarge
from dockyard.domain.names import MAX_INT64, Digest

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1: Final = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
IMAGE_MANIFEST_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES: Final = IMAGE_MANIFEST_TYPES | INDEX_TYPES
# Docker's formats predate the optional mediaType of OCI: their documents must name themselves.
_SELF_NAMING_TYPES: Final = frozenset({DOCKER_MANIFEST, DOCKER_MANIFEST_LIST})
# Content types that say nothing about which manifest format the body is.
_GENERIC_CONTENT_TYPES: Final = frozenset({"", "application/json", "application/octet-stream", "*/*"})

MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    platform: dict[str, Any] | None = None


@dataclass(frozen=True)
class ParsedManifest:
    """A validated manifest or index and everything it points at."""

    media_type: str
    digest: Digest
    size: int
    blobs: tuple[Descriptor, ...]
    children: tuple[Descriptor, ...]
    subject: Descriptor | None
    artifact_type: str | None
    config_media_type: str | None
    annotations: dict[str, str]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def media_type_base(content_type: str | None) -> str:
    """`application/x; charset=utf-8` -> `application/x`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_manifest(
    raw: bytes, content_type: str | None, digest_algorithm: str = "sha256", named: bool = False
) -> ParsedManifest:
    """`named`: the caller named the type itself (ECR's imageManifestMediaType), so a Docker document need not."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestTooLarge(f"manifest is {len(raw)} bytes; the limit is {MAX_MANIFEST_BYTES}")
    document = _load_json_object(raw)
    media_type = _resolve_media_type(document, media_type_base(content_type), named)
    if document.get("schemaVersion") != 2:
        raise ManifestInvalid("schemaVersion must be 2")
    digest = Digest.of(raw, digest_algorithm)
    subject = _optional_descriptor(document, "subject")
    annotations = _string_map(document.get("annotations"), "annotations")
    artifact_type = _optional_string(document, "artifactType")
    if media_type in INDEX_TYPES:
        children = tuple(_descriptor(item, "manifests[]") for item in _list(document, "manifests"))
        return ParsedManifest(media_type, digest, len(raw), (), children, subject, artifact_type, None, annotations)
    config = _descriptor(document.get("config"), "config")
    layers = tuple(_descriptor(item, "layers[]") for item in _list(document, "layers"))
    if sum(layer.size for layer in layers) > MAX_INT64:  # the image's size is stored as a 64-bit integer
        raise ManifestInvalid(f"the layers' sizes add up to more than {MAX_INT64} bytes")
    return ParsedManifest(
        media_type,
        digest,
        len(raw),
        (config, *layers),
        (),
        subject,
        artifact_type or config.media_type,
        config.media_type,
        annotations,
    )


def _load_json_object(raw: bytes) -> dict[str, Any]:
    """Strict RFC 8259 JSON: UTF-8 without a byte order mark, no duplicate member names, no NaN/Infinity.

    `json.loads(bytes)` would also take UTF-16/32 and a UTF-8 BOM, and resolve duplicate keys last-wins;
    another reader of the same bytes could then see a different manifest than the one checked here.
    """
    if b"\x00" in raw[:4]:  # how RFC 4627 §3 tells UTF-16/32 (no BOM) from UTF-8: JSON text starts with ASCII
        raise ManifestInvalid("manifest is UTF-16 or UTF-32 (RFC 8259: JSON exchanged between systems is UTF-8)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestInvalid("manifest is not UTF-8 (RFC 8259: JSON exchanged between systems is UTF-8)") from None
    if text.startswith("\ufeff"):
        raise ManifestInvalid("manifest starts with a byte order mark (RFC 8259: JSON text must not)")
    try:
        document = json.loads(text, object_pairs_hook=_unique_members, parse_constant=_no_constant)
    except ValueError as exc:
        raise ManifestInvalid(f"manifest is not valid JSON: {exc}") from None
    except RecursionError:
        raise ManifestInvalid("manifest JSON is nested too deeply") from None
    if not isinstance(document, dict):
        raise ManifestInvalid("manifest must be a JSON object")
    return document


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        duplicate = next(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise ManifestInvalid(f"manifest repeats the member {duplicate[:100]!r} in one object")
    return document


def _no_constant(name: str) -> Any:
    raise ManifestInvalid(f"manifest contains {name}, which is not JSON")


def _resolve_media_type(document: dict[str, Any], content_type: str, named: bool = False) -> str:
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalid("mediaType must be a string")
    header = None if content_type in _GENERIC_CONTENT_TYPES else content_type
    if declared and header and declared != header:
        raise ManifestInvalid(f"mediaType {declared!r} does not match Content-Type {header!r}")
    media_type = declared or header or _sniff(document)
    if media_type in DOCKER_SCHEMA1:
        raise ManifestInvalid("Docker schema 1 manifests are deprecated and not accepted; push schema 2 or OCI")
    if media_type not in MANIFEST_TYPES:
        raise ManifestInvalid(f"unsupported manifest media type {media_type!r}")
    if media_type in _SELF_NAMING_TYPES and not declared and not (named and header):
        raise ManifestInvalid(f"a {media_type} document must carry its mediaType")
    return media_type


def _sniff(document: dict[str, Any]) -> str:
    if "manifests" in document:
        return OCI_INDEX
    if "config" in document:
        return OCI_MANIFEST
    raise ManifestInvalid("cannot tell the manifest's media type: no mediaType, Content-Type or known fields")


def _list(document: dict[str, Any], key: str) -> list[Any]:
    value = document.get(key)
    if not isinstance(value, list):
        raise ManifestInvalid(f"{key} must be a list")
    return value


def _optional_string(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        raise ManifestInvalid(f"{key} must be a string")
    return value or None


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ManifestInvalid(f"{where} must map strings to strings")
    return dict(value)


def _optional_descriptor(document: dict[str, Any], key: str) -> Descriptor | None:
    value = document.get(key)
    return None if value is None else _descriptor(value, key)


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{where} must be a descriptor object")
    media_type, digest_text, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalid(f"{where}.mediaType must be a non-empty string")
    if not isinstance(digest_text, str):
        raise ManifestInvalid(f"{where}.digest must be a string")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_INT64:
        raise ManifestInvalid(f"{where}.size must be an integer from 0 to {MAX_INT64}")
    try:
        digest = Digest.parse(digest_text)
    except (DigestInvalid, DigestUnsupported) as exc:
        raise ManifestInvalid(f"{where}.digest: {exc}") from None
    platform = value.get("platform")
    if platform is not None and not isinstance(platform, dict):
        raise ManifestInvalid(f"{where}.platform must be an object")
    artifact_type = value.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid(f"{where}.artifactType must be a string")
    annotations = _string_map(value.get("annotations"), f"{where}.annotations")
    return Descriptor(media_type, digest, size, artifact_type, annotations, platform)
