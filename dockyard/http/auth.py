"""Request -> Principal: HTTP Basic with an access key id and secret (the ECR token form comes with IAM)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from starlette.requests import Request

from dockyard.domain.errors import Unauthorized
from dockyard.domain.iam import Authenticator, LoginTokens, Principal
from dockyard.domain.names import RegistryId
from dockyard.domain.registry_tokens import BearerGrant, RegistryTokens
from dockyard.http.sigv4 import SignedRequest, verify


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    if not authorization:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() not in ("basic", "bearer"):
        raise Unauthorized(f"unsupported authorization scheme {scheme!r}")
    try:
        user, separator, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII header bytes (base64 refuses them)
        raise Unauthorized("malformed Basic credentials") from None
    if not separator:
        raise Unauthorized("malformed Basic credentials")
    return user, password


INSUFFICIENT_SCOPE = "insufficient_scope"


@dataclass(frozen=True)
class Caller:
    """Who calls the registry door: None for anonymous; an ECR login token also names the one registry it is
    for (and acts on no other), a bearer token the scopes it grants and the registry each is for."""

    principal: Principal | None
    registry: RegistryId | None = None  # where a repository name without a registry host points
    grant: BearerGrant | None = None
    bound_to: RegistryId | None = None  # a login token's registry: the only one it may act on


def registry_caller(
    request: Request,
    authenticator: Authenticator,
    tokens: LoginTokens,
    bearer: RegistryTokens | None,
    now: datetime,
) -> Caller:
    """HTTP Basic (user `AWS` with a GetAuthorizationToken password, or an access key id and secret), or a
    Bearer token from the token endpoint when that flow is enabled."""
    # A GetDownloadUrlForLayer URL. The raw query is looked at first: parsing it costs more than the rest of
    # a warm HEAD's authentication, and nearly every registry request has none.
    if b"X-Amz-Signature" in request.scope.get("query_string", b"") and "X-Amz-Signature" in request.query_params:
        signed = SignedRequest(request.method, request.url.path, request.url.query, request.headers.items(), b"")
        verified = verify(signed, authenticator.secret_of, frozenset({"ecr"}), now, regions=authenticator.regions)
        return Caller(verified.principal)
    authorization = request.headers.get("authorization")
    if bearer is not None and authorization and authorization[:7].lower() == "bearer ":
        grant = bearer.verify(authorization[7:].strip(), now, authenticator.principal_for_key)
        return Caller(grant.principal, grant.registry, grant)
    credentials = basic_credentials(authorization)
    if credentials is None:
        return Caller(None)
    user, password = credentials
    if not user and not password:
        return Caller(None)  # skopeo --no-creds and others send an empty Basic pair for anonymous access
    return password_caller(user, password, authenticator, tokens, now)


def password_caller(
    user: str, password: str, authenticator: Authenticator, tokens: LoginTokens, now: datetime
) -> Caller:
    """A user name and password, from Basic or from the token endpoint's OAuth2 form: `AWS` with a
    GetAuthorizationToken password, or an access key id and secret."""
    if user == "AWS":
        principal, registry = tokens.verify(password, now)
        return Caller(principal, registry, bound_to=registry)
    return Caller(authenticator.from_access_key(user, password))


def request_context(request: Request) -> dict[str, str]:
    """The IAM condition keys a request carries (aws:SourceIp, aws:SecureTransport)."""
    client = request.client.host if request.client else ""
    secure = request.scope.get("scheme") == "https"  # (request.url would build and parse the whole URL)
    return {"aws:SourceIp": client, "aws:SecureTransport": "true" if secure else "false"}
