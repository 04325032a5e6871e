"""Property-based fuzzing of every door against a real `dockyard serve`: never a 5xx, never a traceback.

* Every operation of botocore's `ecr` and `ecr-public` models gets JSON bodies generated from its input
  shape: members of the right type and of random types, required members missing, unknown members, huge and
  5,000-digit numbers, NaN and infinities, long and non-ASCII strings, lone surrogates, forged paging
  tokens. Each is signed with real SigV4 (botocore's signer), so the requests get past authentication into
  validation and the handlers.
* Every `/v2` route gets random path parameters, query strings, headers (credentials, ranges, hosts, header
  bytes beyond ASCII) and bodies.

Answers must be below 500 and in the door's error shape; the server log must hold no traceback and no
ERROR line. The examples are derandomized (the same on every run, so CI is reproducible) and bounded per
operation and route, so the whole module takes about a minute on a loaded 2-core machine.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import botocore.session
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.model import ServiceModel, Shape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.helpers import OCI_MANIFEST, image_manifest, push_blob
from tests.support.images import sha256
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess

REGION = "us-east-1"
AWS_JSON = "application/x-amz-json-1.1"
MODELS: dict[str, ServiceModel] = {
    name: botocore.session.get_session().get_service_model(name) for name in ("ecr", "ecr-public")
}
OPERATIONS = [(service, name) for service, model in MODELS.items() for name in model.operation_names]
# A placeholder the body generator leaves where a bare 5,000-digit number goes (json.dumps cannot write one:
# Python refuses to convert ints of more than 4300 digits).
HUGE_MARK = "\x00huge\x00"
HUGE = "9" * 5000
FUZZ = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


@dataclass(frozen=True)
class Seeded:
    """An image pushed for the fuzzer to aim at (so generated requests reach real content)."""

    repository: str
    manifest: str
    digest: str
    blobs: tuple[str, ...]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("fuzz-routes") / "data").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(autouse=True)
def no_traceback_logged(server: ServerProcess) -> Iterator[None]:
    before = len(server.log())
    yield
    logged = server.log()[before:]
    assert "Traceback" not in logged and '"level": "ERROR"' not in logged, logged[-4000:]


def seed(http: httpx.Client, repository: str) -> Seeded:
    raw = image_manifest(repository, http, layers=(b"fuzz layer " + repository.encode(),))
    answer = http.put(f"/v2/{repository}/manifests/latest", content=raw, headers={"Content-Type": OCI_MANIFEST})
    assert answer.status_code == 201, answer.text
    document = json.loads(raw)
    blobs = tuple(d["digest"] for d in (document["config"], *document["layers"]))
    return Seeded(repository, raw.decode(), sha256(raw), blobs)


# --------------------------------------------------------------------------------- values of any kind

NASTY_TEXT = ["", " ", "x" * 3000, "é", "名前", "\U0001f600", "\ud800", "a\x00b", "../..", "%00", "null", "-1", HUGE]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities too: json.dumps writes them as NaN/Infinity, which Python's parser takes
    | st.text(max_size=20)
    | st.sampled_from(NASTY_TEXT)
    | st.just(HUGE_MARK)
)
json_noise = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
numbers = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from(
    [0, -1, 1, 2**31, 2**63 - 1, 2**63, 2**64, HUGE_MARK]
)


def forged_token(after: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()


def string_for(name: str, seeded: Seeded) -> st.SearchStrategy[Any]:
    """Strings that mean something to the handler behind `name` (so requests get deep), and nonsense."""
    digests = [seeded.digest, *seeded.blobs, "sha256:" + "0" * 64, "sha256:zz", "md5:00"]
    hints: dict[str, list[Any]] = {
        "repositoryName": [seeded.repository, "fuzz/absent", "UPPER", "a" * 300],
        "registryId": [ACCOUNT_ID, "000000000000", "1"],
        "imageDigest": digests,
        "layerDigest": digests,
        "imageTag": ["latest", "v1", "bad tag", "x" * 300],
        "imageManifest": [
            seeded.manifest,
            seeded.manifest.replace('"size": ', '"size": 1', 1),
            seeded.manifest.replace('"size": ', f'"size": {2**63}', 1),
            "\ufeff" + seeded.manifest,
            seeded.manifest.replace('"layers": ', '"layers": [], "layers": ', 1),
            "{}",
            "[",
        ],
        "imageManifestMediaType": [OCI_MANIFEST, "application/json", "text/plain"],
        "nextToken": [forged_token(after) for after in ("abc", 5, [], None, HUGE, "sha256:zz|t")] + ["!!", "e30="],
        "uploadId": [str(uuid.uuid4()), "../x"],
        "policyText": ['{"Version":"2012-10-17","Statement":[]}', "{", "[]"],
        "lifecyclePolicyText": ['{"rules":[]}', '{"rules":[{"rulePriority":1}]}', "{"],
    }
    hinted = st.sampled_from(hints[name]) if name in hints else st.nothing()
    return hinted | st.text(max_size=40) | st.sampled_from(NASTY_TEXT)


@functools.cache
def _strategy(service: str, shape_name: str, member: str, depth: int, seeded: Seeded) -> st.SearchStrategy[Any]:
    shape = MODELS[service].shape_for(shape_name) if shape_name else None
    return value_for(service, shape, member, depth, seeded) if shape is not None else json_noise


def value_for(service: str, shape: Shape, member: str, depth: int, seeded: Seeded) -> st.SearchStrategy[Any]:
    """A value for `shape`: usually of its type (often a meaningful one), sometimes anything at all."""
    kind = shape.type_name
    typed: st.SearchStrategy[Any]
    if kind == "structure":
        if depth > 4:
            return st.just({})
        members = {
            name: st.deferred(lambda sub=sub, name=name: _strategy(service, sub.name, name, depth + 1, seeded))
            for name, sub in shape.members.items()  # type: ignore[attr-defined]
        }
        required = {name: members[name] for name in shape.required_members if name in members}  # type: ignore[attr-defined]
        optional = {name: value for name, value in members.items() if name not in required}
        complete = st.fixed_dictionaries(required, optional=optional)
        partial = st.fixed_dictionaries({}, optional=members)
        extra = st.dictionaries(st.text(max_size=12), json_noise, max_size=2)
        typed = st.builds(lambda base, more: {**more, **base}, complete | partial, extra)
    elif kind == "list":
        item = shape.member.name  # type: ignore[attr-defined]
        inner = st.deferred(lambda: _strategy(service, item, member, depth + 1, seeded))
        typed = st.lists(inner, max_size=4)
    elif kind == "map":
        typed = st.dictionaries(st.text(max_size=12), json_noise, max_size=3)
    elif kind == "string":
        enum = shape.metadata.get("enum") or []
        typed = (st.sampled_from(enum) if enum else st.nothing()) | string_for(member, seeded)
    elif kind in ("integer", "long"):
        typed = numbers
    elif kind in ("float", "double"):
        typed = st.floats() | numbers
    elif kind == "boolean":
        typed = st.booleans()
    elif kind == "timestamp":
        typed = st.floats() | numbers | st.sampled_from(["2024-01-01T00:00:00Z", "yesterday"])
    elif kind == "blob":
        typed = st.binary(max_size=64).map(lambda data: base64.b64encode(data).decode()) | st.text(max_size=10)
    else:
        typed = json_noise
    return st.one_of(typed, typed, typed, json_noise)  # three in four of the right type


def encode(document: Any) -> bytes:
    return json.dumps(document).replace(json.dumps(HUGE_MARK), HUGE).encode()


def aws_bodies(service: str, operation: str, seeded: Seeded) -> st.SearchStrategy[bytes]:
    shape = MODELS[service].operation_model(operation).input_shape
    document = value_for(service, shape, "", 0, seeded) if shape is not None else st.just({})
    garbage = st.sampled_from([b"", b"[", b"null", b"[]", b'"x"', b"{" * 5000, HUGE.encode(), b"\xff\xfe{}"])
    return document.map(encode) | document.map(encode) | garbage | st.binary(max_size=40)


# --------------------------------------------------------------------------------- the ECR APIs


def check_aws_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:2000])
    if response.status_code >= 400:
        assert response.headers["content-type"] == AWS_JSON, response.text[:500]
        body = response.json()
        assert isinstance(body.get("__type"), str) and isinstance(body.get("message"), str), body


@functools.cache
def _seeded_ecr(server_url: str, service: str, operation: str) -> Seeded:
    """One repository per operation, so what one operation's fuzzing deletes or locks leaves others alone."""
    repository = f"fuzz-{service}/{operation.lower()}"
    with httpx.Client(base_url=server_url, headers=_basic(), timeout=60) as client:
        if service == "ecr":
            return seed(client, repository)
        body = json.dumps({"repositoryName": repository}).encode()
        answer = post_signed(client, service, "CreateRepository", body)
        assert answer.status_code in (200, 400), answer.text
        return Seeded(repository, seed(client, "fuzz-ecr/public-source").manifest, "sha256:" + "1" * 64, ())


