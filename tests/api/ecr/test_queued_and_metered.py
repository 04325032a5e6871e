"""Two rules of the ECR API that need the app itself, with no background workers: StartImageScan's daily quota
holds while the first scan is still queued (no worker takes it here, so it stays queued), and PutImage and
BatchGetImage are metered as the /v2 door meters pushes and pulls (the counts reach the store at shutdown).

The app runs in process behind Starlette's TestClient; the ECR calls are signed with botocore's SigV4Auth."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from dockyard.config import Settings
from dockyard.domain.clock import utc_now
from dockyard.domain.usage import hour_of
from dockyard.server import Dockyard, Services
from tests.api.ecr.helpers import AWS_JSON, ECR_TARGET, sign
from tests.api.helpers import image_manifest, push_image
from tests.support.images import OCI_MANIFEST
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY

BASIC = {"Authorization": "Basic " + base64.b64encode(f"{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}".encode()).decode()}


@pytest.fixture
def quiet(template_data_dir: Path, tmp_path: Path) -> Services:
    """Services without background jobs: a queued scan stays queued."""
    shutil.copytree(template_data_dir, tmp_path / "data")
    return Services(Settings(tmp_path / "data", ACCOUNT_ID, background_jobs=False))


@pytest.fixture
def client(quiet: Services) -> Iterator[TestClient]:
    with TestClient(Dockyard(quiet), headers=BASIC) as test_client:
        yield test_client


def ecr_call(client: httpx.Client, operation: str, params: dict[str, Any]) -> httpx.Response:
    body = json.dumps(params).encode()
    headers = {"Content-Type": AWS_JSON, "X-Amz-Target": f"{ECR_TARGET}.{operation}"}
    return client.post("/", content=body, headers=sign("http://testserver/", body, headers))


def test_a_queued_scan_uses_the_days_quota(client: TestClient) -> None:
    push_image(client, "scan/queued", "v1")
    first = ecr_call(client, "StartImageScan", {"repositoryName": "scan/queued", "imageId": {"imageTag": "v1"}})
    assert first.status_code == 200, first.text
    assert first.json()["imageScanStatus"] == {"status": "IN_PROGRESS"}
    again = ecr_call(client, "StartImageScan", {"repositoryName": "scan/queued", "imageId": {"imageTag": "v1"}})
    assert again.status_code == 400, again.text
    assert again.json() == {
        "__type": "LimitExceededException",
        "message": "The scan quota per image has been exceeded. Wait and try again.",
    }
    status = ecr_call(client, "DescribeImages", {"repositoryName": "scan/queued"}).json()
    assert status["imageDetails"][0]["imageScanStatus"] == {"status": "IN_PROGRESS"}  # still queued, as before


def test_put_image_and_batch_get_image_are_metered(quiet: Services) -> None:
    with TestClient(Dockyard(quiet), headers=BASIC) as client:
        raw = image_manifest("team/api", client, layers=(b"metered layer",))  # its blobs pushed through /v2
        put = ecr_call(
            client, "PutImage", {"repositoryName": "team/api", "imageManifest": raw.decode(), "imageTag": "a"}
        )
        assert put.status_code == 200, put.text
        ids = [{"imageTag": "a"}, {"imageTag": "absent"}]
        got = ecr_call(client, "BatchGetImage", {"repositoryName": "team/api", "imageIds": ids})
        assert got.status_code == 200, got.text
        assert len(got.json()["images"]) == 1 and len(got.json()["failures"]) == 1
        assert got.json()["images"][0]["imageManifestMediaType"] == OCI_MANIFEST
    hour = hour_of(utc_now())
    usage = quiet.metadata.usage_totals(ACCOUNT_ID, hour - timedelta(hours=1), hour + timedelta(hours=1))
    # One push, one pull of the manifest's bytes; the image that was not found is not a pull.
    assert [(u.name, u.transfer_bytes, u.pulls, u.pushes) for u in usage] == [("team/api", len(raw), 1, 1)]
