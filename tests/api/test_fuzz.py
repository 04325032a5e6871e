"""Random requests against the /v2 door: whatever arrives, the answer is never a 5xx (checked by conftest)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.api.helpers import ABSENT, push_image

SEGMENTS = ["team", "app", "blobs", "uploads", "manifests", "tags", "list", "referrers", "latest", ABSENT,
            "sha256:12", "sha512:" + "a" * 128, "md5:00", "A", "a", "..", "%2E", "%00", "_catalog", "x" * 300,
            "00000000-0000-0000-0000-000000000000", "é", ""]  # fmt: skip
HEADERS = {
    "Range": ["bytes=0-", "bytes=-1", "bytes=9-1", "bytes=a", "bytes=0-1,2-3", "bytes=99999999999999999999-"],
    "Content-Range": ["0-0", "5-1", "0-99999999999999999999", "bytes=0-1", "x", "1-2/3"],
    "Content-Type": ["application/vnd.oci.image.manifest.v1+json", "application/json", "text/plain", ""],
    "Content-Length": ["0", "5", "abc", "-1"],
}
QUERIES = st.dictionaries(
    st.sampled_from(["digest", "mount", "from", "n", "last", "artifactType", "tag"]),
    st.sampled_from([ABSENT, "sha256:zz", "team/app", "BAD", "-1", "0", "5", "²", ""]),
    max_size=3,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]),
    segments=st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=6),
    headers=st.dictionaries(st.sampled_from(sorted(HEADERS)), st.just(""), max_size=3).flatmap(
        lambda keys: st.fixed_dictionaries({key: st.sampled_from(HEADERS[key]) for key in keys})
    ),
    query=QUERIES,
    body=st.sampled_from([b"", b"{}", b"[", b'{"schemaVersion": 2}', b"x" * 10]),
)
def test_random_requests_never_fail_the_server(
    client: TestClient, method: str, segments: list[str], headers: dict[str, str], query: dict[str, str], body: bytes
) -> None:
    if not hasattr(client, "_fuzz_seeded"):
        push_image(client, "team/app")
        client._fuzz_seeded = True  # type: ignore[attr-defined]
    client.request(method, "/v2/" + "/".join(segments), params=query, headers=headers, content=body)
