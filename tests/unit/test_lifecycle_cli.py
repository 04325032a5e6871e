"""`dockyard lifecycle evaluate`: the notes' vectors and ECR's validation messages through the command line,
with images in DescribeImages' shapes as boto3 and the aws CLI print them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from dockyard.lifecycle_cli import lifecycle_app
from tests.unit.domain.test_lifecycle import FAILURE, INVALID_CASES, INVALID_IDS, VECTORS, policy_text

runner = CliRunner()
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def as_aws_cli(text: str) -> str:
    """A vector's time as the aws CLI prints timestamps (ISO-8601 with an explicit offset)."""
    return datetime.fromisoformat(text).isoformat()


def as_epoch(text: str) -> float:
    """A vector's time as boto3's JSON protocol carries it (epoch seconds)."""
    return datetime.fromisoformat(text).timestamp()


def image_detail(record: Mapping[str, Any], timestamp: Any) -> dict[str, Any]:
    """One vector image as a DescribeImages `imageDetail` (untagged images have no `imageTags`)."""
    detail: dict[str, Any] = {
        "registryId": "123456789012",
        "repositoryName": "app",
        "imageDigest": record["digest"],
        "imagePushedAt": timestamp(record["pushedAt"]),
        "imageSizeInBytes": 1234,
        "imageManifestMediaType": OCI_INDEX if record.get("children") else OCI_MANIFEST,
    }
    if record["tags"]:
        detail["imageTags"] = record["tags"]
    for key in ("lastRecordedPullTime", "lastArchivedAt", "lastActivatedAt"):
        if key in record:
            detail[key] = timestamp(record[key])
    if record.get("storageClass") == "archive":
        detail["imageStatus"] = "ARCHIVED"
    if record.get("children"):
        detail["childManifestDigests"] = record["children"]
    return detail


def invoke(tmp_path: Path, policy: str, images: object, *options: str) -> Result:
    (tmp_path / "policy.json").write_text(policy)
    (tmp_path / "images.json").write_text(json.dumps(images))
    arguments = [
        "evaluate",
        "--policy",
        str(tmp_path / "policy.json"),
        "--images",
        str(tmp_path / "images.json"),
    ]
    return runner.invoke(lifecycle_app, [*arguments, *options])


def acted(output: Mapping[str, Any], kind: str) -> list[str]:
    return sorted(each["imageDigest"] for each in output["previewResults"] if each["action"]["type"] == kind)


# The vectors go through every input form: a bare list or a whole response, ISO text or epoch seconds.
FORMS = [(wrapped, timestamp) for wrapped in (False, True) for timestamp in (as_aws_cli, as_epoch)]


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["id"] for vector in VECTORS])
def test_vector_through_the_command_line(tmp_path: Path, vector: dict[str, Any]) -> None:
    wrapped, timestamp = FORMS[VECTORS.index(vector) % len(FORMS)]
    details = [image_detail(record, timestamp) for record in vector["images"]]
    images = {"imageDetails": details} if wrapped else details
    policy = policy_text(vector["policy"])
    result = invoke(tmp_path, policy, images, "--now", vector["now"])
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    expected = {kind: sorted(digests) for kind, digests in vector["expected"].items()}
    assert {"expire": acted(output, "EXPIRE"), "transition": acted(output, "TRANSITION")} == expected
    assert output["lifecyclePolicyText"] == policy and output["status"] == "COMPLETE"
    summary = output["summary"]
    assert summary["expiringImageTotalCount"] == len(expected["expire"])
    moving = [{"targetStorageClass": "ARCHIVE", "imageTotalCount": len(expected["transition"])}]
    assert summary.get("transitioningImageTotalCounts") == (moving if expected["transition"] else None)


@pytest.mark.parametrize(("text", "detail"), INVALID_CASES, ids=INVALID_IDS)
def test_invalid_policy_exits_1_with_the_api_message(tmp_path: Path, text: str, detail: str) -> None:
    result = invoke(tmp_path, text, [])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"{FAILURE}'Lifecycle policy validation failure: {detail}'\n"


def test_too_short_policy_text_exits_1(tmp_path: Path) -> None:
    result = invoke(tmp_path, '{"rules": []}', [])
    assert result.exit_code == 1
    assert result.stderr == f"{FAILURE}'Member must have length greater than or equal to 100'\n"


UNTAGGED_OLDER_THAN_7_DAYS = policy_text(
    {
        "rules": [
            {
                "rulePriority": 1,
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": 7,
                },
                "action": {"type": "expire"},
            }
        ]
    }
)


