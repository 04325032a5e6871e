"""What a SigV4 signature binds, against a real `dockyard serve`: the operation (X-Amz-Target), the body's type
(Content-Type), the body itself (the Query protocol's Action), and a region this deployment serves.

Requests are signed by botocore, as boto3 and the aws CLI sign them, captured on their way out and replayed
with httpx; the forged ones are signed by botocore too, only with a header left out of SignedHeaders.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSPreparedRequest, AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.support.clients import boto_client, ecr_password
from tests.support.iam import AWS_JSON, ECR_TARGET, IAM_VERSION, Keys, sign_leaving_out
from tests.support.images import OCI_CONFIG, OCI_MANIFEST, sha256
from tests.support.registry_http import push_blob
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess

ROOT = Keys(ACCESS_KEY_ID, SECRET_ACCESS_KEY)


@pytest.fixture(scope="module")
def aws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the default regions (AWS's)."""
    process = ServerProcess(tmp_path_factory.mktemp("binding") / "data").start()
    try:
        yield process
    finally:
        process.stop()


def captured(client: Any, operation: str, **params: Any) -> AWSPreparedRequest:
    """The request botocore signed and sent for `operation` (it is sent: the answer must be a success)."""
    sent: list[AWSPreparedRequest] = []
    service = client.meta.service_model.service_name
    client.meta.events.register(f"before-send.{service}.{operation}", lambda request, **_: sent.append(request))
    getattr(client, _snake(operation))(**params)
    return sent[0]


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def replay(request: AWSPreparedRequest, *, body: bytes | None = None, **changes: str) -> httpx.Response:
    """`request` sent again, with headers replaced (names use _ for -) and perhaps another body."""
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    for name, value in changes.items():
        headers = {k: v for k, v in headers.items() if k.lower() != name.replace("_", "-").lower()}
        headers[name.replace("_", "-")] = value
    content = request.body if body is None else body
    if isinstance(content, str):  # botocore keeps a Query protocol body as text
        content = content.encode()
    assert isinstance(content, bytes)
    return httpx.post(request.url, content=content, headers=headers, timeout=30)


def signed_without(server: ServerProcess, header: str, operation: str, body: bytes = b"{}") -> dict[str, str]:
    """Headers of an ECR call botocore signs with `header` left out of SignedHeaders (as a lax client might)."""
    request = AWSRequest(
        method="POST",
        url=f"{server.url}/",
        data=body,
        headers={"Content-Type": AWS_JSON, "X-Amz-Target": f"{ECR_TARGET}.{operation}"},
    )
    sign_leaving_out(request, header, ROOT.access_key_id, ROOT.secret)
    signed_headers = request.headers["Authorization"].split("SignedHeaders=")[1].split(",")[0]
    assert header not in signed_headers.split(";")
    return dict(request.headers.items())


def aws_error(response: httpx.Response) -> tuple[str, str]:
    body = response.json()
    return str(body["__type"]).rpartition("#")[2], str(body.get("message", body.get("Message", "")))


# --------------------------------------------------------------------------------------- JSON doors


def test_botocore_signed_describe_replays_as_nothing_else(aws_server: ServerProcess) -> None:
    ecr = boto_client(aws_server, "ecr", ROOT)
    before = ecr.get_registry_scanning_configuration()["scanningConfiguration"]
    request = captured(ecr, "DescribeRepositories")
    assert replay(request).status_code == 200  # the capture itself is good (and still within the clock skew)
    for operation in ("GetAuthorizationToken", "PutRegistryScanningConfiguration"):
        forged = replay(request, X_Amz_Target=f"{ECR_TARGET}.{operation}")
        assert forged.status_code == 400, forged.text  # the status this door answers InvalidSignatureException with
        assert aws_error(forged)[0] == "InvalidSignatureException"
        assert "authorizationData" not in forged.text
    assert ecr.get_registry_scanning_configuration()["scanningConfiguration"] == before


