"""Principals, credentials and authorisation.

Today every principal is an account's root user and may do everything in its own account; the IAM work
(users, identity and resource policies) slots in behind `Authorizer.authorize` without changing callers.
"""

from __future__ import annotations

import hmac
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from dockyard.domain.errors import Denied, Unauthorized
from dockyard.domain.keys import SecretBox
from dockyard.domain.names import RepositoryRef, check_account
from dockyard.domain.ports import Credential, CredentialStore
from dockyard.domain.tokens import TokenSigner

_KEY_ID_ALPHABET: Final = string.ascii_uppercase + string.digits
_SECRET_ALPHABET: Final = string.ascii_letters + string.digits + "+/"


@dataclass(frozen=True)
class Principal:
    """Who makes a call: an account's root user or one of its IAM users."""

    account_id: str
    user_name: str | None = None
    access_key_id: str | None = None

    @property
    def arn(self) -> str:
        if self.user_name is None:
            return f"arn:aws:iam::{self.account_id}:root"
        return f"arn:aws:iam::{self.account_id}:user/{self.user_name}"


def new_access_key_id() -> str:
    return "AKIA" + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(16))


def new_secret_access_key() -> str:
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))


class Authenticator:
    """Turns presented credentials into a principal; secrets are compared in constant time."""

    def __init__(self, credentials: CredentialStore, box: SecretBox) -> None:
        self._credentials = credentials
        self._box = box

    def from_access_key(self, access_key_id: str, secret: str) -> Principal:
        credential = self._credentials.get_credential(access_key_id)
        # Compare against a dummy when the key is unknown, so timing does not reveal which keys exist.
        expected = self._box.open(credential.sealed_secret) if credential else secrets.token_urlsafe(30)
        if not hmac.compare_digest(expected.encode(), secret.encode()) or credential is None:
            raise Unauthorized("invalid access key id or secret")
        return Principal(credential.account_id, credential.user_name, credential.access_key_id)

    def secret_of(self, access_key_id: str) -> tuple[Principal, str] | None:
        """The principal and plain secret of an access key (SigV4 verification needs the secret itself)."""
        credential = self._credentials.get_credential(access_key_id)
        if credential is None:
            return None
        principal = Principal(credential.account_id, credential.user_name, credential.access_key_id)
        return principal, self._box.open(credential.sealed_secret)


LOGIN_TOKEN_LIFETIME: Final = timedelta(hours=12)


@dataclass(frozen=True)
class LoginToken:
    """What `GetAuthorizationToken` hands out: the password for user `AWS`, and when it stops working."""

    password: str
    expires_at: datetime
    registry_account: str


class LoginTokens:
    """ECR authorization tokens: bound to the calling access key and to the registry they name.

    Verified statelessly (any node with the master key), and revoked with the access key they came from.
    """

    def __init__(self, signer: TokenSigner, credentials: CredentialStore) -> None:
        self._signer = signer
        self._credentials = credentials

    def issue(self, principal: Principal, registry_account: str, now: datetime) -> LoginToken:
        if principal.access_key_id is None:
            raise Unauthorized("only a principal with an access key can get an authorization token")
        expires_at = now + LOGIN_TOKEN_LIFETIME
        password = self._signer.issue({"k": principal.access_key_id, "r": registry_account}, expires_at)
        return LoginToken(password, expires_at, registry_account)

    def verify(self, password: str, now: datetime) -> tuple[Principal, str]:
        """The principal a token was issued to and the registry account it is for."""
        claims = self._signer.verify(password, now)
        credential = self._credentials.get_credential(str(claims.get("k"))) if claims else None
        if claims is None or credential is None:
            raise Unauthorized("the authorization token is invalid or has expired")
        principal = Principal(credential.account_id, credential.user_name, credential.access_key_id)
        return principal, str(claims["r"])


class Authorizer:
    """Decides whether a principal may perform an `ecr:` action on a repository."""

    def authorize(self, principal: Principal | None, action: str, repository: RepositoryRef) -> None:
        if principal is None:
            raise Unauthorized(f"authentication required for {action}")
        if principal.account_id != repository.account_id:
            raise Denied(f"{principal.arn} is not authorized to perform {action} on {repository.arn}")

    def authorize_account(self, principal: Principal | None, action: str, account_id: str) -> None:
        if principal is None:
            raise Unauthorized(f"authentication required for {action}")
        if principal.account_id != account_id:
            raise Denied(f"{principal.arn} is not authorized to perform {action} in account {account_id}")


@dataclass(frozen=True)
class RootCredentials:
    access_key_id: str
    secret_access_key: str
    created: bool


def bootstrap_root_credentials(
    store: CredentialStore,
    box: SecretBox,
    account_id: str,
    now: datetime,
    given: tuple[str, str] | None,
) -> RootCredentials | None:
    """Make sure the default account has root credentials.

    Given credentials (from the environment) are registered if new. Otherwise a key pair is generated the
    first time only; returns None when the account already had credentials and none were given.
    """
    check_account(account_id)
    store.ensure_account(account_id, now)
    if given is not None:
        key_id, secret = given
        existing = store.get_credential(key_id)
        if existing is None:
            store.add_credential(Credential(key_id, box.seal(secret), account_id, None), now)
        elif existing.account_id != account_id or box.open(existing.sealed_secret) != secret:
            raise ValueError(f"access key {key_id} already exists with another secret or account")
        return RootCredentials(key_id, secret, created=existing is None)
    if store.root_credential_ids(account_id):
        return None
    key_id, secret = new_access_key_id(), new_secret_access_key()
    store.add_credential(Credential(key_id, box.seal(secret), account_id, None), now)
    return RootCredentials(key_id, secret, created=True)
