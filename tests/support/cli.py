"""Command-line clients for end-to-end tests: the aws CLI (`python -m awscli`, v1) and `dockyard` itself.

Both run in this interpreter's environment, bounded in time; the aws CLI gets credentials from the
environment and empty config files, so nothing on the host leaks in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dockyard.config import ACCOUNT_FILE, Settings
from dockyard.server import prepare
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess
from tests.support.tools import COMMAND_TIMEOUT, describe


def _bounded(
    command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command, env=env, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{command[:4]} did not finish within {COMMAND_TIMEOUT}s\n{exc.stderr!r}")


class Aws:
    """`aws ecr …` against one server, with the root user's keys."""

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
        return _bounded(command, self.env)

    def json(self, *args: str) -> Any:
        result = self(*args)
        assert result.returncode == 0, describe(result)
        return json.loads(result.stdout) if result.stdout.strip() else {}


def dockyard(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`dockyard ARGS` (as `python -m dockyard`), bounded; never raises on a non-zero exit."""
    return _bounded([sys.executable, "-m", "dockyard", *args], env, cwd)


def data_directory(path: Path, account: str = ACCOUNT_ID) -> Path:
    """A data directory as a first `dockyard serve` leaves it (metadata made, default account remembered),
    for commands that refuse to create one."""
    prepare(Settings(path, account, background_jobs=False)).engine.dispose()
    (path / ACCOUNT_FILE).write_text(f"{account}\n")
    return path


def dockyard_ok(*args: str) -> subprocess.CompletedProcess[str]:
    result = dockyard(*args)
    assert result.returncode == 0, describe(result)
    return result


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
