"""Plain OCI distribution calls over HTTP for end-to-end tests: what skopeo cannot do (push an artifact
with a `subject` by digest, read the referrers API) or where a test wants the raw answer."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.images import OCI_MANIFEST, sha256

EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
SIGNATURE_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"


def push_blob(http: httpx.Client, repository: str, data: bytes) -> str:
    """A monolithic upload (one POST with ?digest=)."""
    digest = sha256(data)
    response = http.post(
        f"/v2/{repository}/blobs/uploads/",
        params={"digest": digest},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    return digest


def manifest_of(http: httpx.Client, repository: str, reference: str) -> httpx.Response:
    accept = ", ".join(
        [
            OCI_MANIFEST,
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ]
    )
    return http.get(f"/v2/{repository}/manifests/{reference}", headers={"Accept": accept})


def push_signature(http: httpx.Client, repository: str, subject_digest: str, payload: bytes) -> str:
    """A cosign-style signature artifact whose `subject` is `subject_digest`, pushed untagged by digest."""
    subject = manifest_of(http, repository, subject_digest)
    assert subject.status_code == 200, subject.text
    config = b"{}"
    config_digest = push_blob(http, repository, config)
    layer_digest = push_blob(http, repository, payload)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SIGNATURE_TYPE,
        "config": {"mediaType": EMPTY_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": layer_digest,
                    "size": len(payload)}],
        "subject": {"mediaType": subject.headers["content-type"], "digest": subject_digest,
                    "size": len(subject.content)},
    }  # fmt: skip
    raw = json.dumps(manifest).encode()
    digest = sha256(raw)
    put = http.put(f"/v2/{repository}/manifests/{digest}", content=raw, headers={"Content-Type": OCI_MANIFEST})
    assert put.status_code == 201, put.text
    assert put.headers.get("oci-subject") == subject_digest
    return digest


def referrers(http: httpx.Client, repository: str, digest: str) -> list[str]:
    response = http.get(f"/v2/{repository}/referrers/{digest}")
    assert response.status_code == 200, response.text
    return [entry["digest"] for entry in response.json()["manifests"]]


def tags(http: httpx.Client, repository: str) -> list[str]:
    response = http.get(f"/v2/{repository}/tags/list")
    assert response.status_code == 200, response.text
    return list(response.json()["tags"] or [])
