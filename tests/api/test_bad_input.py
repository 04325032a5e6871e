"""Bad input answered as the client's error, against a real `dockyard serve` (Granian) over loopback.

Every case here was a 5xx: broken chunked framing and unknown transfer codings (raw sockets: no client
library sends them), non-ASCII credentials, integers of thousands of digits, descriptor sizes beyond 64 bits
or unlike the content they name, manifests in UTF-16/32, with a BOM or with duplicate members. Each answer is
the door's own error shape (OCI error JSON on /v2, AWS JSON on ECR, AWS Query XML on IAM), and the server
logs no traceback for any of them.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.api.ecr.helpers import AWS_JSON, ECR_TARGET, aws_error, ecr_client, sign
from tests.api.helpers import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, descriptor, image_manifest, push_blob
from tests.support.iam import FORM, Keys, query_call
from tests.support.images import sha256
from tests.support.raw_http import RawResponse, raw_request
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, ServerProcess

ROOT = Keys(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
BASIC = b"Basic " + base64.b64encode(f"{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}".encode())
HUGE = "9" * 5000  # beyond Python's 4300-digit int() limit
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

BAD_CHUNKED = {
    "chunk size not hex": b"zz\r\nabc\r\n0\r\n\r\n",
    "negative chunk size": b"-3\r\nabc\r\n0\r\n\r\n",
    "chunk without its CRLF": b"3\r\nabcX0\r\n\r\n",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("bad-input") / "data").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def bearer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("bad-input-bearer") / "data"
    process = ServerProcess(data_dir, extra_args=["--auth-challenge", "bearer"]).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(autouse=True)
def no_traceback_logged(server: ServerProcess) -> Iterator[None]:
    """Whatever a test sends, the server logs no unexpected error for it."""
    before = len(server.log())
    yield
    logged = server.log()[before:]
    assert "Traceback" not in logged and '"level": "ERROR"' not in logged, logged


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def send(server: ServerProcess, method: str, target: str, headers: list[tuple[str, bytes]], body: bytes = b"") -> Any:
    return raw_request("127.0.0.1", server.port, method, target, headers, body)


def oci_error(response: RawResponse | httpx.Response) -> tuple[int, list[str]]:
    """(status, codes) of an OCI error answer; fails on anything else."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"errors"} and body["errors"], body
    for error in body["errors"]:
        assert re.fullmatch(r"[A-Z_]+", error["code"]) and isinstance(error["message"], str), error
    return response.status_code if isinstance(response, httpx.Response) else response.status, [
        error["code"] for error in body["errors"]
    ]


def query_error(response: RawResponse | httpx.Response) -> tuple[int, str]:
    text = response.body.decode() if isinstance(response, RawResponse) else response.text
    assert text.startswith("<ErrorResponse"), text
    code = re.search(r"<Code>([^<]+)</Code>", text)
    assert code is not None and "<Message>" in text, text
    return response.status if isinstance(response, RawResponse) else response.status_code, code.group(1)


def start_upload(http: httpx.Client, repo: str) -> str:
    response = http.post(f"/v2/{repo}/blobs/uploads/")
    assert response.status_code == 202, response.text
    location: str = response.headers["location"]
    return location


# --------------------------------------------------------------------------------- chunked framing


@pytest.mark.parametrize("body", BAD_CHUNKED.values(), ids=BAD_CHUNKED.keys())
def test_malformed_chunked_upload_chunk_is_a_400(server: ServerProcess, http: httpx.Client, body: bytes) -> None:
    location = start_upload(http, "bad/chunked")
    answer = send(server, "PATCH", location, [("Authorization", BASIC), ("Transfer-Encoding", b"chunked")], body)
    assert oci_error(answer) == (400, ["BLOB_UPLOAD_INVALID"])
    assert http.get(location).status_code == 204  # the session is still there to resume


@pytest.mark.parametrize("body", BAD_CHUNKED.values(), ids=BAD_CHUNKED.keys())
def test_malformed_chunked_manifest_is_a_400(server: ServerProcess, body: bytes) -> None:
    headers = [("Authorization", BASIC), ("Transfer-Encoding", b"chunked"), ("Content-Type", OCI_MANIFEST.encode())]
    answer = send(server, "PUT", "/v2/bad/chunked/manifests/latest", headers, body)
    assert oci_error(answer) == (400, ["MANIFEST_INVALID"])


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"deflate, chunked", b"x-custom, chunked"])
def test_unknown_transfer_coding_is_a_501(server: ServerProcess, http: httpx.Client, coding: bytes) -> None:
    """hyper strips the chunked framing and hands on the rest still coded; none of it may be stored."""
    location = start_upload(http, "bad/coding")
    answer = send(
        server, "PATCH", location, [("Authorization", BASIC), ("Transfer-Encoding", coding)], b"3\r\nabc\r\n0\r\n\r\n"
    )
    assert oci_error(answer) == (501, ["UNSUPPORTED"])
    assert http.get(location).headers["range"] == "0-0"  # nothing was written


