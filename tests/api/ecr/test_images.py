"""Image operations through boto3: ListImages, DescribeImages, BatchGetImage, BatchDeleteImage, PutImage."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.session
import httpx
import pytest
from botocore.exceptions import ClientError

from tests.api.ecr.helpers import (
    ABSENT,
    DOCKER_CONFIG,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    ApiImage,
    build_image,
    error_code,
    index_text,
    put_api_image,
    upload_blobs,
)
from tests.support.images import OCI_CONFIG, OCI_MANIFEST
from tests.support.server import ACCOUNT_ID, ServerProcess

FAILURE_CODES = botocore.session.get_session().get_service_model("ecr").shape_for("ImageFailureCode").enum


def seed() -> int:
    return secrets.randbelow(2**62)


def raises(code: str, call: Any, **params: Any) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call(**params)
    assert error_code(caught.value) == code, caught.value.response
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400, caught.value.response
    return caught.value


def ids_of(answer: dict[str, Any]) -> list[tuple[str, str | None]]:
    return sorted((i["imageDigest"], i.get("imageTag")) for i in answer["imageIds"])


def failures_of(answer: dict[str, Any]) -> list[tuple[dict[str, str], str]]:
    return [(f["imageId"], f["failureCode"]) for f in answer["failures"]]


@pytest.fixture
def tagged_and_untagged(ecr: Any, created: str) -> tuple[ApiImage, ApiImage]:
    """In `created`: image A tagged v1 and stable, image B untagged."""
    a = put_api_image(ecr, created, seed(), tag="v1")
    ecr.put_image(repositoryName=created, imageManifest=a.manifest, imageTag="stable")
    b = put_api_image(ecr, created, seed(), tag=None)
    return a, b


# --------------------------------------------------------------------------------------- ListImages


def test_list_images_with_filters(ecr: Any, created: str, tagged_and_untagged: tuple[ApiImage, ApiImage]) -> None:
    a, b = tagged_and_untagged
    every = ids_of(ecr.list_images(repositoryName=created))
    assert every == sorted([(a.digest, "stable"), (a.digest, "v1"), (b.digest, None)])
    tagged = ids_of(ecr.list_images(repositoryName=created, filter={"tagStatus": "TAGGED"}))
    assert tagged == sorted([(a.digest, "stable"), (a.digest, "v1")])
    untagged = ids_of(ecr.list_images(repositoryName=created, filter={"tagStatus": "UNTAGGED"}))
    assert untagged == [(b.digest, None)]
    assert ids_of(ecr.list_images(repositoryName=created, filter={"tagStatus": "ANY"})) == every


def test_list_images_unknown_repository(ecr: Any, repo: str) -> None:
    error = raises("RepositoryNotFoundException", ecr.list_images, repositoryName=repo)
    assert error.response["Error"]["Message"] == (
        f"The repository with name '{repo}' does not exist in the registry with id '{ACCOUNT_ID}'"
    )


def test_list_images_page_ending_on_an_images_last_tag_loses_nothing(ecr: Any, created: str) -> None:
    """maxResults=2 with one two-tag image followed by single-tag images: the first page ends exactly on the
    two-tag image's last tag, and every later image must still be listed."""
    images = [put_api_image(ecr, created, seed(), tag=f"t{n}", layers=1, size=64) for n in range(6)]
    first = min(images, key=lambda image: image.digest)  # pages are in digest order
    ecr.put_image(repositoryName=created, imageManifest=first.manifest, imageTag="t-extra")
    expected = sorted([(image.digest, f"t{n}") for n, image in enumerate(images)] + [(first.digest, "t-extra")])

    seen: list[tuple[str, str | None]] = []
    paginator = ecr.get_paginator("list_images")
    for page in paginator.paginate(repositoryName=created, PaginationConfig={"PageSize": 2}):
        seen.extend((i["imageDigest"], i.get("imageTag")) for i in page["imageIds"])
    assert sorted(seen) == expected