def detail(digest: str, pushed: object, *tags: str, **more: object) -> dict[str, object]:
    entry: dict[str, object] = {"imageDigest": digest, "imagePushedAt": pushed, **more}
    if tags:
        entry["imageTags"] = list(tags)
    return entry


def test_output_is_the_preview_in_aws_json(tmp_path: Path) -> None:
    images = [
        detail("sha256:old", "2025-06-01T10:00:00.250000+02:00"),
        detail("sha256:new", "2025-06-29T00:00:00+00:00"),
        detail("sha256:tagged", 1748736000, "v1"),
    ]
    result = invoke(tmp_path, UNTAGGED_OLDER_THAN_7_DAYS, images, "--now", "2025-06-30T00:00:00")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["previewResults"] == [
        {
            "imageTags": [],
            "imageDigest": "sha256:old",
            "imagePushedAt": 1748764800.25,
            "action": {"type": "EXPIRE"},
            "appliedRulePriority": 1,
            "storageClass": "STANDARD",
        }
    ]


def test_referrers_and_index_children_follow_dockyard_safety(tmp_path: Path) -> None:
    images = [
        detail(
            "sha256:idx",
            "2025-05-01T00:00:00Z",
            imageManifestMediaType=OCI_INDEX,
            childManifestDigests=["sha256:c"],
        ),
        detail("sha256:c", "2025-05-01T00:00:00Z"),
        detail("sha256:sig", "2025-05-01T00:00:00Z", subjectManifestDigest="sha256:kept"),
        detail("sha256:kept", "2025-06-29T00:00:00Z"),
    ]
    result = invoke(tmp_path, UNTAGGED_OLDER_THAN_7_DAYS, images, "--now", "2025-06-30T00:00:00Z")
    assert result.exit_code == 0, result.output
    assert acted(json.loads(result.stdout), "EXPIRE") == ["sha256:c", "sha256:idx"]


def test_storage_class_may_be_given_directly(tmp_path: Path) -> None:
    images = [detail("sha256:a", "2025-05-01T00:00:00Z", storageClass="ARCHIVE")]
    result = invoke(tmp_path, UNTAGGED_OLDER_THAN_7_DAYS, images, "--now", "2025-06-30T00:00:00Z")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["previewResults"] == []  # archived images are not in the standard pool


def test_now_defaults_to_the_current_time(tmp_path: Path) -> None:
    pushed = datetime.now(UTC).replace(year=2000).isoformat()
    result = invoke(tmp_path, UNTAGGED_OLDER_THAN_7_DAYS, [detail("sha256:a", pushed)])
    assert result.exit_code == 0, result.output
    assert acted(json.loads(result.stdout), "EXPIRE") == ["sha256:a"]


@pytest.mark.parametrize(
    ("images", "options", "complaint"),
    [
        ({"images": []}, (), "imageDetails"),
        ([{"imageDigest": "sha256:a"}], (), "imagePushedAt"),
        ([detail("sha256:a", "yesterday")], (), "Invalid isoformat"),
        ([detail("sha256:a", True)], (), "epoch seconds or an ISO-8601 string"),
        ([detail("sha256:a", 0, imageTags="v1")], (), "imageTags must be a list"),
        ([detail("sha256:a", 0), detail("sha256:a", 1)], (), "sha256:a is listed more than once"),
        ([detail("sha256:a", 10.0**20)], (), "--images"),
        ([], ("--now", "tomorrow"), "not an ISO-8601 time"),
    ],
    ids=[
        "not-describe-images",
        "no-push-time",
        "bad-time-text",
        "bad-time-type",
        "tags-not-a-list",
        "same-digest-twice",
        "time-out-of-range",
        "bad-now",
    ],
)
def test_unreadable_input_is_a_usage_error(
    tmp_path: Path, images: object, options: Sequence[str], complaint: str
) -> None:
    result = invoke(tmp_path, UNTAGGED_OLDER_THAN_7_DAYS, images, *options)
    assert result.exit_code == 2
    assert complaint in result.stderr


def test_policy_that_is_not_text_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "policy.json").write_bytes(b"\xff\xfe" * 60)
    (tmp_path / "images.json").write_text("[]")
    paths = [str(tmp_path / "policy.json"), str(tmp_path / "images.json")]
    result = runner.invoke(lifecycle_app, ["evaluate", "--policy", paths[0], "--images", paths[1]])
    assert result.exit_code == 2
    assert "--policy" in result.stderr


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.json")
    result = runner.invoke(lifecycle_app, ["evaluate", "--policy", missing, "--images", missing])
    assert result.exit_code == 2
