"""The real aws CLI (`python -m awscli`, v1) against a real `dockyard serve`, with skopeo as the registry client.

The CLI runs in this interpreter's environment (the `awscli` package of the test extras), with credentials from
the environment and empty config files, so nothing on the host leaks in; skopeo keeps its login in a temporary
auth file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.images import single_image_layout
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, ServerProcess
from tests.support.tools import COMMAND_TIMEOUT, Skopeo, describe, fresh_seed

REPO = "team/cli"


class Aws:
    def __init__(self, server: ServerProcess, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "config").write_text("")
        (home / "credentials").write_text("")
        self.server = server
        self.env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "BOTO_"))} | {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_MAX_ATTEMPTS": "1",
        }

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "awscli", "ecr", *args, "--endpoint-url", self.server.url, "--output", "json"]
        try:
            return subprocess.run(
                command, env=self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"aws did not finish within {COMMAND_TIMEOUT}s: {command}\n{exc.stderr!r}")

    def json(self, *args: str) -> Any:
        result = self(*args)
        assert result.returncode == 0, describe(result)
        return json.loads(result.stdout) if result.stdout.strip() else {}


@pytest.fixture
def aws(server: ServerProcess, tmp_path: Path) -> Aws:
    return Aws(server, tmp_path / "aws")


def skopeo_run(
    skopeo: Skopeo, authfile: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ) | {"REGISTRY_AUTH_FILE": str(authfile)}
    command = [skopeo.binary, "--policy", str(skopeo.policy), *args]
    try:
        return subprocess.run(
            command, env=env, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"skopeo did not finish within {COMMAND_TIMEOUT}s: {command}\n{exc.stderr!r}")


def test_aws_cli_workflow(aws: Aws, server: ServerProcess, tmp_path: Path) -> None:
    skopeo = Skopeo.create(tmp_path / "skopeo")
    authfile = tmp_path / "auth.json"

    created = aws.json("create-repository", "--repository-name", REPO)["repository"]
    assert created["repositoryName"] == REPO
    assert created["imageTagMutability"] == "MUTABLE"
    described = aws.json("describe-repositories", "--repository-names", REPO)["repositories"]
    assert [r["repositoryArn"] for r in described] == [created["repositoryArn"]]
    everything = aws.json("describe-repositories")["repositories"]
    assert REPO in [r["repositoryName"] for r in everything]

    # get-login-password | skopeo login --password-stdin
    password = aws("get-login-password")
    assert password.returncode == 0, describe(password)
    assert password.stdout.strip() and ":" not in password.stdout.strip()
    login = skopeo_run(
        skopeo, authfile, "login", "--tls-verify=false", "--authfile", str(authfile),
        "--username", "AWS", "--password-stdin", server.host, stdin=password.stdout,
    )  # fmt: skip
    assert login.returncode == 0, describe(login)
    assert server.host in json.loads(authfile.read_text())["auths"]

    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    digest_v1 = single_image_layout(first, tag="v1", layers=2, size=8 * 1024, seed=fresh_seed())
    digest_v2 = single_image_layout(second, tag="v2", layers=2, size=8 * 1024, seed=fresh_seed())
    for source, tag in ((first, "v1"), (second, "v2")):
        push = skopeo_run(
            skopeo, authfile, "copy", "--quiet", "--dest-tls-verify=false", "--dest-authfile", str(authfile),
            f"oci:{source}:{tag}", f"docker://{server.host}/{REPO}:{tag}",
        )  # fmt: skip
        assert push.returncode == 0, describe(push)

    details = aws.json("describe-images", "--repository-name", REPO)["imageDetails"]
    assert {d["imageDigest"]: d["imageTags"] for d in details} == {digest_v1: ["v1"], digest_v2: ["v2"]}
    assert all(d["imageSizeInBytes"] > 0 for d in details)
    listed = aws.json("list-images", "--repository-name", REPO)["imageIds"]
    assert sorted((i["imageDigest"], i["imageTag"]) for i in listed) == sorted([(digest_v1, "v1"), (digest_v2, "v2")])

    deleted = aws.json("batch-delete-image", "--repository-name", REPO, "--image-ids", "imageTag=v2")
    assert deleted["imageIds"] == [{"imageDigest": digest_v2, "imageTag": "v2"}]
    assert deleted["failures"] == []
    assert [i["imageTag"] for i in aws.json("list-images", "--repository-name", REPO)["imageIds"]] == ["v1"]

    mutability = aws.json("put-image-tag-mutability", "--repository-name", REPO, "--image-tag-mutability", "IMMUTABLE")
    assert mutability["imageTagMutability"] == "IMMUTABLE"

    single_image_layout(third, tag="v1", layers=1, size=1024, seed=fresh_seed())
    refused = skopeo_run(
        skopeo, authfile, "copy", "--quiet", "--dest-tls-verify=false", "--dest-authfile", str(authfile),
        f"oci:{third}:v1", f"docker://{server.host}/{REPO}:v1",
    )  # fmt: skip
    assert refused.returncode != 0, describe(refused)
    assert "tag invalid" in refused.stderr.lower(), describe(refused)
    (still,) = aws.json("describe-images", "--repository-name", REPO, "--image-ids", "imageTag=v1")["imageDetails"]
    assert still["imageDigest"] == digest_v1


def test_aws_cli_errors(aws: Aws) -> None:
    missing = aws("describe-repositories", "--repository-names", "team/never-created")
    assert missing.returncode != 0
    assert "RepositoryNotFoundException" in missing.stderr, describe(missing)
    aws.json("create-repository", "--repository-name", "team/twice")
    twice = aws("create-repository", "--repository-name", "team/twice")
    assert twice.returncode != 0
    assert "RepositoryAlreadyExistsException" in twice.stderr, describe(twice)


def test_aws_cli_wrong_secret(aws: Aws) -> None:
    aws.env["AWS_SECRET_ACCESS_KEY"] = SECRET_ACCESS_KEY[::-1]
    result = aws("describe-repositories")
    assert result.returncode != 0
    assert "InvalidSignatureException" in result.stderr, describe(result)
    aws.env["AWS_ACCESS_KEY_ID"] = "AKIANOSUCHKEY0000000"
    result = aws("get-login-password")
    assert result.returncode != 0
    assert "UnrecognizedClientException" in result.stderr, describe(result)