def test_well_formed_chunked_upload_still_works(server: ServerProcess, http: httpx.Client) -> None:
    location = start_upload(http, "bad/chunked")
    headers = [("Authorization", BASIC), ("Transfer-Encoding", b"chunked")]
    answer = send(server, "PATCH", location, headers, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert answer.status == 202 and answer.headers["range"] == "0-4"


def ecr_framed(server: ServerProcess, coding: bytes, framed: bytes, decoded: bytes) -> RawResponse:
    signed = sign(
        f"{server.url}/", decoded, {"Content-Type": AWS_JSON, "X-Amz-Target": f"{ECR_TARGET}.DescribeRegistry"}
    )
    # The socket helper sends Host itself; the body's length is the chunked framing's.
    headers = [
        (name, value.encode()) for name, value in signed.items() if name.lower() not in ("host", "content-length")
    ]
    return send(server, "POST", "/", [*headers, ("Transfer-Encoding", coding)], framed)


@pytest.mark.parametrize("body", BAD_CHUNKED.values(), ids=BAD_CHUNKED.keys())
def test_malformed_chunked_on_the_ecr_api_is_a_400(server: ServerProcess, body: bytes) -> None:
    answer = ecr_framed(server, b"chunked", body, b"abc")
    assert answer.status == 400 and answer.headers["content-type"] == AWS_JSON
    assert answer.json()["__type"] == "SerializationException"


def test_unknown_transfer_coding_on_the_ecr_api_is_a_501(server: ServerProcess) -> None:
    answer = ecr_framed(server, b"gzip, chunked", b"2\r\n{}\r\n0\r\n\r\n", b"{}")
    assert answer.status == 501 and answer.headers["content-type"] == AWS_JSON
    body = answer.json()
    assert body["__type"] == "NotImplemented" and "gzip" in body["message"]


def test_chunked_on_the_ecr_api_still_works(server: ServerProcess) -> None:
    answer = ecr_framed(server, b"chunked", b"2\r\n{}\r\n0\r\n\r\n", b"{}")
    assert answer.status == 200, answer.body


@pytest.mark.parametrize(
    ("coding", "body", "status", "code"),
    [
        (b"chunked", BAD_CHUNKED["chunk size not hex"], 400, "MalformedQueryString"),
        (b"gzip, chunked", b"5\r\nAc=on\r\n0\r\n\r\n", 501, "NotImplemented"),
    ],
)
def test_framing_on_the_query_api(server: ServerProcess, coding: bytes, body: bytes, status: int, code: str) -> None:
    answer = send(server, "POST", "/", [("Content-Type", FORM.encode()), ("Transfer-Encoding", coding)], body)
    assert query_error(answer) == (status, code)


# --------------------------------------------------------------------------------- credentials


NON_ASCII_CREDENTIALS = {
    "Basic, raw bytes": b"Basic \xc3\xa9\xff\xfe",
    "Bearer, raw bytes": b"Bearer \xc3\xa9t\xe9",
    "Basic of non-UTF-8": b"Basic " + base64.b64encode(b"\xff\xfe:\xc3\x28"),
    "Basic of a non-ASCII user": b"Basic " + base64.b64encode("é:secret".encode()),
}


@pytest.mark.parametrize("authorization", NON_ASCII_CREDENTIALS.values(), ids=NON_ASCII_CREDENTIALS.keys())
@pytest.mark.parametrize("path", ["/v2/", "/v2/bad/creds/tags/list", "/v2/_catalog"])
def test_non_ascii_credentials_are_a_401(server: ServerProcess, authorization: bytes, path: str) -> None:
    answer = send(server, "GET", path, [("Authorization", authorization)])
    assert oci_error(answer) == (401, ["UNAUTHORIZED"])
    assert answer.headers["www-authenticate"].startswith("Basic ")


@pytest.mark.parametrize("authorization", NON_ASCII_CREDENTIALS.values(), ids=NON_ASCII_CREDENTIALS.keys())
def test_non_ascii_credentials_with_bearer_challenges(bearer_server: ServerProcess, authorization: bytes) -> None:
    for path in ("/v2/", "/v2/bad/creds/tags/list", "/token?scope=repository:bad/creds:pull"):
        answer = send(bearer_server, "GET", path, [("Authorization", authorization)])
        assert oci_error(answer) == (401, ["UNAUTHORIZED"]), path
    assert "Traceback" not in bearer_server.log()


# --------------------------------------------------------------------------------- huge integers


@pytest.mark.parametrize("path", ["/v2/_catalog", "/v2/bad/numbers/tags/list"])
@pytest.mark.parametrize("n", [HUGE, str(2**63), "1" + "0" * 19])
def test_huge_page_size_is_pagination_number_invalid(http: httpx.Client, path: str, n: str) -> None:
    push_image_to(http, "bad/numbers")
    assert oci_error(http.get(path, params={"n": n})) == (400, ["PAGINATION_NUMBER_INVALID"])


def test_page_size_with_leading_zeros_is_still_a_number(http: httpx.Client) -> None:
    push_image_to(http, "bad/numbers")
    answer = http.get("/v2/bad/numbers/tags/list", params={"n": "0" * 5000 + "1"})
    assert answer.status_code == 200 and answer.json()["tags"] == ["latest"]


def test_huge_numbers_in_range_headers(http: httpx.Client) -> None:
    digest = push_blob(http, "bad/numbers", b"0123456789")
    whole = http.get(f"/v2/bad/numbers/blobs/{digest}", headers={"Range": f"bytes=0-{HUGE}"})
    assert whole.status_code == 206 and whole.content == b"0123456789"
    suffix = http.get(f"/v2/bad/numbers/blobs/{digest}", headers={"Range": f"bytes=-{HUGE}"})
    assert suffix.status_code == 206 and suffix.content == b"0123456789"
    beyond = http.get(f"/v2/bad/numbers/blobs/{digest}", headers={"Range": f"bytes={HUGE}-"})
    assert oci_error(beyond) == (416, ["RANGE_INVALID"])
    location = start_upload(http, "bad/numbers")
    chunk = http.patch(location, content=b"abc", headers={"Content-Range": f"0-{HUGE}"})
    assert oci_error(chunk) == (400, ["BLOB_UPLOAD_INVALID"])


def test_huge_presigned_expiry_is_incomplete_signature(http: httpx.Client) -> None:
    digest = push_blob(http, "bad/numbers", b"presigned")
    query = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{ACCESS_KEY_ID}/20240101/us-east-1/ecr/aws4_request",
        "X-Amz-Date": "20240101T000000Z",
        "X-Amz-Expires": HUGE,
        "X-Amz-SignedHeaders": "host",
        "X-Amz-Signature": "0" * 64,
    }
    answer = http.get(f"/v2/bad/numbers/blobs/{digest}", params=query, headers={"Authorization": ""})
    assert answer.status_code in (400, 401, 403) and answer.status_code < 500, answer.text
    assert "X-Amz-Expires" in answer.text


