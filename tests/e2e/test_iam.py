"""IAM end to end: users, inline policies and access keys made with real clients (boto3 `iam`/`sts`/`ecr`, the aws
CLI, `dockyard admin`), then used by skopeo through `get-login-password` or access-key credentials.

One real `dockyard serve` per module; every test works with users and repositories of its own.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.clients import (
    AwsCli,
    boto_client,
    ecr_password,
    run_admin,
    skopeo_login,
    skopeo_pull,
    skopeo_push,
    skopeo_with_auth,
)
from tests.support.iam import PUSH_ACTIONS, Keys, audit_matching, policy, statement
from tests.support.images import single_image_layout
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess
from tests.support.tools import Skopeo, describe, fresh_seed, layout_manifest_digest

ROOT = Keys(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
PULL_ONLY = [
    "ecr:GetAuthorizationToken",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchCheckLayerAvailability",
]


@pytest.fixture(scope="module")
def iam_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("iam-server") / "data").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def skopeo(tmp_path: Path) -> Skopeo:
    return Skopeo.create(tmp_path / "skopeo")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def layout(root: Path, tag: str = "v1") -> str:
    """An OCI layout with a fresh two-layer image under `tag`; returns the manifest digest."""
    return single_image_layout(root, tag=tag, layers=2, size=8 * 1024, seed=fresh_seed())


def denied_by_registry(stderr: str) -> bool:
    """skopeo's report of a 403 from the registry: the OCI `denied` error (code DENIED) or the status itself."""
    lowered = stderr.lower()
    return "denied" in lowered or "403" in lowered


def test_aws_cli_user_with_push_policy_pushes_through_get_login_password(
    iam_server: ServerProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    root = AwsCli(iam_server, tmp_path / "aws-root", ROOT)
    user, repo = unique("cli-pusher"), f"iam/{unique('cli')}"
    document = tmp_path / "push.json"
    document.write_text(policy(statement("Allow", PUSH_ACTIONS)))

    created = root.json("iam", "create-user", "--user-name", user)["User"]
    assert created["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:user/{user}"
    root.text("iam", "put-user-policy", "--user-name", user, "--policy-name", "push", "--policy-document",
              f"file://{document}")  # fmt: skip
    assert root.json("iam", "list-user-policies", "--user-name", user)["PolicyNames"] == ["push"]
    key = root.json("iam", "create-access-key", "--user-name", user)["AccessKey"]
    assert key["UserName"] == user and key["Status"] == "Active"
    root.json("ecr", "create-repository", "--repository-name", repo)

    pusher = AwsCli(iam_server, tmp_path / "aws-user", Keys(key["AccessKeyId"], key["SecretAccessKey"]))
    identity = pusher.json("sts", "get-caller-identity")
    assert identity["Arn"] == created["Arn"] and identity["Account"] == ACCOUNT_ID
    password = pusher.text("ecr", "get-login-password")
    authfile = tmp_path / "auth.json"
    skopeo_login(skopeo, authfile, iam_server.host, password)

    digest = layout(tmp_path / "image")
    pushed = skopeo_push(skopeo, authfile, f"oci:{tmp_path / 'image'}:v1", f"docker://{iam_server.host}/{repo}:v1")
    assert pushed.returncode == 0, describe(pushed)
    images = root.json("ecr", "describe-images", "--repository-name", repo)["imageDetails"]
    assert [(i["imageDigest"], i["imageTags"]) for i in images] == [(digest, ["v1"])]
    # The policy allows push only: the user cannot manage the repository.
    refused = pusher("ecr", "delete-repository", "--repository-name", repo, "--force")
    assert refused.returncode != 0 and "AccessDeniedException" in refused.stderr, describe(refused)


def test_boto3_pull_only_user_pulls_but_skopeo_push_gets_403(
    iam_server: ServerProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    iam, root_ecr = boto_client(iam_server, "iam", ROOT), boto_client(iam_server, "ecr", ROOT)
    user, repo = unique("puller"), f"iam/{unique('pull')}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="pull", PolicyDocument=policy(statement("Allow", PULL_ONLY)))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    keys = Keys(key["AccessKeyId"], key["SecretAccessKey"])
    assert [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]] == [keys.access_key_id]
    assert user in [u["UserName"] for u in iam.list_users()["Users"]]
    sts = boto_client(iam_server, "sts", keys)
    assert sts.get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:user/{user}"

    root_ecr.create_repository(repositoryName=repo)
    root_auth = tmp_path / "root-auth.json"
    skopeo_login(skopeo, root_auth, iam_server.host, ecr_password(root_ecr))
    digest = layout(tmp_path / "published")
    published = skopeo_push(
        skopeo, root_auth, f"oci:{tmp_path / 'published'}:v1", f"docker://{iam_server.host}/{repo}:v1"
    )
    assert published.returncode == 0, describe(published)

    user_ecr = boto_client(iam_server, "ecr", keys)
    authfile = tmp_path / "user-auth.json"
    skopeo_login(skopeo, authfile, iam_server.host, ecr_password(user_ecr))
    pulled = skopeo_pull(skopeo, authfile, f"docker://{iam_server.host}/{repo}:v1", f"oci:{tmp_path / 'pulled'}:v1")
    assert pulled.returncode == 0, describe(pulled)
    assert layout_manifest_digest(tmp_path / "pulled", "v1") == digest

    layout(tmp_path / "attempt", tag="v2")
    refused = skopeo_push(skopeo, authfile, f"oci:{tmp_path / 'attempt'}:v2", f"docker://{iam_server.host}/{repo}:v2")
    assert refused.returncode != 0, describe(refused)
    # skopeo reports the registry's 403 DENIED error with its message.
    expected = (
        f"denied: User: arn:aws:iam::{ACCOUNT_ID}:user/{user} is not authorized to perform: ecr:InitiateLayerUpload"
    )
    assert expected in refused.stderr, describe(refused)
    assert [i["imageTag"] for i in root_ecr.list_images(repositoryName=repo)["imageIds"]] == ["v1"]
    with pytest.raises(ClientError) as raised:
        user_ecr.put_image(repositoryName=repo, imageManifest="{}", imageTag="v3")
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"

    # The refused push is in the audit log: who, what, on which repository, the decision, from where.
    events = audit_matching(
        iam_server.data_dir, "InitiateLayerUpload", f"arn:aws:iam::{ACCOUNT_ID}:user/{user}", f"repository/{repo}"
    )
    assert events, "the refused push left no audit record"
    assert {e["decision"] for e in events} == {"IMPLICIT_DENY"}
    assert {e["sourceIPAddress"] for e in events} == {"127.0.0.1"}
    assert {e["userIdentity"]["accessKeyId"] for e in events} == {keys.access_key_id}
    assert {r["ARN"] for e in events for r in e["resources"]} == {
        f"arn:aws:ecr:us-east-1:{ACCOUNT_ID}:repository/{repo}"
    }


def test_get_user_policy_returns_the_document_as_put(iam_server: ServerProcess) -> None:
    iam = boto_client(iam_server, "iam", ROOT)
    user = unique("round-trip")
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["ecr:DescribeRepositories", "ecr:CreateRepository"],
                "Resource": "*",
                # A value with a percent sign: IAM answers documents URL-encoded, and clients decode them.
                "Condition": {"StringLike": {"aws:UserAgent": ["*%41*", "*100%*"]}},
            },
            {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"},
        ],
    }
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="docs", PolicyDocument=json.dumps(document))
    got = iam.get_user_policy(UserName=user, PolicyName="docs")
    assert got["UserName"] == user and got["PolicyName"] == "docs"
    assert got["PolicyDocument"] == document


