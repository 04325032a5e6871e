"""Blob GET, HEAD, Range, DELETE and cross-repository mounts (spec sections 2, 4, 5.5, 9)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.api.helpers import ABSENT, errors_of, push_blob, sha256, sha512
from tests.support.server import ACCOUNT_ID

DATA = bytes(range(256)) * 40  # 10240 bytes


@pytest.fixture
def blob(client: TestClient) -> str:
    return push_blob(client, "team/app", DATA)


def test_get_returns_bytes_and_digest(client: TestClient, blob: str) -> None:
    response = client.get(f"/v2/team/app/blobs/{blob}")
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["docker-content-digest"] == blob
    assert response.headers["content-length"] == str(len(DATA))


def test_head_mirrors_get_without_body(client: TestClient, blob: str) -> None:
    response = client.head(f"/v2/team/app/blobs/{blob}")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(DATA))
    assert response.headers["docker-content-digest"] == blob


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        ("bytes=10000-", 10000, 10239),
        ("bytes=-40", 10200, 10239),
        ("bytes=10200-99999", 10200, 10239),
    ],
)
def test_range_get_is_partial(client: TestClient, blob: str, header: str, start: int, end: int) -> None:
    response = client.get(f"/v2/team/app/blobs/{blob}", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == DATA[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert response.headers["content-length"] == str(end - start + 1)


def test_range_head_is_partial(client: TestClient, blob: str) -> None:
    response = client.head(f"/v2/team/app/blobs/{blob}", headers={"Range": "bytes=10-19"})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 10-19/{len(DATA)}"
    assert response.headers["content-length"] == "10"


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=20000-30000", "bytes=-0", "bytes=5-2"])
def test_unsatisfiable_range_is_416(client: TestClient, blob: str, header: str) -> None:
    response = client.get(f"/v2/team/app/blobs/{blob}", headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(DATA)}"


def test_unsatisfiable_range_head_has_no_body(client: TestClient, blob: str) -> None:
    response = client.head(f"/v2/team/app/blobs/{blob}", headers={"Range": "bytes=99999-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(DATA)}"


def test_multi_range_falls_back_to_whole_blob(client: TestClient, blob: str) -> None:
    response = client.get(f"/v2/team/app/blobs/{blob}", headers={"Range": "bytes=0-1,5-6"})
    assert response.status_code == 200
    assert response.content == DATA


def test_large_blob_streams_whole(client: TestClient) -> None:
    data = bytes(range(251)) * 12_000  # about 3 MiB: several read chunks
    digest = push_blob(client, "team/app", data)
    assert client.get(f"/v2/team/app/blobs/{digest}").content == data
    ranged = client.get(f"/v2/team/app/blobs/{digest}", headers={"Range": "bytes=1048570-2097160"})
    assert ranged.content == data[1048570:2097161]


def test_unknown_blob_is_404(client: TestClient, blob: str) -> None:
    errors_of(client.get(f"/v2/team/app/blobs/{ABSENT}"), 404, "BLOB_UNKNOWN")


def test_unknown_blob_head_is_404_without_body(client: TestClient, blob: str) -> None:
    assert client.head(f"/v2/team/app/blobs/{ABSENT}").status_code == 404


def test_blob_of_unknown_repository_is_name_unknown(client: TestClient) -> None:
    errors_of(client.get(f"/v2/nowhere/blobs/{ABSENT}"), 404, "NAME_UNKNOWN")


def test_blob_is_scoped_to_its_repository(client: TestClient, blob: str) -> None:
    push_blob(client, "other/repo", b"something else")
    errors_of(client.get(f"/v2/other/repo/blobs/{blob}"), 404, "BLOB_UNKNOWN")


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:abc",
        "sha256:" + "A" * 64,
        "sha256:" + "g" * 64,
        "sha256" + "0" * 64,
        "sha512:" + "0" * 64,
    ],
)
def test_malformed_digest_is_digest_invalid(client: TestClient, blob: str, digest: str) -> None:
    errors_of(client.get(f"/v2/team/app/blobs/{digest}"), 400, "DIGEST_INVALID")


def test_unknown_algorithm_is_a_400(client: TestClient, blob: str) -> None:
    response = client.get(f"/v2/team/app/blobs/md5:{'0' * 32}")
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] in {"DIGEST_INVALID", "UNSUPPORTED"}


def test_sha512_blob_round_trip(client: TestClient) -> None:
    data = b"hashed with sha512"
    digest = sha512(data)
    created = client.post("/v2/team/app/blobs/uploads/", params={"digest": digest}, content=data)
    assert created.status_code == 201
    assert created.headers["docker-content-digest"] == digest
    response = client.get(f"/v2/team/app/blobs/{digest}")
    assert response.content == data
    assert response.headers["docker-content-digest"] == digest


def test_delete_unlinks_blob(client: TestClient, blob: str) -> None:
    response = client.delete(f"/v2/team/app/blobs/{blob}")
    assert response.status_code == 202
    errors_of(client.get(f"/v2/team/app/blobs/{blob}"), 404, "BLOB_UNKNOWN")


def test_delete_unknown_blob_is_404(client: TestClient, blob: str) -> None:
    client.delete(f"/v2/team/app/blobs/{blob}")
    errors_of(client.delete(f"/v2/team/app/blobs/{blob}"), 404, "BLOB_UNKNOWN")


def test_delete_blob_in_one_repository_keeps_it_in_another(client: TestClient, blob: str) -> None:
    push_blob(client, "other/repo", DATA)
    client.delete(f"/v2/team/app/blobs/{blob}")
    assert client.get(f"/v2/other/repo/blobs/{blob}").content == DATA


def test_delete_blob_with_malformed_digest_is_400(client: TestClient, blob: str) -> None:
    errors_of(client.delete("/v2/team/app/blobs/sha256:nope"), 400, "DIGEST_INVALID")


# ------------------------------------------------------------------------------------------ mounts


def test_mount_from_repository_holding_the_blob(client: TestClient, blob: str) -> None:
    response = client.post("/v2/new/repo/blobs/uploads/", params={"mount": blob, "from": "team/app"})
    assert response.status_code == 201
    assert response.headers["location"] == f"/v2/new/repo/blobs/{blob}"
    assert response.headers["docker-content-digest"] == blob
    assert client.get(f"/v2/new/repo/blobs/{blob}").content == DATA


@pytest.mark.parametrize(
    ("mount", "source"),
    [
        (ABSENT, "team/app"),  # blob absent in the source
        (sha256(DATA), "missing/repo"),  # source repository unknown
        (sha256(DATA), "other/repo"),  # source exists without the blob
    ],
)
def test_impossible_mount_opens_an_upload(client: TestClient, blob: str, mount: str, source: str) -> None:
    push_blob(client, "other/repo", b"unrelated")
    response = client.post("/v2/new/repo/blobs/uploads/", params={"mount": mount, "from": source})
    assert response.status_code == 202
    assert "/v2/new/repo/blobs/uploads/" in response.headers["location"]
    assert client.get(response.headers["location"]).status_code == 204


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_anonymous_mount_from_any_repository_holding_the_blob(client: TestClient, algorithm: str) -> None:
    """`mount` without `from` (distribution-spec main): the registry finds a repository holding the blob."""
    digest = sha256(DATA) if algorithm == "sha256" else sha512(DATA)
    response = client.post("/v2/team/app/blobs/uploads/", params={"digest": digest}, content=DATA)
    assert response.status_code == 201, response.text
    response = client.post("/v2/new/repo/blobs/uploads/", params={"mount": digest})
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/v2/new/repo/blobs/{digest}"
    assert response.headers["docker-content-digest"] == digest
    assert client.get(response.headers["location"]).content == DATA
    # The mount is a link of its own: deleting it leaves the source's, and the other way round.
    assert client.delete(f"/v2/new/repo/blobs/{digest}").status_code == 202
    assert client.get(f"/v2/team/app/blobs/{digest}").content == DATA


def test_anonymous_mount_of_a_blob_held_nowhere_opens_an_upload(client: TestClient, blob: str) -> None:
    client.delete(f"/v2/team/app/blobs/{blob}")  # once held, now linked to no repository
    for digest in (ABSENT, blob):
        response = client.post("/v2/new/repo/blobs/uploads/", params={"mount": digest})
        assert response.status_code == 202, response.text
        assert response.headers["location"].startswith("/v2/new/repo/blobs/uploads/")
        assert client.get(response.headers["location"]).status_code == 204
    errors_of(client.get(f"/v2/new/repo/blobs/{blob}"), 404, "BLOB_UNKNOWN")


def test_anonymous_mount_of_a_blob_in_another_registry_opens_an_upload(client: TestClient) -> None:
    """Only repositories of the target's registry (account and region) are looked at."""
    host = {"Host": f"{ACCOUNT_ID}.dkr.ecr.eu-west-1.localhost"}
    pushed = client.post("/v2/team/app/blobs/uploads/", params={"digest": sha256(DATA)}, content=DATA, headers=host)
    assert pushed.status_code == 201, pushed.text
    response = client.post("/v2/new/repo/blobs/uploads/", params={"mount": sha256(DATA)})
    assert response.status_code == 202, response.text


def test_mount_of_malformed_digest_is_400(client: TestClient, blob: str) -> None:
    response = client.post("/v2/new/repo/blobs/uploads/", params={"mount": "sha256:zz", "from": "team/app"})
    errors_of(response, 400, "DIGEST_INVALID")
