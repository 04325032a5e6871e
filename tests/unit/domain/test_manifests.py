"""parse_manifest: media types, Content-Type agreement, descriptors, size limit, artifactType, children."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.domain.errors import ManifestInvalid, ManifestTooLarge
from dockyard.domain.manifests import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    media_type_base,
    parse_manifest,
)
from dockyard.domain.names import Digest

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def desc(digest: str = D1, media_type: str = "application/vnd.oci.image.layer.v1.tar+gzip", **extra: Any) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": 10, **extra}


def image(media_type: str | None = OCI_MANIFEST, **fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"schemaVersion": 2, "config": desc(D1, OCI_CONFIG), "layers": [desc(D2)]}
    if media_type is not None:
        document["mediaType"] = media_type
    return {**document, **fields}


def index(media_type: str | None = OCI_INDEX, **fields: Any) -> dict[str, Any]:
    children = [desc(D1, OCI_MANIFEST, platform={"os": "linux", "architecture": "amd64"}), desc(D2, OCI_MANIFEST)]
    document: dict[str, Any] = {"schemaVersion": 2, "manifests": children}
    if media_type is not None:
        document["mediaType"] = media_type
    return {**document, **fields}


def parse(document: dict[str, Any], content_type: str | None) -> Any:
    return parse_manifest(json.dumps(document).encode(), content_type)


# ------------------------------------------------------------------------------------------ media types


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_image_manifest(media_type: str) -> None:
    raw = json.dumps(image(media_type)).encode()
    parsed = parse_manifest(raw, media_type)
    assert parsed.media_type == media_type
    assert not parsed.is_index
    assert parsed.digest == Digest("sha256", hashlib.sha256(raw).hexdigest())
    assert parsed.size == len(raw)
    assert [str(d.digest) for d in parsed.blobs] == [D1, D2]
    assert parsed.children == ()
    assert parsed.config_media_type == OCI_CONFIG


@pytest.mark.parametrize("media_type", [OCI_INDEX, DOCKER_MANIFEST_LIST])
def test_index_lists_children_with_platforms(media_type: str) -> None:
    parsed = parse(index(media_type), media_type)
    assert parsed.media_type == media_type
    assert parsed.is_index
    assert parsed.blobs == ()
    assert [str(c.digest) for c in parsed.children] == [D1, D2]
    assert parsed.children[0].platform == {"os": "linux", "architecture": "amd64"}
    assert parsed.children[1].platform is None


def test_empty_index_is_valid() -> None:
    assert parse(index(manifests=[]), OCI_INDEX).children == ()


@pytest.mark.parametrize("content_type", [None, "", "application/json", "application/octet-stream", "*/*"])
def test_generic_content_type_defers_to_media_type(content_type: str | None) -> None:
    assert parse(image(DOCKER_MANIFEST), content_type).media_type == DOCKER_MANIFEST


@pytest.mark.parametrize(("document", "expected"), [(image(None), OCI_MANIFEST), (index(None), OCI_INDEX)])
def test_oci_document_without_media_type_is_sniffed(document: dict[str, Any], expected: str) -> None:
    assert parse(document, "application/json").media_type == expected


def test_content_type_names_an_untyped_document() -> None:
    assert parse(image(None), OCI_MANIFEST).media_type == OCI_MANIFEST


def test_content_type_parameters_and_case_are_ignored() -> None:
    assert parse(image(), "Application/VND.oci.image.manifest.v1+json; charset=utf-8").media_type == OCI_MANIFEST
    assert media_type_base(" a/b ; q=1") == "a/b"


@pytest.mark.parametrize(
    ("document", "content_type"),
    [(image(OCI_MANIFEST), DOCKER_MANIFEST), (image(OCI_MANIFEST), OCI_INDEX), (index(OCI_INDEX), OCI_MANIFEST)],
)
def test_content_type_mismatch_is_invalid(document: dict[str, Any], content_type: str) -> None:
    with pytest.raises(ManifestInvalid):
        parse(document, content_type)


@pytest.mark.parametrize("media_type", [DOCKER_MANIFEST, DOCKER_MANIFEST_LIST])
def test_docker_documents_must_name_themselves(media_type: str) -> None:
    document = image(None) if media_type == DOCKER_MANIFEST else index(None)
    with pytest.raises(ManifestInvalid):
        parse(document, media_type)


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ],
)
def test_schema1_is_rejected(media_type: str) -> None:
    schema1 = {"schemaVersion": 1, "name": "a/b", "tag": "v1", "fsLayers": [], "history": []}
    with pytest.raises(ManifestInvalid, match="schema 1"):
        parse(schema1, media_type)
    with pytest.raises(ManifestInvalid):
        parse({**schema1, "mediaType": media_type}, None)


@pytest.mark.parametrize(
    "raw",
    [b"", b"nope", b"[]", b"null", b'"text"', b"\xff\xfe\x00", json.dumps({"layers": []}).encode()],
)
def test_non_manifests_are_invalid(raw: bytes) -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw, None)


@pytest.mark.parametrize("version", [1, 3, "2", None, True])
def test_schema_version_must_be_2(version: Any) -> None:
    with pytest.raises(ManifestInvalid):
        parse(image(schemaVersion=version), OCI_MANIFEST)


def test_unknown_media_type_is_invalid() -> None:
    with pytest.raises(ManifestInvalid):
        parse(image("application/vnd.example+json"), None)


def test_deeply_nested_json_is_invalid() -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(b"[" * 100_000 + b"]" * 100_000, OCI_MANIFEST)


# ------------------------------------------------------------------------------------------ descriptors

BAD_DESCRIPTORS: dict[str, Any] = {
    "not-object": "sha256:" + "1" * 64,
    "no-media-type": {"digest": D1, "size": 1},
    "empty-media-type": desc(mediaType=""),
    "no-digest": {"mediaType": OCI_CONFIG, "size": 1},
    "bad-digest": desc("sha256:xyz"),
    "uppercase-digest": desc("sha256:" + "A" * 64),
    "unknown-algorithm": desc("md5:" + "1" * 32),
    "no-size": {"mediaType": OCI_CONFIG, "digest": D1},
    "negative-size": desc(size=-1),
    "float-size": desc(size=1.5),
    "string-size": desc(size="10"),
    "bool-size": desc(size=True),
    "platform-not-object": desc(platform="linux/amd64"),
    "artifact-type-not-string": desc(artifactType=3),
    "annotation-not-string": desc(annotations={"a": 1}),
    "annotations-not-object": desc(annotations=["a"]),
}


@pytest.mark.parametrize("bad", BAD_DESCRIPTORS.values(), ids=BAD_DESCRIPTORS.keys())
@pytest.mark.parametrize("where", ["config", "layer", "subject", "child"])
def test_bad_descriptor_is_invalid(bad: Any, where: str) -> None:
    if where == "config":
        document, content_type = image(config=bad), OCI_MANIFEST
    elif where == "layer":
        document, content_type = image(layers=[desc(), bad]), OCI_MANIFEST
    elif where == "subject":
        document, content_type = image(subject=bad), OCI_MANIFEST
    else:
        document, content_type = index(manifests=[bad]), OCI_INDEX
    with pytest.raises(ManifestInvalid):
        parse(document, content_type)


@pytest.mark.parametrize(
    "fields",
    [{"layers": "x"}, {"layers": None}, {"annotations": {"k": 1}}, {"artifactType": 1}, {"mediaType": 1}],
)
def test_bad_top_level_fields_are_invalid(fields: dict[str, Any]) -> None:
    with pytest.raises(ManifestInvalid):
        parse({**image(), **fields}, None)


def test_index_without_manifests_is_invalid() -> None:
    with pytest.raises(ManifestInvalid):
        parse({"schemaVersion": 2, "mediaType": OCI_INDEX}, OCI_INDEX)


def test_descriptor_fields_are_kept() -> None:
    layer = desc(D3, artifactType="x/y", annotations={"k": "v"})
    parsed = parse(image(layers=[layer]), OCI_MANIFEST)
    kept = parsed.blobs[1]
    assert (kept.media_type, str(kept.digest), kept.size) == (layer["mediaType"], D3, 10)
    assert (kept.artifact_type, kept.annotations) == ("x/y", {"k": "v"})


def test_sha512_descriptors_are_accepted() -> None:
    sha512 = "sha512:" + "a" * 128
    assert str(parse(image(layers=[desc(sha512)]), None).blobs[1].digest) == sha512


# ------------------------------------------------------------------------------------------ artifacts


def test_artifact_type_falls_back_to_config_media_type() -> None:
    assert parse(image(), None).artifact_type == OCI_CONFIG


def test_artifact_type_wins_over_config_media_type() -> None:
    parsed = parse(image(artifactType="application/x.sbom", config=desc(D1, EMPTY)), None)
    assert parsed.artifact_type == "application/x.sbom"
    assert parsed.config_media_type == EMPTY


def test_index_artifact_type_has_no_fallback() -> None:
    assert parse(index(), None).artifact_type is None
    assert parse(index(artifactType="application/x.bundle"), None).artifact_type == "application/x.bundle"


def test_subject_and_annotations() -> None:
    parsed = parse(image(subject=desc(D3, OCI_MANIFEST), annotations={"org.example": "yes"}), None)
    assert parsed.subject is not None
    assert str(parsed.subject.digest) == D3
    assert parsed.annotations == {"org.example": "yes"}
    assert parse(image(), None).subject is None


# ------------------------------------------------------------------------------------------ size, digest


def padded(total: int) -> bytes:
    raw = json.dumps(image(annotations={"pad": ""})).encode()
    return json.dumps(image(annotations={"pad": "x" * (total - len(raw))})).encode()


def test_manifest_of_exactly_the_limit_is_accepted() -> None:
    raw = padded(MAX_MANIFEST_BYTES)
    assert len(raw) == MAX_MANIFEST_BYTES == 4 * 1024 * 1024
    assert parse_manifest(raw, None).size == MAX_MANIFEST_BYTES


def test_manifest_over_the_limit_is_too_large() -> None:
    with pytest.raises(ManifestTooLarge):
        parse_manifest(padded(MAX_MANIFEST_BYTES + 1), None)


def test_digest_is_of_the_exact_bytes() -> None:
    compact = json.dumps(image(), separators=(",", ":")).encode()
    pretty = json.dumps(image(), indent=3).encode()
    assert parse_manifest(compact, None).digest != parse_manifest(pretty, None).digest
    assert parse_manifest(pretty, None, "sha512").digest == Digest("sha512", hashlib.sha512(pretty).hexdigest())


descriptors = st.builds(
    lambda digit, size: {"mediaType": "application/x.layer", "digest": "sha256:" + digit * 64, "size": size},
    st.sampled_from("0123456789abcdef"),
    st.integers(min_value=0, max_value=2**53),
)


@given(st.lists(descriptors, max_size=8), st.integers(min_value=0, max_value=4))
def test_every_layer_is_listed_in_order(layers: list[dict[str, Any]], indent: int) -> None:
    raw = json.dumps(image(layers=layers), indent=indent or None).encode()
    parsed = parse_manifest(raw, OCI_MANIFEST)
    assert [(str(d.digest), d.size) for d in parsed.blobs[1:]] == [(d["digest"], d["size"]) for d in layers]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
keys = st.sampled_from(["schemaVersion", "mediaType", "config", "layers", "manifests", "subject", "annotations"])


@given(st.dictionaries(keys, json_values, max_size=6), st.sampled_from([None, OCI_MANIFEST, OCI_INDEX]))
def test_arbitrary_documents_parse_or_are_invalid(document: dict[str, Any], content_type: str | None) -> None:
    with contextlib.suppress(ManifestInvalid):
        parse(document, content_type)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_are_invalid(raw: bytes) -> None:
    with contextlib.suppress(ManifestInvalid):
        parse_manifest(raw, None)


# ------------------------------------------------------------------------------------------ JSON interchange


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"])
def test_utf16_and_utf32_are_refused(encoding: str) -> None:
    """RFC 8259 §8.1: JSON exchanged between systems is UTF-8 (json.loads(bytes) would take these)."""
    with pytest.raises(ManifestInvalid, match="UTF-8"):
        parse_manifest(json.dumps(image()).encode(encoding), None)


def test_a_byte_order_mark_is_refused() -> None:
    with pytest.raises(ManifestInvalid, match="byte order mark"):
        parse_manifest(b"\xef\xbb\xbf" + json.dumps(image()).encode(), None)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_refused(constant: str) -> None:
    raw = json.dumps(image()).replace('"schemaVersion": 2', f'"schemaVersion": 2, "x": {constant}').encode()
    with pytest.raises(ManifestInvalid, match=constant.lstrip("-")):
        parse_manifest(raw, None)


member_names = st.text(alphabet="abcdefLayers", min_size=1, max_size=6)


@given(st.lists(st.tuples(member_names, st.integers()), min_size=1, max_size=6), st.booleans())
def test_duplicate_members_are_refused_at_any_depth(pairs: list[tuple[str, int]], nested: bool) -> None:
    """Last-wins would let two readers of one manifest see different content; any repeated name is refused."""
    members = "{" + ", ".join(f'"{name}": {value}' for name, value in pairs) + "}"
    duplicated = len({name for name, _ in pairs}) < len(pairs)
    raw = json.dumps(image(layers=[desc(D2) | {"x": "@"}]) if nested else {"x": "@", **image()})
    try:
        parse_manifest(raw.replace('"@"', members).encode(), OCI_MANIFEST)
    except ManifestInvalid as error:
        assert "repeats" in str(error) or not duplicated
    else:
        assert not duplicated


@given(st.integers(min_value=2**63, max_value=2**80) | st.integers(max_value=-1))
def test_descriptor_sizes_outside_64_bits_are_refused(size: int) -> None:
    with pytest.raises(ManifestInvalid, match="size"):
        parse(image(layers=[desc(D2) | {"size": size}]), OCI_MANIFEST)


def test_layer_sizes_must_add_up_within_64_bits() -> None:
    parse(image(layers=[desc(D2) | {"size": 2**62}, desc(D3) | {"size": 2**62 - 1}]), OCI_MANIFEST)
    with pytest.raises(ManifestInvalid, match="add up"):
        parse(image(layers=[desc(D2) | {"size": 2**62}, desc(D3) | {"size": 2**62}]), OCI_MANIFEST)
