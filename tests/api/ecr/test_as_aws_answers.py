"""Where Dockyard's ECR API answered otherwise than AWS (found by moto's suite and ECR's documentation, issue 18):
PutImage's media type rules, lastEvaluatedAt before a first evaluation, StartImageScan's answer, ECR's exact
error messages (users' scripts match them), and the media types BatchCheckLayerAvailability reports."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.ecr.helpers import (
    ABSENT,
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    build_image,
    error_code,
    put_api_image,
    upload_blobs,
    upload_layer,
)
from tests.support.images import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, sha256
from tests.support.server import ACCOUNT_ID

LIFECYCLE = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 5},
                "action": {"type": "expire"},
            }
        ]
    }
)


def refused(code: str, call: Any, **params: Any) -> str:
    """Call, expect ECR's `code` with status 400, and return the message."""
    with pytest.raises(ClientError) as caught:
        call(**params)
    assert error_code(caught.value) == code, caught.value.response
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400, caught.value.response
    message: str = caught.value.response["Error"]["Message"]
    return message


def without_media_type(manifest: str) -> str:
    document = json.loads(manifest)
    del document["mediaType"]
    return json.dumps(document)


# --------------------------------------------------------------------------------------- PutImage


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST], ids=["oci", "docker"])
def test_put_image_takes_the_media_type_parameter_for_a_manifest_that_names_none(
    ecr: Any, created: str, media_type: str
) -> None:
    image = build_image(secrets.randbelow(10**9), media_type=media_type)
    upload_blobs(ecr, created, image)
    text = without_media_type(image.manifest)
    answer = ecr.put_image(repositoryName=created, imageManifest=text, imageManifestMediaType=media_type, imageTag="t")
    assert answer["image"]["imageManifestMediaType"] == media_type
    (got,) = ecr.batch_get_image(repositoryName=created, imageIds=[{"imageTag": "t"}])["images"]
    assert (got["imageManifest"], got["imageManifestMediaType"]) == (text, media_type)


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST], ids=["oci", "docker"])
def test_put_image_refuses_a_manifest_whose_type_nobody_names(ecr: Any, created: str, media_type: str) -> None:
    image = build_image(secrets.randbelow(10**9), media_type=media_type)
    upload_blobs(ecr, created, image)
    message = refused(
        "InvalidParameterException",
        ecr.put_image,
        repositoryName=created,
        imageManifest=without_media_type(image.manifest),
        imageTag="t",
    )
    assert message == "image manifest mediatype not provided in manifest or parameter"
    assert ecr.list_images(repositoryName=created)["imageIds"] == []


def test_put_image_missing_layers_in_ecrs_words(ecr: Any, created: str) -> None:
    image = build_image(secrets.randbelow(10**9), layers=1)
    upload_layer(ecr, created, image.config)  # the config is there; the one layer is not
    message = refused("LayersNotFoundException", ecr.put_image, repositoryName=created, imageManifest=image.manifest)
    assert message == (
        f"Layers with digests '[{sha256(image.layers[0])}]' required for pushing image into repository with name "
        f"'{created}' in the registry with id '{ACCOUNT_ID}' do not exist"
    )


# --------------------------------------------------------------------------------------- lifecycle


def test_last_evaluated_at_is_epoch_zero_before_the_first_evaluation(ecr: Any, created: str) -> None:
    ecr.put_lifecycle_policy(repositoryName=created, lifecyclePolicyText=LIFECYCLE)
    epoch = datetime.fromtimestamp(0, UTC)
    got = ecr.get_lifecycle_policy(repositoryName=created)
    assert got["lastEvaluatedAt"] == epoch, got
    deleted = ecr.delete_lifecycle_policy(repositoryName=created)
    assert deleted["lastEvaluatedAt"] == epoch, deleted


# --------------------------------------------------------------------------------------- scanning


def test_start_image_scan_in_progress_has_no_description(ecr: Any, created: str) -> None:
    put_api_image(ecr, created, secrets.randbelow(10**9), tag="v1")
    started = ecr.start_image_scan(repositoryName=created, imageId={"imageTag": "v1"})
    assert started["imageScanStatus"] == {"status": "IN_PROGRESS"}, started


def test_scan_not_found_in_ecrs_words(ecr: Any, created: str) -> None:
    image = put_api_image(ecr, created, secrets.randbelow(10**9), tag="v1")
    for image_id, shown in (
        ({"imageTag": "v1"}, "{imageDigest:'null', imageTag:'v1'}"),
        ({"imageDigest": image.digest}, f"{{imageDigest:'{image.digest}', imageTag:'null'}}"),
    ):
        message = refused(
            "ScanNotFoundException", ecr.describe_image_scan_findings, repositoryName=created, imageId=image_id
        )
        assert message == (
            f"Image scan does not exist for the image with '{shown}' in the repository with name '{created}' "
            f"in the registry with id '{ACCOUNT_ID}'"
        )