@pytest.mark.parametrize("page_size", [1, 2, 3, 4, 5, 7])
def test_list_images_every_page_size_sees_every_pair_once(ecr: Any, created: str, page_size: int) -> None:
    expected: list[tuple[str, str | None]] = []
    for n, tag_count in enumerate([0, 1, 3, 2, 0, 1, 4, 1]):
        image = put_api_image(ecr, created, seed(), tag=None, layers=1, size=64)
        tags = [f"i{n}-t{k}" for k in range(tag_count)]
        for tag in tags:
            ecr.put_image(repositoryName=created, imageManifest=image.manifest, imageTag=tag)
        expected.extend([(image.digest, tag) for tag in tags] or [(image.digest, None)])
    seen: list[tuple[str, str | None]] = []
    for page in ecr.get_paginator("list_images").paginate(
        repositoryName=created, PaginationConfig={"PageSize": page_size}
    ):
        assert len(page["imageIds"]) <= page_size
        seen.extend((i["imageDigest"], i.get("imageTag")) for i in page["imageIds"])
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(expected)


# --------------------------------------------------------------------------------------- DescribeImages


def test_describe_images_details(ecr: Any, created: str, tagged_and_untagged: tuple[ApiImage, ApiImage]) -> None:
    a, b = tagged_and_untagged
    details = {d["imageDigest"]: d for d in ecr.describe_images(repositoryName=created)["imageDetails"]}
    assert set(details) == {a.digest, b.digest}
    detail = details[a.digest]
    assert detail["registryId"] == ACCOUNT_ID
    assert detail["repositoryName"] == created
    assert sorted(detail["imageTags"]) == ["stable", "v1"]
    assert detail["imageSizeInBytes"] == a.size
    assert abs(detail["imagePushedAt"] - datetime.now(UTC)) < timedelta(minutes=2)
    assert detail["imageManifestMediaType"] == OCI_MANIFEST
    assert detail["artifactMediaType"] == OCI_CONFIG
    assert "lastRecordedPullTime" not in detail
    assert not details[b.digest].get("imageTags")

    tagged = ecr.describe_images(repositoryName=created, filter={"tagStatus": "TAGGED"})["imageDetails"]
    assert [d["imageDigest"] for d in tagged] == [a.digest]
    untagged = ecr.describe_images(repositoryName=created, filter={"tagStatus": "UNTAGGED"})["imageDetails"]
    assert [d["imageDigest"] for d in untagged] == [b.digest]


def test_describe_images_docker_manifest(ecr: Any, created: str) -> None:
    image = put_api_image(ecr, created, seed(), tag="docker", media_type=DOCKER_MANIFEST)
    (detail,) = ecr.describe_images(repositoryName=created, imageIds=[{"imageTag": "docker"}])["imageDetails"]
    assert detail["imageDigest"] == image.digest
    assert detail["imageManifestMediaType"] == DOCKER_MANIFEST
    assert detail["artifactMediaType"] == DOCKER_CONFIG


def test_describe_images_by_ids(ecr: Any, created: str, tagged_and_untagged: tuple[ApiImage, ApiImage]) -> None:
    a, b = tagged_and_untagged
    answer = ecr.describe_images(
        repositoryName=created, imageIds=[{"imageTag": "v1"}, {"imageDigest": a.digest}, {"imageDigest": b.digest}]
    )
    assert sorted(d["imageDigest"] for d in answer["imageDetails"]) == sorted([a.digest, b.digest])
    assert "nextToken" not in answer


def test_describe_images_unknown_image_fails_whole_call(
    ecr: Any, created: str, tagged_and_untagged: tuple[ApiImage, ApiImage]
) -> None:
    error = raises(
        "ImageNotFoundException",
        ecr.describe_images,
        repositoryName=created,
        imageIds=[{"imageTag": "v1"}, {"imageTag": "nope"}],
    )
    assert "nope" in error.response["Error"]["Message"]
    raises("ImageNotFoundException", ecr.describe_images, repositoryName=created, imageIds=[{"imageDigest": ABSENT}])


def test_describe_images_ids_with_pagination_is_invalid(
    ecr: Any, created: str, tagged_and_untagged: tuple[ApiImage, ApiImage]
) -> None:
    raises(
        "InvalidParameterException",
        ecr.describe_images,
        repositoryName=created,
        imageIds=[{"imageTag": "v1"}],
        maxResults=1,
    )


def test_describe_images_unknown_repository(ecr: Any, repo: str) -> None:
    raises("RepositoryNotFoundException", ecr.describe_images, repositoryName=repo)


