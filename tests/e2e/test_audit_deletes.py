"""A delete's audit line names what went: the digest and the tags (the decision line only says who may)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.support.clients import boto_client
from tests.support.iam import Keys, audit_events
from tests.support.images import OCI_MANIFEST, sha256
from tests.support.registry_http import push_blob
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess

ROOT_ARN = f"arn:aws:iam::{ACCOUNT_ID}:root"
REPOSITORY = "audit/app"


def push_image(http: httpx.Client, seed: str, tags: list[str]) -> str:
    config, layer = f'{{"seed": "{seed}"}}'.encode(), f"layer {seed}".encode()
    config_digest, layer_digest = push_blob(http, REPOSITORY, config), push_blob(http, REPOSITORY, layer)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config),
        },
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer)}],
    }
    raw = json.dumps(manifest).encode()
    for tag in tags:
        put = http.put(f"/v2/{REPOSITORY}/manifests/{tag}", content=raw, headers={"Content-Type": OCI_MANIFEST})
        assert put.status_code == 201, put.text
    return sha256(raw)


def removed(server: ServerProcess, count: int) -> list[list[dict[str, Any]]]:
    """The image ids of the BatchDeleteImage result lines, once `count` of them are written (the audit log is
    written by a thread off the request path: read again until they are there, for a bounded time)."""
    deadline = time.monotonic() + 30
    while True:
        lines = [e for e in audit_events(server.data_dir) if e.get("eventName") == "BatchDeleteImage"]
        results = [e for e in lines if "responseElements" in e and e["userIdentity"]["arn"] == ROOT_ARN]
        if len(results) >= count or time.monotonic() > deadline:
            return [line["responseElements"]["imageIds"] for line in results]
        time.sleep(0.05)  # polling a file another process's thread writes, with a deadline


def test_deletes_by_tag_by_digest_and_through_the_ecr_api_name_digests_and_tags(server: ServerProcess) -> None:
    with server.client() as http:
        first = push_image(http, "one", ["v1", "v1-latest", "stable"])
        assert http.delete(f"/v2/{REPOSITORY}/manifests/stable").status_code == 202
        assert http.delete(f"/v2/{REPOSITORY}/manifests/{first}").status_code == 202
        second = push_image(http, "two", ["v2"])
    ecr = boto_client(server, "ecr", Keys(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
    answer = ecr.batch_delete_image(repositoryName=REPOSITORY, imageIds=[{"imageDigest": second}])
    assert answer["imageIds"] == [{"imageDigest": second, "imageTag": "v2"}]

    by_tag, by_digest, through_ecr = removed(server, 3)
    assert by_tag == [{"imageDigest": first, "imageTag": "stable"}]
    assert sorted(by_digest, key=str) == sorted(
        [{"imageDigest": first, "imageTag": "v1"}, {"imageDigest": first, "imageTag": "v1-latest"}], key=str
    )
    assert through_ecr == [{"imageDigest": second, "imageTag": "v2"}]
