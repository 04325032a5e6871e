"""The registry door meters what it serves: blob and manifest bytes of GETs (a redirected blob GET counts its
size), manifest GETs as pulls and manifest PUTs as pushes, per repository; HEADs count nothing. The counts
reach the metadata store when the app shuts down (and every few seconds while it runs)."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from dockyard.config import Settings
from dockyard.domain.clock import utc_now
from dockyard.domain.names import Digest
from dockyard.domain.ports import RepositoryUsage
from dockyard.domain.usage import hour_of
from dockyard.server import Dockyard, Services
from dockyard.storage.blobs.filesystem import FilesystemBlobStore
from tests.api.conftest import check_response
from tests.api.helpers import push_blob, push_image
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY

LAYER = bytes(range(256)) * 40
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}".encode()).decode()}


def app_client(services: Services) -> TestClient:
    client = TestClient(Dockyard(services), headers=AUTH)
    client.event_hooks["response"].append(check_response)
    return client


def usage(services: Services) -> list[RepositoryUsage]:
    hour = hour_of(utc_now())
    return services.metadata.usage_totals(ACCOUNT_ID, hour - timedelta(hours=1), hour + timedelta(hours=1))


def test_gets_are_metered_per_repository_and_flushed_at_shutdown(services: Services) -> None:
    with app_client(services) as client:
        manifest_digest = push_image(client, "team/app")
        blob = push_blob(client, "team/app", LAYER)
        push_image(client, "team/web", seed="2")
        manifest = client.get(f"/v2/team/app/manifests/{manifest_digest}").content
        assert client.get("/v2/team/app/manifests/latest").content == manifest
        assert client.head("/v2/team/app/manifests/latest").status_code == 200
        assert client.get(f"/v2/team/app/blobs/{blob}").content == LAYER
        assert len(client.get(f"/v2/team/app/blobs/{blob}", headers={"Range": "bytes=100-199"}).content) == 100
        assert client.head(f"/v2/team/app/blobs/{blob}").status_code == 200
        assert client.get("/v2/team/app/manifests/absent").status_code == 404
    counted = [(u.name, u.transfer_bytes, u.pulls, u.pushes) for u in usage(services)]
    assert counted == [("team/app", 2 * len(manifest) + len(LAYER) + 100, 2, 1), ("team/web", 0, 0, 1)]


@pytest.fixture
def redirecting(
    template_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Services, list[Digest]]]:
    """Services whose (unencrypted) blob store sends blob GETs elsewhere, as S3 with --s3-redirect does."""
    shutil.copytree(template_data_dir, tmp_path / "data")
    redirected: list[Digest] = []

    def redirect_url(self: FilesystemBlobStore, digest: Digest) -> str:
        redirected.append(digest)
        return f"https://blobs.example/{digest}"

    monkeypatch.setattr(FilesystemBlobStore, "redirect_url", redirect_url)
    yield Services(Settings(tmp_path / "data", ACCOUNT_ID, encrypt_at_rest=False, background_jobs=False)), redirected


def test_a_redirected_blob_get_counts_the_blob_size(redirecting: tuple[Services, list[Digest]]) -> None:
    services, redirected = redirecting
    with app_client(services) as client:
        blob = push_blob(client, "team/app", LAYER)
        response = client.get(f"/v2/team/app/blobs/{blob}", follow_redirects=False)
        assert response.status_code == 307 and response.headers["location"] == f"https://blobs.example/{blob}"
    assert redirected == [Digest.parse(blob)]
    assert usage(services) == [RepositoryUsage("us-east-1", "team/app", transfer_bytes=len(LAYER))]
