"""Small helpers for API tests: push blobs and manifests through `/v2` and check error bodies."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx

from tests.support.images import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, sha256

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
EMPTY_JSON = "application/vnd.oci.empty.v1+json"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
ABSENT = "sha256:" + "0" * 64


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def push_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    """Upload `data` in one POST and return its digest."""
    digest = sha256(data)
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert response.status_code == 201, response.text
    return digest


def start_upload(client: httpx.Client, repo: str) -> str:
    """Open an upload session; returns its Location."""
    response = client.post(f"/v2/{repo}/blobs/uploads/")
    assert response.status_code == 202, response.text
    location: str = response.headers["location"]
    return location


def image_manifest(
    repo: str | None,
    client: httpx.Client | None,
    layers: tuple[bytes, ...] = (b"layer-1",),
    config: bytes = b'{"architecture":"amd64","os":"linux"}',
    media_type: str = OCI_MANIFEST,
    config_type: str = OCI_CONFIG,
    layer_type: str = OCI_LAYER_GZIP,
    **extra: Any,
) -> bytes:
    """Manifest bytes; when a client is given, its config and layers are uploaded to `repo` first."""
    if client is not None and repo is not None:
        for blob in (config, *layers):
            push_blob(client, repo, blob)
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config_type, config),
        "layers": [descriptor(layer_type, layer) for layer in layers],
        **extra,
    }
    return json.dumps(document, indent=2).encode()


def index_manifest(children: list[tuple[bytes, str]], media_type: str = OCI_INDEX, **extra: Any) -> bytes:
    """Index bytes listing each (manifest bytes, media type) child with a platform."""
    manifests = [
        descriptor(child_type, raw, platform={"architecture": f"arch{n}", "os": "linux"})
        for n, (raw, child_type) in enumerate(children)
    ]
    document = {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests, **extra}
    return json.dumps(document).encode()


def put_manifest(
    client: httpx.Client, repo: str, reference: str, raw: bytes, media_type: str = OCI_MANIFEST
) -> httpx.Response:
    return client.put(f"/v2/{repo}/manifests/{reference}", content=raw, headers={"Content-Type": media_type})


def push_image(client: httpx.Client, repo: str, reference: str = "latest", seed: str = "1", **extra: Any) -> str:
    """Push a small image (blobs, then manifest); returns the manifest digest."""
    raw = image_manifest(repo, client, layers=(f"layer-{seed}".encode(),), **extra)
    response = put_manifest(client, repo, reference, raw, extra.get("media_type", OCI_MANIFEST))
    assert response.status_code == 201, response.text
    digest: str = response.headers["docker-content-digest"]
    return digest


def errors_of(response: httpx.Response, status: int, code: str) -> list[dict[str, Any]]:
    """Assert an OCI error response with `status` whose errors all carry `code`; returns the errors."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    errors: list[dict[str, Any]] = response.json()["errors"]
    assert errors
    assert {error["code"] for error in errors} == {code}, errors
    return errors
