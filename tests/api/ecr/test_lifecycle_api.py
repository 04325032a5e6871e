"""Lifecycle policies through the ECR API of a real `dockyard serve`: the notes' 20 vectors as previews, the
preview API's shapes and errors, and archive/restore with UpdateImageStorageClass.

How the vectors get their times. A server knows only the wall clock and a client cannot choose when an image
was pushed, so the repositories are seeded in process before the server starts (tests/support/seeding.py:
the domain's Registry with an injected clock, the same upload and manifest code the doors run), then the
real server previews them with its real clock. Every vector time is shifted by `anchor - vector.now`, where
`anchor` is a moment a few minutes after seeding: each image is then as old, relative to the server's
`now`, as in the vector, minus the few seconds or minutes between the preview and `anchor`. No vector has an
image within minutes of an age boundary except `age-boundary-is-strict`, whose image pushed "exactly 14
days" ago is then a little younger than 14 days (kept under the strict rule, as the vector says) and whose
"14 days + 1 hour" image stays older (expired). The exact boundary itself is a unit test's business
(tests/unit/domain/test_lifecycle.py pins `now`); here the whole stack is under test.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from dockyard.domain.clock import utc_now
from tests.api.ecr.helpers import ecr_client, error_code, put_api_image
from tests.support.seeding import Seeder
from tests.support.server import ServerProcess

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parents[2] / "unit" / "domain" / "lifecycle_vectors.json").read_text()
)
# The seeded times are shifted so that a vector's `now` falls this long after seeding began; the whole
# module must reach its previews before then (checked, so a slow machine fails clearly, not wrongly).
ANCHOR_MARGIN = timedelta(minutes=20)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class SeededVector:
    vector: dict[str, Any]
    repository: str
    digests: dict[str, str]  # the vector's placeholder -> the real digest
    pushed_at: dict[str, datetime]  # real digest -> seeded push time
    policy_text: str

    def real(self, placeholders: list[str]) -> set[str]:
        return {self.digests[p] for p in placeholders}


@dataclass
class VectorServer:
    server: ServerProcess
    seeded: dict[str, SeededVector]
    anchor: datetime


def _seed_vector(seeder: Seeder, vector: dict[str, Any], shift: timedelta) -> SeededVector:
    name = f"vectors/{vector['id']}"
    ref = seeder.create_repository(name, at=_time(vector["now"]) + shift - timedelta(days=1000))
    digests: dict[str, str] = {}
    pushed: dict[str, datetime] = {}
    images = vector["images"]
    # Children before the indexes that list them, as any client pushes them.
    for image in sorted(images, key=lambda i: bool(i.get("children"))):
        at = _time(image["pushedAt"]) + shift
        if image.get("children"):
            digest = seeder.put_index(ref, [digests[c] for c in image["children"]], image["tags"], at)
        else:
            digest = seeder.put_image(ref, f"{vector['id']}/{image['digest']}", image["tags"], at)
        digests[image["digest"]] = digest
        pushed[digest] = at
    for image in images:
        digest = digests[image["digest"]]
        if image.get("lastRecordedPullTime"):
            seeder.record_pull(ref, digest, _time(image["lastRecordedPullTime"]) + shift)
        if image.get("storageClass") == "archive":
            seeder.archive(ref, digest, _time(image["lastArchivedAt"]) + shift)
        if image.get("lastActivatedAt"):
            seeder.activate(ref, digest, _time(image["lastActivatedAt"]) + shift)
    policy_text = json.dumps(vector["policy"], indent=2)
    return SeededVector(vector, name, digests, pushed, policy_text)


@pytest.fixture(scope="module")
def vector_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorServer]:
    data_dir = tmp_path_factory.mktemp("lifecycle-vectors") / "data"
    anchor = utc_now() + ANCHOR_MARGIN
    with Seeder(data_dir) as seeder:
        seeded = {v["id"]: _seed_vector(seeder, v, anchor - _time(v["now"])) for v in VECTORS}
    process = ServerProcess(data_dir).start()
    try:
        yield VectorServer(process, seeded, anchor)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def vector_ecr(vector_server: VectorServer) -> Any:
    return ecr_client(vector_server.server)


def _preview(ecr: Any, repository: str, policy_text: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start a preview, wait for it as boto3's waiter does, and collect every page of results."""
    start = ecr.start_lifecycle_policy_preview(
        repositoryName=repository, **({"lifecyclePolicyText": policy_text} if policy_text else {})
    )
    assert start["repositoryName"] == repository
    ecr.get_waiter("lifecycle_policy_preview_complete").wait(
        repositoryName=repository, WaiterConfig={"Delay": 1, "MaxAttempts": 10}
    )
    results: list[dict[str, Any]] = []
    first: dict[str, Any] | None = None
    for page in ecr.get_paginator("get_lifecycle_policy_preview").paginate(
        repositoryName=repository, PaginationConfig={"PageSize": 2}
    ):
        first = first or page
        results.extend(page["previewResults"])
    assert first is not None
    return first, results