def _basic() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}".encode()).decode()}


def post_signed(client: httpx.Client, service: str, operation: str, body: bytes) -> httpx.Response:
    model = MODELS[service]
    url = f"{client.base_url}"
    headers = {"Content-Type": AWS_JSON, "X-Amz-Target": f"{model.metadata['targetPrefix']}.{operation}"}
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), model.metadata["signingName"], REGION).add_auth(request)
    return client.post("/", content=body, headers=dict(request.headers.items()))


@pytest.mark.parametrize(("service", "operation"), OPERATIONS, ids=[f"{s}.{o}" for s, o in OPERATIONS])
@FUZZ
@given(data=st.data())
def test_every_ecr_operation_answers_random_bodies_without_a_5xx(
    server: ServerProcess, http: httpx.Client, service: str, operation: str, data: st.DataObject
) -> None:
    seeded = _seeded_ecr(server.url, service, operation)
    body = data.draw(aws_bodies(service, operation, seeded), label="body")
    check_aws_answer(post_signed(http, service, operation, body))


# --------------------------------------------------------------------------------- the /v2 door

names = st.sampled_from(["fuzz/v2", "fuzz/absent", "public/alias/x", "UPPER", "a", "x" * 300, "fuzz//v2", "é"])
path_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#"), max_size=20)
QUERY_KEYS = ["n", "last", "digest", "mount", "from", "artifactType", "scope", "service", "account", "X-Amz-Signature",
              "X-Amz-Expires", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Algorithm"]  # fmt: skip
QUERY_VALUES = ["", "-1", "0", "5", "²", HUGE, "sha256:zz", "fuzz/v2", "repository:fuzz/v2:pull",
                "AKIA/20240101/us-east-1/ecr/aws4_request", "20240101T000000Z", "host"]  # fmt: skip
query_values = st.sampled_from(QUERY_VALUES) | st.text(max_size=20)
# A whole presigned-URL query (GetDownloadUrlForLayer's form), each part sometimes wrong, so the SigV4 query
# parser is reached past its "is everything there" check.
presigned = st.fixed_dictionaries(
    {
        "X-Amz-Algorithm": st.sampled_from(["AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1"]),
        "X-Amz-Credential": st.sampled_from([f"{ACCESS_KEY_ID}/20240101/us-east-1/ecr/aws4_request", "x/y"]),
        "X-Amz-Date": st.sampled_from(["20240101T000000Z", "99999999T999999Z", "x"]),
        "X-Amz-Expires": st.sampled_from(["1", "0", "604801", HUGE, "²", ""]),
        "X-Amz-SignedHeaders": st.sampled_from(["host", "", "host;x"]),
        "X-Amz-Signature": st.sampled_from(["0" * 64, "zz"]),
    }
)
header_bytes = st.binary(max_size=30).filter(lambda raw: not any(c in raw for c in b"\r\n\x00") and raw.strip() == raw)
HEADER_CHOICES: dict[str, st.SearchStrategy[Any]] = {
    "Authorization": st.sampled_from(
        [_basic()["Authorization"], "Basic", "Basic !!", "Bearer", "Bearer x.y", "Digest x", "Basic " + "A" * 5000]
    )
    | header_bytes.map(lambda raw: b"Basic " + raw)
    | header_bytes.map(lambda raw: b"Basic " + base64.b64encode(raw))
    | header_bytes.map(lambda raw: b"Bearer " + raw),
    "Range": st.sampled_from(
        ["bytes=0-", "bytes=-1", "bytes=9-1", "bytes=0-1,2-3", f"bytes=0-{HUGE}", f"bytes={HUGE}-"]
    )
    | header_bytes,
    "Content-Range": st.sampled_from(["0-0", "5-1", f"0-{HUGE}", "bytes=0-1", "x", "0-2/3"]) | header_bytes,
    "Content-Type": st.sampled_from([OCI_MANIFEST, "application/json", "text/plain", "", "a/b; charset=utf-16"])
    | header_bytes,
    "Accept": st.sampled_from([OCI_MANIFEST, "*/*", "", "a/b;q=x"]) | header_bytes,
    "Host": st.sampled_from(["123456789012.dkr.ecr.us-east-1.localhost", "000000000000.dkr.ecr.xx.example", "é"]),
}
headers_strategy = st.dictionaries(st.sampled_from(sorted(HEADER_CHOICES)), st.none(), max_size=4).flatmap(
    lambda keys: st.fixed_dictionaries({key: HEADER_CHOICES[key] for key in keys})
)


@dataclass(frozen=True)
class Route:
    template: str  # {name}, {digest}, {reference}, {upload}
    methods: tuple[str, ...]


ROUTES = [
    Route("/v2/", ("GET",)),
    Route("/v2/_catalog", ("GET",)),
    Route("/token", ("GET", "POST")),
    Route("/v2/{name}/blobs/uploads/", ("POST",)),
    Route("/v2/{name}/blobs/uploads/{upload}", ("GET", "PATCH", "PUT", "DELETE")),
    Route("/v2/{name}/blobs/{digest}", ("GET", "HEAD", "DELETE")),
    Route("/v2/{name}/manifests/{reference}", ("GET", "HEAD", "PUT", "DELETE")),
    Route("/v2/{name}/tags/list", ("GET",)),
    Route("/v2/{name}/referrers/{digest}", ("GET",)),
]
CASES = [(route, method) for route in ROUTES for method in route.methods]


@pytest.fixture(scope="module")
def seeded_v2(http: httpx.Client) -> Seeded:
    return seed(http, "fuzz/v2")


def v2_bodies(seeded: Seeded) -> st.SearchStrategy[bytes]:
    manifest = seeded.manifest
    variants = [
        manifest,
        manifest.replace('"size": ', '"size": 1', 1),
        manifest.replace('"size": ', f'"size": {2**63}', 1),
        manifest.replace('"size": ', f'"size": {HUGE}', 1),
        manifest.replace('"layers": ', '"layers": [], "layers": ', 1),
    ]
    encoded = st.sampled_from(variants).flatmap(
        lambda text: st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32-be"]).map(text.encode)
    )
    return (
        encoded | st.binary(max_size=200) | st.sampled_from([b"", b"{}", b"[", b"scope=repository:x:pull&password=x"])
    )


@pytest.mark.parametrize(("route", "method"), CASES, ids=[f"{m} {r.template}" for r, m in CASES])
@settings(FUZZ, max_examples=50)  # 18 route and method pairs against 104 operations: more examples each
@given(data=st.data())
def test_every_v2_route_answers_random_requests_without_a_5xx(
    server: ServerProcess, http: httpx.Client, seeded_v2: Seeded, route: Route, method: str, data: st.DataObject
) -> None:
    upload = str(uuid.uuid4())
    if "{upload}" in route.template and data.draw(st.booleans(), label="live upload"):
        started = http.post("/v2/fuzz/v2/blobs/uploads/")
        upload = started.headers["location"].rpartition("/")[2]
    values = {
        "name": data.draw(names | path_texts, label="name"),
        "digest": data.draw(st.sampled_from([seeded_v2.digest, *seeded_v2.blobs]) | path_texts, label="digest"),
        "reference": data.draw(st.sampled_from(["latest", seeded_v2.digest, "sha256:zz"]) | path_texts, label="ref"),
        "upload": data.draw(st.just(upload) | path_texts, label="upload"),
    }
    path = route.template
    for key, value in values.items():
        path = path.replace("{" + key + "}", quote(value, safe="/:@") or "x")  # the server sees them decoded
    random_query = st.dictionaries(st.sampled_from(QUERY_KEYS) | st.text(max_size=8), query_values, max_size=4)
    query = data.draw(random_query | presigned, label="query")
    drawn = data.draw(headers_strategy, label="headers")
    headers = {"Authorization": _basic()["Authorization"].encode()}
    headers |= {key: value.encode() if isinstance(value, str) else value for key, value in drawn.items()}
    body = data.draw(v2_bodies(seeded_v2), label="body") if method in ("PUT", "PATCH", "POST") else b""
    if "digest" in query and query["digest"] == "sha256:zz" and body:
        query["digest"] = sha256(body)  # sometimes the right digest, so a monolithic upload can complete
    try:
        response = http.request(method, path, params=query, headers=headers, content=body)
    except httpx.LocalProtocolError:
        return  # h11 refused to send it (e.g. a header value it deems invalid): the server never saw it
    check_oci_answer(response, method)


def check_oci_answer(response: httpx.Response, method: str) -> None:
    assert response.status_code < 500, (response.request.url, response.status_code, response.text[:2000])
    if response.status_code >= 400 and method != "HEAD" and response.content:
        assert response.headers["content-type"].startswith("application/json"), response.text[:500]
        body = response.json()
        assert set(body) == {"errors"} and body["errors"], body
        for error in body["errors"]:
            assert re.fullmatch(r"[A-Z_]+", error["code"]) and isinstance(error["message"], str), error


def test_blob_pushed_for_the_fuzzer_is_served(http: httpx.Client, seeded_v2: Seeded) -> None:
    """The fuzzer aims at real content: what it was given exists (else its requests would stay shallow)."""
    digest = push_blob(http, "fuzz/v2", b"fuzz target")
    assert http.get(f"/v2/fuzz/v2/blobs/{digest}").content == b"fuzz target"
    assert http.get(f"/v2/fuzz/v2/manifests/{seeded_v2.digest}").status_code == 200