@pytest.mark.parametrize("action", ["ListUsers", "ListAccessKeys"])
def test_huge_max_items_on_iam_is_invalid_input(server: ServerProcess, action: str) -> None:
    with httpx.Client(timeout=30) as client:
        answer = query_call(client, server.url, action, {"MaxItems": HUGE}, ROOT)
    assert query_error(answer) == (400, "InvalidInput")


def test_huge_integers_on_the_ecr_api(server: ServerProcess) -> None:
    """Python's JSON parser refuses numbers of more than 4300 digits: a SerializationException, not a 500."""
    body = b'{"maxResults": ' + HUGE.encode() + b"}"
    signed = sign(
        f"{server.url}/", body, {"Content-Type": AWS_JSON, "X-Amz-Target": f"{ECR_TARGET}.DescribeRepositories"}
    )
    answer = httpx.post(f"{server.url}/", content=body, headers=signed, timeout=30)
    assert aws_error(answer)[:2] == (400, "SerializationException")


# --------------------------------------------------------------------------------- descriptor sizes


def push_image_to(http: httpx.Client, repo: str) -> None:
    raw = image_manifest(repo, http)
    answer = http.put(f"/v2/{repo}/manifests/latest", content=raw, headers={"Content-Type": OCI_MANIFEST})
    assert answer.status_code == 201, answer.text


def manifest_with(config: dict[str, Any], layers: list[dict[str, Any]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}).encode()


def put(http: httpx.Client, repo: str, raw: bytes, reference: str = "latest") -> httpx.Response:
    return http.put(f"/v2/{repo}/manifests/{reference}", content=raw, headers={"Content-Type": OCI_MANIFEST})


CONFIG = b'{"architecture":"amd64","os":"linux"}'
LAYER = bytes(range(256)) * 12  # 3,072 bytes


