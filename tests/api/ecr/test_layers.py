"""The layer API through boto3: BatchCheckLayerAvailability, InitiateLayerUpload, UploadLayerPart,
CompleteLayerUpload and GetDownloadUrlForLayer."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.api.ecr.helpers import ABSENT, build_image, error_code, put_api_image, upload_layer
from tests.support.images import sha256
from tests.support.server import ACCOUNT_ID


def raises(code: str, call: Any, **params: Any) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call(**params)
    assert error_code(caught.value) == code, caught.value.response
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400, caught.value.response
    return caught.value


def blob(size: int = 1000) -> bytes:
    return secrets.token_bytes(size)


# --------------------------------------------------------------------------------------- availability


def test_batch_check_layer_availability(ecr: Any, created: str) -> None:
    present = blob(1234)
    upload_layer(ecr, created, present)
    answer = ecr.batch_check_layer_availability(
        repositoryName=created, layerDigests=[sha256(present), ABSENT, "not-a-digest"]
    )
    layers = {layer["layerDigest"]: layer for layer in answer["layers"]}
    assert layers[sha256(present)]["layerAvailability"] == "AVAILABLE"
    assert layers[sha256(present)]["layerSize"] == 1234
    assert layers[ABSENT]["layerAvailability"] == "UNAVAILABLE"
    assert "layerSize" not in layers[ABSENT]
    assert answer["failures"] == [
        {
            "layerDigest": "not-a-digest",
            "failureCode": "InvalidLayerDigest",
            "failureReason": answer["failures"][0]["failureReason"],
        }
    ]
    assert answer["failures"][0]["failureReason"]


def test_batch_check_layer_availability_is_per_repository(ecr: Any, created: str, repo: str) -> None:
    data = blob()
    upload_layer(ecr, created, data)
    other = repo + "-other"
    ecr.create_repository(repositoryName=other)
    (layer,) = ecr.batch_check_layer_availability(repositoryName=other, layerDigests=[sha256(data)])["layers"]
    assert layer["layerAvailability"] == "UNAVAILABLE"


def test_batch_check_layer_availability_unknown_repository(ecr: Any, repo: str) -> None:
    raises(
        "RepositoryNotFoundException", ecr.batch_check_layer_availability, repositoryName=repo, layerDigests=[ABSENT]
    )


# --------------------------------------------------------------------------------------- uploads


def test_layer_upload_in_parts(ecr: Any, created: str) -> None:
    data = blob(300_000)
    started = ecr.initiate_layer_upload(repositoryName=created)
    uuid.UUID(started["uploadId"])
    assert started["partSize"] > 0
    upload_id = started["uploadId"]
    for first in range(0, len(data), 100_000):
        part = data[first : first + 100_000]
        answer = ecr.upload_layer_part(
            repositoryName=created,
            uploadId=upload_id,
            partFirstByte=first,
            partLastByte=first + len(part) - 1,
            layerPartBlob=part,
        )
        assert answer == {
            "registryId": ACCOUNT_ID,
            "repositoryName": created,
            "uploadId": upload_id,
            "lastByteReceived": first + len(part) - 1,
            "ResponseMetadata": answer["ResponseMetadata"],
        }
    done = ecr.complete_layer_upload(repositoryName=created, uploadId=upload_id, layerDigests=[sha256(data)])
    assert done["layerDigest"] == sha256(data)
    assert done["uploadId"] == upload_id
    assert done["repositoryName"] == created
    assert done["registryId"] == ACCOUNT_ID
    (layer,) = ecr.batch_check_layer_availability(repositoryName=created, layerDigests=[sha256(data)])["layers"]
    assert (layer["layerAvailability"], layer["layerSize"]) == ("AVAILABLE", len(data))


@pytest.mark.parametrize("first_byte", [1, 99, 101, 0], ids=["gap-of-one", "overlap", "gap", "restart"])
def test_non_consecutive_part_is_invalid(ecr: Any, created: str, first_byte: int) -> None:
    data = blob(200)
    upload_id = ecr.initiate_layer_upload(repositoryName=created)["uploadId"]
    ecr.upload_layer_part(
        repositoryName=created, uploadId=upload_id, partFirstByte=0, partLastByte=99, layerPartBlob=data[:100]
    )
    second = data[first_byte : first_byte + 100] if first_byte else data[:100]
    if first_byte == 1:  # the very first byte again would be consecutive; start one past the end
        first_byte, second = 101, data[101:200]
    error = raises(
        "InvalidLayerPartException",
        ecr.upload_layer_part,
        repositoryName=created,
        uploadId=upload_id,
        partFirstByte=first_byte,
        partLastByte=first_byte + len(second) - 1,
        layerPartBlob=second,
    )
    assert error.response["lastValidByteReceived"] == 99
    assert error.response["uploadId"] == upload_id
    assert error.response["repositoryName"] == created
    assert error.response["registryId"] == ACCOUNT_ID
    # The upload goes on from where it was.
    ecr.upload_layer_part(
        repositoryName=created, uploadId=upload_id, partFirstByte=100, partLastByte=199, layerPartBlob=data[100:]
    )
    done = ecr.complete_layer_upload(repositoryName=created, uploadId=upload_id, layerDigests=[sha256(data)])
    assert done["layerDigest"] == sha256(data)


def test_part_length_must_match_its_range(ecr: Any, created: str) -> None:
    upload_id = ecr.initiate_layer_upload(repositoryName=created)["uploadId"]
    error = raises(
        "InvalidLayerPartException",
        ecr.upload_layer_part,
        repositoryName=created,
        uploadId=upload_id,
        partFirstByte=0,
        partLastByte=99,
        layerPartBlob=b"x" * 50,
    )
    assert error.response["lastValidByteReceived"] == -1


def test_complete_empty_upload(ecr: Any, created: str) -> None:
    upload_id = ecr.initiate_layer_upload(repositoryName=created)["uploadId"]
    raises(
        "EmptyUploadException",
        ecr.complete_layer_upload,
        repositoryName=created,
        uploadId=upload_id,
        layerDigests=[sha256(b"")],
    )


def test_complete_layer_already_exists(ecr: Any, created: str) -> None:
    data = blob()
    upload_layer(ecr, created, data)
    upload_id = ecr.initiate_layer_upload(repositoryName=created)["uploadId"]
    ecr.upload_layer_part(
        repositoryName=created, uploadId=upload_id, partFirstByte=0, partLastByte=len(data) - 1, layerPartBlob=data
    )
    error = raises(
        "LayerAlreadyExistsException",
        ecr.complete_layer_upload,
        repositoryName=created,
        uploadId=upload_id,
        layerDigests=[sha256(data)],
    )
    assert sha256(data) in error.response["Error"]["Message"]


def test_complete_with_wrong_digest(ecr: Any, created: str) -> None:
    data = blob()
    upload_id = ecr.initiate_layer_upload(repositoryName=created)["uploadId"]
    ecr.upload_layer_part(
        repositoryName=created, uploadId=upload_id, partFirstByte=0, partLastByte=len(data) - 1, layerPartBlob=data
    )
    wrong = "sha256:" + hashlib.sha256(data + b"!").hexdigest()
    raises(
        "InvalidLayerException",
        ecr.complete_layer_upload,
        repositoryName=created,
        uploadId=upload_id,
        layerDigests=[wrong],
    )
    (layer,) = ecr.batch_check_layer_availability(repositoryName=created, layerDigests=[wrong])["layers"]
    assert layer["layerAvailability"] == "UNAVAILABLE"


def test_unknown_upload(ecr: Any, created: str, repo: str) -> None:
    unknown = str(uuid.uuid4())
    raises(
        "UploadNotFoundException",
        ecr.upload_layer_part,
        repositoryName=created,
        uploadId=unknown,
        partFirstByte=0,
        partLastByte=0,
        layerPartBlob=b"x",
    )
    raises(
        "UploadNotFoundException",
        ecr.complete_layer_upload,
        repositoryName=created,
        uploadId=unknown,
        layerDigests=[sha256(b"x")],
    )
    # An upload of another repository is not found here either.
    other = repo + "-other"
    ecr.create_repository(repositoryName=other)
    theirs = ecr.initiate_layer_upload(repositoryName=other)["uploadId"]
    raises(
        "UploadNotFoundException",
        ecr.upload_layer_part,
        repositoryName=created,
        uploadId=theirs,
        partFirstByte=0,
        partLastByte=0,
        layerPartBlob=b"x",
    )


def test_upload_to_unknown_repository(ecr: Any, repo: str) -> None:
    raises("RepositoryNotFoundException", ecr.initiate_layer_upload, repositoryName=repo)
    raises(
        "RepositoryNotFoundException",
        ecr.upload_layer_part,
        repositoryName=repo,
        uploadId=str(uuid.uuid4()),
        partFirstByte=0,
        partLastByte=0,
        layerPartBlob=b"x",
    )
    raises(
        "RepositoryNotFoundException",
        ecr.complete_layer_upload,
        repositoryName=repo,
        uploadId=str(uuid.uuid4()),
        layerDigests=[ABSENT],
    )


def test_upload_id_pattern_is_validated(unvalidated: Any, created: str) -> None:
    raises(
        "InvalidParameterException",
        unvalidated.upload_layer_part,
        repositoryName=created,
        uploadId="not-a-uuid",
        partFirstByte=0,
        partLastByte=0,
        layerPartBlob=b"x",
    )


# --------------------------------------------------------------------------------------- downloads


def test_get_download_url_for_layer(ecr: Any, created: str) -> None:
    image = put_api_image(ecr, created, secrets.randbelow(2**62), tag="v1")
    layer = image.layers[0]
    answer = ecr.get_download_url_for_layer(repositoryName=created, layerDigest=sha256(layer))
    assert answer["layerDigest"] == sha256(layer)
    assert answer["downloadUrl"].startswith("http")


def test_download_url_serves_the_layer_with_registry_credentials(ecr: Any, created: str) -> None:
    image = put_api_image(ecr, created, secrets.randbelow(2**62), tag="v1")
    url = ecr.get_download_url_for_layer(repositoryName=created, layerDigest=sha256(image.layers[1]))["downloadUrl"]
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    response = httpx.get(url, headers={"Authorization": f"Basic {token}"}, follow_redirects=True, timeout=30)
    assert response.status_code == 200
    assert response.content == image.layers[1]


def test_download_url_is_presigned(ecr: Any, created: str) -> None:
    """ECR hands out a pre-signed URL: whoever holds it fetches the layer with no further credentials."""
    image = put_api_image(ecr, created, secrets.randbelow(2**62), tag="v1")
    url = ecr.get_download_url_for_layer(repositoryName=created, layerDigest=sha256(image.layers[0]))["downloadUrl"]
    response = httpx.get(url, follow_redirects=True, timeout=30)
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.content == image.layers[0]


def test_get_download_url_for_unknown_layer(ecr: Any, created: str) -> None:
    raises("LayersNotFoundException", ecr.get_download_url_for_layer, repositoryName=created, layerDigest=ABSENT)


def test_get_download_url_for_unreferenced_layer(ecr: Any, created: str) -> None:
    """A layer uploaded but not referenced by any image is LayerInaccessibleException (spec §5)."""
    data = blob()
    upload_layer(ecr, created, data)
    raises(
        "LayerInaccessibleException", ecr.get_download_url_for_layer, repositoryName=created, layerDigest=sha256(data)
    )


def test_get_download_url_unknown_repository(ecr: Any, repo: str) -> None:
    raises("RepositoryNotFoundException", ecr.get_download_url_for_layer, repositoryName=repo, layerDigest=ABSENT)


def test_layers_of_an_api_image_are_available(ecr: Any, created: str) -> None:
    image = build_image(secrets.randbelow(2**62), layers=3)
    digests = [sha256(b) for b in (image.config, *image.layers)]
    before = ecr.batch_check_layer_availability(repositoryName=created, layerDigests=digests)["layers"]
    assert {layer["layerAvailability"] for layer in before} == {"UNAVAILABLE"}
    for data in (image.config, *image.layers):
        upload_layer(ecr, created, data, part_size=700)
    after = ecr.batch_check_layer_availability(repositoryName=created, layerDigests=digests)["layers"]
    assert {layer["layerDigest"]: layer["layerSize"] for layer in after} == {
        sha256(b): len(b) for b in (image.config, *image.layers)
    }