# --------------------------------------------------------------------------------------- messages


def test_image_not_found_in_ecrs_words(ecr: Any, created: str) -> None:
    for image_id, shown in (
        ({"imageTag": "x"}, "{imageDigest:'null', imageTag:'x'}"),
        ({"imageDigest": ABSENT}, f"{{imageDigest:'{ABSENT}', imageTag:'null'}}"),
    ):
        expected = (
            f"The image with imageId {shown} does not exist within the repository with name '{created}' in the "
            f"registry with id '{ACCOUNT_ID}'"
        )
        assert refused("ImageNotFoundException", ecr.describe_images, repositoryName=created, imageIds=[image_id]) == (
            expected
        )
        assert refused("ImageNotFoundException", ecr.start_image_scan, repositoryName=created, imageId=image_id) == (
            expected
        )


def test_invalid_repository_policy_in_ecrs_words(ecr: Any, created: str) -> None:
    for text in ("not json", json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Sometimes"}]})):
        message = refused(
            "InvalidParameterException", ecr.set_repository_policy, repositoryName=created, policyText=text
        )
        assert (
            message
            == "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid repository policy provided'"
        )


def test_invalid_registry_policy_in_ecrs_words(ecr: Any) -> None:
    grant = {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"}, "Resource": "*"}
    for text in ("not json", json.dumps({"Version": "2012-10-17", "Statement": [{**grant, "Action": "ecr:*"}]})):
        message = refused("InvalidParameterException", ecr.put_registry_policy, policyText=text)
        assert (
            message
            == "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid registry policy provided'"
        )
    refused("RegistryPolicyNotFoundException", ecr.get_registry_policy)  # nothing was stored


def test_invalid_arn_in_ecrs_words(ecr: Any) -> None:
    for arn in ("arn:aws:s3:::bucket", f"arn:aws:ecr:us-east-1:{ACCOUNT_ID}:registry/x", "nonsense"):
        message = refused("InvalidParameterException", ecr.list_tags_for_resource, resourceArn=arn)
        assert message == "Invalid parameter at 'resourceArn' failed to satisfy constraint: 'Invalid ARN'"


def test_download_url_for_missing_or_unreferenced_layers_in_ecrs_words(ecr: Any, created: str) -> None:
    message = refused(
        "LayersNotFoundException", ecr.get_download_url_for_layer, repositoryName=created, layerDigest=ABSENT
    )
    assert message == (
        f"Layer with digest '{ABSENT}' does not exist in the repository with name '{created}' in the registry "
        f"with id '{ACCOUNT_ID}'"
    )
    loose = secrets.token_bytes(300)
    upload_layer(ecr, created, loose)
    message = refused(
        "LayerInaccessibleException", ecr.get_download_url_for_layer, repositoryName=created, layerDigest=sha256(loose)
    )
    assert message == (
        f"The layer with digest '{sha256(loose)}' in the repository with name '{created}' in the registry with id "
        f"'{ACCOUNT_ID}' is not available because it is not associated with an image"
    )


# --------------------------------------------------------------------------------------- layers


@pytest.mark.parametrize(
    ("manifest_type", "config_type", "layer_type"),
    [(OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP), (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER)],
    ids=["oci", "docker"],
)
def test_batch_check_layer_availability_reports_the_media_type_manifests_give(
    ecr: Any, created: str, manifest_type: str, config_type: str, layer_type: str
) -> None:
    image = put_api_image(ecr, created, secrets.randbelow(10**9), media_type=manifest_type)
    loose = secrets.token_bytes(500)
    upload_layer(ecr, created, loose)
    layer_digests = [sha256(image.config), *map(sha256, image.layers), sha256(loose), ABSENT]
    answer = ecr.batch_check_layer_availability(repositoryName=created, layerDigests=layer_digests)
    layers = {layer["layerDigest"]: layer for layer in answer["layers"]}
    assert layers[sha256(image.config)]["mediaType"] == config_type
    assert all(layers[sha256(blob)]["mediaType"] == layer_type for blob in image.layers), layers
    # Uploaded but listed by no manifest: available, of no known type; absent: neither.
    assert layers[sha256(loose)]["layerAvailability"] == "AVAILABLE" and "mediaType" not in layers[sha256(loose)]
    assert layers[ABSENT]["layerAvailability"] == "UNAVAILABLE" and "mediaType" not in layers[ABSENT]