def _all_digests(ecr: Any, repository: str) -> set[str]:
    details = []
    for page in ecr.get_paginator("describe_images").paginate(
        repositoryName=repository, filter={"tagStatus": "ANY", "imageStatus": "ANY"}
    ):
        details.extend(page["imageDetails"])
    return {d["imageDigest"] for d in details}


@pytest.mark.parametrize("vector_id", [v["id"] for v in VECTORS])
def test_vector_through_the_preview_api(vector_server: VectorServer, vector_ecr: Any, vector_id: str) -> None:
    seeded = vector_server.seeded[vector_id]
    vector = seeded.vector
    before = _all_digests(vector_ecr, seeded.repository)
    assert before == set(seeded.digests.values()), "seeding lost or added images"

    vector_ecr.put_lifecycle_policy(repositoryName=seeded.repository, lifecyclePolicyText=seeded.policy_text)
    first, results = _preview(vector_ecr, seeded.repository)  # the stored policy, no text given
    assert utc_now() < vector_server.anchor - timedelta(seconds=1), "the module ran past its time anchor"

    assert first["status"] == "COMPLETE"
    assert json.loads(first["lifecyclePolicyText"]) == vector["policy"]
    by_action: dict[str, set[str]] = {"EXPIRE": set(), "TRANSITION": set()}
    for result in results:
        by_action[result["action"]["type"]].add(result["imageDigest"])
    expected_expire = seeded.real(vector["expected"]["expire"])
    expected_transition = seeded.real(vector["expected"]["transition"])
    names = {digest: placeholder for placeholder, digest in seeded.digests.items()}
    assert ({names[d] for d in by_action["EXPIRE"]}, {names[d] for d in by_action["TRANSITION"]}) == (
        set(vector["expected"]["expire"]),
        set(vector["expected"]["transition"]),
    ), vector["reason"]
    assert by_action == {"EXPIRE": expected_expire, "TRANSITION": expected_transition}
    assert len(results) == len(expected_expire) + len(expected_transition), "an image listed twice"

    # Each result describes its image as stored, and names a rule of the policy that can take that action.
    images = {seeded.digests[i["digest"]]: i for i in vector["images"]}
    rules = {rule["rulePriority"]: rule for rule in vector["policy"]["rules"]}
    for result in results:
        image = images[result["imageDigest"]]
        assert sorted(result.get("imageTags", [])) == sorted(image["tags"])
        # The AWS JSON protocol carries epoch seconds with millisecond precision.
        assert abs(result["imagePushedAt"] - seeded.pushed_at[result["imageDigest"]]) < timedelta(milliseconds=1)
        assert result["storageClass"] == image.get("storageClass", "standard").upper()
        rule = rules[result["appliedRulePriority"]]
        assert result["action"]["type"] == rule["action"]["type"].upper()
        if result["action"]["type"] == "TRANSITION":
            assert result["action"]["targetStorageClass"] == "ARCHIVE"
        else:
            assert "targetStorageClass" not in result["action"]

    summary = first["summary"]
    assert summary["expiringImageTotalCount"] == len(expected_expire)
    if expected_transition:
        assert summary["transitioningImageTotalCounts"] == [
            {"targetStorageClass": "ARCHIVE", "imageTotalCount": len(expected_transition)}
        ]
    else:
        assert not summary.get("transitioningImageTotalCounts")

    # A preview never changes the repository.
    assert _all_digests(vector_ecr, seeded.repository) == before


