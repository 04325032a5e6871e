"""Round trips per warm pull: a manifest GET or HEAD (by tag or digest) and a blob HEAD are answered from
memory, so SQL statements cannot creep back onto the hottest requests unnoticed. And the pull cache forgets at
once what a write through the same store changed (a delete, a tag move, an archived image)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from starlette.testclient import TestClient

from dockyard.domain.cache import TtlCache
from dockyard.domain.clock import utc_now
from dockyard.domain.names import Digest, RepositoryRef
from dockyard.server import Dockyard, Services
from tests.api.conftest import check_response
from tests.api.helpers import push_blob, push_image
from tests.api.test_usage_metering import AUTH
from tests.support.server import ACCOUNT_ID

# Statements a warm request may make (on SQLite, as these services run; a PostgreSQL node asks the database
# for blob links: docs/architecture.md): raise only with a reason written here.
MANIFEST_GET_BUDGET = 0
HEAD_BLOB_BUDGET = 0
LAYER = b"budget layer " * 100


def no_expiry(services: Services) -> None:
    """Caches live an hour, so a loaded machine's slow request cannot cross a TTL inside the measurement."""
    for holder in (services.metadata, services.authenticator, services.login_tokens):
        for value in vars(holder).values():
            if isinstance(value, TtlCache):
                value.ttl = 3600.0


@contextmanager
def counted(services: Services) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(services.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(services.engine, "before_cursor_execute", count)


@pytest.fixture
def client(services: Services) -> TestClient:
    """No lifespan: the usage flusher and background jobs would add their own statements to the count."""
    no_expiry(services)
    client = TestClient(Dockyard(services), headers=AUTH)
    client.event_hooks["response"].append(check_response)
    return client


def per_request(services: Services, call: Any, times: int = 20) -> list[int]:
    counts = []
    for _ in range(times):
        with counted(services) as statements:
            response = call()
        assert response.status_code == 200, response.text
        counts.append(len(statements))
    return counts


def test_a_warm_manifest_get_or_head_makes_at_most_its_budget_of_statements(
    services: Services, client: TestClient
) -> None:
    digest = push_image(client, "team/app")
    for reference in ("latest", digest):
        path = f"/v2/team/app/manifests/{reference}"
        for _ in range(2):  # the first records the pull time (a write, which the pull cache forgets), then warm
            assert client.get(path).status_code == 200
        get_counts = per_request(services, lambda path=path: client.get(path))
        assert max(get_counts) <= MANIFEST_GET_BUDGET, (reference, get_counts)
        head_counts = per_request(services, lambda path=path: client.head(path))
        assert max(head_counts) <= MANIFEST_GET_BUDGET, (reference, head_counts)


def test_a_warm_blob_head_makes_at_most_its_budget_of_statements(services: Services, client: TestClient) -> None:
    blob = push_blob(client, "team/app", LAYER)
    path = f"/v2/team/app/blobs/{blob}"
    assert client.head(path).status_code == 200
    counts = per_request(services, lambda: client.head(path))
    assert max(counts) <= HEAD_BLOB_BUDGET, counts


def test_a_delete_through_the_same_store_is_honoured_at_once(client: TestClient) -> None:
    first = push_image(client, "team/app", "v1", seed="1")
    second = push_image(client, "team/app", "v2", seed="2")
    assert client.get("/v2/team/app/manifests/v1").headers["docker-content-digest"] == first
    assert client.get(f"/v2/team/app/manifests/{second}").status_code == 200

    # A tag moved: the next pull by tag serves the new image.
    moved = client.put(
        "/v2/team/app/manifests/v1",
        content=client.get(f"/v2/team/app/manifests/{second}").content,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert moved.status_code == 201, moved.text
    assert client.get("/v2/team/app/manifests/v1").headers["docker-content-digest"] == second

    # Deleted by digest: by digest and by its tags, GET and HEAD, 404 at once.
    assert client.delete(f"/v2/team/app/manifests/{second}").status_code == 202
    for reference in (second, "v1", "v2"):
        assert client.get(f"/v2/team/app/manifests/{reference}").status_code == 404, reference
        assert client.head(f"/v2/team/app/manifests/{reference}").status_code == 404, reference
    # The first image lost its tag but not its digest.
    assert client.get(f"/v2/team/app/manifests/{first}").status_code == 200


def test_a_deleted_blob_link_and_an_archived_image_are_honoured_at_once(services: Services, client: TestClient) -> None:
    blob = push_blob(client, "team/app", LAYER)
    assert client.head(f"/v2/team/app/blobs/{blob}").status_code == 200
    assert client.delete(f"/v2/team/app/blobs/{blob}").status_code == 202
    assert client.head(f"/v2/team/app/blobs/{blob}").status_code == 404

    digest = push_image(client, "team/app")
    assert client.get("/v2/team/app/manifests/latest").status_code == 200
    repository = services.metadata.get_repository(RepositoryRef(ACCOUNT_ID, "us-east-1", "team/app"))
    assert repository is not None
    services.metadata.set_storage_class(repository.id, Digest.parse(digest), "ARCHIVE", utc_now())
    archived = client.get("/v2/team/app/manifests/latest")
    assert archived.status_code == 403 and archived.json()["errors"][0]["code"] == "DENIED", archived.text