@pytest.mark.parametrize(
    ("header", "spelling"), [("x-amz-target", "'X-Amz-Target'"), ("content-type", "'Content-Type'")]
)
def test_signature_without_target_or_content_type_is_refused(
    aws_server: ServerProcess, header: str, spelling: str
) -> None:
    """Signed without X-Amz-Target, a DescribeRepositories could be sent as GetAuthorizationToken."""
    headers = signed_without(aws_server, header, "DescribeRepositories")
    for operation in ("DescribeRepositories", "GetAuthorizationToken", "PutRegistryScanningConfiguration"):
        headers["X-Amz-Target"] = f"{ECR_TARGET}.{operation}"
        response = httpx.post(f"{aws_server.url}/", content=b"{}", headers=headers, timeout=30)
        assert response.status_code == 400, response.text
        assert aws_error(response) == (
            "InvalidSignatureException",
            f"{spelling} must be a 'SignedHeader' in the AWS Authorization.",
        )
        assert "authorizationData" not in response.text


def test_boto3_clients_keep_working(aws_server: ServerProcess) -> None:
    ecr = boto_client(aws_server, "ecr", ROOT)
    ecr.create_repository(repositoryName="binding/works")
    assert [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]] == ["binding/works"]
    assert ecr_password(ecr)
    public = boto_client(aws_server, "ecr-public", ROOT)
    assert public.describe_registries()["registries"][0]["registryId"] == ACCOUNT_ID
    kms = boto_client(aws_server, "kms", ROOT)
    key_id = kms.create_key(Description="binding")["KeyMetadata"]["KeyId"]
    assert key_id in [k["KeyId"] for k in kms.list_keys()["Keys"]]
    assert boto_client(aws_server, "sts", ROOT).get_caller_identity()["Account"] == ACCOUNT_ID
    boto_client(aws_server, "iam", ROOT).list_users()
    assert boto_client(aws_server, "ecr", ROOT, region="eu-west-1").describe_repositories()["repositories"] == []


# --------------------------------------------------------------------------------------- Query doors


def test_query_signature_binds_the_action_in_the_body(aws_server: ServerProcess) -> None:
    iam = boto_client(aws_server, "iam", ROOT)
    request = captured(iam, "ListUsers")
    assert replay(request).status_code == 200
    other = urlencode({"Action": "CreateUser", "UserName": "replayed", "Version": IAM_VERSION}).encode()
    forged = replay(request, body=other)
    assert forged.status_code == 403, forged.text
    assert "<Code>SignatureDoesNotMatch</Code>" in forged.text
    with pytest.raises(ClientError) as caught:
        iam.get_user(UserName="replayed")
    assert caught.value.response["Error"]["Code"] == "NoSuchEntity"


# --------------------------------------------------------------------------------------- regions


def test_region_not_served_is_refused(aws_server: ServerProcess) -> None:
    with pytest.raises(ClientError) as caught:
        boto_client(aws_server, "ecr", ROOT, region="eu-west-9").create_repository(repositoryName="nowhere")
    error = caught.value.response["Error"]
    assert error["Code"] == "InvalidSignatureException"
    assert "Credential should be scoped to a valid region, not 'eu-west-9'" in error["Message"]
    with pytest.raises(ClientError) as caught:
        boto_client(aws_server, "kms", ROOT, region="eu-west-9").list_keys()
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_registry_host_naming_a_region_not_served_is_refused(aws_server: ServerProcess) -> None:
    with aws_server.client() as http:
        served = {"Host": f"{ACCOUNT_ID}.dkr.ecr.us-west-2.localhost:{aws_server.port}"}
        http.headers.update(served)
        push_blob(http, "hosted", b"in us-west-2")
        unserved = {"Host": f"{ACCOUNT_ID}.dkr.ecr.eu-west-9.localhost:{aws_server.port}"}
        response = http.post("/v2/hosted/blobs/uploads/", headers=unserved)
        assert response.status_code == 404, response.text
        error = response.json()["errors"][0]
        assert error["code"] == "NAME_UNKNOWN"
        assert "'eu-west-9' is not served" in error["message"]


