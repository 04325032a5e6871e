"""dockyard.http.aws_json: request validation against botocore's ECR model, output serialisation, envelopes."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest
from botocore.parsers import create_parser

from dockyard.domain.errors import ImageTagAlreadyExists, InvalidParameter, RepositoryNotEmpty, Unavailable
from dockyard.http import aws_json

MODEL = aws_json.service_model("ecr")
MESSAGE_RE = re.compile(r"Invalid parameter at '(?P<field>[^']+)' failed to satisfy constraint: '(?P<reason>.+)'")


def input_of(operation: str) -> Any:
    return MODEL.operation_model(operation).input_shape


def output_of(operation: str) -> Any:
    return MODEL.operation_model(operation).output_shape


def invalid(operation: str, value: dict[str, Any]) -> tuple[str, str]:
    """The (field, reason) of the InvalidParameterException `value` draws."""
    with pytest.raises(InvalidParameter) as caught:
        aws_json.validate(input_of(operation), value)
    assert caught.value.ecr_exception == "InvalidParameterException"
    match = MESSAGE_RE.fullmatch(caught.value.message)
    assert match, caught.value.message
    return match["field"], match["reason"]


# --------------------------------------------------------------------------------------- validation


def test_valid_input_passes_through() -> None:
    value = {
        "repositoryName": "team/app",
        "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
        "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "dev-*"}],
        "imageScanningConfiguration": {"scanOnPush": True},
        "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "alias/k"},
        "tags": [{"Key": "a", "Value": "b"}],
    }
    assert aws_json.validate(input_of("CreateRepository"), value) == value


def test_unknown_members_are_dropped() -> None:
    assert aws_json.validate(input_of("DescribeRegistry"), {"future": 1}) == {}
    assert aws_json.validate(input_of("CreateRepository"), {"repositoryName": "ab", "x": 1}) == {"repositoryName": "ab"}


def test_null_optional_members_are_absent() -> None:
    assert aws_json.validate(input_of("DescribeRepositories"), {"maxResults": None}) == {}


def test_operation_without_input() -> None:
    assert aws_json.validate(None, {"anything": 1}) == {}


@pytest.mark.parametrize("value", [{}, {"repositoryName": None}])
def test_required_member(value: dict[str, Any]) -> None:
    assert invalid("CreateRepository", value) == ("repositoryName", "Member must not be null")


def test_nested_required_member() -> None:
    field, reason = invalid(
        "CreateRepository",
        {"repositoryName": "ab", "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD"}]},
    )
    assert field.startswith("imageTagMutabilityExclusionFilters") and field.endswith("filter")
    assert reason == "Member must not be null"


@pytest.mark.parametrize(
    ("operation", "value", "field"),
    [
        ("CreateRepository", {"repositoryName": 12}, "repositoryName"),
        ("CreateRepository", {"repositoryName": ["ab"]}, "repositoryName"),
        ("DeleteRepository", {"repositoryName": "ab", "force": "true"}, "force"),
        ("DeleteRepository", {"repositoryName": "ab", "force": 1}, "force"),
        ("DescribeRepositories", {"maxResults": "5"}, "maxResults"),
        ("DescribeRepositories", {"maxResults": 5.5}, "maxResults"),
        ("DescribeRepositories", {"maxResults": True}, "maxResults"),
        ("DescribeRepositories", {"repositoryNames": "ab"}, "repositoryNames"),
        ("CreateRepository", {"repositoryName": "ab", "imageScanningConfiguration": []}, "imageScanningConfiguration"),
        ("CreateRepository", {"repositoryName": "ab", "tags": {"Key": "a"}}, "tags"),
    ],
)
def test_types(operation: str, value: dict[str, Any], field: str) -> None:
    assert invalid(operation, value)[0] == field


@pytest.mark.parametrize(
    ("operation", "value", "field", "reason"),
    [
        ("CreateRepository", {"repositoryName": "a"}, "repositoryName", "length greater than or equal to 2"),
        ("CreateRepository", {"repositoryName": "a" * 257}, "repositoryName", "length less than or equal to 256"),
        ("DescribeRepositories", {"maxResults": 0}, "maxResults", "value greater than or equal to 1"),
        ("DescribeRepositories", {"maxResults": 1001}, "maxResults", "value less than or equal to 1000"),
        ("DescribeRepositories", {"repositoryNames": []}, "repositoryNames", "greater than or equal to 1"),
        ("DescribeRepositories", {"repositoryNames": ["ab"] * 101}, "repositoryNames", "less than or equal to 100"),
        (
            "UploadLayerPart",
            {"repositoryName": "ab", "uploadId": "0" * 8 + "-0000-0000-0000-" + "0" * 12, "partFirstByte": -1,
             "partLastByte": 0, "layerPartBlob": "eA=="},
            "partFirstByte",
            "value greater than or equal to 0",
        ),
        ("PutImage", {"repositoryName": "ab", "imageManifest": ""}, "imageManifest",
         "length greater than or equal to 1"),
    ],
)  # fmt: skip
def test_lengths_and_ranges(operation: str, value: dict[str, Any], field: str, reason: str) -> None:
    got_field, got_reason = invalid(operation, value)
    assert got_field == field
    assert reason in got_reason


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"repositoryName": "ab", "imageTagMutability": "SOMETIMES"}, "imageTagMutability"),
        ({"repositoryName": "ab", "encryptionConfiguration": {"encryptionType": "ROT13"}}, "encryptionType"),
    ],
)
def test_enum(value: dict[str, Any], field: str) -> None:
    got_field, reason = invalid("CreateRepository", value)
    assert got_field.endswith(field)
    assert reason.startswith("Member must satisfy enum value set: [")


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"repositoryName": "Upper"}, "repositoryName"),
        ({"repositoryName": "a//b"}, "repositoryName"),
        ({"repositoryName": "ab", "registryId": "12345678901"}, "registryId"),
        ({"repositoryName": "ab", "registryId": "1234567890123"}, "registryId"),
        ({"repositoryName": "ab", "registryId": "12345678901x"}, "registryId"),
    ],
)
def test_pattern(value: dict[str, Any], field: str) -> None:
    got_field, reason = invalid("CreateRepository", value)
    assert got_field == field
    assert reason.startswith("Member must satisfy regular expression pattern: ")


def test_pattern_is_anchored() -> None:
    """A pattern must match the whole value, not a prefix of it."""
    base = {"repositoryName": "ab", "partFirstByte": 0, "partLastByte": 0, "layerPartBlob": "eA=="}
    uuid_text = "01234567-89ab-cdef-0123-456789abcdef"
    assert aws_json.validate(input_of("UploadLayerPart"), {**base, "uploadId": uuid_text})["uploadId"] == uuid_text
    assert invalid("UploadLayerPart", {**base, "uploadId": uuid_text + "-extra"})[0] == "uploadId"


def upload_part(blob: Any) -> dict[str, Any]:
    return {
        "repositoryName": "ab",
        "uploadId": "01234567-89ab-cdef-0123-456789abcdef",
        "partFirstByte": 0,
        "partLastByte": 0,
        "layerPartBlob": blob,
    }


@pytest.mark.parametrize("data", [b"", b"x", bytes(range(256))])
def test_blob_is_base64_decoded(data: bytes) -> None:
    params = aws_json.validate(input_of("UploadLayerPart"), upload_part(base64.b64encode(data).decode()))
    assert params["layerPartBlob"] == data


@pytest.mark.parametrize("blob", ["***", "eA", "e A==", 12, ["eA=="], "\u00e9A=="], ids=repr)
def test_blob_must_be_base64(blob: Any) -> None:
    field, reason = invalid("UploadLayerPart", upload_part(blob))
    assert field == "layerPartBlob"
    assert "base64" in reason


# --------------------------------------------------------------------------------------- envelopes


@pytest.mark.parametrize("body", [b"", b"  \n"])
def test_empty_body_is_an_empty_object(body: bytes) -> None:
    assert aws_json.parse_body(body) == {}


@pytest.mark.parametrize("body", [b"{", b"[]", b"1", b'"x"', b"null", b"\xff", b"[" * 50_000 + b"]" * 50_000])
def test_bad_body_is_a_serialization_exception(body: bytes) -> None:
    with pytest.raises(aws_json.SerializationError) as caught:
        aws_json.parse_body(body)
    assert caught.value.ecr_exception == "SerializationException"
    assert caught.value.http_status == 400


def test_unknown_operation() -> None:
    with pytest.raises(aws_json.UnknownOperation) as caught:
        aws_json.operation(MODEL, "DescribeEverything")
    assert caught.value.ecr_exception == "UnknownOperationException"
    assert aws_json.operation(MODEL, "DescribeImages").name == "DescribeImages"


def parsed_error(response: Any, operation: str = "DescribeRepositories") -> dict[str, Any]:
    """What botocore makes of an error response."""
    parser = create_parser("json")
    answer: dict[str, Any] = parser.parse(
        {"status_code": response.status_code, "headers": dict(response.headers), "body": response.body},
        output_of(operation),
    )
    return answer


def test_error_response_is_what_botocore_reads() -> None:
    response = aws_json.error_response(RepositoryNotEmpty("still has images"))
    assert response.status_code == 400
    assert response.headers["content-type"] == aws_json.CONTENT_TYPE
    assert response.headers["x-amzn-requestid"]
    assert json.loads(response.body) == {"__type": "RepositoryNotEmptyException", "message": "still has images"}
    error = parsed_error(response)["Error"]
    assert (error["Code"], error["Message"]) == ("RepositoryNotEmptyException", "still has images")


def test_error_response_carries_modelled_extra_members() -> None:
    response = aws_json.error_response(ImageTagAlreadyExists("immutable", detail={"tag": "v1"}))
    body = json.loads(response.body)
    assert body["__type"] == "ImageTagAlreadyExistsException"
    assert body["tag"] == "v1"


def test_server_exception_is_500() -> None:
    response = aws_json.error_response(Unavailable("boom"))
    assert response.status_code == 500
    assert json.loads(response.body)["__type"] == "ServerException"


def test_not_built_is_a_modelled_validation_error() -> None:
    error = aws_json.NotBuilt("not yet")
    assert error.ecr_exception == "ValidationException"
    assert error.http_status == 400


# --------------------------------------------------------------------------------------- serialisation


def test_serialize_timestamps_blobs_and_absent_members() -> None:
    moment = datetime(2025, 6, 1, 12, 0, 30, 500000, tzinfo=UTC)
    result = aws_json.serialize(
        output_of("GetAuthorizationToken"),
        {"authorizationData": [{"authorizationToken": "QVdTOng=", "expiresAt": moment, "proxyEndpoint": None}]},
    )
    assert result == {"authorizationData": [{"authorizationToken": "QVdTOng=", "expiresAt": moment.timestamp()}]}
    part = aws_json.serialize(
        output_of("UploadLayerPart"), {"uploadId": "u", "lastByteReceived": 9, "registryId": None}
    )
    assert part == {"uploadId": "u", "lastByteReceived": 9}


def test_serialize_output_parses_with_botocore() -> None:
    moment = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    body = aws_json.serialize(
        output_of("DescribeImages"),
        {
            "imageDetails": [
                {
                    "registryId": "123456789012",
                    "repositoryName": "ab",
                    "imageDigest": "sha256:" + "a" * 64,
                    "imageTags": ["v1"],
                    "imageSizeInBytes": 10,
                    "imagePushedAt": moment,
                    "lastRecordedPullTime": None,
                }
            ],
            "nextToken": None,
        },
    )
    parsed = create_parser("json").parse(
        {"status_code": 200, "headers": {}, "body": json.dumps(body).encode()}, output_of("DescribeImages")
    )
    (detail,) = parsed["imageDetails"]
    assert detail["imagePushedAt"] == moment
    assert "lastRecordedPullTime" not in detail
    assert "nextToken" not in parsed


@pytest.mark.parametrize(
    ("operation", "value"),
    [
        ("DescribeRegistry", {"registryId": "1", "notInTheModel": 1}),
        ("DescribeImages", {"imageDetails": [{"imageDigest": "d", "madeUp": True}]}),
        ("CreateRepository", {"repository": {"repositoryName": "ab", "repositoryname": "typo"}}),
    ],
)
def test_serialize_refuses_unknown_members(operation: str, value: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="no members"):
        aws_json.serialize(output_of(operation), value)


def test_every_output_shape_serialises_its_own_members() -> None:
    """Each output shape accepts a value naming only its own members (with empty/absent values)."""
    for name in MODEL.operation_names:
        shape = output_of(name)
        if shape is None:
            continue
        assert aws_json.serialize(shape, dict.fromkeys(shape.members)) == {}


def test_model_is_botocores() -> None:
    assert MODEL.metadata["targetPrefix"] == "AmazonEC2ContainerRegistry_V20150921"
    assert MODEL.metadata["jsonVersion"] == "1.1"
    assert MODEL.operation_names == botocore.session.get_session().get_service_model("ecr").operation_names
