"""Helpers for ECR API tests: boto3 clients, raw SigV4-signed requests, and images built through the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from unittest import mock

import boto3
import botocore.auth
import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.support.images import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, random_layers, sha256
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess

ECR_TARGET = "AmazonEC2ContainerRegistry_V20150921"
AWS_JSON = "application/x-amz-json-1.1"
REGION = "us-east-1"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ABSENT = "sha256:" + "0" * 64
# ECR's documented validation message shape.
INVALID_PARAMETER_RE = r"Invalid parameter at '[^']+' failed to satisfy constraint: '.+'"


def ecr_client(
    server: ServerProcess,
    region: str = REGION,
    key: str = ACCESS_KEY_ID,
    secret: str = SECRET_ACCESS_KEY,
    parameter_validation: bool = True,
) -> Any:
    """A boto3 ECR client for `server`; no retries, so an error surfaces at once."""
    session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name=region)
    config = Config(
        retries={"total_max_attempts": 1},
        parameter_validation=parameter_validation,
        connect_timeout=10,
        read_timeout=60,
    )
    return session.client("ecr", endpoint_url=server.url, config=config)


def error_code(error: ClientError) -> str:
    code: str = error.response["Error"]["Code"]
    return code


@contextmanager
def signing_clock(when: datetime) -> Iterator[None]:
    """Make botocore sign as if the time were `when` (naive UTC, as botocore's own clock is)."""
    with mock.patch.object(botocore.auth, "get_current_datetime", lambda: when.replace(tzinfo=None)):
        yield


def sign(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    region: str = REGION,
    service: str = "ecr",
    key: str = ACCESS_KEY_ID,
    secret: str = SECRET_ACCESS_KEY,
) -> dict[str, str]:
    """The headers botocore's SigV4Auth adds to a POST of `body` to `url` (Host included)."""
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials(key, secret), service, region).add_auth(request)
    return dict(request.headers.items())


def signed_post(
    server: ServerProcess,
    target: str | None,
    body: bytes | dict[str, Any] = b"{}",
    *,
    prefix: str = ECR_TARGET,
    region: str = REGION,
    service: str = "ecr",
    key: str = ACCESS_KEY_ID,
    secret: str = SECRET_ACCESS_KEY,
    extra_headers: dict[str, str] | None = None,
    tamper: dict[str, str] | None = None,
    send_body: bytes | None = None,
) -> httpx.Response:
    """POST `body` to the API as botocore would sign it; `tamper` replaces headers after signing and
    `send_body` replaces the body after signing."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"Content-Type": AWS_JSON, **(extra_headers or {})}
    if target is not None:
        headers["X-Amz-Target"] = f"{prefix}.{target}" if prefix else target
    signed = sign(f"{server.url}/", data, headers, region=region, service=service, key=key, secret=secret)
    signed.update(tamper or {})
    return httpx.post(f"{server.url}/", content=data if send_body is None else send_body, headers=signed, timeout=30)


def aws_error(response: httpx.Response) -> tuple[int, str, str]:
    """(status, __type, message) of an AWS JSON error answer; fails on anything else."""
    assert response.headers.get("content-type", "").startswith(AWS_JSON), (response.status_code, response.text)
    body = response.json()
    assert isinstance(body, dict) and "__type" in body, body
    message = body.get("message", body.get("Message"))
    assert isinstance(message, str) and message, body
    return response.status_code, body["__type"].rpartition("#")[2], message


# --------------------------------------------------------------------------------------- images via the API


@dataclass(frozen=True)
class ApiImage:
    manifest: str  # the exact manifest text put
    digest: str
    media_type: str
    config: bytes
    layers: tuple[bytes, ...]

    @property
    def blobs(self) -> dict[str, bytes]:
        return {sha256(blob): blob for blob in (self.config, *self.layers)}

    @property
    def size(self) -> int:
        return sum(len(layer) for layer in self.layers)


def build_image(seed: int, layers: int = 2, size: int = 2048, media_type: str = OCI_MANIFEST) -> ApiImage:
    """An image (OCI or Docker schema 2) with real gzipped tar layers; nothing uploaded yet."""
    layer_blobs = tuple(random_layers(layers, size, seed))
    docker = media_type == DOCKER_MANIFEST
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Labels": {"seed": str(seed)}}, "rootfs": {}},
        sort_keys=True,
    ).encode()
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [
            {"mediaType": DOCKER_LAYER if docker else OCI_LAYER_GZIP, "digest": sha256(blob), "size": len(blob)}
            for blob in layer_blobs
        ],
    }
    text = json.dumps(document, indent=3)
    return ApiImage(text, sha256(text.encode()), media_type, config, layer_blobs)


def upload_layer(ecr: Any, repo: str, data: bytes, part_size: int | None = None) -> str:
    """InitiateLayerUpload → UploadLayerPart (consecutive parts) → CompleteLayerUpload; returns the digest."""
    upload_id = ecr.initiate_layer_upload(repositoryName=repo)["uploadId"]
    step = part_size or max(len(data), 1)
    for first in range(0, len(data), step):
        part = data[first : first + step]
        answer = ecr.upload_layer_part(
            repositoryName=repo,
            uploadId=upload_id,
            partFirstByte=first,
            partLastByte=first + len(part) - 1,
            layerPartBlob=part,
        )
        assert answer["lastByteReceived"] == first + len(part) - 1, answer
    done = ecr.complete_layer_upload(repositoryName=repo, uploadId=upload_id, layerDigests=[sha256(data)])
    assert done["layerDigest"] == sha256(data), done
    digest: str = done["layerDigest"]
    return digest


def upload_blobs(ecr: Any, repo: str, image: ApiImage) -> None:
    for blob in (image.config, *image.layers):
        upload_layer(ecr, repo, blob)


def put_api_image(ecr: Any, repo: str, seed: int, tag: str | None = "latest", **build: Any) -> ApiImage:
    """Upload an image's blobs and PutImage its manifest (tagged unless `tag` is None)."""
    image = build_image(seed, **build)
    upload_blobs(ecr, repo, image)
    extra = {"imageTag": tag} if tag is not None else {}
    answer = ecr.put_image(repositoryName=repo, imageManifest=image.manifest, **extra)
    assert answer["image"]["imageId"]["imageDigest"] == image.digest, answer
    return image


def index_text(children: list[ApiImage], media_type: str = OCI_INDEX) -> str:
    manifests = [
        {
            "mediaType": child.media_type,
            "digest": child.digest,
            "size": len(child.manifest.encode()),
            "platform": {"architecture": f"arch{n}", "os": "linux"},
        }
        for n, child in enumerate(children)
    ]
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests})


def repository_arn(repo: str, region: str = REGION, account: str = ACCOUNT_ID) -> str:
    return f"arn:aws:ecr:{region}:{account}:repository/{repo}"
