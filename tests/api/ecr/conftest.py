"""ECR API fixtures: one real `dockyard serve` per test module, boto3 clients and unique repository names.

botocore cannot talk to Starlette's TestClient, so every test here goes over loopback HTTP to a real server
process; sharing one server per module keeps the suite fast, and each test works in repositories of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.ecr.helpers import ecr_client
from tests.support.server import ServerProcess
from tests.support.tools import Skopeo


@pytest.fixture(scope="module")
def ecr_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("ecr-server") / "data").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def ecr(ecr_server: ServerProcess) -> Any:
    """A boto3 ECR client for the root user (botocore validates requests and parses every response)."""
    return ecr_client(ecr_server)


@pytest.fixture(scope="module")
def unvalidated(ecr_server: ServerProcess) -> Any:
    """The same client with botocore's own parameter validation off: the server must do it."""
    return ecr_client(ecr_server, parameter_validation=False)


@pytest.fixture
def repo() -> str:
    """A repository name no other test uses (not created yet)."""
    return f"ecr-test/{uuid.uuid4().hex[:16]}"


@pytest.fixture
def created(ecr: Any, repo: str) -> str:
    """`repo`, created with default settings."""
    ecr.create_repository(repositoryName=repo)
    return repo


@pytest.fixture
def skopeo(tmp_path: Path) -> Skopeo:
    return Skopeo.create(tmp_path / "skopeo")
