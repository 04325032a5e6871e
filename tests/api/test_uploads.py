"""Blob upload sessions: monolithic, single POST, chunked, streamed, status, cancel (spec section 5)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from dockyard.server import Services
from tests.api.helpers import errors_of, sha256, sha512, start_upload

DATA = b"0123456789abcdefghij"  # 20 bytes


def chunks(*parts: bytes) -> Iterator[bytes]:
    """A generator body: sent with chunked transfer encoding and no Content-Length."""
    yield from parts


@pytest.fixture
def location(client: TestClient) -> str:
    return start_upload(client, "team/app")


def test_post_opens_a_session(client: TestClient) -> None:
    response = client.post("/v2/team/app/blobs/uploads/")
    assert response.status_code == 202
    upload_id = response.headers["docker-upload-uuid"]
    assert response.headers["location"] == f"/v2/team/app/blobs/uploads/{upload_id}"
    assert response.headers["range"] == "0-0"
    assert response.headers["content-length"] == "0"


def test_monolithic_post_then_put(client: TestClient, location: str) -> None:
    digest = sha256(DATA)
    response = client.put(location, params={"digest": digest}, content=DATA)
    assert response.status_code == 201
    assert response.headers["location"] == f"/v2/team/app/blobs/{digest}"
    assert response.headers["docker-content-digest"] == digest
    assert client.get(f"/v2/team/app/blobs/{digest}").content == DATA


def test_single_post_with_digest(client: TestClient) -> None:
    digest = sha256(DATA)
    response = client.post("/v2/team/app/blobs/uploads/", params={"digest": digest}, content=DATA)
    assert response.status_code == 201
    assert response.headers["location"] == f"/v2/team/app/blobs/{digest}"
    assert response.headers["docker-content-digest"] == digest
    assert client.get(f"/v2/team/app/blobs/{digest}").content == DATA


def test_single_post_with_wrong_digest(client: TestClient) -> None:
    wrong = sha256(b"other")
    response = client.post("/v2/team/app/blobs/uploads/", params={"digest": wrong}, content=DATA)
    errors_of(response, 400, "DIGEST_INVALID")
    assert client.head(f"/v2/team/app/blobs/{wrong}").status_code == 404


def test_single_post_with_short_body_is_size_invalid(client: TestClient) -> None:
    response = client.post(
        "/v2/team/app/blobs/uploads/",
        params={"digest": sha256(DATA)},
        content=DATA,
        headers={"Content-Length": str(len(DATA) + 5)},
    )
    errors_of(response, 400, "SIZE_INVALID")


def test_single_post_with_malformed_digest(client: TestClient) -> None:
    response = client.post("/v2/team/app/blobs/uploads/", params={"digest": "sha256:xyz"}, content=DATA)
    errors_of(response, 400, "DIGEST_INVALID")


def test_chunked_upload_in_order(client: TestClient, location: str) -> None:
    first = client.patch(location, content=DATA[:8], headers={"Content-Range": "0-7"})
    assert first.status_code == 202
    assert first.headers["range"] == "0-7"
    second = client.patch(first.headers["location"], content=DATA[8:], headers={"Content-Range": "8-19"})
    assert second.status_code == 202
    assert second.headers["range"] == "0-19"
    done = client.put(second.headers["location"], params={"digest": sha256(DATA)})
    assert done.status_code == 201
    assert client.get(f"/v2/team/app/blobs/{sha256(DATA)}").content == DATA


@pytest.mark.parametrize("start", [0, 4, 12])  # overlapping, overlapping, gap
def test_out_of_order_chunk_is_416_with_resume_point(client: TestClient, location: str, start: int) -> None:
    client.patch(location, content=DATA[:8], headers={"Content-Range": "0-7"})
    response = client.patch(location, content=b"xxxx", headers={"Content-Range": f"{start}-{start + 3}"})
    assert response.status_code == 416
    assert response.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
    assert response.headers["range"] == "0-7"
    assert response.headers["location"] == location
    assert client.get(location).headers["range"] == "0-7"


def test_first_chunk_must_start_at_zero(client: TestClient, location: str) -> None:
    response = client.patch(location, content=b"abcd", headers={"Content-Range": "1-4"})
    assert response.status_code == 416
    assert response.headers["range"] == "0-0"
    assert response.headers["location"] == location


@pytest.mark.parametrize("content_range", ["a-b", "5", "7-3", "0-3"])
def test_malformed_or_inconsistent_content_range_is_400(client: TestClient, location: str, content_range: str) -> None:
    response = client.patch(location, content=b"abcdefgh", headers={"Content-Range": content_range})
    errors_of(response, 400, "BLOB_UPLOAD_INVALID")


def test_streamed_patch_without_content_range(client: TestClient, location: str) -> None:
    response = client.patch(location, content=chunks(DATA[:5], DATA[5:12]))
    assert response.status_code == 202
    assert response.headers["range"] == "0-11"
    response = client.patch(location, content=chunks(DATA[12:]))
    assert response.headers["range"] == "0-19"
    done = client.put(location, params={"digest": sha256(DATA)}, content=b"")
    assert done.status_code == 201
    assert client.get(f"/v2/team/app/blobs/{sha256(DATA)}").content == DATA


def test_put_with_final_chunk(client: TestClient, location: str) -> None:
    client.patch(location, content=DATA[:10], headers={"Content-Range": "0-9"})
    response = client.put(
        location, params={"digest": sha256(DATA)}, content=DATA[10:], headers={"Content-Range": "10-19"}
    )
    assert response.status_code == 201
    assert client.get(f"/v2/team/app/blobs/{sha256(DATA)}").content == DATA


def test_put_with_out_of_order_final_chunk_is_416(client: TestClient, location: str) -> None:
    client.patch(location, content=DATA[:10], headers={"Content-Range": "0-9"})
    response = client.put(
        location, params={"digest": sha256(DATA)}, content=DATA[12:], headers={"Content-Range": "12-19"}
    )
    assert response.status_code == 416
    assert response.headers["range"] == "0-9"


def test_put_with_streamed_final_chunk(client: TestClient, location: str) -> None:
    client.patch(location, content=DATA[:10])
    response = client.put(location, params={"digest": sha256(DATA)}, content=chunks(DATA[10:]))
    assert response.status_code == 201
    assert client.get(f"/v2/team/app/blobs/{sha256(DATA)}").content == DATA


def test_status_reports_progress(client: TestClient, location: str) -> None:
    client.patch(location, content=DATA[:13])
    response = client.get(location)
    assert response.status_code == 204
    assert response.headers["range"] == "0-12"
    assert response.headers["location"] == location
    assert location.endswith(response.headers["docker-upload-uuid"])


def test_wrong_digest_on_put(client: TestClient, location: str) -> None:
    client.patch(location, content=DATA)
    wrong = sha256(b"not the data")
    errors_of(client.put(location, params={"digest": wrong}), 400, "DIGEST_INVALID")
    assert client.head(f"/v2/team/app/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/team/app/blobs/{sha256(DATA)}").status_code == 404


@pytest.mark.parametrize("params", [{}, {"digest": ""}, {"digest": "sha256:12"}, {"digest": "SHA256:ab"}])
def test_put_without_valid_digest_is_400(client: TestClient, location: str, params: dict[str, str]) -> None:
    client.patch(location, content=DATA)
    errors_of(client.put(location, params=params), 400, "DIGEST_INVALID")


def test_chunked_sha512_upload(client: TestClient, location: str) -> None:
    client.patch(location, content=DATA[:7], headers={"Content-Range": "0-6"})
    client.patch(location, content=DATA[7:], headers={"Content-Range": "7-19"})
    digest = sha512(DATA)
    response = client.put(location, params={"digest": digest})
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == digest
    assert client.get(f"/v2/team/app/blobs/{digest}").content == DATA


def test_empty_blob(client: TestClient, location: str) -> None:
    digest = sha256(b"")
    assert client.put(location, params={"digest": digest}).status_code == 201
    response = client.get(f"/v2/team/app/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "0"


def test_uploading_existing_blob_again(client: TestClient) -> None:
    for _ in range(2):
        location = start_upload(client, "team/app")
        assert client.put(location, params={"digest": sha256(DATA)}, content=DATA).status_code == 201
    assert client.get(f"/v2/team/app/blobs/{sha256(DATA)}").content == DATA


def test_cancel_then_session_is_gone(client: TestClient, location: str) -> None:
    client.patch(location, content=DATA)
    assert client.delete(location).status_code == 204
    errors_of(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    errors_of(client.delete(location), 404, "BLOB_UPLOAD_UNKNOWN")
    errors_of(client.patch(location, content=DATA), 404, "BLOB_UPLOAD_UNKNOWN")
    errors_of(client.put(location, params={"digest": sha256(DATA)}), 404, "BLOB_UPLOAD_UNKNOWN")


def test_completed_session_is_gone(client: TestClient, location: str) -> None:
    client.put(location, params={"digest": sha256(DATA)}, content=DATA)
    errors_of(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.parametrize("upload_id", [str(uuid.UUID(int=7)), "not-a-uuid", "0"])
@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
def test_unknown_upload_id(client: TestClient, location: str, upload_id: str, method: str) -> None:
    response = client.request(
        method, f"/v2/team/app/blobs/uploads/{upload_id}", params={"digest": sha256(b"")}, content=b""
    )
    errors_of(response, 404, "BLOB_UPLOAD_UNKNOWN")


def test_session_is_bound_to_its_repository(client: TestClient, location: str) -> None:
    start_upload(client, "other/repo")
    foreign = location.replace("/v2/team/app/", "/v2/other/repo/")
    errors_of(client.get(foreign), 404, "BLOB_UPLOAD_UNKNOWN")
    errors_of(client.patch(foreign, content=DATA), 404, "BLOB_UPLOAD_UNKNOWN")
    assert client.get(location).status_code == 204


def test_upload_to_invalid_name(client: TestClient) -> None:
    errors_of(client.post("/v2/Team/App/blobs/uploads/"), 400, "NAME_INVALID")


def test_anonymous_upload_is_challenged(anonymous: TestClient) -> None:
    response = anonymous.post("/v2/team/app/blobs/uploads/")
    errors_of(response, 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"].startswith("Basic ")


def test_sha512_completion_forgets_the_running_hash(client: TestClient, services: Services, location: str) -> None:
    client.patch(location, content=DATA)
    assert client.put(location, params={"digest": sha512(DATA)}).status_code == 201
    upload_id = location.rsplit("/", 1)[1]
    assert services.registry.hashes.take(upload_id, len(DATA)) is None  # no per-upload state left behind


@pytest.mark.parametrize(
    ("digest", "headers"),
    [
        ("sha256:xyz", {}),  # malformed
        ("md5:" + "0" * 32, {}),  # unsupported algorithm
        (sha256(DATA), {"Content-Length": str(len(DATA) + 1)}),  # size mismatch
        (sha256(b"other"), {}),  # digest mismatch
    ],
)
def test_failed_single_post_leaves_no_session(
    client: TestClient, services: Services, digest: str, headers: dict[str, str]
) -> None:
    response = client.post("/v2/team/app/blobs/uploads/", params={"digest": digest}, content=DATA, headers=headers)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert list((services.settings.blob_root / "uploads").iterdir()) == []


def test_blob_is_invisible_until_the_upload_completes(client: TestClient, location: str) -> None:
    client.patch(location, content=DATA)
    assert client.head(f"/v2/team/app/blobs/{sha256(DATA)}").status_code == 404
    client.put(location, params={"digest": sha256(DATA)})
    assert client.head(f"/v2/team/app/blobs/{sha256(DATA)}").status_code == 200


@pytest.mark.parametrize("upload_id", ["..%2F..%2Fstorage", "%2E%2E", "..%2Fblobs"])
def test_encoded_traversal_in_upload_id(client: TestClient, services: Services, upload_id: str) -> None:
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        response = client.request(method, f"/v2/team/app/blobs/uploads/{upload_id}", content=b"x")
        assert response.status_code in (400, 404, 405), (method, response.status_code)
    assert list((services.settings.blob_root / "uploads").iterdir()) == []
