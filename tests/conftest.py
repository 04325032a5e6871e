"""Shared fixtures: an in-process app for API tests, a real server process for end-to-end tests."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from starlette.testclient import TestClient

from dockyard.config import Settings
from dockyard.domain.clock import utc_now
from dockyard.domain.iam import bootstrap_root_credentials
from dockyard.server import Dockyard, Services, prepare
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess

# Property tests judge behaviour, not speed: a loaded 2-core CI machine must not fail them on timing. In CI the
# examples are derived from each test (derandomize), so a red run replays exactly; locally they stay random.
settings.register_profile(
    "dockyard",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=os.environ.get("CI") == "true",
)
settings.load_profile("dockyard")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    settings = Settings(tmp_path / "data", ACCOUNT_ID)
    services = prepare(settings)
    bootstrap_root_credentials(
        services.metadata, services.box, ACCOUNT_ID, utc_now(), (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    )
    yield services
    # Let go of the store's mapped file and connections now, not whenever the collector gets to them: a suite
    # of thousands of these would otherwise hold thousands of descriptors.
    services.metadata.close()
    services.engine.dispose()


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    """The whole ASGI app in process, authenticated as the default account's root user."""
    token = base64.b64encode(f"{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}".encode()).decode()
    with TestClient(Dockyard(services), headers={"Authorization": f"Basic {token}"}) as test_client:
        yield test_client


@pytest.fixture
def anonymous(services: Services) -> Iterator[TestClient]:
    with TestClient(Dockyard(services)) as test_client:
        yield test_client


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A real `dockyard serve` on a free loopback port (with the flags of an indirect parameter, if any)."""
    flags: list[str] = list(getattr(request, "param", []))
    process = ServerProcess(tmp_path / "server-data", extra_args=flags).start()
    try:
        yield process
    finally:
        process.stop()