def test_deleting_a_user_policy_revokes_access_and_users_delete_cleanly(iam_server: ServerProcess) -> None:
    iam = boto_client(iam_server, "iam", ROOT)
    user = unique("revoke")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="docs", PolicyDocument=policy(statement("Allow", "ecr:*")))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    user_ecr = boto_client(iam_server, "ecr", Keys(key["AccessKeyId"], key["SecretAccessKey"]))
    user_ecr.describe_repositories()
    iam.delete_user_policy(UserName=user, PolicyName="docs")
    with pytest.raises(ClientError) as raised:
        user_ecr.describe_repositories()
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"
    with pytest.raises(ClientError) as conflict:
        iam.delete_user(UserName=user)
    assert conflict.value.response["Error"]["Code"] == "DeleteConflict"
    iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
    iam.delete_user(UserName=user)
    with pytest.raises(ClientError) as gone:
        iam.get_user(UserName=user)
    assert gone.value.response["Error"]["Code"] == "NoSuchEntity"


def test_iam_calls_are_audited_as_iam_actions(iam_server: ServerProcess) -> None:
    """Mutating IAM calls appear in the audit log as `iam:` actions (CloudTrail: eventSource iam.amazonaws.com)."""
    iam = boto_client(iam_server, "iam", ROOT)
    user = unique("audited")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=policy(statement("Allow", "ecr:ListImages")))
    for event_name in ("CreateUser", "PutUserPolicy"):
        events = audit_matching(iam_server.data_dir, event_name, f"arn:aws:iam::{ACCOUNT_ID}:root")
        assert events, f"no audit record of {event_name}"
        latest = events[-1]
        assert latest["decision"] == "ALLOW"
        assert latest["sourceIPAddress"] == "127.0.0.1"
        action = f"{latest['eventSource'].split('.')[0]}:{latest['eventName']}"
        assert action == f"iam:{event_name}", latest


