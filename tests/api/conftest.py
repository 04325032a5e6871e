"""API test fixtures: every response any API test receives is checked against the OCI error rules."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.testclient import TestClient

_CODE_RE = re.compile(r"[A-Z_]+")


def check_response(response: httpx.Response) -> None:
    """No 5xx ever; a 4xx with a body carries `{"errors":[{"code","message",...}]}`.

    (TestClient drops HEAD bodies itself, so test_errors.py checks those at the ASGI level.)
    """
    response.read()
    assert response.status_code < 500, (response.request.method, response.request.url, response.text)
    if response.status_code >= 400 and response.content:
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
