"""The access log: one JSON line per request from a real server, naming who called and what it got."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.clients import boto_client
from tests.support.iam import Keys
from tests.support.registry_http import push_blob
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess

ROOT_ARN = f"arn:aws:iam::{ACCOUNT_ID}:root"
FIELDS = {"time", "requestId", "principal", "method", "path", "status", "bytes", "durationMs", "userAgent"}


def access_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{") and '"type":"access"' in line:
            lines.append(json.loads(line))
    return lines


def wait_for_lines(read: Any, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    """The writer thread appends off the request path: poll until the lines are there (bounded)."""
    deadline = time.monotonic() + 30
    while True:
        lines = access_lines(read())
        if done(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)  # polling a file another process writes, not dodging a race


def has_path(prefix: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda lines: any(line["path"].startswith(prefix) for line in lines)


def test_every_request_is_one_line_with_principal_status_bytes_and_request_id(server: ServerProcess) -> None:
    with server.client() as http:
        digest = push_blob(http, "team/app", b"x" * 3000)
        got = http.get(f"/v2/team/app/blobs/{digest}", headers={"X-Request-Id": "trace-me-1", "User-Agent": "ua/1"})
        assert got.status_code == 200
        head = http.head(f"/v2/team/app/blobs/{digest}")
        assert head.status_code == 200
    refused = httpx.get(f"{server.url}/v2/team/app/tags/list")
    assert refused.status_code == 401
    boto_client(server, "ecr", Keys(ACCESS_KEY_ID, SECRET_ACCESS_KEY)).describe_repositories()

    lines = wait_for_lines(server.log, lambda lines: sum(line["path"] != "/healthz" for line in lines) >= 6)
    for line in lines:
        assert line.keys() >= FIELDS, line
    blob_get = next(line for line in lines if line["requestId"] == "trace-me-1")
    assert blob_get["method"] == "GET" and blob_get["status"] == 200 and blob_get["bytes"] == 3000
    assert blob_get["principal"] == ROOT_ARN and blob_get["userAgent"] == "ua/1"
    assert blob_get["path"] == f"/v2/team/app/blobs/{digest}"
    assert got.headers["x-request-id"] == "trace-me-1"
    heads = [line for line in lines if line["method"] == "HEAD"]
    assert heads and heads[0]["bytes"] == 0 and heads[0]["status"] == 200
    anonymous = next(line for line in lines if line["path"] == "/v2/team/app/tags/list")
    assert anonymous["status"] == 401 and anonymous["principal"] is None
    assert anonymous["requestId"] == refused.headers["x-request-id"]
    ecr = next(line for line in lines if line["method"] == "POST" and line["path"] == "/")
    assert ecr["status"] == 200 and ecr["principal"] == ROOT_ARN


def test_access_log_to_a_file_is_owner_only_and_redacts_signatures(tmp_path: Path) -> None:
    log_file = tmp_path / "access.jsonl"
    server = ServerProcess(tmp_path / "data", extra_args=["--access-log", str(log_file)]).start()
    try:
        httpx.get(f"{server.url}/v2/anything/blobs/sha256:{'0' * 64}?X-Amz-Signature=deadbeef&x=1")
        lines = wait_for_lines(lambda: log_file.read_text() if log_file.exists() else "", has_path("/v2/anything/"))
    finally:
        server.stop()
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    signed = next(line for line in lines if line["path"].startswith("/v2/anything/"))
    assert signed["query"] == "X-Amz-Signature=REDACTED&x=1" and "deadbeef" not in log_file.read_text()
    assert not access_lines(server.log())  # the file, not stderr


def test_access_log_off_writes_no_line(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", extra_args=["--access-log", "off"]).start()
    try:
        assert httpx.get(f"{server.url}/v2/").status_code == 401
    finally:
        server.stop()
    assert server.process is not None and server.process.returncode == 0
    assert not access_lines(server.log())