def wait_for(predicate: Any, timeout: float = 15) -> bool:
    """Poll a condition the server reaches within its credential cache time (a few seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)  # polling a cache expiry, not dodging a race
    return bool(predicate())


def test_dockyard_admin_builds_an_account_whose_user_pushes(
    iam_server: ServerProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    account, user, repo = "444455556666", "builder", f"admin/{unique('app')}"
    data_dir = iam_server.data_dir

    def admin(*args: str) -> str:
        result = run_admin(data_dir, *args)
        assert result.returncode == 0, describe(result)
        return result.stdout

    admin("account", "create", account)
    assert account in admin("account", "list").split()
    admin("user", "create", user, "--account", account)
    document = tmp_path / "builder.json"
    document.write_text(policy(statement("Allow", ["ecr:*"], f"arn:aws:ecr:*:{account}:repository/admin/*")))
    broken = tmp_path / "broken.json"
    broken.write_text('{"Version": "2012-10-17", "Statement": [{"Effect": "Allow"}]}')
    rejected = run_admin(data_dir, "policy", "put", user, "broken", "--file", str(broken), "--account", account)
    assert rejected.returncode == 2 and "MalformedPolicyDocument" in rejected.stderr, describe(rejected)
    assert len(rejected.stderr.splitlines()) == 1 and "Traceback" not in rejected.stderr, describe(rejected)
    admin("policy", "put", user, "push", "--file", str(document), "--account", account)
    assert admin("policy", "list", user, "--account", account).split() == ["push"]
    record = json.loads(admin("key", "create", "--account", account, "--user", user))
    assert record["UserName"] == user and record["Account"] == account
    keys = Keys(record["AccessKeyId"], record["SecretAccessKey"])
    root_record = json.loads(admin("key", "create", "--account", account))
    account_root = Keys(root_record["AccessKeyId"], root_record["SecretAccessKey"])

    assert boto_client(iam_server, "sts", keys).get_caller_identity()["Arn"] == f"arn:aws:iam::{account}:user/{user}"
    boto_client(iam_server, "ecr", account_root).create_repository(repositoryName=repo)
    digest = layout(tmp_path / "image")
    pushed = skopeo.ok(
        "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", keys.creds,
        f"oci:{tmp_path / 'image'}:v1", f"docker://{iam_server.host}/{repo}:v1",
    )  # fmt: skip
    assert pushed.returncode == 0
    described = boto_client(iam_server, "ecr", keys).describe_images(repositoryName=repo)["imageDetails"]
    assert [d["imageDigest"] for d in described] == [digest]
    # The account's repositories are its own: the default account does not see them.
    default_names = [
        r["repositoryName"] for r in boto_client(iam_server, "ecr", ROOT).describe_repositories()["repositories"]
    ]
    assert repo not in default_names

    # Detaching the policy revokes access at once (policies are read per request).
    admin("policy", "delete", user, "push", "--account", account)
    assert admin("policy", "list", user, "--account", account).strip() == ""
    layout(tmp_path / "second", tag="v2")
    refused = skopeo(
        "copy", "--quiet", "--retry-times", "0", "--dest-tls-verify=false", "--dest-creds", keys.creds,
        f"oci:{tmp_path / 'second'}:v2", f"docker://{iam_server.host}/{repo}:v2",
    )  # fmt: skip
    assert refused.returncode != 0 and denied_by_registry(refused.stderr), describe(refused)

    # Deleting the key makes its credentials unknown (within the server's few-second credential cache).
    admin("key", "delete", keys.access_key_id, "--account", account, "--user", user)
    sts = boto_client(iam_server, "sts", keys)

    def key_rejected() -> bool:
        try:
            sts.get_caller_identity()
        except ClientError as error:
            return error.response["Error"]["Code"] == "InvalidClientTokenId"
        return False

    assert wait_for(key_rejected), "a deleted access key still authenticates"
    assert run_admin(data_dir, "user", "delete", user, "--account", account).returncode == 0


def test_login_password_stops_working_when_its_access_key_is_deleted(
    iam_server: ServerProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    iam = boto_client(iam_server, "iam", ROOT)
    user = unique("revoked")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="pull", PolicyDocument=policy(statement("Allow", PULL_ONLY)))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    password = ecr_password(boto_client(iam_server, "ecr", Keys(key["AccessKeyId"], key["SecretAccessKey"])))
    authfile = tmp_path / "auth.json"
    skopeo_login(skopeo, authfile, iam_server.host, password)
    iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])

    def login_refused() -> bool:
        result = skopeo_with_auth(
            skopeo, tmp_path / "again.json", "login", "--tls-verify=false", "--authfile", str(tmp_path / "again.json"),
            "--username", "AWS", "--password-stdin", iam_server.host, stdin=password,
        )  # fmt: skip
        return result.returncode != 0

    assert wait_for(login_refused), "an authorization token outlived its access key"