def test_preview_with_policy_text_filters_and_image_ids(vector_server: VectorServer, vector_ecr: Any) -> None:
    """StartLifecyclePolicyPreview with text (nothing stored needed); Get filters by tagStatus and imageIds."""
    seeded = vector_server.seeded["any-keep-one"]  # expires a (alpha-1), b (beta-1), c (untagged)
    _, results = _preview(vector_ecr, seeded.repository, seeded.policy_text)
    assert {r["imageDigest"] for r in results} == seeded.real(["sha256:a", "sha256:b", "sha256:c"])

    untagged = vector_ecr.get_lifecycle_policy_preview(
        repositoryName=seeded.repository, filter={"tagStatus": "UNTAGGED"}
    )["previewResults"]
    assert [r["imageDigest"] for r in untagged] == [seeded.digests["sha256:c"]]
    tagged = vector_ecr.get_lifecycle_policy_preview(repositoryName=seeded.repository, filter={"tagStatus": "TAGGED"})
    assert {r["imageDigest"] for r in tagged["previewResults"]} == seeded.real(["sha256:a", "sha256:b"])
    by_tag = vector_ecr.get_lifecycle_policy_preview(
        repositoryName=seeded.repository, imageIds=[{"imageTag": "beta-1"}]
    )["previewResults"]
    assert [r["imageDigest"] for r in by_tag] == [seeded.digests["sha256:b"]]


# ----------------------------------------------------------------------------- preview protocol and errors


@pytest.fixture(scope="module")
def ecr(vector_ecr: Any) -> Any:
    """The vectors' server serves the other tests too (a server start costs seconds)."""
    return vector_ecr


@pytest.fixture(scope="module")
def ecr_server(vector_server: VectorServer) -> ServerProcess:
    return vector_server.server


@pytest.fixture
def repository(ecr: Any) -> str:
    name = f"lifecycle-api/{uuid.uuid4().hex[:12]}"
    ecr.create_repository(repositoryName=name)
    return name


KEEP_ONE = {
    "rules": [
        {
            "rulePriority": 1,
            "description": "keep only the newest image",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
            "action": {"type": "expire"},
        }
    ]
}


def test_start_preview_answers_in_progress_as_ecr(ecr: Any, repository: str) -> None:
    """The notes (§5, Preview API): Start returns status IN_PROGRESS, even when evaluating synchronously;
    the first Get then answers COMPLETE."""
    started = ecr.start_lifecycle_policy_preview(repositoryName=repository, lifecyclePolicyText=json.dumps(KEEP_ONE))
    assert started["status"] == "IN_PROGRESS", started
    assert ecr.get_lifecycle_policy_preview(repositoryName=repository)["status"] == "COMPLETE"


