"""The referrers API and OCI-Subject (spec section 7)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.api.helpers import (
    ABSENT,
    EMPTY_DIGEST,
    EMPTY_JSON,
    OCI_INDEX,
    OCI_MANIFEST,
    errors_of,
    push_blob,
    push_image,
    put_manifest,
    sha256,
)

REPO = "team/app"
SIGNATURE = "application/vnd.example.signature"
SBOM = "application/vnd.example.sbom"


def push_referrer(
    client: TestClient, subject: str, artifact_type: str | None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """Push an artifact manifest whose subject is `subject`; returns its expected referrers descriptor."""
    push_blob(client, REPO, b"{}")
    config_type = EMPTY_JSON if artifact_type else "application/vnd.example.config"
    config = {"mediaType": config_type, "digest": EMPTY_DIGEST, "size": 2}
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [config],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 100},
    }
    if artifact_type:
        document["artifactType"] = artifact_type
    if annotations:
        document["annotations"] = annotations
    raw = json.dumps(document).encode()
    response = put_manifest(client, REPO, sha256(raw), raw)
    assert response.status_code == 201
    assert response.headers["oci-subject"] == subject
    expected = {
        "mediaType": OCI_MANIFEST,
        "digest": sha256(raw),
        "size": len(raw),
        "artifactType": artifact_type or config_type,
    }
    if annotations:
        expected["annotations"] = annotations
    return expected


@pytest.fixture
def subject(client: TestClient) -> str:
    return push_image(client, REPO)


def test_unknown_subject_has_an_empty_index(client: TestClient, subject: str) -> None:
    response = client.get(f"/v2/{REPO}/referrers/{ABSENT}")
    assert response.status_code == 200
    assert response.headers["content-type"] == OCI_INDEX
    assert response.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


def test_unknown_repository_has_an_empty_index(client: TestClient) -> None:
    response = client.get(f"/v2/nowhere/referrers/{ABSENT}")
    assert response.status_code == 200
    assert response.json()["manifests"] == []


def test_referrers_are_listed_with_annotations(client: TestClient, subject: str) -> None:
    signature = push_referrer(client, subject, SIGNATURE, {"org.example.signer": "alice"})
    sbom = push_referrer(client, subject, SBOM)
    push_referrer(client, ABSENT, SBOM)  # refers to something else
    response = client.get(f"/v2/{REPO}/referrers/{subject}")
    assert response.status_code == 200
    assert sorted(response.json()["manifests"], key=lambda d: d["digest"]) == sorted(
        [signature, sbom], key=lambda d: d["digest"]
    )
    assert "oci-filters-applied" not in response.headers


def test_artifact_type_falls_back_to_config_media_type(client: TestClient, subject: str) -> None:
    expected = push_referrer(client, subject, None)
    (listed,) = client.get(f"/v2/{REPO}/referrers/{subject}").json()["manifests"]
    assert listed == expected
    assert listed["artifactType"] == "application/vnd.example.config"


def test_index_referrer_without_artifact_type_has_none(client: TestClient, subject: str) -> None:
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1},
        }
    ).encode()
    assert put_manifest(client, REPO, sha256(raw), raw, OCI_INDEX).headers["oci-subject"] == subject
    (listed,) = client.get(f"/v2/{REPO}/referrers/{subject}").json()["manifests"]
    assert listed == {"mediaType": OCI_INDEX, "digest": sha256(raw), "size": len(raw)}


def test_artifact_type_filter(client: TestClient, subject: str) -> None:
    signature = push_referrer(client, subject, SIGNATURE)
    push_referrer(client, subject, SBOM)
    response = client.get(f"/v2/{REPO}/referrers/{subject}", params={"artifactType": SIGNATURE})
    assert response.json()["manifests"] == [signature]
    assert response.headers["oci-filters-applied"] == "artifactType"


def test_filter_matching_nothing(client: TestClient, subject: str) -> None:
    push_referrer(client, subject, SIGNATURE)
    response = client.get(f"/v2/{REPO}/referrers/{subject}", params={"artifactType": "application/none"})
    assert response.status_code == 200
    assert response.json()["manifests"] == []
    assert response.headers["oci-filters-applied"] == "artifactType"


def test_referrers_are_scoped_to_the_repository(client: TestClient, subject: str) -> None:
    push_referrer(client, subject, SIGNATURE)
    push_image(client, "other/repo")
    assert client.get(f"/v2/other/repo/referrers/{subject}").json()["manifests"] == []


def test_deleted_referrer_leaves_the_list(client: TestClient, subject: str) -> None:
    signature = push_referrer(client, subject, SIGNATURE)
    assert client.delete(f"/v2/{REPO}/manifests/{signature['digest']}").status_code == 202
    assert client.get(f"/v2/{REPO}/referrers/{subject}").json()["manifests"] == []


def test_referrer_pushed_before_its_subject(client: TestClient) -> None:
    future = sha256(b"not pushed yet")
    signature = push_referrer(client, future, SIGNATURE)
    assert client.get(f"/v2/{REPO}/referrers/{future}").json()["manifests"] == [signature]


@pytest.mark.parametrize("digest", ["sha256:abc", "latest", "sha256:" + "G" * 64])
def test_malformed_digest_is_400(client: TestClient, subject: str, digest: str) -> None:
    errors_of(client.get(f"/v2/{REPO}/referrers/{digest}"), 400, "DIGEST_INVALID")


def test_referrers_need_credentials(anonymous: TestClient) -> None:
    errors_of(anonymous.get(f"/v2/{REPO}/referrers/{ABSENT}"), 401, "UNAUTHORIZED")
