"""API test fixtures.

* `services` is the root conftest's fixture made cheap: the data directory (migrated SQLite database, master
  key, root credentials) is built once per session and copied for each test, instead of running the
  migrations for every test. Keep it in step with `tests/conftest.py::services`.
* Every response an API test receives is checked against the OCI error rules (`check_response`).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from dockyard.config import Settings
from dockyard.domain.clock import utc_now
from dockyard.domain.iam import bootstrap_root_credentials
from dockyard.server import Services, prepare
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY

_CODE_RE = re.compile(r"[A-Z_]+")


@pytest.fixture(scope="session")
def template_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("template") / "data"
    services = prepare(Settings(data_dir, ACCOUNT_ID))
    bootstrap_root_credentials(
        services.metadata, services.box, ACCOUNT_ID, utc_now(), (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    )
    services.engine.dispose()
    return data_dir


@pytest.fixture
def services(template_data_dir: Path, tmp_path: Path) -> Services:
    data_dir = tmp_path / "data"
    shutil.copytree(template_data_dir, data_dir)
    return Services(Settings(data_dir, ACCOUNT_ID))


def check_response(response: httpx.Response) -> None:
    """No 5xx ever; a /v2 4xx with a body carries `{"errors":[{"code","message",...}]}`.

    (TestClient drops HEAD bodies itself, so test_errors.py checks those at the ASGI level.)
    """
    response.read()
    assert response.status_code < 500, (response.request.method, response.request.url, response.text)
    on_registry_door = response.request.url.path.startswith("/v2")
    if on_registry_door and response.status_code >= 400 and response.content:
        body = response.json()
        assert set(body) == {"errors"} and body["errors"], body
        for error in body["errors"]:
            assert _CODE_RE.fullmatch(error["code"]), error
            assert isinstance(error["message"], str), error


@pytest.fixture
def client(client: TestClient) -> TestClient:
    client.event_hooks["response"].append(check_response)
    return client


@pytest.fixture
def anonymous(anonymous: TestClient) -> TestClient:
    anonymous.event_hooks["response"].append(check_response)
    return anonymous