@pytest.mark.parametrize("size", [2**63, 2**64, 10**30])
def test_descriptor_size_beyond_64_bits_is_manifest_invalid(http: httpx.Client, size: int) -> None:
    push_blob(http, "bad/sizes", CONFIG)
    layer = {"mediaType": OCI_LAYER_GZIP, "digest": push_blob(http, "bad/sizes", LAYER), "size": size}
    assert oci_error(put(http, "bad/sizes", manifest_with(descriptor(OCI_CONFIG, CONFIG), [layer]))) == (
        400,
        ["MANIFEST_INVALID"],
    )


def test_foreign_layer_sizes_that_add_up_beyond_64_bits(http: httpx.Client) -> None:
    """Foreign layers are never uploaded, so only their sum can be checked: it is the image's stored size."""
    push_blob(http, "bad/sizes", CONFIG)
    foreign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    layers = [{"mediaType": foreign, "digest": sha256(bytes([n])), "size": 2**62} for n in range(2)]
    assert oci_error(put(http, "bad/sizes", manifest_with(descriptor(OCI_CONFIG, CONFIG), layers))) == (
        400,
        ["MANIFEST_INVALID"],
    )


@pytest.mark.parametrize("which", ["config", "layer", "both"])
def test_descriptor_size_unlike_the_blob_is_manifest_invalid(http: httpx.Client, which: str) -> None:
    repo = f"bad/sizes-{which}"
    config_digest, layer_digest = push_blob(http, repo, CONFIG), push_blob(http, repo, LAYER)
    config = {"mediaType": OCI_CONFIG, "digest": config_digest, "size": 2 if which != "layer" else len(CONFIG)}
    layer = {"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": 1 if which != "config" else len(LAYER)}
    answer = put(http, repo, manifest_with(config, [layer]))
    status, codes = oci_error(answer)
    assert status == 400 and set(codes) == {"MANIFEST_INVALID"}
    details = {entry["detail"]["digest"]: entry["detail"] for entry in answer.json()["errors"]}
    expected = {config_digest: len(CONFIG), layer_digest: len(LAYER)}
    wanted = {"config": [config_digest], "layer": [layer_digest], "both": [config_digest, layer_digest]}[which]
    assert sorted(details) == sorted(wanted)
    for digest, detail in details.items():
        assert detail["actualSize"] == expected[digest] and detail["size"] != expected[digest]
    assert http.get(f"/v2/{repo}/manifests/latest").status_code == 404  # nothing was stored


def test_index_child_size_unlike_the_manifest_is_manifest_invalid(http: httpx.Client) -> None:
    push_image_to(http, "bad/index")
    child = http.get("/v2/bad/index/manifests/latest", headers={"Accept": OCI_MANIFEST})
    entry = {
        "mediaType": OCI_MANIFEST,
        "digest": child.headers["docker-content-digest"],
        "size": len(child.content) + 1,
    }
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode()
    answer = http.put("/v2/bad/index/manifests/multi", content=index, headers={"Content-Type": OCI_INDEX})
    assert oci_error(answer) == (400, ["MANIFEST_INVALID"])
    entry["size"] = len(child.content)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode()
    assert (
        http.put("/v2/bad/index/manifests/multi", content=index, headers={"Content-Type": OCI_INDEX}).status_code == 201
    )


@pytest.fixture(scope="module")
def ecr(server: ServerProcess) -> Any:
    return ecr_client(server)


def ecr_put_error(ecr: Any, repo: str, manifest: str) -> tuple[int, str]:
    with pytest.raises(ClientError) as caught:
        ecr.put_image(repositoryName=repo, imageManifest=manifest, imageTag="latest")
    return caught.value.response["ResponseMetadata"]["HTTPStatusCode"], caught.value.response["Error"]["Code"]


def test_ecr_put_image_checks_descriptor_sizes(ecr: Any, http: httpx.Client) -> None:
    ecr.create_repository(repositoryName="bad/ecr-sizes")
    push_blob(http, "bad/ecr-sizes", CONFIG)
    push_blob(http, "bad/ecr-sizes", LAYER)
    config, layer = descriptor(OCI_CONFIG, CONFIG), descriptor(OCI_LAYER_GZIP, LAYER)
    for size in (2**63, 2**63 - 1, 1, len(LAYER) + 1):
        manifest = manifest_with(config, [layer | {"size": size}]).decode()
        assert ecr_put_error(ecr, "bad/ecr-sizes", manifest) == (400, "InvalidParameterException"), size
    assert ecr.describe_images(repositoryName="bad/ecr-sizes")["imageDetails"] == []
    ecr.put_image(repositoryName="bad/ecr-sizes", imageManifest=manifest_with(config, [layer]).decode())


