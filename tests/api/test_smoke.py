from starlette.testclient import TestClient


def test_base_requires_credentials(anonymous: TestClient) -> None:
    response = anonymous.get("/v2/")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic realm=")
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_base_with_credentials(client: TestClient) -> None:
    response = client.get("/v2/")
    assert response.status_code == 200
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