def test_last_recorded_pull_time_after_batch_get_image(ecr: Any, created: str) -> None:
    image = put_api_image(ecr, created, seed(), tag="pulled")
    ecr.batch_get_image(repositoryName=created, imageIds=[{"imageTag": "pulled"}])
    (detail,) = ecr.describe_images(repositoryName=created, imageIds=[{"imageDigest": image.digest}])["imageDetails"]
    assert abs(detail["lastRecordedPullTime"] - datetime.now(UTC)) < timedelta(minutes=2)


def test_last_recorded_pull_time_after_registry_pull(ecr: Any, created: str, ecr_server: ServerProcess) -> None:
    image = put_api_image(ecr, created, seed(), tag="pulled")
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    response = httpx.get(
        f"{ecr_server.url}/v2/{created}/manifests/pulled",
        headers={"Authorization": f"Basic {token}", "Accept": OCI_MANIFEST},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.content == image.manifest.encode()
    (detail,) = ecr.describe_images(repositoryName=created, imageIds=[{"imageTag": "pulled"}])["imageDetails"]
    assert abs(detail["lastRecordedPullTime"] - datetime.now(UTC)) < timedelta(minutes=2)


def test_describe_images_index_size_is_largest_child(ecr: Any, created: str) -> None:
    small = put_api_image(ecr, created, seed(), tag=None, layers=1, size=128)
    large = put_api_image(ecr, created, seed(), tag=None, layers=3, size=4096)
    index = index_text([small, large])
    ecr.put_image(repositoryName=created, imageManifest=index, imageTag="multi")
    (detail,) = ecr.describe_images(repositoryName=created, imageIds=[{"imageTag": "multi"}])["imageDetails"]
    assert detail["imageManifestMediaType"] == OCI_INDEX
    assert detail["imageSizeInBytes"] == max(small.size, large.size)


# --------------------------------------------------------------------------------------- BatchGetImage


def test_batch_get_image(ecr: Any, created: str, tagged_and_untagged: tuple[ApiImage, ApiImage]) -> None:
    a, b = tagged_and_untagged
    answer = ecr.batch_get_image(repositoryName=created, imageIds=[{"imageTag": "v1"}, {"imageDigest": b.digest}])
    assert answer["failures"] == []
    by_digest = {i["imageId"]["imageDigest"]: i for i in answer["images"]}
    assert by_digest[a.digest]["imageManifest"] == a.manifest  # byte-for-byte what was put
    assert by_digest[a.digest]["imageId"] == {"imageDigest": a.digest, "imageTag": "v1"}
    assert by_digest[a.digest]["imageManifestMediaType"] == OCI_MANIFEST
    assert by_digest[a.digest]["registryId"] == ACCOUNT_ID
    assert by_digest[a.digest]["repositoryName"] == created
    assert by_digest[b.digest]["imageManifest"] == b.manifest


def test_batch_get_image_accepted_media_types(
    ecr: Any, created: str, tagged_and_untagged: tuple[ApiImage, ApiImage]
) -> None:
    answer = ecr.batch_get_image(
        repositoryName=created, imageIds=[{"imageTag": "v1"}], acceptedMediaTypes=[DOCKER_MANIFEST, OCI_MANIFEST]
    )
    assert [i["imageManifestMediaType"] for i in answer["images"]] == [OCI_MANIFEST]

    refused = ecr.batch_get_image(
        repositoryName=created, imageIds=[{"imageTag": "v1"}], acceptedMediaTypes=[DOCKER_MANIFEST]
    )
    assert refused["images"] == []
    assert len(refused["failures"]) == 1
    assert refused["failures"][0]["imageId"]["imageTag"] == "v1"


def test_batch_get_image_failure_codes_are_the_models(
    ecr: Any, created: str, tagged_and_untagged: tuple[ApiImage, ApiImage]
) -> None:
    """failureCode is the ImageFailureCode enum of the model; SDKs with typed enums know no other value."""
    answer = ecr.batch_get_image(
        repositoryName=created, imageIds=[{"imageTag": "v1"}], acceptedMediaTypes=[DOCKER_MANIFEST]
    )
    assert answer["failures"], answer
    for failure in answer["failures"]:
        assert failure["failureCode"] in FAILURE_CODES, failure


def test_batch_get_image_failures(ecr: Any, created: str, tagged_and_untagged: tuple[ApiImage, ApiImage]) -> None:
    a, b = tagged_and_untagged
    answer = ecr.batch_get_image(
        repositoryName=created,
        imageIds=[
            {"imageTag": "absent"},
            {"imageDigest": ABSENT},
            {"imageDigest": "not-a-digest"},
            {},
            {"imageTag": "v1", "imageDigest": b.digest},
            {"imageTag": "v1"},
        ],
    )
    assert [i["imageId"]["imageDigest"] for i in answer["images"]] == [a.digest]
    codes = failures_of(answer)
    assert codes == [
        ({"imageTag": "absent"}, "ImageNotFound"),
        ({"imageDigest": ABSENT}, "ImageNotFound"),
        ({"imageDigest": "not-a-digest"}, "InvalidImageDigest"),
        ({}, "MissingDigestAndTag"),
        ({"imageTag": "v1", "imageDigest": b.digest}, "ImageTagDoesNotMatchDigest"),
    ]
    for failure in answer["failures"]:
        assert failure["failureReason"]


def test_batch_get_image_unknown_repository(ecr: Any, repo: str) -> None:
    raises("RepositoryNotFoundException", ecr.batch_get_image, repositoryName=repo, imageIds=[{"imageTag": "x"}])


# --------------------------------------------------------------------------------------- BatchDeleteImage


def test_batch_delete_by_tag_untags_then_deletes(
    ecr: Any, created: str, tagged_and_untagged: tuple[ApiImage, ApiImage]
) -> None:
    a, _ = tagged_and_untagged
    answer = ecr.batch_delete_image(repositoryName=created, imageIds=[{"imageTag": "v1"}])
    assert answer["imageIds"] == [{"imageDigest": a.digest, "imageTag": "v1"}]
    assert answer["failures"] == []
    (detail,) = ecr.describe_images(repositoryName=created, imageIds=[{"imageDigest": a.digest}])["imageDetails"]
    assert detail["imageTags"] == ["stable"]

    answer = ecr.batch_delete_image(repositoryName=created, imageIds=[{"imageTag": "stable"}])
    assert answer["imageIds"] == [{"imageDigest": a.digest, "imageTag": "stable"}]
    raises("ImageNotFoundException", ecr.describe_images, repositoryName=created, imageIds=[{"imageDigest": a.digest}])


def test_batch_delete_by_digest_removes_all_tags(
    ecr: Any, created: str, tagged_and_untagged: tuple[ApiImage, ApiImage]
) -> None:
    a, b = tagged_and_untagged
    answer = ecr.batch_delete_image(repositoryName=created, imageIds=[{"imageDigest": a.digest}])
    assert answer["failures"] == []
    assert {i["imageDigest"] for i in answer["imageIds"]} == {a.digest}
    assert ids_of(ecr.list_images(repositoryName=created)) == [(b.digest, None)]
    answer = ecr.batch_delete_image(repositoryName=created, imageIds=[{"imageDigest": b.digest}])
    assert answer["imageIds"] == [{"imageDigest": b.digest}]
    assert ecr.list_images(repositoryName=created)["imageIds"] == []


def test_batch_delete_per_image_failures(
    ecr: Any, created: str, tagged_and_untagged: tuple[ApiImage, ApiImage]
) -> None:
    a, _ = tagged_and_untagged
    child = put_api_image(ecr, created, seed(), tag="child")
    ecr.put_image(repositoryName=created, imageManifest=index_text([child]), imageTag="index")
    answer = ecr.batch_delete_image(
        repositoryName=created,
        imageIds=[
            {"imageTag": "absent"},
            {"imageDigest": ABSENT},
            {"imageDigest": "sha256:short"},
            {},
            {"imageDigest": child.digest},
            {"imageTag": "v1"},
        ],
    )
    assert answer["imageIds"] == [{"imageDigest": a.digest, "imageTag": "v1"}]  # the valid id still went
    assert failures_of(answer) == [
        ({"imageTag": "absent"}, "ImageNotFound"),
        ({"imageDigest": ABSENT}, "ImageNotFound"),
        ({"imageDigest": "sha256:short"}, "InvalidImageDigest"),
        ({}, "MissingDigestAndTag"),
        ({"imageDigest": child.digest}, "ImageReferencedByManifestList"),
    ]
    assert ecr.describe_images(repositoryName=created, imageIds=[{"imageDigest": child.digest}])["imageDetails"]


def test_batch_delete_unknown_repository(ecr: Any, repo: str) -> None:
    raises("RepositoryNotFoundException", ecr.batch_delete_image, repositoryName=repo, imageIds=[{"imageTag": "x"}])


# --------------------------------------------------------------------------------------- PutImage


def test_put_image_answer(ecr: Any, created: str) -> None:
    image = build_image(seed())
    upload_blobs(ecr, created, image)
    answer = ecr.put_image(
        repositoryName=created, imageManifest=image.manifest, imageTag="v1", imageDigest=image.digest
    )
    assert answer["image"] == {
        "registryId": ACCOUNT_ID,
        "repositoryName": created,
        "imageId": {"imageDigest": image.digest, "imageTag": "v1"},
        "imageManifest": image.manifest,
        "imageManifestMediaType": OCI_MANIFEST,
    }


def test_put_image_media_type_from_the_request(ecr: Any, created: str) -> None:
    """A manifest without `mediaType` takes imageManifestMediaType."""
    image = build_image(seed())
    upload_blobs(ecr, created, image)
    document = json.loads(image.manifest)
    del document["mediaType"]
    text = json.dumps(document)
    answer = ecr.put_image(
        repositoryName=created, imageManifest=text, imageManifestMediaType=OCI_MANIFEST, imageTag="bare"
    )
    assert answer["image"]["imageManifestMediaType"] == OCI_MANIFEST
    got = ecr.batch_get_image(repositoryName=created, imageIds=[{"imageTag": "bare"}])["images"][0]
    assert got["imageManifest"] == text


def test_put_image_same_manifest_new_tag_adds_the_tag(ecr: Any, created: str) -> None:
    image = put_api_image(ecr, created, seed(), tag="one")
    ecr.put_image(repositoryName=created, imageManifest=image.manifest, imageTag="two")
    (detail,) = ecr.describe_images(repositoryName=created)["imageDetails"]
    assert sorted(detail["imageTags"]) == ["one", "two"]


def test_put_image_already_exists(ecr: Any, created: str) -> None:
    image = put_api_image(ecr, created, seed(), tag="v1")
    error = raises(
        "ImageAlreadyExistsException",
        ecr.put_image,
        repositoryName=created,
        imageManifest=image.manifest,
        imageTag="v1",
    )
    assert image.digest in error.response["Error"]["Message"]
    untagged = put_api_image(ecr, created, seed(), tag=None)
    raises("ImageAlreadyExistsException", ecr.put_image, repositoryName=created, imageManifest=untagged.manifest)


def test_put_image_layers_not_found(ecr: Any, created: str) -> None:
    image = build_image(seed())
    raises("LayersNotFoundException", ecr.put_image, repositoryName=created, imageManifest=image.manifest, imageTag="x")
    assert ecr.list_images(repositoryName=created)["imageIds"] == []


def test_put_image_referenced_images_not_found(ecr: Any, created: str) -> None:
    present = put_api_image(ecr, created, seed(), tag=None)
    missing = build_image(seed())
    for media_type in (OCI_INDEX, DOCKER_LIST):
        raises(
            "ReferencedImagesNotFoundException",
            ecr.put_image,
            repositoryName=created,
            imageManifest=index_text([present, missing], media_type),
            imageTag="multi",
        )


def test_put_image_digest_does_not_match(ecr: Any, created: str) -> None:
    image = build_image(seed())
    upload_blobs(ecr, created, image)
    raises(
        "ImageDigestDoesNotMatchException",
        ecr.put_image,
        repositoryName=created,
        imageManifest=image.manifest,
        imageDigest=ABSENT,
    )


@pytest.mark.parametrize("manifest", ["not json", "[]", json.dumps({"schemaVersion": 1})], ids=["text", "array", "v1"])
def test_put_image_invalid_manifest(ecr: Any, created: str, manifest: str) -> None:
    raises("InvalidParameterException", ecr.put_image, repositoryName=created, imageManifest=manifest, imageTag="x")


def test_put_image_unknown_repository(ecr: Any, repo: str) -> None:
    raises("RepositoryNotFoundException", ecr.put_image, repositoryName=repo, imageManifest=build_image(1).manifest)


def test_put_image_immutable_tag(ecr: Any, repo: str) -> None:
    ecr.create_repository(repositoryName=repo, imageTagMutability="IMMUTABLE")
    first = put_api_image(ecr, repo, seed(), tag="v1")
    second = build_image(seed())
    upload_blobs(ecr, repo, second)
    error = raises(
        "ImageTagAlreadyExistsException",
        ecr.put_image,
        repositoryName=repo,
        imageManifest=second.manifest,
        imageTag="v1",
    )
    assert "v1" in error.response["Error"]["Message"]
    ecr.put_image(repositoryName=repo, imageManifest=second.manifest, imageTag="v2")  # a new tag is fine
    (detail,) = ecr.describe_images(repositoryName=repo, imageIds=[{"imageTag": "v1"}])["imageDetails"]
    assert detail["imageDigest"] == first.digest


@pytest.mark.parametrize(
    ("mutability", "movable", "fixed"),
    [
        ("IMMUTABLE_WITH_EXCLUSION", ["latest", "dev-123"], ["v1", "release-1"]),
        ("MUTABLE_WITH_EXCLUSION", ["v1", "latest"], ["release-1", "release-2.0"]),
    ],
)
def test_put_image_tag_mutability_exclusions(
    ecr: Any, repo: str, mutability: str, movable: list[str], fixed: list[str]
) -> None:
    filters = ["latest", "dev-*"] if mutability.startswith("IMMUTABLE") else ["release-*"]
    ecr.create_repository(
        repositoryName=repo,
        imageTagMutability=mutability,
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": f} for f in filters],
    )
    first = put_api_image(ecr, repo, seed(), tag=None)
    second = put_api_image(ecr, repo, seed(), tag=None)
    for tag in movable + fixed:
        ecr.put_image(repositoryName=repo, imageManifest=first.manifest, imageTag=tag)
    for tag in movable:
        ecr.put_image(repositoryName=repo, imageManifest=second.manifest, imageTag=tag)
    for tag in fixed:
        raises(
            "ImageTagAlreadyExistsException",
            ecr.put_image,
            repositoryName=repo,
            imageManifest=second.manifest,
            imageTag=tag,
        )
    details = {
        d["imageDigest"]: sorted(d.get("imageTags", []))
        for d in ecr.describe_images(repositoryName=repo)["imageDetails"]
    }
    assert details == {first.digest: sorted(fixed), second.digest: sorted(movable)}


def test_put_image_into_immutable_repository_after_switch(ecr: Any, created: str) -> None:
    """PutImageTagMutability takes effect for the next PutImage."""
    put_api_image(ecr, created, seed(), tag="v1")
    ecr.put_image_tag_mutability(repositoryName=created, imageTagMutability="IMMUTABLE")
    other = put_api_image(ecr, created, seed(), tag=None)
    raises(
        "ImageTagAlreadyExistsException",
        ecr.put_image,
        repositoryName=created,
        imageManifest=other.manifest,
        imageTag="v1",
    )
    ecr.put_image_tag_mutability(repositoryName=created, imageTagMutability="MUTABLE")
    ecr.put_image(repositoryName=created, imageManifest=other.manifest, imageTag="v1")


def test_put_image_blob_field_round_trip_is_text(ecr: Any, created: str) -> None:
    """imageManifest is a string member: non-ASCII text survives exactly (its UTF-8 bytes are the digest)."""
    image = build_image(seed())
    upload_blobs(ecr, created, image)
    document = json.loads(image.manifest)
    document["annotations"] = {"org.opencontainers.image.description": "caf\u00e9 \u2603"}
    text = json.dumps(document, ensure_ascii=False)
    answer = ecr.put_image(repositoryName=created, imageManifest=text, imageTag="utf8")
    from tests.support.images import sha256

    assert answer["image"]["imageId"]["imageDigest"] == sha256(text.encode())
    got = ecr.batch_get_image(repositoryName=created, imageIds=[{"imageTag": "utf8"}])["images"][0]["imageManifest"]
    assert got == text
    assert base64.b64encode(got.encode()) == base64.b64encode(text.encode())