def test_presigned_url_for_a_region_not_served_is_refused(aws_server: ServerProcess) -> None:
    with aws_server.client() as http:
        digest = push_blob(http, "presigned", b"presigned layer")
    url = f"{aws_server.url}/v2/presigned/blobs/{digest}"

    def presign(region: str) -> str:
        request = AWSRequest(method="GET", url=url)
        SigV4QueryAuth(Credentials(ROOT.access_key_id, ROOT.secret), "ecr", region, expires=300).add_auth(request)
        return str(request.url)

    assert httpx.get(presign("us-east-1"), timeout=30).content == b"presigned layer"
    refused = httpx.get(presign("eu-west-9"), timeout=30)
    assert refused.status_code in (401, 403), refused.text
    assert "eu-west-9" in refused.text


def test_regions_flag_serves_a_custom_region_and_refuses_the_rest(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", environment={"DOCKYARD_REGIONS": "us-east-1, eu-west-9"}).start()
    try:
        custom = boto_client(server, "ecr", ROOT, region="eu-west-9")
        custom.create_repository(repositoryName="custom")
        assert [r["repositoryName"] for r in custom.describe_repositories()["repositories"]] == ["custom"]
        assert boto_client(server, "ecr", ROOT).describe_repositories()["repositories"] == []
        with pytest.raises(ClientError) as caught:
            boto_client(server, "ecr", ROOT, region="eu-west-1").describe_repositories()
        assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
        assert boto_client(server, "sts", ROOT, region="eu-west-9").get_caller_identity()["Account"] == ACCOUNT_ID
        password = ecr_password(custom)  # a login token for eu-west-9
        auth = {"Authorization": "Basic " + base64.b64encode(f"AWS:{password}".encode()).decode()}
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as http:
            digest = push_blob(http, "custom", b"custom layer")
        images = custom.batch_check_layer_availability(repositoryName="custom", layerDigests=[digest])
        assert images["layers"][0]["layerAvailability"] == "AVAILABLE"
    finally:
        server.stop()
    # The same data served without eu-west-9: its login token no longer opens that registry.
    again = ServerProcess(server.data_dir, extra_args=["--regions", "us-east-1"]).start()
    try:
        response = httpx.get(f"{again.url}/v2/custom/tags/list", headers=auth, timeout=30)
        assert response.status_code == 404, response.text
        assert "'eu-west-9' is not served" in response.json()["errors"][0]["message"]
    finally:
        again.stop()


def test_global_services_work_where_us_east_1_is_not_served(tmp_path: Path) -> None:
    """botocore signs IAM, STS and ECR Public for us-east-1 whatever the client's region."""
    server = ServerProcess(tmp_path / "data", extra_args=["--regions", "eu-west-1", "--default-region", "eu-west-1"])
    server.start()
    try:
        assert boto_client(server, "sts", ROOT, region="eu-west-1").get_caller_identity()["Account"] == ACCOUNT_ID
        boto_client(server, "iam", ROOT, region="eu-west-1").list_users()
        public = boto_client(server, "ecr-public", ROOT)
        public.create_repository(repositoryName="global")
        assert [r["repositoryName"] for r in public.describe_repositories()["repositories"]] == ["global"]
        with pytest.raises(ClientError) as caught:
            boto_client(server, "ecr", ROOT).describe_repositories()  # private registries: served regions only
        assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
        assert boto_client(server, "ecr", ROOT, region="eu-west-1").describe_repositories()["repositories"] == []
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--regions", "us-east-1,moon"], "not a region name: 'moon'"),
        (["--regions", "eu-west-1"], "'us-east-1' is not among --regions"),
        (["--regions", " , "], "name at least one region"),
    ],
)
def test_regions_flag_is_validated(tmp_path: Path, arguments: list[str], message: str) -> None:
    command = [sys.executable, "-m", "dockyard", "serve", "--data-dir", str(tmp_path / "data"), *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split())
    assert not (tmp_path / "data").exists()


