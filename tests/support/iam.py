"""IAM test helpers: policy documents, users with keys, SigV4-signed calls to the ECR/IAM doors, the audit log.

Signed calls work against both a real server (httpx) and the in-process app (Starlette's TestClient): both
clients take `post(url, content=..., headers=...)`, and the signature covers the host the client sends.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from dockyard.domain.accounts import Accounts

ECR_TARGET = "AmazonEC2ContainerRegistry_V20150921"
PUBLIC_TARGET = "SpencerFrontendService"
AWS_JSON = "application/x-amz-json-1.1"
FORM = "application/x-www-form-urlencoded; charset=utf-8"
REGION = "us-east-1"
IAM_VERSION = "2010-05-08"
STS_VERSION = "2011-06-15"


class Poster(Protocol):
    def post(self, url: str, *, content: bytes, headers: dict[str, str]) -> httpx.Response: ...


# ------------------------------------------------------------------------------------------------ policies


def statement(effect: str, actions: str | list[str], resources: str | list[str] = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": effect, "Action": actions, "Resource": resources, **extra}


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def repository_grant(principal_arns: list[str], actions: list[str]) -> str:
    """A repository policy (no Resource: the repository is implied) letting `principal_arns` do `actions`."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Sid": "Grant", "Effect": "Allow", "Principal": {"AWS": principal_arns}, "Action": actions}],
        }
    )


PULL_ACTIONS = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
PUSH_ACTIONS = [
    "ecr:GetAuthorizationToken",
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
    "ecr:BatchGetImage",
]


# ------------------------------------------------------------------------------------------------ principals


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret: str

    @property
    def basic(self) -> dict[str, str]:
        return basic_auth(self.access_key_id, self.secret)

    @property
    def creds(self) -> str:
        return f"{self.access_key_id}:{self.secret}"


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def add_user(accounts: Accounts, account: str, name: str, document: str | None) -> Keys:
    """An IAM user with one inline policy (`document`, unless None) and an access key."""
    accounts.create_user(account, name)
    if document is not None:
        accounts.put_user_policy(account, name, "inline", document)
    key = accounts.create_access_key(account, name)
    return Keys(key.info.access_key_id, key.secret_access_key)


def add_root_key(accounts: Accounts, account: str) -> Keys:
    accounts.create_account(account)
    key = accounts.create_access_key(account, None)
    return Keys(key.info.access_key_id, key.secret_access_key)


# ------------------------------------------------------------------------------------------------ signed calls


def sigv4(
    url: str, body: bytes, headers: dict[str, str], keys: Keys, service: str, region: str = REGION
) -> dict[str, str]:
    """`headers` plus the SigV4 headers botocore adds for a POST of `body` to `url`."""
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials(keys.access_key_id, keys.secret), service, region).add_auth(request)
    return dict(request.headers.items())


def json_call(
    client: Poster,
    base_url: str,
    operation: str,
    body: dict[str, Any],
    keys: Keys | None,
    service: str = "ecr",
    region: str = REGION,
) -> httpx.Response:
    """An AWS JSON 1.1 call (`ecr` or `ecr-public`) signed for `region`; `keys` None sends it unsigned."""
    prefix = ECR_TARGET if service == "ecr" else PUBLIC_TARGET
    data = json.dumps(body).encode()
    headers = {"Content-Type": AWS_JSON, "X-Amz-Target": f"{prefix}.{operation}"}
    if keys is not None:
        headers = sigv4(f"{base_url}/", data, headers, keys, service, region)
    return client.post(f"{base_url}/", content=data, headers=headers)


def query_call(
    client: Poster, base_url: str, action: str, params: dict[str, str], keys: Keys | None, service: str = "iam"
) -> httpx.Response:
    """An AWS Query call (IAM or STS) as botocore sends it: form-encoded POST / signed for `service`."""
    version = IAM_VERSION if service == "iam" else STS_VERSION
    data = urlencode({"Action": action, "Version": version, **params}).encode()
    headers = {"Content-Type": FORM}
    if keys is not None:
        headers = sigv4(f"{base_url}/", data, headers, keys, service)
    return client.post(f"{base_url}/", content=data, headers=headers)


def aws_error_type(response: httpx.Response) -> str:
    """The error code of an AWS JSON answer (`__type`) or an AWS Query answer (`<Code>`)."""
    if response.headers.get("content-type", "").startswith(AWS_JSON):
        body = response.json()
        return str(body.get("__type", "")).rpartition("#")[2]
    text = response.text
    start, end = text.find("<Code>"), text.find("</Code>")
    return text[start + len("<Code>") : end] if 0 <= start < end else ""


# ------------------------------------------------------------------------------------------------ audit log


def audit_events(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "audit.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def audit_matching(
    data_dir: Path, event_name: str, arn: str | None, resource_suffix: str = "", wait: float = 10.0
) -> list[dict[str, Any]]:
    """Audit events of one action by one principal (None: anonymous), optionally on a resource ending so.

    The audit log is written by a thread off the request path (within its flush interval, 0.1 s): the file is
    read again until such an event is there or `wait` seconds passed."""
    deadline = time.monotonic() + wait
    while True:
        found = [
            event
            for event in audit_events(data_dir)
            if event.get("eventName") == event_name
            and event.get("userIdentity", {}).get("arn") == arn
            and any(str(r.get("ARN", "")).endswith(resource_suffix) for r in event.get("resources", []))
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)  # polling a file another thread writes, not dodging a race


def sign_leaving_out(request: AWSRequest, header: str, key_id: str, secret: str, service: str = "ecr") -> None:
    """Sign `request` as botocore does, but with `header` left out of SignedHeaders (as a lax client might):
    the header is still sent, unsigned."""
    signer = SigV4Auth(Credentials(key_id, secret), service, REGION)
    everything = signer.headers_to_sign

    def all_but_one(signed: AWSRequest) -> Any:
        names = everything(signed)
        del names[header]
        return names

    signer.headers_to_sign = all_but_one  # type: ignore[method-assign]
    signer.add_auth(request)