def test_preview_errors(ecr: Any, repository: str) -> None:
    with pytest.raises(ClientError) as no_policy:
        ecr.start_lifecycle_policy_preview(repositoryName=repository)
    assert error_code(no_policy.value) == "LifecyclePolicyNotFoundException"
    with pytest.raises(ClientError) as no_preview:
        ecr.get_lifecycle_policy_preview(repositoryName=repository)
    assert error_code(no_preview.value) == "LifecyclePolicyPreviewNotFoundException"
    with pytest.raises(ClientError) as bad_text:
        ecr.start_lifecycle_policy_preview(
            repositoryName=repository,
            lifecyclePolicyText=json.dumps(
                {"rules": [{"rulePriority": 1, "description": "no selection " * 8, "selection": {}, "action": {}}]}
            ),
        )
    assert error_code(bad_text.value) == "InvalidParameterException"
    assert "Lifecycle policy validation failure" in str(bad_text.value)
    with pytest.raises(ClientError) as bad_put:
        ecr.put_lifecycle_policy(repositoryName=repository, lifecyclePolicyText="x" * 120)
    assert error_code(bad_put.value) == "InvalidParameterException"
    with pytest.raises(ClientError) as missing:
        ecr.start_lifecycle_policy_preview(
            repositoryName=f"{repository}-absent", lifecyclePolicyText=json.dumps(KEEP_ONE)
        )
    assert error_code(missing.value) == "RepositoryNotFoundException"


# ----------------------------------------------------------------------------- archive and restore


def test_archive_and_restore_with_update_image_storage_class(
    ecr: Any, ecr_server: ServerProcess, repository: str
) -> None:
    kept = put_api_image(ecr, repository, seed=1, tag="kept")
    cold = put_api_image(ecr, repository, seed=2, tag="cold")
    archived = ecr.update_image_storage_class(
        repositoryName=repository, imageId={"imageTag": "cold"}, targetStorageClass="ARCHIVE"
    )
    assert archived["imageStatus"] == "ARCHIVED"
    assert archived["imageId"]["imageDigest"] == cold.digest

    def statuses(**filters: Any) -> dict[str, str]:
        details = ecr.describe_images(repositoryName=repository, **filters)["imageDetails"]
        return {d["imageDigest"]: d["imageStatus"] for d in details}

    assert statuses() == {kept.digest: "ACTIVE"}
    assert statuses(filter={"imageStatus": "ARCHIVED"}) == {cold.digest: "ARCHIVED"}
    assert statuses(filter={"imageStatus": "ANY"}) == {kept.digest: "ACTIVE", cold.digest: "ARCHIVED"}
    listed = ecr.list_images(repositoryName=repository, filter={"imageStatus": "ANY"})["imageIds"]
    assert {i["imageDigest"] for i in listed} == {kept.digest, cold.digest}
    assert {i["imageDigest"] for i in ecr.list_images(repositoryName=repository)["imageIds"]} == {kept.digest}
    detail = ecr.describe_images(repositoryName=repository, filter={"imageStatus": "ARCHIVED"})["imageDetails"][0]
    assert isinstance(detail["lastArchivedAt"], datetime)

    with httpx.Client(base_url=ecr_server.url, headers=ecr_server.auth_header, timeout=30) as http:
        pulled = http.get(f"/v2/{repository}/manifests/cold", headers={"Accept": cold.media_type})
        assert pulled.status_code == 403, pulled.text
        error = pulled.json()["errors"][0]
        assert error["code"] == "DENIED" and "archived" in error["message"], error
        assert "update-image-storage-class" in error["message"] or "UpdateImageStorageClass" in error["message"]
        with pytest.raises(ClientError) as batch:
            ecr.start_image_scan(repositoryName=repository, imageId={"imageDigest": cold.digest})
        assert error_code(batch.value) == "ImageArchivedException"

        restored = ecr.update_image_storage_class(
            repositoryName=repository, imageId={"imageDigest": cold.digest}, targetStorageClass="STANDARD"
        )
        assert restored["imageStatus"] == "ACTIVE"
        again = http.get(f"/v2/{repository}/manifests/cold", headers={"Accept": cold.media_type})
        assert again.status_code == 200, again.text
        assert again.content == cold.manifest.encode()
    assert statuses() == {kept.digest: "ACTIVE", cold.digest: "ACTIVE"}
    detail = ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": "cold"}])["imageDetails"][0]
    assert detail["lastActivatedAt"] >= detail["lastArchivedAt"]
    assert datetime.now(UTC) - detail["lastActivatedAt"] < timedelta(minutes=5)
