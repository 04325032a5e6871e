"""Request -> Principal: HTTP Basic with an access key id and secret (the ECR token form comes with IAM)."""

from __future__ import annotations

import base64
import binascii

from starlette.requests import Request

from dockyard.domain.errors import Unauthorized
from dockyard.domain.iam import Authenticator, Principal


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    if not authorization:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise Unauthorized(f"unsupported authorization scheme {scheme!r}")
    try:
        user, separator, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed Basic credentials") from None
    if not separator:
        raise Unauthorized("malformed Basic credentials")
    return user, password


def principal_of(request: Request, authenticator: Authenticator) -> Principal | None:
    """The caller, or None when the request carries no credentials at all (anonymous)."""
    credentials = basic_credentials(request.headers.get("authorization"))
    if credentials is None:
        return None
    return authenticator.from_access_key(*credentials)
