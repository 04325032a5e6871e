"""Error responses across the door: OCI body shape, HEAD without body, auth challenges, unknown routes."""

from __future__ import annotations

import asyncio
import base64

import pytest
from starlette.testclient import TestClient

from dockyard.server import Dockyard, Services
from tests.api.helpers import ABSENT, errors_of, push_image
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY

AUTH = "Basic " + base64.b64encode(f"{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}".encode()).decode()


def raw_request(
    services: Services, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request straight through ASGI, recording every body byte the app sends (TestClient drops HEAD's)."""
    sent: list[dict[str, object]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "server": ("testserver", 80),
        "client": ("testclient", 50000),
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(Dockyard(services)(scope, receive, send))  # type: ignore[arg-type]
    start = sent[0]
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}  # type: ignore[attr-defined]
    body = b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc]
    return start["status"], response_headers, body  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/v2/team/app/manifests/missing", {}, 404),
        (f"/v2/team/app/manifests/{ABSENT}", {}, 404),
        ("/v2/nowhere/manifests/latest", {}, 404),
        ("/v2/team/app/manifests/sha256:bad", {}, 400),
        ("/v2/Team/manifests/latest", {}, 400),
        (f"/v2/team/app/blobs/{ABSENT}", {}, 404),
        ("/v2/team/app/blobs/sha256:bad", {}, 400),
        ("/v2/team/app/blobs/{config}", {"range": "bytes=9999-"}, 416),
        ("/v2/team/app/manifests/latest", {"authorization": "Basic bm9ib2R5Om5vdGhpbmc="}, 401),
    ],
)
def test_head_errors_have_no_body(
    client: TestClient, services: Services, path: str, headers: dict[str, str], status: int
) -> None:
    push_image(client, "team/app")
    config = client.get("/v2/team/app/manifests/latest").json()["config"]["digest"]
    code, response_headers, body = raw_request(
        services, "HEAD", path.format(config=config), {"authorization": AUTH, **headers}
    )
    assert code == status
    assert body == b""
    assert response_headers.get("content-length", "0") == "0"


def test_get_errors_have_the_oci_shape_at_the_asgi_level(client: TestClient, services: Services) -> None:
    code, headers, body = raw_request(services, "GET", "/v2/nowhere/manifests/latest", {"authorization": AUTH})
    assert code == 404
    assert headers["content-type"].startswith("application/json")
    assert body.startswith(b'{"errors": [{"code": "NAME_UNKNOWN"')


def basic(credentials: bytes) -> str:
    return "Basic " + base64.b64encode(credentials).decode()


BAD_AUTHORIZATIONS = {
    "none": None,
    "unknown-key": basic(b"nobody:nothing"),
    "not-base64": "Basic !!!",
    "no-colon": basic(b"nocolon"),
    "not-utf8": basic(b"\xff:\xfe"),
    "bearer": "Bearer x",
    "ecr-token-garbage": basic(b"AWS:not-a-token"),
    "ecr-token-non-ascii": basic("AWS:forged.tökén".encode()),
}


@pytest.mark.parametrize("authorization", BAD_AUTHORIZATIONS.values(), ids=BAD_AUTHORIZATIONS.keys())
def test_missing_or_bad_credentials_are_challenged(anonymous: TestClient, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for path in ["/v2/", "/v2/team/app/tags/list", f"/v2/team/app/blobs/{ABSENT}"]:
        response = anonymous.get(path, headers=headers)
        errors_of(response, 401, "UNAUTHORIZED")
        assert response.headers["www-authenticate"].startswith('Basic realm="')


def test_errors_carry_the_api_version_header(client: TestClient) -> None:
    response = client.get("/v2/nowhere/tags/list")
    assert response.status_code == 404
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v2/team/app/tags/list"),
        ("POST", "/v2/team/app/manifests/latest"),
        ("PATCH", f"/v2/team/app/blobs/{ABSENT}"),
        ("GET", "/v2/team/app/blobs/uploads/"),
        ("POST", f"/v2/team/app/referrers/{ABSENT}"),
    ],
)
def test_wrong_method_is_405_with_allow(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"]


@pytest.mark.parametrize("path", ["/v2/team/app", "/v2/team/app/unknown/thing", "/v2/team/app/blobs/"])
def test_unknown_route_is_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["errors"]


def test_other_account_host_is_denied(client: TestClient) -> None:
    response = client.get("/v2/team/app/tags/list", headers={"Host": "210987654321.dkr.ecr.us-east-1.localhost"})
    errors_of(response, 403, "DENIED")


def test_successful_heads_send_no_body_but_the_real_length(client: TestClient, services: Services) -> None:
    push_image(client, "team/app")
    manifest = client.get("/v2/team/app/manifests/latest")
    layer = manifest.json()["layers"][0]
    for path, size in [
        ("/v2/team/app/manifests/latest", len(manifest.content)),
        (f"/v2/team/app/blobs/{layer['digest']}", layer["size"]),
    ]:
        code, headers, body = raw_request(services, "HEAD", path, {"authorization": AUTH})
        assert (code, body) == (200, b"")
        assert headers["content-length"] == str(size)
