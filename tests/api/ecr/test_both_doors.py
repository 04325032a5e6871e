"""One image model behind both doors: what skopeo pushes through /v2 the ECR API describes and serves, and what
the layer-upload API + PutImage stores skopeo pulls with identical digests and bytes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.api.ecr.helpers import DOCKER_MANIFEST, OCI_INDEX, put_api_image
from tests.support.images import OCI_CONFIG, OCI_MANIFEST, Layout, random_layers, single_image_layout
from tests.support.server import ServerProcess
from tests.support.tools import Skopeo, describe, fresh_seed, layout_blobs, layout_manifest_digest


def blob_of(layout: Path, digest: str) -> bytes:
    algorithm, hex_digest = digest.split(":", 1)
    return (layout / "blobs" / algorithm / hex_digest).read_bytes()


def token_creds(ecr: Any) -> str:
    """`AWS:<password>` from GetAuthorizationToken, as `docker login` would use it."""
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    return base64.b64decode(token).decode()


def test_skopeo_push_is_described_and_served_by_the_api(
    ecr: Any, ecr_server: ServerProcess, skopeo: Skopeo, created: str, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    digest = single_image_layout(source, tag="v1", layers=3, size=64 * 1024, seed=fresh_seed())
    skopeo.push(ecr_server, f"oci:{source}:v1", f"{created}:v1")
    manifest_bytes = blob_of(source, digest)
    manifest = json.loads(manifest_bytes)
    layer_sizes = {layer["digest"]: layer["size"] for layer in manifest["layers"]}

    (detail,) = ecr.describe_images(repositoryName=created)["imageDetails"]
    assert detail["imageDigest"] == digest
    assert detail["imageTags"] == ["v1"]
    assert detail["imageSizeInBytes"] == sum(layer_sizes.values())
    assert detail["imageManifestMediaType"] == OCI_MANIFEST
    assert detail["artifactMediaType"] == OCI_CONFIG
    assert abs(detail["imagePushedAt"] - datetime.now(UTC)) < timedelta(minutes=2)
    assert ecr.list_images(repositoryName=created)["imageIds"] == [{"imageDigest": digest, "imageTag": "v1"}]

    (image,) = ecr.batch_get_image(repositoryName=created, imageIds=[{"imageTag": "v1"}])["images"]
    assert image["imageManifest"].encode() == manifest_bytes  # identical bytes, hence the identical digest
    assert image["imageManifestMediaType"] == OCI_MANIFEST

    layers = ecr.batch_check_layer_availability(repositoryName=created, layerDigests=list(layer_sizes))["layers"]
    assert {layer["layerDigest"]: layer["layerSize"] for layer in layers} == layer_sizes
    assert {layer["layerAvailability"] for layer in layers} == {"AVAILABLE"}

    first = manifest["layers"][0]["digest"]
    url = ecr.get_download_url_for_layer(repositoryName=created, layerDigest=first)["downloadUrl"]
    user, password = token_creds(ecr).split(":")
    response = httpx.get(url, auth=(user, password), follow_redirects=True, timeout=30)
    assert response.status_code == 200
    assert response.content == blob_of(source, first)


def test_skopeo_multi_arch_push_is_one_index_and_its_images(
    ecr: Any, ecr_server: ServerProcess, skopeo: Skopeo, created: str, tmp_path: Path
) -> None:
    source = tmp_path / "multi"
    layout = Layout(source)
    seed = fresh_seed()
    children = [
        layout.add_image(random_layers(1, 4096, seed + n), architecture=arch, label=str(seed + n))
        for n, arch in enumerate(["amd64", "arm64"])
    ]
    index = layout.add_index(children)
    layout.tag(index, "multi")
    skopeo.push(ecr_server, f"oci:{source}:multi", f"{created}:multi", "--all")

    details = {d["imageDigest"]: d for d in ecr.describe_images(repositoryName=created)["imageDetails"]}
    assert set(details) == {index["digest"], *(child["digest"] for child in children)}
    assert details[index["digest"]]["imageManifestMediaType"] == OCI_INDEX
    assert details[index["digest"]]["imageTags"] == ["multi"]
    assert details[index["digest"]]["imageSizeInBytes"] == max(
        details[child["digest"]]["imageSizeInBytes"] for child in children
    )
    (got,) = ecr.batch_get_image(repositoryName=created, imageIds=[{"imageTag": "multi"}])["images"]
    assert got["imageManifest"].encode() == blob_of(source, index["digest"])
    answer = ecr.batch_delete_image(repositoryName=created, imageIds=[{"imageDigest": children[0]["digest"]}])
    assert [f["failureCode"] for f in answer["failures"]] == ["ImageReferencedByManifestList"]


def test_api_image_is_pulled_by_skopeo(
    ecr: Any, ecr_server: ServerProcess, skopeo: Skopeo, created: str, tmp_path: Path
) -> None:
    image = put_api_image(ecr, created, fresh_seed(), tag="v1", layers=3, size=32 * 1024)
    pulled = tmp_path / "pulled"
    skopeo.ok(
        "copy", "--quiet", "--src-tls-verify=false", "--src-creds", token_creds(ecr),
        f"docker://{ecr_server.host}/{created}:v1", f"oci:{pulled}:v1",
    )  # fmt: skip
    assert layout_manifest_digest(pulled, "v1") == image.digest
    blobs = layout_blobs(pulled)
    assert blobs[image.digest] == image.manifest.encode()
    assert {digest: blobs[digest] for digest in image.blobs} == image.blobs
    assert skopeo.inspect_raw(ecr_server, f"{created}:v1") == image.manifest.encode()

    (detail,) = ecr.describe_images(repositoryName=created, imageIds=[{"imageTag": "v1"}])["imageDetails"]
    assert abs(detail["lastRecordedPullTime"] - datetime.now(UTC)) < timedelta(minutes=2)


def test_api_docker_image_is_pulled_byte_for_byte(
    ecr: Any, ecr_server: ServerProcess, skopeo: Skopeo, created: str, tmp_path: Path
) -> None:
    image = put_api_image(ecr, created, fresh_seed(), tag="docker", media_type=DOCKER_MANIFEST)
    target = tmp_path / "dir"
    skopeo.pull(ecr_server, f"{created}:docker", f"dir:{target}")
    assert (target / "manifest.json").read_bytes() == image.manifest.encode()
    for digest, data in image.blobs.items():
        assert (target / digest.split(":", 1)[1]).read_bytes() == data


def test_api_delete_is_seen_by_the_registry(
    ecr: Any, ecr_server: ServerProcess, skopeo: Skopeo, created: str, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    digest = single_image_layout(source, tag="gone", layers=1, size=1024, seed=fresh_seed())
    skopeo.push(ecr_server, f"oci:{source}:gone", f"{created}:gone")
    answer = ecr.batch_delete_image(repositoryName=created, imageIds=[{"imageTag": "gone"}])
    assert answer["imageIds"] == [{"imageDigest": digest, "imageTag": "gone"}]
    result = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", ecr_server.creds,
                    f"docker://{ecr_server.host}/{created}:gone")  # fmt: skip
    assert result.returncode != 0, describe(result)
    with ecr_server.client() as http:
        assert http.get(f"/v2/{created}/manifests/{digest}").status_code == 404


def test_immutable_tag_refuses_a_registry_push(
    ecr: Any, ecr_server: ServerProcess, skopeo: Skopeo, repo: str, tmp_path: Path
) -> None:
    ecr.create_repository(repositoryName=repo, imageTagMutability="IMMUTABLE")
    first, second = tmp_path / "first", tmp_path / "second"
    single_image_layout(first, tag="v1", layers=1, size=1024, seed=fresh_seed())
    single_image_layout(second, tag="v1", layers=1, size=1024, seed=fresh_seed())
    skopeo.push(ecr_server, f"oci:{first}:v1", f"{repo}:v1")
    result = skopeo("copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", ecr_server.creds,
                    f"oci:{second}:v1", f"docker://{ecr_server.host}/{repo}:v1")  # fmt: skip
    assert result.returncode != 0, describe(result)
    assert "tag invalid" in result.stderr.lower(), describe(result)
