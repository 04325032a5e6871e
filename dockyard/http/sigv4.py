"""AWS Signature Version 4 verification, header and presigned (query-string) forms.

The signing maths is botocore's own (`SigV4Auth` / `SigV4QueryAuth`): we rebuild the request exactly as the
client signed it (its signed headers only, its timestamp, its credential scope), let botocore compute the
signature with the stored secret, and compare in constant time. Only the parsing of the incoming
`Authorization` header and the policy checks (scope, clock skew, payload hash) are written here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import parse_qsl

from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from dockyard.domain.errors import DockyardError, ErrorKind
from dockyard.domain.iam import Principal

ALGORITHM: Final = "AWS4-HMAC-SHA256"
MAX_SKEW: Final = timedelta(minutes=15)
MAX_PRESIGNED_EXPIRY: Final = 7 * 24 * 3600
UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
DOWNLOAD_URL_EXPIRY: Final = 3600
_AUTH_RE: Final = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,\s*Signature=([0-9a-f]{64})\s*"
)
_SCOPE_RE: Final = re.compile(r"([^/]+)/([0-9]{8})/([^/]+)/([^/]+)/aws4_request")
# Every SigV4 request signs its Host (AWS's rule). The AWS JSON doors also need the headers that choose the
# operation and how the body is read: else a captured DescribeRepositories replays as GetAuthorizationToken.
HOST_SIGNED: Final = ("host",)
JSON_SIGNED: Final = ("host", "x-amz-target", "content-type")
# Global services (IAM, STS's global endpoint, ECR Public) are signed for us-east-1 by botocore whatever the
# client's region: that scope is theirs even where the deployment does not serve us-east-1 itself.
GLOBAL_SIGNING_REGION: Final = frozenset({"us-east-1"})
# The names AWS's refusals spell the required headers with.
_SPELLING: Final = {
    "host": "'Host' or ':authority'",
    "x-amz-target": "'X-Amz-Target'",
    "content-type": "'Content-Type'",
}


class MissingAuthenticationToken(DockyardError):
    kind = ErrorKind("UNAUTHORIZED", 403, "MissingAuthenticationTokenException", "Missing Authentication Token")


class IncompleteSignature(DockyardError):
    kind = ErrorKind("UNAUTHORIZED", 400, "IncompleteSignatureException", "the request signature is malformed")


class UnrecognizedClient(DockyardError):
    kind = ErrorKind(
        "UNAUTHORIZED", 400, "UnrecognizedClientException", "The security token included in the request is invalid."
    )


class InvalidSignature(DockyardError):
    kind = ErrorKind(
        "UNAUTHORIZED",
        403,
        "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided.",
    )


class SignatureExpired(DockyardError):
    kind = ErrorKind("UNAUTHORIZED", 400, "ExpiredTokenException", "Signature expired")


SecretLookup = Callable[[str], "tuple[Principal, str] | None"]


@dataclass(frozen=True)
class SignedRequest:
    """What verification needs of an HTTP request; the adapter fills it from its framework's request."""

    method: str
    path: str
    query_string: str
    headers: Sequence[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Verified:
    principal: Principal
    region: str
    service: str


@dataclass(frozen=True)
class _Parsed:
    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str
    timestamp: str
    expires: int | None  # presigned only


def verify(
    request: SignedRequest,
    lookup: SecretLookup,
    services: frozenset[str],
    now: datetime,
    *,
    regions: Collection[str],
    required_headers: Sequence[str] = HOST_SIGNED,
) -> Verified:
    """The principal that signed `request`, or the AWS error a real endpoint answers.

    `regions` are the regions the deployment serves (a credential scoped to another is refused: it would open
    an empty registry); `required_headers` must all be among the signed headers.
    """
    query = parse_qsl(request.query_string, keep_blank_values=True)
    parsed = _parse_query(query) if any(k == "X-Amz-Signature" for k, _ in query) else _parse_header(request)
    _check_signed_headers(parsed, required_headers)
    _check_scope(parsed, services, regions)
    _check_time(parsed, now)
    found = lookup(parsed.access_key_id)
    if found is None:
        raise UnrecognizedClient()
    principal, secret = found
    expected = _signature(request, parsed, query, secret)
    if not hmac.compare_digest(expected.encode(), parsed.signature.encode()):
        raise InvalidSignature()
    return Verified(principal, parsed.region, parsed.service)


def _header(request: SignedRequest, name: str) -> str | None:
    values = [value for key, value in request.headers if key.lower() == name]
    return ",".join(values) if values else None


def _parse_header(request: SignedRequest) -> _Parsed:
    authorization = _header(request, "authorization")
    if authorization is None:
        raise MissingAuthenticationToken()
    match = _AUTH_RE.fullmatch(authorization.strip())
    if match is None:
        raise IncompleteSignature(
            f"Authorization header requires Credential, SignedHeaders and Signature ({ALGORITHM})"
        )
    timestamp = _header(request, "x-amz-date")
    if timestamp is None:
        raise IncompleteSignature("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header")
    credential, signed_headers, signature = match.groups()
    return _parsed(credential, signed_headers, signature, timestamp, None)


def _parse_query(query: list[tuple[str, str]]) -> _Parsed:
    params = dict(query)
    required = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature")
    missing = [name for name in required if not params.get(name)]
    if missing or params["X-Amz-Algorithm"] != ALGORITHM:
        raise IncompleteSignature(f"presigned request lacks {', '.join(missing) or 'a supported X-Amz-Algorithm'}")
    expires_text = params.get("X-Amz-Expires", "")
    # The length is bounded before int(): Python refuses to convert more than 4300 digits (ValueError).
    well_formed = expires_text.isascii() and expires_text.isdigit() and len(expires_text) <= 7
    if not well_formed or not 1 <= int(expires_text) <= MAX_PRESIGNED_EXPIRY:
        raise IncompleteSignature("X-Amz-Expires must be between 1 and 604800 seconds")
    if not re.fullmatch(r"[0-9a-f]{64}", params["X-Amz-Signature"]):
        raise IncompleteSignature("X-Amz-Signature is malformed")
    return _parsed(
        params["X-Amz-Credential"],
        params["X-Amz-SignedHeaders"],
        params["X-Amz-Signature"],
        params["X-Amz-Date"],
        int(expires_text),
    )


def _parsed(credential: str, signed_headers: str, signature: str, timestamp: str, expires: int | None) -> _Parsed:
    scope = _SCOPE_RE.fullmatch(credential)
    if scope is None:
        raise IncompleteSignature(f"Credential must be <key>/<date>/<region>/<service>/aws4_request: {credential!r}")
    access_key_id, date, region, service = scope.groups()
    headers = signed_headers.lower().split(";")
    return _Parsed(access_key_id, date, region, service, headers, signature, timestamp, expires)


def _check_signed_headers(parsed: _Parsed, required: Sequence[str]) -> None:
    for name in required:
        if name not in parsed.signed_headers:
            raise InvalidSignature(
                f"{_SPELLING.get(name, repr(name))} must be a 'SignedHeader' in the AWS Authorization."
            )


def _check_scope(parsed: _Parsed, services: frozenset[str], regions: Collection[str]) -> None:
    if parsed.service not in services:
        raise InvalidSignature(
            f"Credential should be scoped to correct service: '{'/'.join(sorted(services))}', not '{parsed.service}'"
        )
    if parsed.region not in regions:
        raise InvalidSignature(
            f"Credential should be scoped to a valid region, not '{parsed.region}' "
            "(a region this deployment does not serve)"
        )
    if not parsed.timestamp.startswith(parsed.date):
        raise InvalidSignature("Credential should be scoped to the date of X-Amz-Date")


def _check_time(parsed: _Parsed, now: datetime) -> None:
    try:
        signed_at = datetime.strptime(parsed.timestamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise IncompleteSignature(f"X-Amz-Date must be in ISO 8601 basic format: {parsed.timestamp!r}") from None
    if parsed.expires is not None:
        # Compared as offsets from the signing time: an extreme X-Amz-Date must not overflow datetime.
        age = now - signed_at
        if age > timedelta(seconds=parsed.expires) or -age > MAX_SKEW:
            raise SignatureExpired(f"Request has expired (signed at {parsed.timestamp})")
    elif abs(now - signed_at) > MAX_SKEW:
        raise InvalidSignature(
            f"Signature expired: {parsed.timestamp} is now earlier or later than "
            f"{(now - MAX_SKEW):%Y%m%dT%H%M%SZ} - {(now + MAX_SKEW):%Y%m%dT%H%M%SZ}"
        )


def _signature(request: SignedRequest, parsed: _Parsed, query: list[tuple[str, str]], secret: str) -> str:
    credentials = Credentials(parsed.access_key_id, secret)
    signed = [(k, v) for k, v in request.headers if k.lower() in parsed.signed_headers]
    present = {k.lower() for k, _ in signed}
    if any(name not in present for name in parsed.signed_headers):
        raise InvalidSignature("a header named in SignedHeaders is missing from the request")
    aws_request = AWSRequest(method=request.method, url=f"http://signed{request.path}", data=request.body)
    for key, value in signed:
        aws_request.headers[key] = value  # HTTPHeaders appends: repeated headers stay repeated
    aws_request.context["timestamp"] = parsed.timestamp
    signer: SigV4Auth
    if parsed.expires is None:
        aws_request.params = query  # type: ignore[assignment]  # botocore takes pairs: keys may repeat
        _check_payload_hash(request)  # botocore hashes the body itself unless the client declared a hash
        signer = SigV4Auth(credentials, parsed.service, parsed.region)
    else:
        aws_request.params = [(k, v) for k, v in query if k != "X-Amz-Signature"]  # type: ignore[assignment]
        signer = SigV4QueryAuth(credentials, parsed.service, parsed.region)
    canonical = signer.canonical_request(aws_request)
    return str(signer.signature(signer.string_to_sign(aws_request, canonical), aws_request))


def _check_payload_hash(request: SignedRequest) -> None:
    """A declared body hash must be the body's: the signature covers the declaration, not the bytes."""
    declared = _header(request, "x-amz-content-sha256")
    if declared is None:
        return
    if declared == UNSIGNED_PAYLOAD:
        raise InvalidSignature("this API requires a signed payload")
    if not hmac.compare_digest(declared.encode(), hashlib.sha256(request.body).hexdigest().encode()):
        raise InvalidSignature("The provided 'x-amz-content-sha256' header does not match what was computed.")


def presign_get(url: str, access_key_id: str, secret: str, service: str, region: str) -> str:
    """A SigV4 query-signed GET of `url` (what an S3 pre-signed URL is to ECR's GetDownloadUrlForLayer)."""
    request = AWSRequest(method="GET", url=url)
    SigV4QueryAuth(Credentials(access_key_id, secret), service, region, expires=DOWNLOAD_URL_EXPIRY).add_auth(request)
    return str(request.url)