# --------------------------------------------------------------------------------- JSON interchange


def valid_manifest(http: httpx.Client, repo: str) -> bytes:
    return image_manifest(repo, http)


ENCODINGS = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "utf-8-sig"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_manifest_not_in_plain_utf8_is_manifest_invalid(http: httpx.Client, encoding: str) -> None:
    raw = valid_manifest(http, "bad/encodings").decode().encode(encoding)
    assert oci_error(put(http, "bad/encodings", raw)) == (400, ["MANIFEST_INVALID"])
    assert oci_error(put(http, "bad/encodings", raw, sha256(raw))) == (400, ["MANIFEST_INVALID"])


def test_duplicate_members_are_manifest_invalid(http: httpx.Client) -> None:
    """Last-wins would store a manifest whose checked layers are not the ones another parser sees."""
    document = json.loads(valid_manifest(http, "bad/duplicates"))
    text = json.dumps(document)
    twice = text.replace('"layers": ', '"layers": [], "layers": ', 1)
    nested = text.replace('"size": ', '"size": 1, "size": ', 1)
    for raw in (twice.encode(), nested.encode()):
        answer = put(http, "bad/duplicates", raw)
        assert oci_error(answer) == (400, ["MANIFEST_INVALID"]), raw
        assert "repeats" in answer.json()["errors"][0]["message"]
    assert put(http, "bad/duplicates", text.encode()).status_code == 201


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_manifest_invalid(http: httpx.Client, constant: str) -> None:
    text = valid_manifest(http, "bad/constants").decode().replace('"schemaVersion": 2', f'"schemaVersion": {constant}')
    assert oci_error(put(http, "bad/constants", text.encode())) == (400, ["MANIFEST_INVALID"])


def test_ecr_put_image_refuses_a_bom_and_duplicate_members(ecr: Any, http: httpx.Client) -> None:
    ecr.create_repository(repositoryName="bad/ecr-json")
    text = valid_manifest(http, "bad/ecr-json").decode()
    assert ecr_put_error(ecr, "bad/ecr-json", "\ufeff" + text) == (400, "InvalidParameterException")
    twice = text.replace('"layers": ', '"layers": [], "layers": ', 1)
    assert ecr_put_error(ecr, "bad/ecr-json", twice) == (400, "InvalidParameterException")


def test_ecr_lone_surrogates_are_a_serialization_exception(server: ServerProcess) -> None:
    body = b'{"repositoryName": "bad/x", "imageManifest": "{\\"a\\": \\"\\ud800\\"}", "imageTag": "t"}'
    signed = sign(f"{server.url}/", body, {"Content-Type": AWS_JSON, "X-Amz-Target": f"{ECR_TARGET}.PutImage"})
    answer = httpx.post(f"{server.url}/", content=body, headers=signed, timeout=30)
    assert aws_error(answer)[:2] == (400, "SerializationException")


# --------------------------------------------------------------------------------- forged and unencodable input


def test_lone_surrogates_anywhere_in_an_ecr_body_are_a_serialization_exception(server: ServerProcess) -> None:
    """`\\ud800` parses as JSON, but no UTF-8 encoder (nor SQLite) takes it."""
    body = b'{"repositoryName": "bad/surrogate", "tags": [{"Key": "k", "Value": "\\ud800"}]}'
    signed = sign(f"{server.url}/", body, {"Content-Type": AWS_JSON, "X-Amz-Target": f"{ECR_TARGET}.CreateRepository"})
    answer = httpx.post(f"{server.url}/", content=body, headers=signed, timeout=30)
    assert aws_error(answer)[:2] == (400, "SerializationException")


@pytest.mark.parametrize("after", [5, [], {"a": 1}, "abc", "", HUGE, "sha256:zz|t"])
@pytest.mark.parametrize("operation", ["list_images", "describe_images", "describe_repositories"])
def test_forged_paging_tokens_are_invalid_parameters(ecr: Any, http: httpx.Client, after: Any, operation: str) -> None:
    push_image_to(http, "bad/tokens")
    token = base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()
    arguments = {"describe_repositories": {}}.get(operation, {"repositoryName": "bad/tokens"})
    try:
        getattr(ecr, operation)(nextToken=token, **arguments)
    except ClientError as error:
        status = error.response["ResponseMetadata"]["HTTPStatusCode"]
        assert status == 400 and error.response["Error"]["Code"].endswith("Exception"), error.response
