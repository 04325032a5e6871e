"""The AWS JSON 1.1 envelope and SigV4 over HTTP: raw signed requests (botocore's SigV4Auth + httpx).

Whatever a client sends, the answer is an AWS error with `__type` and a message at 400/403, never a 500.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.session
import httpx
import pytest
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from dockyard.http.ecr_api import EcrDoor
from tests.api.ecr.helpers import (
    AWS_JSON,
    ECR_TARGET,
    REGION,
    aws_error,
    ecr_client,
    error_code,
    repository_arn,
    sign,
    signed_post,
    signing_clock,
)
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess

MODEL = botocore.session.get_session().get_service_model("ecr")


def snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


# Operations this Dockyard has no handler for (the door's handlers are its methods named after them).
UNIMPLEMENTED = frozenset(name for name in MODEL.operation_names if not hasattr(EcrDoor, snake(name)))
AUTH_FAMILY = {400, 403}


def modelled_errors(operation: str) -> set[str]:
    return {shape.name for shape in MODEL.operation_model(operation).error_shapes}


# --------------------------------------------------------------------------------------- the envelope


def test_success_envelope(ecr_server: ServerProcess) -> None:
    response = signed_post(ecr_server, "DescribeRegistry")
    assert response.status_code == 200
    assert response.headers["content-type"] == AWS_JSON
    uuid.UUID(response.headers["x-amzn-requestid"])
    assert response.json()["registryId"] == ACCOUNT_ID


def test_empty_body_is_an_empty_object(ecr_server: ServerProcess) -> None:
    response = signed_post(ecr_server, "DescribeRepositories", b"")
    assert response.status_code == 200, response.text
    assert "repositories" in response.json()


def test_error_envelope(ecr_server: ServerProcess) -> None:
    response = signed_post(ecr_server, "DescribeRepositories", {"repositoryNames": ["ecr-test/absent"]})
    status, code, message = aws_error(response)
    assert (status, code) == (400, "RepositoryNotFoundException")
    assert (
        message == f"The repository with name 'ecr-test/absent' does not exist in the registry with id '{ACCOUNT_ID}'"
    )
    uuid.UUID(response.headers["x-amzn-requestid"])


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[]", b'"text"', b"null", b"\xff\xfe\x00", b"{" * 100_000, b'{"repositoryNames": '],
    ids=["broken", "array", "string", "null", "bad-utf8", "deep", "truncated"],
)
def test_malformed_json_is_a_serialization_exception(ecr_server: ServerProcess, body: bytes) -> None:
    status, code, _ = aws_error(signed_post(ecr_server, "DescribeRepositories", body))
    assert (status, code) == (400, "SerializationException")


def test_unknown_operation(ecr_server: ServerProcess) -> None:
    status, code, message = aws_error(signed_post(ecr_server, "DescribeEverything"))
    assert (status, code) == (400, "UnknownOperationException")
    assert "DescribeEverything" in message


@pytest.mark.parametrize(
    ("prefix", "target"),
    [
        ("DynamoDB_20120810", "ListTables"),
        ("DynamoDB_20120810", "DescribeRepositories"),
        ("AmazonEC2ContainerRegistry_V20150921", ""),
        ("", "DescribeRepositories"),
        ("", "garbage"),
    ],
    ids=["other-service", "other-namespace-ecr-operation", "no-operation", "no-namespace", "garbage"],
)
def test_unknown_target_is_an_unknown_operation(ecr_server: ServerProcess, prefix: str, target: str) -> None:
    """An AWS JSON request (POST / with X-Amz-Target) for no ECR operation answers as AWS does."""
    response = signed_post(ecr_server, target, prefix=prefix)
    status, code, _ = aws_error(response)
    assert (status, code) == (400, "UnknownOperationException")


def test_unknown_members_are_ignored(ecr_server: ServerProcess) -> None:
    response = signed_post(ecr_server, "DescribeRegistry", {"somethingNew": 1})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("target", "body", "field"),
    [
        ("DescribeRepositories", {"maxResults": "10"}, "maxResults"),
        ("DescribeRepositories", {"maxResults": 10.5}, "maxResults"),
        ("DescribeRepositories", {"repositoryNames": "one"}, "repositoryNames"),
        ("DescribeRepositories", {"repositoryNames": []}, "repositoryNames"),
        ("CreateRepository", {}, "repositoryName"),
        ("CreateRepository", {"repositoryName": None}, "repositoryName"),
        ("CreateRepository", {"repositoryName": "ok-name", "imageScanningConfiguration": {"scanOnPush": "yes"}},
         "imageScanningConfiguration.scanOnPush"),
        ("CreateRepository", {"repositoryName": "ok-name", "registryId": "12345"}, "registryId"),
        ("UploadLayerPart", {"repositoryName": "ok-name", "uploadId": str(uuid.uuid4()), "partFirstByte": 0,
                             "partLastByte": 0, "layerPartBlob": "***"}, "layerPartBlob"),
        ("UploadLayerPart", {"repositoryName": "ok-name", "uploadId": str(uuid.uuid4()), "partFirstByte": -1,
                             "partLastByte": 0, "layerPartBlob": "eA=="}, "partFirstByte"),
        ("BatchGetImage", {"repositoryName": "ok-name", "imageIds": [{"imageTag": ""}]}, "imageIds"),
        ("ListImages", {"repositoryName": "ok-name", "filter": {"tagStatus": "SOME"}}, "filter.tagStatus"),
    ],
)  # fmt: skip
def test_server_side_validation(ecr_server: ServerProcess, target: str, body: dict[str, Any], field: str) -> None:
    status, code, message = aws_error(signed_post(ecr_server, target, body))
    assert (status, code) == (400, "InvalidParameterException"), message
    assert message.startswith(f"Invalid parameter at '{field}") and "failed to satisfy constraint: '" in message


def minimal_input(shape: Any, repo: str) -> Any:
    """The smallest input the model accepts: required members only, each at its minimum."""
    kind = shape.type_name
    if kind == "structure":
        if shape.name == "ImageIdentifier":
            return {"imageTag": "latest"}
        return {name: minimal_input(shape.members[name], repo) for name in shape.required_members}
    if kind == "list":
        return [minimal_input(shape.member, repo) for _ in range(max(shape.metadata.get("min", 1), 1))]
    if kind == "map":
        return {}
    if kind in ("integer", "long"):
        return max(shape.metadata.get("min", 1), 1)
    if kind == "boolean":
        return False
    if kind == "blob":
        return b"x"
    if shape.metadata.get("enum"):
        return shape.metadata["enum"][0]
    if shape.name == "RepositoryName":
        return repo
    low, high = shape.metadata.get("min", 1), shape.metadata.get("max", 10_000)
    pattern = shape.metadata.get("pattern")
    candidates = [
        "x" * max(low, 1),
        str(uuid.uuid4()),
        "sha256:" + "0" * 64,
        "ecr-test",
        ACCOUNT_ID,
        REGION,
        f"arn:aws:iam::{ACCOUNT_ID}:user/tester",
        f"arn:aws:signer:{REGION}:{ACCOUNT_ID}:/signing-profiles/test_profile",
    ]
    for candidate in candidates:
        if low <= len(candidate) <= high and (pattern is None or re.fullmatch(pattern, candidate)):
            return candidate
    raise AssertionError(f"no candidate value for {shape.name}")


@pytest.mark.parametrize("operation", sorted(MODEL.operation_names))
def test_every_operation_answers_success_or_a_modelled_error(ecr: Any, created: str, operation: str) -> None:
    """Called with the smallest valid input, every operation of the model either succeeds (botocore parses the
    answer against the output shape) or fails with one of its own modelled errors; operations Dockyard lacks
    must fail (never a fake success)."""
    shape = MODEL.operation_model(operation).input_shape
    params = minimal_input(shape, created) if shape is not None else {}
    try:
        getattr(ecr, snake(operation))(**params)
    except ClientError as error:
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400, error.response
        assert error_code(error) in modelled_errors(operation), (params, error.response["Error"])
    else:
        assert operation not in UNIMPLEMENTED, f"{operation} is not built but answered success"


def test_oversized_body_is_refused(ecr_server: ServerProcess) -> None:
    body = json.dumps({"repositoryName": "x", "pad": "y" * (33 * 1024 * 1024)}).encode()
    response = signed_post(ecr_server, "DescribeRegistry", body)
    status, code, _ = aws_error(response)
    assert status == 400 and code in {"InvalidParameterException", "SerializationException"}


# --------------------------------------------------------------------------------------- SigV4 over HTTP


def test_wrong_secret(ecr_server: ServerProcess) -> None:
    client = ecr_client(ecr_server, secret=SECRET_ACCESS_KEY[::-1])
    with pytest.raises(ClientError) as caught:
        client.describe_registry()
    assert error_code(caught.value) == "InvalidSignatureException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] in AUTH_FAMILY


def test_unknown_access_key(ecr_server: ServerProcess) -> None:
    client = ecr_client(ecr_server, key="AKIAUNKNOWNKEY000000")
    with pytest.raises(ClientError) as caught:
        client.describe_repositories()
    assert error_code(caught.value) == "UnrecognizedClientException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] in AUTH_FAMILY


def test_any_valid_region_is_accepted(ecr_server: ServerProcess) -> None:
    client = ecr_client(ecr_server, region="eu-west-3")
    repo = f"ecr-test/{uuid.uuid4().hex[:12]}"
    created = client.create_repository(repositoryName=repo)["repository"]
    assert created["repositoryArn"] == repository_arn(repo, region="eu-west-3")


def test_tampered_signature(ecr_server: ServerProcess) -> None:
    def flip(authorization: str) -> str:
        head, _, signature = authorization.rpartition("Signature=")
        return f"{head}Signature={signature[:-1]}{'0' if signature[-1] != '0' else '1'}"

    headers = sign(
        f"{ecr_server.url}/", b"{}", {"Content-Type": AWS_JSON, "X-Amz-Target": f"{ECR_TARGET}.DescribeRegistry"}
    )
    headers["Authorization"] = flip(headers["Authorization"])
    response = httpx.post(f"{ecr_server.url}/", content=b"{}", headers=headers, timeout=10)
    status, code, _ = aws_error(response)
    assert status in AUTH_FAMILY and code == "InvalidSignatureException"


def test_tampered_body(ecr_server: ServerProcess) -> None:
    response = signed_post(
        ecr_server, "DescribeRepositories", {"maxResults": 5}, send_body=json.dumps({"maxResults": 6}).encode()
    )
    status, code, _ = aws_error(response)
    assert status in AUTH_FAMILY and code == "InvalidSignatureException"


def test_tampered_target(ecr_server: ServerProcess, created: str) -> None:
    """X-Amz-Target is signed: a replay against another operation fails."""
    response = signed_post(
        ecr_server,
        "DescribeRepositories",
        {"repositoryName": created},
        tamper={"X-Amz-Target": f"{ECR_TARGET}.DeleteRepository"},
    )
    status, code, _ = aws_error(response)
    assert status in AUTH_FAMILY and code == "InvalidSignatureException"


@pytest.mark.parametrize(
    ("region", "service"),
    [("us-east-1", "s3"), ("us-east-1", "ecr-public"), ("moon", "ecr"), ("US-EAST-1", "ecr"), ("us_east_1", "ecr")],
)
def test_wrong_scope(ecr_server: ServerProcess, region: str, service: str) -> None:
    status, code, _ = aws_error(signed_post(ecr_server, "DescribeRegistry", region=region, service=service))
    assert status in AUTH_FAMILY and code == "InvalidSignatureException"


@pytest.mark.parametrize("minutes", [-20, 20, -24 * 60])
def test_signature_outside_the_skew_window(ecr_server: ServerProcess, minutes: int) -> None:
    with signing_clock(datetime.now(UTC) + timedelta(minutes=minutes)):
        response = signed_post(ecr_server, "DescribeRegistry")
    status, code, message = aws_error(response)
    assert status in AUTH_FAMILY and code == "InvalidSignatureException"
    assert "expired" in message.lower()


def test_signature_inside_the_skew_window(ecr_server: ServerProcess) -> None:
    with signing_clock(datetime.now(UTC) - timedelta(minutes=10)):
        response = signed_post(ecr_server, "DescribeRegistry")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        (None, {"MissingAuthenticationTokenException"}),
        ("", {"MissingAuthenticationTokenException", "IncompleteSignatureException"}),
        ("garbage", {"IncompleteSignatureException"}),
        ("Basic QUtJQTpzZWNyZXQ=", {"IncompleteSignatureException", "MissingAuthenticationTokenException"}),
        ("AWS4-HMAC-SHA256 Credential=AKIA/20250101/us-east-1/ecr/aws4_request", {"IncompleteSignatureException"}),
        (
            f"AWS4-HMAC-SHA512 Credential={ACCESS_KEY_ID}/20250101/us-east-1/ecr/aws4_request, "
            f"SignedHeaders=host, Signature={'a' * 64}",
            {"IncompleteSignatureException"},
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/us-east-1/ecr/aws4_request, "
            f"SignedHeaders=host, Signature={'a' * 64}",
            {"IncompleteSignatureException"},
        ),
        (  # AWS answers a required header left unsigned as a signature that does not match
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20250101/us-east-1/ecr/aws4_request, "
            f"SignedHeaders=x-amz-date, Signature={'a' * 64}",
            {"InvalidSignatureException"},
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20250101/us-east-1/ecr/aws4_request, "
            f"SignedHeaders=content-type;host;x-amz-date, Signature={'a' * 64}",
            {"InvalidSignatureException"},
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20250101/us-east-1/ecr/aws4_request, "
            f"SignedHeaders=host;x-amz-date;x-amz-target, Signature={'a' * 64}",
            {"InvalidSignatureException"},
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20250101/us-east-1/ecr/aws4_request, "
            f"SignedHeaders=host, Signature=xyz",
            {"IncompleteSignatureException"},
        ),
    ],
    ids=[
        "absent",
        "empty",
        "garbage",
        "basic",
        "no-signature",
        "sha512",
        "short-scope",
        "host-unsigned",
        "target-unsigned",
        "content-type-unsigned",
        "bad-sig",
    ],
)
def test_malformed_authorization(ecr_server: ServerProcess, authorization: str | None, expected: set[str]) -> None:
    headers = {
        "Content-Type": AWS_JSON,
        "X-Amz-Target": f"{ECR_TARGET}.DescribeRegistry",
        "X-Amz-Date": "20250101T000000Z",
    }
    if authorization is not None:
        headers["Authorization"] = authorization
    response = httpx.post(f"{ecr_server.url}/", content=b"{}", headers=headers, timeout=10)
    status, code, _ = aws_error(response)
    assert status in AUTH_FAMILY and code in expected
    if code == "MissingAuthenticationTokenException":  # AWS answers an unsigned call 403, not 400
        assert status == 403, response.text


def presigned_url(
    server: ServerProcess, when: datetime, expires: int, target: str = "DescribeRegistry"
) -> tuple[str, dict[str, str]]:
    headers = {"X-Amz-Target": f"{ECR_TARGET}.{target}", "Content-Type": AWS_JSON}  # both signed, as required
    request = AWSRequest(method="POST", url=f"{server.url}/", headers=headers)
    with signing_clock(when):
        SigV4QueryAuth(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), "ecr", REGION, expires=expires).add_auth(request)
    return request.url, dict(request.headers.items())


def test_presigned_request(ecr_server: ServerProcess) -> None:
    url, headers = presigned_url(ecr_server, datetime.now(UTC), 300)
    response = httpx.post(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["registryId"] == ACCOUNT_ID


@pytest.mark.parametrize("header", ["X-Amz-Target", "Content-Type"])
def test_presigned_request_must_sign_target_and_content_type(ecr_server: ServerProcess, header: str) -> None:
    """A URL presigned with Host only would carry any operation: refused."""
    url, headers = presigned_url(ecr_server, datetime.now(UTC), 300)
    names = "%3B".join(name for name in ("content-type", "host", "x-amz-target") if name != header.lower())
    unsigned = re.sub(r"X-Amz-SignedHeaders=[^&]+", f"X-Amz-SignedHeaders={names}", url)
    status, code, message = aws_error(httpx.post(unsigned, headers=headers, timeout=10))
    assert status in AUTH_FAMILY and code == "InvalidSignatureException"
    assert message == f"'{header}' must be a 'SignedHeader' in the AWS Authorization."


def test_presigned_request_expired(ecr_server: ServerProcess) -> None:
    url, headers = presigned_url(ecr_server, datetime.now(UTC) - timedelta(minutes=10), 60)
    status, code, _ = aws_error(httpx.post(url, headers=headers, timeout=10))
    assert status in AUTH_FAMILY and code in {"ExpiredTokenException", "InvalidSignatureException"}


def test_presigned_request_tampered(ecr_server: ServerProcess) -> None:
    url, headers = presigned_url(ecr_server, datetime.now(UTC), 300)
    status, code, _ = aws_error(httpx.post(url.replace("X-Amz-Expires=300", "X-Amz-Expires=301"), headers=headers))
    assert status in AUTH_FAMILY and code == "InvalidSignatureException"


@pytest.mark.parametrize("date", ["99991231T235959Z", "00010101T000000Z", "20251301T000000Z"])
def test_presigned_extreme_dates_are_not_server_errors(ecr_server: ServerProcess, date: str) -> None:
    query = (
        f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={ACCESS_KEY_ID}%2F{date[:8]}%2Fus-east-1%2Fecr%2Faws4_request"
        f"&X-Amz-Date={date}&X-Amz-Expires=604800&X-Amz-SignedHeaders=host&X-Amz-Signature={'0' * 64}"
    )
    response = httpx.post(
        f"{ecr_server.url}/?{query}", headers={"X-Amz-Target": f"{ECR_TARGET}.DescribeRegistry"}, timeout=10
    )
    status, code, _ = aws_error(response)
    assert status in AUTH_FAMILY, (status, code)


def test_non_ascii_payload_hash_header_is_not_a_server_error(ecr_server: ServerProcess) -> None:
    headers: dict[str, Any] = sign(
        f"{ecr_server.url}/", b"{}", {"Content-Type": AWS_JSON, "X-Amz-Target": f"{ECR_TARGET}.DescribeRegistry"}
    )
    headers["X-Amz-Content-SHA256"] = b"\xe9" * 64  # latin-1 on the wire, as any byte may be
    response = httpx.post(f"{ecr_server.url}/", content=b"{}", headers=headers, timeout=10)
    status, code, _ = aws_error(response)
    assert (status in AUTH_FAMILY, code) == (True, "InvalidSignatureException")