# --------------------------------------------------------------------------------------- the data directory


def _modes(root: Path) -> dict[str, int]:
    found = {".": root.stat().st_mode & 0o777}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = path.stat().st_mode & 0o777
    return found


def _wrong_modes(root: Path) -> dict[str, str]:
    return {
        name: oct(mode) for name, mode in _modes(root).items() if mode != (0o700 if (root / name).is_dir() else 0o600)
    }


def _push_image(server: ServerProcess, repository: str) -> None:
    with server.client() as http:
        config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        layer = b"a layer of the image"
        config_digest, layer_digest = push_blob(http, repository, config), push_blob(http, repository, layer)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer)}
            ],
        }
        raw = json.dumps(manifest).encode()
        put = http.put(f"/v2/{repository}/manifests/v1", content=raw, headers={"Content-Type": OCI_MANIFEST})
        assert put.status_code == 201, put.text
        assert http.get(f"/v2/{repository}/manifests/{sha256(raw)}").status_code == 200


def test_data_directory_is_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"  # serve creates it
    server = ServerProcess(data_dir).start()
    try:
        _push_image(server, "private/image")
        modes = _modes(data_dir)
        assert {"metadata.db", "metadata.db-wal", "metadata.db-shm", "master.key", "audit.log"} <= set(modes)
        assert any(name.startswith("storage/blobs/sha256/") for name in modes)
        assert _wrong_modes(data_dir) == {}
    finally:
        server.stop()
    assert _wrong_modes(data_dir) == {}


def test_data_directory_left_readable_is_narrowed_at_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir).start()
    try:
        _push_image(server, "older/image")
    finally:
        server.stop()
    (data_dir / ".owner-only").unlink()  # as a version before owner-only modes left it
    for path in [data_dir, *data_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (data_dir / "operator-notes.txt").write_text("not Dockyard's")
    (data_dir / "operator-notes.txt").chmod(0o644)
    server = ServerProcess(data_dir).start()
    try:
        wrong = _wrong_modes(data_dir)
        assert wrong == {"operator-notes.txt": "0o644"}  # what is not Dockyard's is left alone
        with server.client() as http:
            assert http.get("/v2/older/image/manifests/v1", headers={"Accept": OCI_MANIFEST}).status_code == 200
    finally:
        server.stop()


def test_root_secret_from_environment_is_not_written(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()  # the test server's root keys come from the environment
    try:
        assert boto_client(server, "sts", ROOT).get_caller_identity()["Account"] == ACCOUNT_ID
        assert not (server.data_dir / "root-credentials.json").exists()
        assert SECRET_ACCESS_KEY.encode() not in b"".join(
            path.read_bytes() for path in server.data_dir.rglob("*") if path.is_file()
        )
        assert (server.data_dir / "default-account").read_text().strip() == ACCOUNT_ID
    finally:
        server.stop()


def test_generated_root_secret_is_written_owner_only(tmp_path: Path) -> None:
    no_keys = {"DOCKYARD_ROOT_ACCESS_KEY_ID": "", "DOCKYARD_ROOT_SECRET_ACCESS_KEY": ""}
    server = ServerProcess(tmp_path / "data", environment=no_keys).start()
    try:
        path = server.data_dir / "root-credentials.json"
        assert path.stat().st_mode & 0o777 == 0o600
        record = json.loads(path.read_text())
        assert record["accountId"] == ACCOUNT_ID
        generated = Keys(record["accessKeyId"], record["secretAccessKey"])
        assert boto_client(server, "sts", generated).get_caller_identity()["Account"] == ACCOUNT_ID
        assert "Root credentials were generated" in server.log()
    finally:
        server.stop()
