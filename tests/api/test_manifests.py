"""Manifest PUT, GET, HEAD and DELETE by tag and by digest (spec sections 4, 6, 9)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tests.api.helpers import (
    ABSENT,
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    EMPTY_DIGEST,
    EMPTY_JSON,
    OCI_INDEX,
    OCI_MANIFEST,
    errors_of,
    image_manifest,
    index_manifest,
    push_blob,
    push_image,
    put_manifest,
    sha256,
    sha512,
)
from tests.support.images import OCI_CONFIG, OCI_LAYER_GZIP

REPO = "team/app"
MAX_MANIFEST = 4 * 1024 * 1024


def oci_image(client: TestClient) -> tuple[bytes, str]:
    return image_manifest(REPO, client, layers=(b"a", b"b")), OCI_MANIFEST


def docker_image(client: TestClient) -> tuple[bytes, str]:
    raw = image_manifest(REPO, client, media_type=DOCKER_MANIFEST, config_type=DOCKER_CONFIG, layer_type=DOCKER_LAYER)
    return raw, DOCKER_MANIFEST


def oci_index(client: TestClient) -> tuple[bytes, str]:
    children = [oci_image(client), (image_manifest(REPO, client, layers=(b"arm",)), OCI_MANIFEST)]
    for raw, media_type in children:
        assert put_manifest(client, REPO, sha256(raw), raw, media_type).status_code == 201
    return index_manifest(children), OCI_INDEX


def docker_list(client: TestClient) -> tuple[bytes, str]:
    child = docker_image(client)
    assert put_manifest(client, REPO, sha256(child[0]), *child).status_code == 201
    return index_manifest([child], media_type=DOCKER_LIST), DOCKER_LIST


KINDS: dict[str, Callable[[TestClient], tuple[bytes, str]]] = {
    "oci-manifest": oci_image,
    "docker-manifest": docker_image,
    "oci-index": oci_index,
    "docker-list": docker_list,
}


@pytest.fixture(params=sorted(KINDS))
def document(request: pytest.FixtureRequest, client: TestClient) -> tuple[bytes, str]:
    return KINDS[request.param](client)


# ------------------------------------------------------------------------------------------ push and pull


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_push_then_pull_returns_identical_bytes(client: TestClient, document: tuple[bytes, str], by: str) -> None:
    raw, media_type = document
    digest = sha256(raw)
    reference = "v1" if by == "tag" else digest
    pushed = put_manifest(client, REPO, reference, raw, media_type)
    assert pushed.status_code == 201
    assert pushed.headers["docker-content-digest"] == digest
    assert pushed.headers["location"] == f"/v2/{REPO}/manifests/{digest}"
    for ref in {reference, digest}:
        pulled = client.get(f"/v2/{REPO}/manifests/{ref}", headers={"Accept": media_type})
        assert pulled.status_code == 200
        assert pulled.content == raw
        assert pulled.headers["content-type"] == media_type
        assert pulled.headers["docker-content-digest"] == digest
        assert pulled.headers["content-length"] == str(len(raw))


def test_head_mirrors_get(client: TestClient, document: tuple[bytes, str]) -> None:
    raw, media_type = document
    put_manifest(client, REPO, "v1", raw, media_type)
    for ref in ("v1", sha256(raw)):
        head = client.head(f"/v2/{REPO}/manifests/{ref}")
        assert head.status_code == 200
        assert head.headers["content-type"] == media_type
        assert head.headers["docker-content-digest"] == sha256(raw)
        assert head.headers["content-length"] == str(len(raw))


def test_stored_type_is_served_whatever_the_accept_header(client: TestClient) -> None:
    raw, _ = oci_image(client)
    put_manifest(client, REPO, "v1", raw)
    response = client.get(f"/v2/{REPO}/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    assert response.status_code == 200
    assert response.headers["content-type"] == OCI_MANIFEST


def test_content_type_parameters_are_ignored(client: TestClient) -> None:
    raw, _ = oci_image(client)
    response = put_manifest(client, REPO, "v1", raw, OCI_MANIFEST + "; charset=utf-8")
    assert response.status_code == 201
    assert client.get(f"/v2/{REPO}/manifests/v1").headers["content-type"] == OCI_MANIFEST


def test_manifest_without_media_type_takes_the_content_type(client: TestClient) -> None:
    push_blob(client, REPO, b"{}")
    raw = json.dumps(
        {"schemaVersion": 2, "config": {"mediaType": EMPTY_JSON, "digest": EMPTY_DIGEST, "size": 2}, "layers": []}
    ).encode()
    assert put_manifest(client, REPO, "v1", raw, OCI_MANIFEST).status_code == 201
    assert client.get(f"/v2/{REPO}/manifests/v1").headers["content-type"] == OCI_MANIFEST


def test_push_by_sha512_digest(client: TestClient) -> None:
    raw, media_type = oci_image(client)
    response = put_manifest(client, REPO, sha512(raw), raw, media_type)
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == sha512(raw)
    pulled = client.get(f"/v2/{REPO}/manifests/{sha512(raw)}")
    assert pulled.content == raw
    assert pulled.headers["docker-content-digest"] == sha512(raw)


def test_push_by_mismatched_digest(client: TestClient) -> None:
    raw, media_type = oci_image(client)
    errors_of(put_manifest(client, REPO, sha256(raw + b" "), raw, media_type), 400, "DIGEST_INVALID")
    errors_of(client.get(f"/v2/{REPO}/manifests/{sha256(raw)}"), 404, "MANIFEST_UNKNOWN")


# ------------------------------------------------------------------------------------------ tag parameters


def oci_tags(response: httpx.Response) -> list[str]:
    """The `OCI-Tag` values of a push (repeated headers or comma lists, as the spec allows)."""
    return [tag.strip() for value in response.headers.get_list("oci-tag") for tag in value.split(",")]


def push_with_tags(client: TestClient, digest: str, raw: bytes, media_type: str, tags: list[str]) -> httpx.Response:
    return client.put(
        f"/v2/{REPO}/manifests/{digest}",
        params=[("tag", tag) for tag in tags],
        content=raw,
        headers={"Content-Type": media_type},
    )


def sha512_descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha512(data), "size": len(data), **extra}


def sha512_image(client: TestClient, seed: str) -> bytes:
    """An image whose config and layer are uploaded, and referenced, by sha512 digests."""
    config, layer = f'{{"architecture":"{seed}","os":"linux"}}'.encode(), f"layer {seed}".encode()
    for blob in (config, layer):
        uploaded = client.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": sha512(blob)}, content=blob)
        assert uploaded.status_code == 201, uploaded.text
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": sha512_descriptor(OCI_CONFIG, config),
        "layers": [sha512_descriptor(OCI_LAYER_GZIP, layer)],
    }
    return json.dumps(document).encode()


def test_push_by_digest_with_tag_parameters(client: TestClient) -> None:
    raw, media_type = oci_image(client)
    response = push_with_tags(client, sha256(raw), raw, media_type, ["a", "b", "a"])
    assert response.status_code == 201, response.text
    assert response.headers["docker-content-digest"] == sha256(raw)
    assert oci_tags(response) == ["a", "b"]
    for tag in ("a", "b"):
        assert client.get(f"/v2/{REPO}/manifests/{tag}").headers["docker-content-digest"] == sha256(raw)
    assert client.get(f"/v2/{REPO}/tags/list").json()["tags"] == ["a", "b"]


def test_push_by_tag_with_tag_parameters_sets_them_all(client: TestClient) -> None:
    raw, media_type = oci_image(client)
    response = push_with_tags(client, "v1", raw, media_type, ["v2"])
    assert response.status_code == 201, response.text
    assert oci_tags(response) == ["v1", "v2"]
    assert client.get(f"/v2/{REPO}/tags/list").json()["tags"] == ["v1", "v2"]


def test_push_by_digest_without_tag_parameters_names_no_tag(client: TestClient) -> None:
    raw, media_type = oci_image(client)
    response = put_manifest(client, REPO, sha256(raw), raw, media_type)
    assert response.status_code == 201
    assert "oci-tag" not in response.headers
    assert client.get(f"/v2/{REPO}/tags/list").json()["tags"] == []


@pytest.mark.parametrize("bad", ["", ".INVALID_MANIFEST_NAME", "x" * 129])
def test_an_invalid_tag_parameter_refuses_the_whole_push(client: TestClient, bad: str) -> None:
    raw, media_type = oci_image(client)
    errors_of(push_with_tags(client, sha256(raw), raw, media_type, ["good", bad]), 400, "TAG_INVALID")
    errors_of(client.get(f"/v2/{REPO}/manifests/{sha256(raw)}"), 404, "MANIFEST_UNKNOWN")
    errors_of(client.get(f"/v2/{REPO}/manifests/good"), 404, "MANIFEST_UNKNOWN")


def test_sha512_index_pushed_with_tag_parameters_round_trip(client: TestClient) -> None:
    """The distribution-spec conformance "tag-param-sha512" flow: sha512 blobs, images and an index pushed by
    digest with `tag=` parameters; every answer names the sha512 digest; deletes by digest work, then 404."""
    children = [(sha512_image(client, seed), OCI_MANIFEST) for seed in ("amd64", "arm64")]
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [sha512_descriptor(OCI_MANIFEST, raw) for raw, _ in children],
        }
    ).encode()
    pushed: dict[str, tuple[bytes, str, list[str]]] = {}
    for n, (raw, media_type) in enumerate([*children, (index, OCI_INDEX)]):
        tags = [f"tag-param-sha512-{n}", f"also-{n}"]
        response = push_with_tags(client, sha512(raw), raw, media_type, tags)
        assert response.status_code == 201, response.text
        assert response.headers["docker-content-digest"] == sha512(raw)
        assert response.headers["location"] == f"/v2/{REPO}/manifests/{sha512(raw)}"
        assert sorted(oci_tags(response)) == sorted(tags)
        pushed[sha512(raw)] = (raw, media_type, tags)

    for digest, (raw, media_type, tags) in pushed.items():
        for reference in (digest, *tags):
            got = client.get(f"/v2/{REPO}/manifests/{reference}", headers={"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"})
            assert got.status_code == 200, (reference, got.text)
            assert (got.content, got.headers["content-type"]) == (raw, media_type)
            assert got.headers["docker-content-digest"] == digest, reference
            head = client.head(f"/v2/{REPO}/manifests/{reference}")
            assert head.status_code == 200
            assert head.headers["docker-content-digest"] == digest, reference
            assert head.headers["content-length"] == str(len(raw))
    listed = client.get(f"/v2/{REPO}/tags/list").json()["tags"]
    assert sorted(listed) == sorted(tag for _, _, tags in pushed.values() for tag in tags)

    for _, _, tags in pushed.values():
        for tag in tags:
            assert client.delete(f"/v2/{REPO}/manifests/{tag}").status_code == 202
            assert client.head(f"/v2/{REPO}/manifests/{tag}").status_code == 404
    for digest in reversed(list(pushed)):  # the index first: its children are listed by it until then
        response = client.delete(f"/v2/{REPO}/manifests/{digest}")
        assert response.status_code == 202, response.text
        assert client.head(f"/v2/{REPO}/manifests/{digest}").status_code == 404
        errors_of(client.delete(f"/v2/{REPO}/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")


def test_repush_of_identical_bytes_succeeds(client: TestClient) -> None:
    raw, media_type = oci_image(client)
    for _ in range(2):
        assert put_manifest(client, REPO, "v1", raw, media_type).status_code == 201


def test_tag_moves_to_the_last_pushed_manifest(client: TestClient) -> None:
    push_image(client, REPO, "v1", seed="1")
    second = push_image(client, REPO, "v1", seed="2")
    assert client.get(f"/v2/{REPO}/manifests/v1").headers["docker-content-digest"] == second


def test_manifest_is_scoped_to_its_repository(client: TestClient) -> None:
    digest = push_image(client, REPO, seed="1")
    push_image(client, "other/repo", seed="2")
    errors_of(client.get(f"/v2/other/repo/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")


def test_foreign_layers_need_not_be_uploaded(client: TestClient) -> None:
    push_blob(client, REPO, b"config")
    foreign = {
        "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "digest": ABSENT,
        "size": 10,
        "urls": ["https://example.com/layer"],
    }
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "layers": [foreign],
            "config": {"mediaType": DOCKER_CONFIG, "digest": sha256(b"config"), "size": 6},
        }
    ).encode()
    assert put_manifest(client, REPO, "win", raw, DOCKER_MANIFEST).status_code == 201


def test_artifact_using_the_empty_blob_twice(client: TestClient) -> None:
    push_blob(client, REPO, b"{}")
    empty = {"mediaType": EMPTY_JSON, "digest": EMPTY_DIGEST, "size": 2}
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/x.demo",
            "config": empty,
            "layers": [empty],
        }
    ).encode()
    assert put_manifest(client, REPO, "artifact", raw).status_code == 201


def test_index_listing_one_child_twice(client: TestClient) -> None:
    child = oci_image(client)
    put_manifest(client, REPO, sha256(child[0]), *child)
    raw = index_manifest([child, child])
    assert put_manifest(client, REPO, "multi", raw, OCI_INDEX).status_code == 201


def test_subject_is_echoed_even_when_missing(client: TestClient) -> None:
    raw = image_manifest(REPO, client, subject={"mediaType": OCI_MANIFEST, "digest": ABSENT, "size": 7})
    response = put_manifest(client, REPO, sha256(raw), raw)
    assert response.status_code == 201
    assert response.headers["oci-subject"] == ABSENT


def test_no_subject_header_without_subject(client: TestClient) -> None:
    raw, media_type = oci_image(client)
    assert "oci-subject" not in put_manifest(client, REPO, "v1", raw, media_type).headers


# ------------------------------------------------------------------------------------------ invalid pushes


def test_missing_blob_is_manifest_blob_unknown(client: TestClient) -> None:
    push_blob(client, REPO, b"config")
    raw = image_manifest(None, None, layers=(b"never uploaded",), config=b"config")
    response = put_manifest(client, REPO, "v1", raw)
    errors_of(response, 400, "MANIFEST_BLOB_UNKNOWN")
    assert sha256(b"never uploaded") in response.text
    errors_of(client.get(f"/v2/{REPO}/manifests/v1"), 404, "MANIFEST_UNKNOWN")


def test_each_missing_blob_is_its_own_error(client: TestClient) -> None:
    """Spec section 6: one MANIFEST_BLOB_UNKNOWN error per missing digest."""
    push_blob(client, REPO, b"a")
    raw = image_manifest(None, None, layers=(b"a", b"b", b"c"), config=b"cfg")
    errors = errors_of(put_manifest(client, REPO, "v1", raw), 400, "MANIFEST_BLOB_UNKNOWN")
    assert len(errors) == 3
    assert {error["detail"]["digest"] for error in errors} == {sha256(b"b"), sha256(b"c"), sha256(b"cfg")}


def test_index_with_missing_child(client: TestClient) -> None:
    child = oci_image(client)  # blobs uploaded, manifest itself never pushed
    response = put_manifest(client, REPO, "v1", index_manifest([child]), OCI_INDEX)
    errors_of(response, 400, "MANIFEST_BLOB_UNKNOWN")
    assert sha256(child[0]) in response.text


def test_index_child_from_another_repository_is_missing(client: TestClient) -> None:
    child = oci_image(client)
    put_manifest(client, "other/repo", sha256(child[0]), *child)
    put_manifest(client, REPO, "unrelated", image_manifest(REPO, client, layers=(b"unrelated",)))
    errors_of(put_manifest(client, REPO, "v1", index_manifest([child]), OCI_INDEX), 400, "MANIFEST_BLOB_UNKNOWN")


def test_blob_deleted_from_repository_is_missing(client: TestClient) -> None:
    raw, _ = oci_image(client)
    client.delete(f"/v2/{REPO}/blobs/{sha256(b'a')}")
    errors_of(put_manifest(client, REPO, "v1", raw), 400, "MANIFEST_BLOB_UNKNOWN")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"not json", OCI_MANIFEST),
        (b"[1, 2]", OCI_MANIFEST),
        (b"", OCI_MANIFEST),
        (
            b'{"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}',
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        ),
        (b'{"schemaVersion": 1, "fsLayers": []}', "application/vnd.docker.distribution.manifest.v1+json"),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode(), OCI_MANIFEST),
        (json.dumps({"schemaVersion": 2, "config": {}, "layers": []}).encode(), DOCKER_MANIFEST),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode(), OCI_MANIFEST),
        (
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "layers": [],
                    "config": {"mediaType": EMPTY_JSON, "digest": "sha256:nothex", "size": 2},
                }
            ).encode(),
            OCI_MANIFEST,
        ),
        (json.dumps({"schemaVersion": 2, "mediaType": "text/plain", "manifests": []}).encode(), "text/plain"),
    ],
    ids=[
        "garbage",
        "array",
        "empty",
        "schema1-signed",
        "schema1",
        "type-mismatch",
        "docker-unnamed",
        "no-config",
        "bad-descriptor",
        "unknown-type",
    ],
)
def test_invalid_manifest(client: TestClient, body: bytes, content_type: str) -> None:
    errors_of(put_manifest(client, REPO, "v1", body, content_type), 400, "MANIFEST_INVALID")


def test_deeply_nested_json_is_manifest_invalid(client: TestClient) -> None:
    errors_of(put_manifest(client, REPO, "v1", b"[" * 200_000), 400, "MANIFEST_INVALID")


def _padded_manifest(client: TestClient, total: int) -> bytes:
    push_blob(client, REPO, b"{}")
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "layers": [],
        "annotations": {"pad": ""},
        "config": {"mediaType": EMPTY_JSON, "digest": EMPTY_DIGEST, "size": 2},
    }
    raw = json.dumps(document).encode()
    document["annotations"] = {"pad": "x" * (total - len(raw))}
    raw = json.dumps(document).encode()
    assert len(raw) == total
    return raw


def test_manifest_of_exactly_4_mib_is_accepted(client: TestClient) -> None:
    assert put_manifest(client, REPO, "big", _padded_manifest(client, MAX_MANIFEST)).status_code == 201


def test_manifest_over_4_mib_is_413(client: TestClient) -> None:
    response = put_manifest(client, REPO, "big", _padded_manifest(client, MAX_MANIFEST + 1))
    assert response.status_code == 413
    assert response.json()["errors"]


def test_streamed_manifest_over_4_mib_is_413(client: TestClient) -> None:
    raw = _padded_manifest(client, MAX_MANIFEST + 1)

    def body() -> Iterator[bytes]:
        for start in range(0, len(raw), 65536):
            yield raw[start : start + 65536]

    response = client.put(f"/v2/{REPO}/manifests/big", content=body(), headers={"Content-Type": OCI_MANIFEST})
    assert response.status_code == 413


@pytest.mark.parametrize(
    "name",
    ["Team/app", "a", "a" * 257, "team//app", "team/app/", "-team", "team_", "te..am", "te___am", "tëam"],
)
def test_invalid_repository_name(client: TestClient, name: str) -> None:
    raw, media_type = oci_image(client)
    errors_of(put_manifest(client, name, "v1", raw, media_type), 400, "NAME_INVALID")
    errors_of(client.get(f"/v2/{name}/manifests/v1"), 400, "NAME_INVALID")


@pytest.mark.parametrize("name", ["ab", "a" * 256, "a-b/c--d/e__f/g.h/i_j", "0/1"])
def test_boundary_repository_names_are_valid(client: TestClient, name: str) -> None:
    push_image(client, name)


@pytest.mark.parametrize("tag", ["-v1", ".v1", "v" * 129, "v1+build", "v1~x", ".INVALID_MANIFEST_NAME"])
def test_invalid_tag(client: TestClient, tag: str) -> None:
    """Pushing to an invalid tag is refused (400); pulling or deleting one finds nothing (404), as the spec's
    pull and the conformance suite want: no manifest can be known by such a name."""
    raw, media_type = oci_image(client)
    errors_of(put_manifest(client, REPO, tag, raw, media_type), 400, "TAG_INVALID")
    push_image(client, REPO, "v1")
    errors_of(client.get(f"/v2/{REPO}/manifests/{tag}"), 404, "MANIFEST_UNKNOWN")
    head = client.head(f"/v2/{REPO}/manifests/{tag}")
    assert head.status_code == 404
    errors_of(client.delete(f"/v2/{REPO}/manifests/{tag}"), 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("tag", ["_", "V1.0-rc_1", "x" * 128])
def test_boundary_tags_are_valid(client: TestClient, tag: str) -> None:
    digest = push_image(client, REPO, tag)
    assert client.get(f"/v2/{REPO}/manifests/{tag}").headers["docker-content-digest"] == digest


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_malformed_digest_reference(client: TestClient, method: str) -> None:
    push_image(client, REPO)
    response = client.request(method, f"/v2/{REPO}/manifests/sha256:1234", content=b"{}")
    errors_of(response, 400, "DIGEST_INVALID")


# ------------------------------------------------------------------------------------------ unknown


def test_unknown_repository(client: TestClient) -> None:
    errors_of(client.get("/v2/nowhere/manifests/latest"), 404, "NAME_UNKNOWN")
    errors_of(client.delete("/v2/nowhere/manifests/latest"), 404, "NAME_UNKNOWN")
    assert client.head("/v2/nowhere/manifests/latest").status_code == 404


@pytest.mark.parametrize("reference", ["missing", ABSENT])
def test_unknown_manifest(client: TestClient, reference: str) -> None:
    push_image(client, REPO)
    errors_of(client.get(f"/v2/{REPO}/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")
    assert client.head(f"/v2/{REPO}/manifests/{reference}").status_code == 404
    errors_of(client.delete(f"/v2/{REPO}/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")


# ------------------------------------------------------------------------------------------ deletes


def test_delete_tag_keeps_digest(client: TestClient) -> None:
    digest = push_image(client, REPO, "v1")
    assert client.delete(f"/v2/{REPO}/manifests/v1").status_code == 202
    errors_of(client.get(f"/v2/{REPO}/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    assert client.get(f"/v2/{REPO}/manifests/{digest}").status_code == 200


def test_delete_digest_removes_its_tags(client: TestClient) -> None:
    digest = push_image(client, REPO, "v1")
    put_manifest(client, REPO, "v2", client.get(f"/v2/{REPO}/manifests/v1").content)
    push_image(client, REPO, "other", seed="2")
    assert client.delete(f"/v2/{REPO}/manifests/{digest}").status_code == 202
    for reference in (digest, "v1", "v2"):
        errors_of(client.get(f"/v2/{REPO}/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")
    assert client.get(f"/v2/{REPO}/tags/list").json()["tags"] == ["other"]


def test_deleted_manifest_can_be_pushed_again(client: TestClient) -> None:
    digest = push_image(client, REPO, "v1")
    raw = client.get(f"/v2/{REPO}/manifests/v1").content
    client.delete(f"/v2/{REPO}/manifests/{digest}")
    assert put_manifest(client, REPO, "v1", raw).status_code == 201
    assert client.get(f"/v2/{REPO}/manifests/v1").content == raw


def test_deleting_a_manifest_an_index_lists_is_refused(client: TestClient) -> None:
    child = oci_image(client)
    put_manifest(client, REPO, sha256(child[0]), *child)
    index = index_manifest([child])
    put_manifest(client, REPO, "multi", index, OCI_INDEX)
    response = client.delete(f"/v2/{REPO}/manifests/{sha256(child[0])}")
    assert response.status_code == 409
    assert sha256(index) in response.text
    assert client.get(f"/v2/{REPO}/manifests/{sha256(child[0])}").status_code == 200
    assert client.delete(f"/v2/{REPO}/manifests/{sha256(index)}").status_code == 202
    assert client.delete(f"/v2/{REPO}/manifests/{sha256(child[0])}").status_code == 202
