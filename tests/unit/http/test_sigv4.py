"""dockyard.http.sigv4.verify: header-signed and presigned requests, and everything a forger might try.

Requests are signed with botocore itself (SigV4Auth / SigV4QueryAuth) at a fixed instant; `verify` is called
with the server's notion of "now". Every refusal is a DockyardError carrying an AWS error name.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl, urlencode, urlsplit

import botocore.auth
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.config import AWS_REGIONS
from dockyard.domain.errors import DockyardError
from dockyard.domain.iam import Principal
from dockyard.http.sigv4 import (
    HOST_SIGNED,
    JSON_SIGNED,
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    SignatureExpired,
    SignedRequest,
    UnrecognizedClient,
    Verified,
    verify,
)
from tests.support.iam import sign_leaving_out

KEY = "AKIAUNITTESTKEY00001"
SECRET = "unit/Test+Secret/Key/0000000000000000000"
ACCOUNT = "123456789012"
PRINCIPAL = Principal(ACCOUNT, None, KEY)
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
URL = "http://registry.test:5000/"
TARGET = "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories"
ECR = frozenset({"ecr"})
BODY = json.dumps({"maxResults": 5}).encode()
REGIONS = frozenset(AWS_REGIONS)


def lookup(access_key_id: str) -> tuple[Principal, str] | None:
    return (PRINCIPAL, SECRET) if access_key_id == KEY else None


def signed(
    body: bytes = BODY,
    *,
    when: datetime = NOW,
    region: str = "us-east-1",
    service: str = "ecr",
    key: str = KEY,
    secret: str = SECRET,
    headers: dict[str, str] | None = None,
    url: str = URL,
) -> SignedRequest:
    """A POST as botocore signs it, with the Host header the HTTP client would send."""
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET, **(headers or {})},
    )
    with mock.patch.object(botocore.auth, "get_current_datetime", lambda: when.replace(tzinfo=None)):
        SigV4Auth(Credentials(key, secret), service, region).add_auth(request)
    parts = urlsplit(url)
    return SignedRequest(
        "POST", parts.path or "/", parts.query, [("host", parts.netloc), *request.headers.items()], body
    )


def signed_without(header: str) -> SignedRequest:
    """A request genuinely signed with `header` left out of SignedHeaders (sent all the same)."""
    request = AWSRequest(
        method="POST",
        url=URL,
        data=BODY,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET},
    )
    host = urlsplit(URL).netloc
    with mock.patch.object(botocore.auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None)):
        sign_leaving_out(request, header, KEY, SECRET)
    return SignedRequest("POST", "/", "", [("host", host), *request.headers.items()], BODY)


def presigned(
    *, when: datetime = NOW, expires: int = 300, method: str = "GET", url: str = URL + "v2/x/blobs/sha256:abc"
) -> SignedRequest:
    request = AWSRequest(method=method, url=url)
    with mock.patch.object(botocore.auth, "get_current_datetime", lambda: when.replace(tzinfo=None)):
        SigV4QueryAuth(Credentials(KEY, SECRET), "ecr", "us-east-1", expires=expires).add_auth(request)
    parts = urlsplit(request.url)
    return SignedRequest(method, parts.path, parts.query, [("host", parts.netloc), *request.headers.items()], b"")


def with_headers(request: SignedRequest, **changes: str | None) -> SignedRequest:
    """`request` with headers replaced (a value) or removed (None); names use _ for -."""
    names = {name.replace("_", "-").lower(): value for name, value in changes.items()}
    kept = [(k, v) for k, v in request.headers if k.lower() not in names]
    added = [(k, v) for k, v in names.items() if v is not None]
    return SignedRequest(request.method, request.path, request.query_string, kept + added, request.body)


def with_query(request: SignedRequest, **changes: str | None) -> SignedRequest:
    query = dict(parse_qsl(request.query_string, keep_blank_values=True))
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return SignedRequest(request.method, request.path, urlencode(query), request.headers, request.body)


def authorization(request: SignedRequest) -> str:
    return next(v for k, v in request.headers if k.lower() == "authorization")


def refused(error: type[DockyardError], request: SignedRequest, now: datetime = NOW, **kwargs: Any) -> DockyardError:
    with pytest.raises(error) as caught:
        verify(
            request,
            lookup,
            kwargs.get("services", ECR),
            now,
            regions=kwargs.get("regions", REGIONS),
            required_headers=kwargs.get("required_headers", HOST_SIGNED),
        )
    assert caught.value.ecr_exception == error.kind.ecr_exception
    assert caught.value.http_status in (400, 403)
    return caught.value


# --------------------------------------------------------------------------------------- header form


def test_valid_request() -> None:
    assert verify(signed(), lookup, ECR, NOW, regions=REGIONS) == Verified(PRINCIPAL, "us-east-1", "ecr")


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-1", "ap-southeast-2", "ca-west-1"])
def test_served_regions_are_accepted(region: str) -> None:
    assert verify(signed(region=region), lookup, ECR, NOW, regions=REGIONS).region == region


@pytest.mark.parametrize("region", ["eu-west-9", "us-gov-west-1", "cn-north-1"])
def test_regions_not_served_are_refused(region: str) -> None:
    """A well-formed but unserved region would open a new, empty registry: refused as AWS refuses it."""
    error = refused(InvalidSignature, signed(region=region))
    assert f"Credential should be scoped to a valid region, not '{region}'" in error.message
    assert verify(signed(region=region), lookup, ECR, NOW, regions={region, "us-east-1"}).region == region


def test_aws_regions_come_from_botocore() -> None:
    assert {"us-east-1", "eu-west-1", "ap-southeast-2"} <= REGIONS
    assert not {"us-gov-west-1", "cn-north-1", "aws-global"} & REGIONS  # other partitions, pseudo-regions


def test_json_doors_require_target_and_content_type_signed() -> None:
    """botocore signs Host, X-Amz-Target and Content-Type; a signature without them is refused as AWS does."""
    assert verify(signed(), lookup, ECR, NOW, regions=REGIONS, required_headers=JSON_SIGNED).principal == PRINCIPAL
    for left_out, spelling in [("x-amz-target", "'X-Amz-Target'"), ("content-type", "'Content-Type'")]:
        request = signed_without(left_out)
        assert verify(request, lookup, ECR, NOW, regions=REGIONS).principal == PRINCIPAL  # a valid signature
        error = refused(InvalidSignature, request, required_headers=JSON_SIGNED)
        assert error.message == f"{spelling} must be a 'SignedHeader' in the AWS Authorization."


def test_host_must_always_be_signed() -> None:
    error = refused(InvalidSignature, signed_without("host"))
    assert error.message == "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."


def test_service_must_be_one_of_the_doors() -> None:
    request = signed(service="ecr-public")
    assert verify(request, lookup, frozenset({"ecr", "ecr-public"}), NOW, regions=REGIONS).service == "ecr-public"
    error = refused(InvalidSignature, request)
    assert "ecr-public" in error.message


def test_unsigned_headers_may_change() -> None:
    request = with_headers(signed(), user_agent="something else", x_forwarded_for="10.0.0.1")
    assert verify(request, lookup, ECR, NOW, regions=REGIONS).principal == PRINCIPAL


def test_tampered_signature() -> None:
    request = signed()
    auth = authorization(request)
    last = auth[-1]
    forged = with_headers(request, authorization=auth[:-1] + ("0" if last != "0" else "1"))
    error = refused(InvalidSignature, forged)
    assert error.ecr_exception == "InvalidSignatureException"


def test_signature_of_another_secret() -> None:
    refused(InvalidSignature, signed(secret=SECRET + "x"))


def test_tampered_body() -> None:
    request = signed()
    forged = SignedRequest(request.method, request.path, request.query_string, request.headers, BODY + b" ")
    refused(InvalidSignature, forged)


@pytest.mark.parametrize(
    "changes",
    [
        {"x_amz_target": "AmazonEC2ContainerRegistry_V20150921.DeleteRepository"},
        {"host": "evil.test:5000"},
        {"content_type": "application/json"},
        {"x_amz_target": None},
    ],
    ids=["target", "host", "content-type", "signed-header-removed"],
)
def test_tampered_signed_header(changes: dict[str, str | None]) -> None:
    refused(InvalidSignature, with_headers(signed(), **changes))


def test_tampered_query() -> None:
    request = signed(url=URL + "?a=1")
    forged = SignedRequest(request.method, request.path, "a=2", request.headers, request.body)
    refused(InvalidSignature, forged)


def test_declared_payload_hash_must_be_the_bodys() -> None:
    good = signed(headers={"X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest()})
    assert verify(good, lookup, ECR, NOW, regions=REGIONS).principal == PRINCIPAL
    lying = signed(headers={"X-Amz-Content-SHA256": hashlib.sha256(b"other").hexdigest()})
    refused(InvalidSignature, lying)
    unsigned = signed(headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    refused(InvalidSignature, unsigned)


@pytest.mark.parametrize("region", ["moon", "US-EAST-1", "us_east_1", "us-east", "1-us-east"])
def test_wrong_region_format(region: str) -> None:
    error = refused(InvalidSignature, signed(region=region))
    assert region in error.message


@pytest.mark.parametrize("service", ["s3", "sts", "ecr-public", "ECR"])
def test_wrong_service_in_scope(service: str) -> None:
    refused(InvalidSignature, signed(service=service))


def test_scope_date_must_be_the_request_date() -> None:
    request = signed()
    forged = with_headers(request, x_amz_date="20250602T120000Z")
    refused(InvalidSignature, forged, now=datetime(2025, 6, 2, 12, 0, tzinfo=UTC))


@pytest.mark.parametrize("minutes", [16, 60, 24 * 60])
def test_expired_request(minutes: int) -> None:
    """A request replayed (or sent) after the 15-minute skew window is refused."""
    error = refused(InvalidSignature, signed(), now=NOW + timedelta(minutes=minutes))
    assert "expired" in error.message.lower()


@pytest.mark.parametrize("minutes", [16, 60])
def test_request_from_the_future(minutes: int) -> None:
    refused(InvalidSignature, signed(when=NOW + timedelta(minutes=minutes)))


@pytest.mark.parametrize("minutes", [-14, 0, 14])
def test_skew_inside_the_window_is_accepted(minutes: int) -> None:
    """Like AWS, a replay inside the window is not detected: the window bounds it."""
    assert verify(signed(), lookup, ECR, NOW + timedelta(minutes=minutes), regions=REGIONS).principal == PRINCIPAL


def test_unknown_access_key() -> None:
    error = refused(UnrecognizedClient, signed(key="AKIANOSUCHKEY0000000"))
    assert error.ecr_exception == "UnrecognizedClientException"


def test_missing_authorization() -> None:
    error = refused(MissingAuthenticationToken, with_headers(signed(), authorization=None))
    assert error.ecr_exception == "MissingAuthenticationTokenException"


def test_missing_date() -> None:
    refused(IncompleteSignature, with_headers(signed(), x_amz_date=None))


@pytest.mark.parametrize("date", ["2025-06-01T12:00:00Z", "20250601", "20250601T1200Z", "yesterday", ""])
def test_malformed_date(date: str) -> None:
    with pytest.raises(DockyardError) as caught:
        verify(with_headers(signed(), x_amz_date=date), lookup, ECR, NOW, regions=REGIONS)
    assert caught.value.ecr_exception in {"IncompleteSignatureException", "InvalidSignatureException"}


def _auth(credential: str, signed_headers: str = "host;x-amz-date", signature: str = "a" * 64) -> str:
    return f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={signed_headers}, Signature={signature}"


SCOPE = f"{KEY}/20250601/us-east-1/ecr/aws4_request"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "Basic QUtJQTpzZWNyZXQ=",
        "Bearer token",
        "AWS4-HMAC-SHA256",
        f"AWS4-HMAC-SHA256 Credential={SCOPE}",
        f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders=host",
        f"AWS4-HMAC-SHA512 Credential={SCOPE}, SignedHeaders=host, Signature={'a' * 64}",
        f"AWS4-HMAC-SHA1 Credential={SCOPE}, SignedHeaders=host, Signature={'a' * 64}",
        f"AWS3-HTTPS AWSAccessKeyId={KEY},Algorithm=HmacSHA256,Signature=abc",
        _auth(f"{KEY}/us-east-1/ecr/aws4_request"),
        _auth(f"{KEY}/20250601/us-east-1/ecr/aws4_requests"),
        _auth(f"{KEY}/2025061/us-east-1/ecr/aws4_request"),
        _auth(SCOPE, signature="A" * 64),
        _auth(SCOPE, signature="a" * 63),
        _auth(SCOPE, signature="g" * 64),
        _auth(SCOPE) + ", Extra=1",
    ],
    ids=[
        "empty", "garbage", "basic", "bearer", "algorithm-only", "credential-only", "no-signature", "sha512", "sha1",
        "sigv3", "scope-without-date", "scope-terminator", "short-date", "uppercase-signature",
        "short-signature", "non-hex-signature", "extra-part",
    ],
)  # fmt: skip
def test_malformed_authorization_header(header: str) -> None:
    request = with_headers(signed(), authorization=header)
    with pytest.raises(DockyardError) as caught:
        verify(request, lookup, ECR, NOW, regions=REGIONS)
    assert caught.value.ecr_exception in {"IncompleteSignatureException", "MissingAuthenticationTokenException"}
    assert caught.value.http_status in (400, 403)


# --------------------------------------------------------------------------------------- presigned form


def test_presigned_valid() -> None:
    request = presigned()
    assert verify(request, lookup, ECR, NOW + timedelta(seconds=299), regions=REGIONS) == Verified(
        PRINCIPAL, "us-east-1", "ecr"
    )


def test_presigned_expired() -> None:
    error = refused(SignatureExpired, presigned(expires=300), now=NOW + timedelta(seconds=301))
    assert error.ecr_exception == "ExpiredTokenException"


def test_presigned_from_the_future() -> None:
    refused(SignatureExpired, presigned(when=NOW + timedelta(minutes=20)))


def test_presigned_tampered() -> None:
    request = presigned()
    refused(InvalidSignature, with_query(request, X_Amz_Expires="301"))
    forged = SignedRequest(request.method, request.path + "x", request.query_string, request.headers, b"")
    refused(InvalidSignature, forged)
    refused(InvalidSignature, with_query(request, extra="1"))


@pytest.mark.parametrize(
    "changes",
    [
        {"X_Amz_Credential": None},
        {"X_Amz_Date": None},
        {"X_Amz_SignedHeaders": None},
        {"X_Amz_Algorithm": "AWS4-HMAC-SHA512"},
        {"X_Amz_Algorithm": None},
        {"X_Amz_Expires": "0"},
        {"X_Amz_Expires": "604801"},
        {"X_Amz_Expires": "-5"},
        {"X_Amz_Expires": "soon"},
        {"X_Amz_Signature": "abc"},
        {"X_Amz_Credential": "garbage"},
        {"X_Amz_Date": "20250601Tnoon"},
    ],
)
def test_presigned_malformed(changes: dict[str, str | None]) -> None:
    refused(IncompleteSignature, with_query(presigned(), **changes))


@pytest.mark.parametrize("date", ["99991231T235959Z", "00010101T000000Z"])
def test_presigned_extreme_dates_are_refused_cleanly(date: str) -> None:
    """Any X-Amz-Date the parser accepts must end in an AWS error, not an arithmetic overflow."""
    request = with_query(
        presigned(expires=604800), X_Amz_Date=date, X_Amz_Credential=f"{KEY}/{date[:8]}/us-east-1/ecr/aws4_request"
    )
    with pytest.raises(DockyardError):
        verify(request, lookup, ECR, NOW, regions=REGIONS)


def test_non_ascii_payload_hash_is_refused_cleanly() -> None:
    """Header values arrive as latin-1 text: a declared hash with a non-ASCII byte is a bad signature, not a crash."""
    request = with_headers(signed(), x_amz_content_sha256="\u00e9" * 64)
    with pytest.raises(DockyardError) as caught:
        verify(request, lookup, ECR, NOW, regions=REGIONS)
    assert caught.value.ecr_exception == "InvalidSignatureException"


# --------------------------------------------------------------------------------------- property tests

SIGNED = signed()
HEADER_NAMES = ["authorization", "x-amz-date", "x-amz-content-sha256", "host", "x-amz-target", "content-type",
                "x-amz-security-token", "Authorization", "X-Amz-Date"]  # fmt: skip
LATIN1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF)
AUTH_PIECES = st.builds(
    lambda algorithm, credential, headers, signature, sep: sep.join(
        [f"{algorithm} Credential={credential}", f"SignedHeaders={headers}", f"Signature={signature}"]
    ),
    st.sampled_from(["AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512", "", "aws4-hmac-sha256"]),
    st.one_of(
        st.just(SCOPE),
        st.builds(
            lambda k, d, r, s: f"{k}/{d}/{r}/{s}/aws4_request",
            st.sampled_from([KEY, "AKIAOTHER", ""]),
            st.one_of(st.just("20250601"), st.from_regex(r"[0-9]{8}", fullmatch=True)),
            st.sampled_from(["us-east-1", "moon", "", "eu-west-3"]),
            st.sampled_from(["ecr", "s3", ""]),
        ),
        st.text(LATIN1, max_size=40),
    ),
    st.one_of(st.just("content-type;host;x-amz-date;x-amz-target"), st.text(LATIN1, max_size=30)),
    st.one_of(st.from_regex(r"[0-9a-f]{64}", fullmatch=True), st.text(LATIN1, max_size=70)),
    st.sampled_from([", ", ",", " , ", " "]),
)
DATES = st.one_of(
    st.just("20250601T120000Z"),
    st.sampled_from(["99991231T235959Z", "00010101T000000Z", "20250601T246060Z", "20250601T1:2:3Z"]),
    st.from_regex(r"[0-9]{8}T[0-9]{6}Z", fullmatch=True),
    st.text(LATIN1, max_size=20),
)
VALUES = st.one_of(AUTH_PIECES, DATES, st.text(LATIN1, max_size=80), st.from_regex(r"[0-9a-f]{64}", fullmatch=True))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), st.one_of(st.none(), VALUES)), max_size=4),
    body=st.one_of(st.just(BODY), st.binary(max_size=64)),
)
def test_random_header_garbage_only_raises_dockyard_errors(changes: list[tuple[str, str | None]], body: bytes) -> None:
    """Headers as an HTTP server hands them over (latin-1 text), mutated at random from a genuinely signed request."""
    headers = list(SIGNED.headers)
    for name, value in changes:
        headers = [(k, v) for k, v in headers if k.lower() != name.lower()]
        if value is not None:
            headers.append((name, value))
    try:
        verify(SignedRequest("POST", "/", "", headers, body), lookup, ECR, NOW, regions=REGIONS)
    except DockyardError as error:
        assert error.ecr_exception.endswith("Exception")
        assert error.http_status in (400, 401, 403)


QUERY_KEYS = ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
              "X-Amz-Signature"]  # fmt: skip


HEX64 = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)


@settings(max_examples=400, deadline=None)
@given(
    date=st.one_of(st.sampled_from(["20250601T120000Z", "99991231T235959Z", "00010101T000000Z"]), DATES),
    expires=st.one_of(
        st.integers(1, 604_800).map(str), st.integers(-10, 700_000).map(str), st.text(LATIN1, max_size=8)
    ),
    signature=st.one_of(HEX64, HEX64, st.text(LATIN1, max_size=70)),
    drop=st.one_of(st.just(frozenset()), st.frozensets(st.sampled_from(QUERY_KEYS), max_size=2)),
    credential_date=st.one_of(st.none(), st.none(), st.from_regex(r"[0-9]{8}", fullmatch=True)),
)
def test_random_presigned_garbage_only_raises_dockyard_errors(
    date: str, expires: str, signature: str, drop: frozenset[str], credential_date: str | None
) -> None:
    query = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{KEY}/{credential_date or date[:8]}/us-east-1/ecr/aws4_request",
        "X-Amz-Date": date,
        "X-Amz-Expires": expires,
        "X-Amz-SignedHeaders": "host",
        "X-Amz-Signature": signature,
    }
    for key in drop:
        del query[key]
    request = SignedRequest("GET", "/v2/x/blobs/sha256:abc", urlencode(query), [("host", "registry.test:5000")], b"")
    try:
        verify(request, lookup, ECR, NOW, regions=REGIONS)
    except DockyardError as error:
        assert error.http_status in (400, 401, 403)
