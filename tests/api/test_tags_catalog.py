"""tags/list and _catalog: order, n/last pagination, Link headers (spec section 8)."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from tests.api.helpers import errors_of, push_blob, push_image, put_manifest

TAGS = ["v2", "V1", "latest", "1.0", "_tmp", "a-b", "a.b", "a_b"]
REPOS = ["bb/x", "aa", "aab", "aa/b", "aa-b", "cc"]
LINK_RE = re.compile(r'<(?P<url>[^>]+)>; rel="next"')


@pytest.fixture
def tagged(client: TestClient) -> list[str]:
    push_image(client, "team/app", TAGS[0])
    raw = client.get("/v2/team/app/manifests/" + TAGS[0]).content
    for tag in TAGS[1:]:
        assert put_manifest(client, "team/app", tag, raw).status_code == 201
    return sorted(TAGS)


@pytest.fixture
def repositories(client: TestClient) -> list[str]:
    for name in REPOS:
        push_blob(client, name, b"x")
    return sorted(REPOS)


def next_url(response_headers: dict[str, str] | object) -> str | None:
    link = response_headers.get("link")  # type: ignore[attr-defined]
    if link is None:
        return None
    match = LINK_RE.fullmatch(link)
    assert match, link
    return match.group("url")


def walk(client: TestClient, url: str, key: str) -> tuple[list[str], int]:
    """Follow Link headers from `url`; returns every item and the number of pages."""
    items: list[str] = []
    pages = 0
    next_page: str | None = url
    while next_page is not None:
        response = client.get(next_page)
        assert response.status_code == 200
        items += response.json()[key]
        pages += 1
        next_page = next_url(response.headers)
    return items, pages


def test_tags_are_listed_in_byte_order(client: TestClient, tagged: list[str]) -> None:
    response = client.get("/v2/team/app/tags/list")
    assert response.status_code == 200
    assert response.json() == {"name": "team/app", "tags": tagged}
    assert "link" not in response.headers


@pytest.mark.parametrize("n", [1, 3, 7])
def test_tag_pages_follow_link(client: TestClient, tagged: list[str], n: int) -> None:
    items, pages = walk(client, f"/v2/team/app/tags/list?n={n}", "tags")
    assert items == tagged
    assert pages == -(-len(tagged) // n)


def test_tag_page_link_names_n_and_last(client: TestClient, tagged: list[str]) -> None:
    response = client.get("/v2/team/app/tags/list", params={"n": 2})
    assert response.json()["tags"] == tagged[:2]
    assert next_url(response.headers) == f"/v2/team/app/tags/list?n=2&last={tagged[1]}"


def test_exact_page_has_no_link(client: TestClient, tagged: list[str]) -> None:
    response = client.get("/v2/team/app/tags/list", params={"n": len(tagged)})
    assert response.json()["tags"] == tagged
    assert "link" not in response.headers


@pytest.mark.parametrize("last", ["V1", "a", "zzz", "0"])
def test_last_is_exclusive_and_a_value(client: TestClient, tagged: list[str], last: str) -> None:
    response = client.get("/v2/team/app/tags/list", params={"last": last})
    assert response.json()["tags"] == [tag for tag in tagged if tag > last]


def test_n_zero_is_empty_without_link(client: TestClient, tagged: list[str]) -> None:
    response = client.get("/v2/team/app/tags/list", params={"n": 0})
    assert response.status_code == 200
    assert response.json()["tags"] == []
    assert "link" not in response.headers


@pytest.mark.parametrize("n", ["-1", "abc", "1.5", "²"])
def test_bad_n_is_pagination_number_invalid(client: TestClient, tagged: list[str], n: str) -> None:
    errors_of(client.get("/v2/team/app/tags/list", params={"n": n}), 400, "PAGINATION_NUMBER_INVALID")
    errors_of(client.get("/v2/_catalog", params={"n": n}), 400, "PAGINATION_NUMBER_INVALID")


def test_repository_without_tags_lists_an_empty_array(client: TestClient) -> None:
    push_blob(client, "team/app", b"x")
    assert client.get("/v2/team/app/tags/list").json() == {"name": "team/app", "tags": []}


def test_tags_of_unknown_repository(client: TestClient) -> None:
    errors_of(client.get("/v2/nowhere/tags/list"), 404, "NAME_UNKNOWN")


def test_tags_of_invalid_name(client: TestClient) -> None:
    errors_of(client.get("/v2/No/tags/list"), 400, "NAME_INVALID")


def test_deleted_tag_leaves_the_list(client: TestClient, tagged: list[str]) -> None:
    client.delete("/v2/team/app/manifests/latest")
    assert client.get("/v2/team/app/tags/list").json()["tags"] == [t for t in tagged if t != "latest"]


# ------------------------------------------------------------------------------------------ catalog


def test_catalog_lists_repositories_in_order(client: TestClient, repositories: list[str]) -> None:
    response = client.get("/v2/_catalog")
    assert response.status_code == 200
    assert response.json() == {"repositories": repositories}
    assert "link" not in response.headers


@pytest.mark.parametrize("n", [1, 2, 4])
def test_catalog_pages_follow_link(client: TestClient, repositories: list[str], n: int) -> None:
    items, pages = walk(client, f"/v2/_catalog?n={n}", "repositories")
    assert items == repositories
    assert pages == -(-len(repositories) // n)


def test_catalog_last_and_n_zero(client: TestClient, repositories: list[str]) -> None:
    assert client.get("/v2/_catalog", params={"last": "aa/b"}).json()["repositories"] == [
        name for name in repositories if name > "aa/b"
    ]
    response = client.get("/v2/_catalog", params={"n": 0})
    assert response.json() == {"repositories": []}
    assert "link" not in response.headers


def test_empty_catalog(client: TestClient) -> None:
    assert client.get("/v2/_catalog").json() == {"repositories": []}


def test_catalog_needs_credentials(anonymous: TestClient) -> None:
    errors_of(anonymous.get("/v2/_catalog"), 401, "UNAUTHORIZED")
