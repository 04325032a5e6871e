"""Real AWS clients for end-to-end IAM tests: boto3 for any service and the aws CLI (v1) as a subprocess, each
with explicit credentials and no host configuration leaking in; skopeo with a private auth file."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.support.iam import Keys
from tests.support.server import ServerProcess
from tests.support.tools import COMMAND_TIMEOUT, Skopeo, describe

REGION = "us-east-1"


def boto_client(server: ServerProcess, service: str, keys: Keys, region: str = REGION) -> Any:
    """A boto3 client of `service` pointed at `server`; no retries, so an error surfaces at once."""
    session = boto3.session.Session(
        aws_access_key_id=keys.access_key_id, aws_secret_access_key=keys.secret, region_name=region
    )
    config = Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=60)
    verify = str(server.ca) if server.ca else None  # over HTTPS, the server's CA only
    return session.client(service, endpoint_url=server.url, config=config, verify=verify)


def ecr_password(ecr: Any) -> str:
    """The password `get-login-password` prints: GetAuthorizationToken, base64-decoded, after `AWS:`."""
    data = ecr.get_authorization_token()["authorizationData"]
    token = data["authorizationToken"] if isinstance(data, dict) else data[0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    assert user == "AWS", user
    return password


class AwsCli:
    """`python -m awscli` with the given keys in the environment and empty config files."""

    def __init__(self, server: ServerProcess, home: Path, keys: Keys) -> None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "config").write_text("")
        (home / "credentials").write_text("")
        self.server = server
        self.env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "BOTO_"))} | {
            "AWS_ACCESS_KEY_ID": keys.access_key_id,
            "AWS_SECRET_ACCESS_KEY": keys.secret,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": str(home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_MAX_ATTEMPTS": "1",
        }

    def __call__(self, service: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable, "-m", "awscli", service, *args,
            "--endpoint-url", self.server.url, "--output", "json",
        ]  # fmt: skip
        try:
            return subprocess.run(
                command, env=self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"aws did not finish within {COMMAND_TIMEOUT}s: {command}\n{exc.stderr!r}")

    def json(self, service: str, *args: str) -> Any:
        result = self(service, *args)
        assert result.returncode == 0, describe(result)
        return json.loads(result.stdout) if result.stdout.strip() else {}

    def text(self, service: str, *args: str) -> str:
        result = self(service, *args)
        assert result.returncode == 0, describe(result)
        return result.stdout


def skopeo_with_auth(
    skopeo: Skopeo, authfile: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """skopeo with `authfile` as its only credential store (never the invoking user's)."""
    env = dict(os.environ) | {"REGISTRY_AUTH_FILE": str(authfile)}
    command = [skopeo.binary, "--policy", str(skopeo.policy), *args]
    try:
        return subprocess.run(
            command, env=env, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"skopeo did not finish within {COMMAND_TIMEOUT}s: {command}\n{exc.stderr!r}")


def skopeo_login(skopeo: Skopeo, authfile: Path, host: str, password: str) -> None:
    """`skopeo login --username AWS --password-stdin` into a private auth file."""
    login = skopeo_with_auth(
        skopeo, authfile, "login", "--tls-verify=false", "--authfile", str(authfile),
        "--username", "AWS", "--password-stdin", host, stdin=password,
    )  # fmt: skip
    assert login.returncode == 0, describe(login)
    assert host in json.loads(authfile.read_text())["auths"]


def skopeo_push(skopeo: Skopeo, authfile: Path, source: str, target: str) -> subprocess.CompletedProcess[str]:
    return skopeo_with_auth(
        skopeo, authfile, "copy", "--quiet", "--retry-times", "0", "--dest-tls-verify=false",
        "--dest-authfile", str(authfile), source, target,
    )  # fmt: skip


def skopeo_pull(skopeo: Skopeo, authfile: Path, source: str, target: str) -> subprocess.CompletedProcess[str]:
    return skopeo_with_auth(
        skopeo, authfile, "copy", "--quiet", "--retry-times", "0", "--src-tls-verify=false",
        "--src-authfile", str(authfile), source, target,
    )  # fmt: skip


def run_admin(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`dockyard admin …` on a (running) server's data directory, as an operator would type it."""
    command = [sys.executable, "-m", "dockyard", "admin", *args, "--data-dir", str(data_dir)]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"dockyard admin did not finish within {COMMAND_TIMEOUT}s: {command}\n{exc.stderr!r}")
