"""Principals, credentials and authorisation.

Today every principal is an account's root user and may do everything in its own account; the IAM work
(users, identity and resource policies) slots in behind `Authorizer.authorize` without changing callers.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from dockyard.domain.cache import TtlCache
from dockyard.domain.clock import Clock, utc_now
from dockyard.domain.errors import Denied, Unauthorized
from dockyard.domain.keys import SecretBox
from dockyard.domain.names import PUBLIC_REGION, RegistryId, RepositoryRef, check_account
from dockyard.domain.policies import Decision, Policy, RequestContext, evaluate
from dockyard.domain.ports import Credential, CredentialStore, MetadataStore
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
    """Turns presented credentials into a principal; secrets are compared in constant time.

    Successful checks are remembered for a few seconds (keyed by the key id and a hash of the secret), so
    the registry's hot paths do not decrypt a secret per request; a deleted key stops working within that
    time on every node.
    """

    def __init__(
        self, credentials: CredentialStore, box: SecretBox, regions: frozenset[str], cache_seconds: float = 5.0
    ) -> None:
        self._credentials = credentials
        # The regions this deployment serves: a signature or host name scoped to another is refused, so a
        # typo cannot silently open a new, empty registry.
        self.regions = regions
        self._box = box
        self._verified: TtlCache[Principal | None] = TtlCache(cache_seconds)
        self._keys: TtlCache[Credential | None] = TtlCache(cache_seconds)

    def from_access_key(self, access_key_id: str, secret: str) -> Principal:
        key = (access_key_id, hashlib.sha256(secret.encode()).digest())
        principal = self._verified.get_or_load(key, lambda: self._check(access_key_id, secret))
        if principal is None:
            self._verified.invalidate(key)  # failures are not cached: a key created a moment ago must work
            raise Unauthorized("invalid access key id or secret")
        return principal

    def _check(self, access_key_id: str, secret: str) -> Principal | None:
        credential = self._credentials.get_credential(access_key_id)
        # Compare against a dummy when the key is unknown, so timing does not reveal which keys exist.
        expected = self._box.open(credential.sealed_secret) if credential else secrets.token_urlsafe(30)
        if not hmac.compare_digest(expected.encode(), secret.encode()) or credential is None:
            return None
        return Principal(credential.account_id, credential.user_name, credential.access_key_id)

    def principal_for_key(self, access_key_id: str) -> Principal | None:
        """The principal an access key belongs to (cached briefly), or None when the key is gone."""
        credential = self._keys.get_or_load(access_key_id, lambda: self._credentials.get_credential(access_key_id))
        if credential is None:
            self._keys.invalidate(access_key_id)
            return None
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
    registry: RegistryId


class LoginTokens:
    """ECR authorization tokens: bound to the calling access key and to the one registry they name (an account's
    private registry in one region, or its public registry); they act on no other (see `Authorizer`).

    Verified statelessly (any node with the master key), and revoked with the access key they came from.
    """

    def __init__(self, signer: TokenSigner, credentials: CredentialStore, cache_seconds: float = 5.0) -> None:
        self._signer = signer
        self._credentials = credentials
        # A token lives 12 hours; whether its access key still exists is re-checked every few seconds.
        self._credentials_cache: TtlCache[Credential | None] = TtlCache(cache_seconds)

    def issue(self, principal: Principal, registry: RegistryId, now: datetime) -> LoginToken:
        """A token for one registry: ECR's in the region the request was signed for, or ECR Public's."""
        if principal.access_key_id is None:
            raise Unauthorized("only a principal with an access key can get an authorization token")
        expires_at = now + LOGIN_TOKEN_LIFETIME
        claims = {"k": principal.access_key_id, "r": registry.account_id, "g": registry.region}
        password = self._signer.issue(claims, expires_at)
        return LoginToken(password, expires_at, registry)

    def verify(self, password: str, now: datetime) -> tuple[Principal, RegistryId]:
        """The principal a token was issued to and the one registry it is for."""
        claims = self._signer.verify(password, now)
        if claims is None:
            raise Unauthorized("the authorization token is invalid or has expired")
        key_id = str(claims.get("k"))
        credential = self._credentials_cache.get_or_load(key_id, lambda: self._credentials.get_credential(key_id))
        if credential is None:
            self._credentials_cache.invalidate(key_id)
            raise Unauthorized("the authorization token is invalid or has expired")
        principal = Principal(credential.account_id, credential.user_name, credential.access_key_id)
        # ECR Public tokens were once issued without a region ("g": null): they are for the public registry.
        return principal, RegistryId(str(claims["r"]), str(claims.get("g") or PUBLIC_REGION))


class AuditSink(Protocol):
    """Where authorisation decisions and mutating calls are recorded (CloudTrail-like JSON lines)."""

    def record(self, event: dict[str, Any]) -> None: ...


class Authorizer:
    """Decides whether a principal may perform an `ecr:` action, the way IAM does.

    Identity policies are the caller's inline user policies (the root user has none and is allowed all in
    its own account); the resource policy is the repository's policy. Every decision is audited.

    A caller whose credential is bound to one registry (a login token: `bound_to`) is denied on every other
    one before any policy or repository is looked at, so the refusal is the same whatever the registry holds.
    """

    def __init__(self, store: MetadataStore, audit: AuditSink | None = None, clock: Clock = utc_now) -> None:
        self.store = store
        self.audit = audit
        self.clock = clock
        self._parsed: dict[tuple[str, str], Policy] = {}
        self._current_time: tuple[datetime, str] | None = None  # aws:CurrentTime, formatted once a second

    def authorize(
        self,
        principal: Principal | None,
        action: str,
        repository: RepositoryRef,
        context: Mapping[str, str] | None = None,
        bound_to: RegistryId | None = None,
    ) -> None:
        """Raise Unauthorized (no principal) or Denied unless the principal may act on the repository.

        Anyone, anonymous callers included, may read a public repository; nobody anonymous may write."""
        if repository.is_public and action in PUBLIC_READ_ACTIONS:
            self._record(principal, action, repository.arn, "ALLOW_PUBLIC", context)
            return
        action = _service_action(action, repository)
        if principal is None:
            self._record(None, action, repository.arn, "Unauthenticated", context)
            raise Unauthorized(f"authentication required for {action}")
        self._check_binding(principal, action, repository.arn, repository.registry, bound_to, context)
        decision = self.decide(principal, action, repository, context)
        self._record(principal, action, repository.arn, decision.outcome.name, context)
        if not decision.allowed:
            raise Denied(f"User: {principal.arn} is not authorized to perform: {action} on resource: {repository.arn}")

    def authorize_account(
        self, principal: Principal | None, action: str, account_id: str, context: Mapping[str, str] | None = None
    ) -> None:
        """Registry-level actions (resource `*` in the caller's or the named account)."""
        if principal is None:
            self._record(None, action, "*", "Unauthenticated", context)
            raise Unauthorized(f"authentication required for {action}")
        request = self._request(principal, action, "*", account_id, context or {})
        identity = [parsed.policy for parsed in self._identity_policies(principal)]
        decision = evaluate(request, identity, None, is_root=principal.user_name is None)
        self._record(principal, action, f"account/{account_id}", decision.outcome.name, context)
        if not decision.allowed:
            raise Denied(f"User: {principal.arn} is not authorized to perform: {action} in account {account_id}")

    def authorize_registry(
        self,
        principal: Principal | None,
        action: str,
        registry: RegistryId,
        context: Mapping[str, str] | None = None,
        bound_to: RegistryId | None = None,
    ) -> None:
        """A registry-level action on one registry (the /v2 catalog): the credential's binding, then IAM."""
        if principal is not None:
            self._check_binding(principal, action, f"account/{registry.account_id}", registry, bound_to, context)
        self.authorize_account(principal, action, registry.account_id, context)

    def _check_binding(
        self,
        principal: Principal,
        action: str,
        resource: str,
        registry: RegistryId,
        bound_to: RegistryId | None,
        context: Mapping[str, str] | None,
    ) -> None:
        if bound_to is None or registry == bound_to:
            return
        self._record(principal, action, resource, "OTHER_REGISTRY", context)
        raise Denied(
            f"User: {principal.arn} is not authorized to perform: {action} on resource: {resource} "
            f"with an authorization token for {bound_to}"
        )

    def authorize_resource(
        self,
        principal: Principal,
        action: str,
        resource_arn: str,
        resource_account: str,
        resource_policy: str,
        context: Mapping[str, str] | None = None,
    ) -> None:
        """Any other resource with its own policy (a KMS key and its key policy)."""
        request = self._request(principal, action, resource_arn, resource_account, context or {})
        identity = [parsed.policy for parsed in self._identity_policies(principal)]
        policy = self._parse(resource_policy, "resource").policy
        decision = evaluate(request, identity, policy, is_root=principal.user_name is None)
        self._record(principal, action, resource_arn, decision.outcome.name, context)
        if not decision.allowed:
            raise Denied(f"User: {principal.arn} is not authorized to perform: {action} on resource: {resource_arn}")

    def allowed(
        self,
        principal: Principal | None,
        action: str,
        repository: RepositoryRef,
        context: Mapping[str, str] | None,
        bound_to: RegistryId | None = None,
    ) -> bool:
        """The same decision without raising or auditing (filters listings)."""
        if repository.is_public and action in PUBLIC_READ_ACTIONS:
            return True
        if bound_to is not None and repository.registry != bound_to:
            return False
        action = _service_action(action, repository)
        return principal is not None and self.decide(principal, action, repository, context).allowed

    def decide(
        self, principal: Principal, action: str, repository: RepositoryRef, context: Mapping[str, str] | None
    ) -> Decision:
        resource_policy = self._repository_policy(repository)
        identity = self._identity_policies(principal)
        values = dict(context or {})
        if any("resourcetag" in p.text_lower for p in ([resource_policy] if resource_policy else []) + identity):
            values.update(self._resource_tags(repository))
        request = self._request(principal, action, repository.arn, repository.account_id, values)
        return evaluate(
            request,
            [p.policy for p in identity],
            resource_policy.policy if resource_policy else None,
            is_root=principal.user_name is None,
        )

    def _request(
        self, principal: Principal, action: str, resource: str, account_id: str, context: Mapping[str, str]
    ) -> RequestContext:
        values = {"aws:CurrentTime": self._now_text(), **context}
        return RequestContext(principal.account_id, principal.arn, action, resource, account_id, values)

    def _now_text(self) -> str:
        now = self.clock().replace(microsecond=0)
        cached = self._current_time
        if cached is None or cached[0] != now:
            cached = (now, now.strftime("%Y-%m-%dT%H:%M:%SZ"))
            self._current_time = cached
        return cached[1]

    def _identity_policies(self, principal: Principal) -> list[ParsedPolicy]:
        if principal.user_name is None:
            return []
        documents = self.store.user_policies(principal.account_id, principal.user_name)
        return [self._parse(text, "identity") for text in documents.values()]

    def _repository_policy(self, repository: RepositoryRef) -> ParsedPolicy | None:
        found = self.store.get_repository(repository)
        if found is None:
            return None
        document = self.store.get_repository_document(found.id, REPOSITORY_POLICY_KIND)
        return None if document is None else self._parse(document.text, "resource")

    def _resource_tags(self, repository: RepositoryRef) -> dict[str, str]:
        found = self.store.get_repository(repository)
        tags = self.store.get_resource_tags(found.id) if found else {}
        return {f"ecr:ResourceTag/{key}": value for key, value in tags.items()}

    def _parse(self, text: str, kind: str) -> ParsedPolicy:
        key = (kind, text)
        policy = self._parsed.get(key)
        if policy is None:
            policy = Policy.parse(text, kind="resource" if kind == "resource" else "identity")
            if len(self._parsed) > 10_000:  # bounded: documents change rarely, but never grow without limit
                self._parsed.clear()
            self._parsed[key] = policy
        return ParsedPolicy(policy, text.lower())

    def record_result(
        self,
        principal: Principal,
        action: str,
        repository: RepositoryRef,
        response_elements: dict[str, Any],
        context: Mapping[str, str] | None = None,
    ) -> None:
        """What an allowed change did (a delete: the digests and tags it removed), as CloudTrail's
        `responseElements`: the decision line says who may, this line says what went."""
        action = _service_action(action, repository)
        self._record(principal, action, repository.arn, "DONE", context, response_elements)

    def _record(
        self,
        principal: Principal | None,
        action: str,
        resource: str,
        outcome: str,
        context: Mapping[str, str] | None,
        response_elements: dict[str, Any] | None = None,
    ) -> None:
        if self.audit is None:
            return
        extra = {} if response_elements is None else {"responseElements": response_elements}
        self.audit.record(
            {
                "eventTime": self.clock().isoformat(),
                "eventType": "AwsApiCall",
                "eventSource": f"{action.partition(':')[0]}.amazonaws.com",
                "eventName": action.partition(":")[2],
                "userIdentity": {
                    "type": "IAMUser" if principal and principal.user_name else ("Root" if principal else "Anonymous"),
                    "arn": principal.arn if principal else None,
                    "accountId": principal.account_id if principal else None,
                    "accessKeyId": principal.access_key_id if principal else None,
                },
                "resources": [{"ARN": resource}],
                "sourceIPAddress": (context or {}).get("aws:SourceIp"),
                "decision": outcome,
                **extra,
            }
        )


@dataclass(frozen=True)
class ParsedPolicy:
    policy: Policy
    text_lower: str


REPOSITORY_POLICY_KIND: Final = "repository-policy"
# What anyone may do on a public repository (ECR Public: anonymous pulls).
PUBLIC_READ_ACTIONS: Final = frozenset(
    {"ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability", "ecr:ListImages"}
)


def _service_action(action: str, repository: RepositoryRef) -> str:
    """A public repository belongs to ECR Public: registry calls on it are `ecr-public:` actions."""
    if repository.is_public and action.startswith("ecr:"):
        return "ecr-public:" + action.removeprefix("ecr:")
    return action


@dataclass(frozen=True)
class RootCredentials:
    access_key_id: str
    secret_access_key: str
    created: bool


DEFAULT_ACCOUNT_SETTING: Final = "default-account"


class DefaultAccountConflict(ValueError):
    """A node was told a default account other than the one the registry's database keeps."""

    def __init__(self, given: str, stored: str) -> None:
        super().__init__(f"the default account is {stored}, not {given}")
        self.given = given
        self.stored = stored


def settle_default_account(store: CredentialStore, given: str | None, proposed: str) -> str:
    """The registry's default account, the same on every node sharing its database: the one stored there by
    the first node to start (`given`, else `proposed`). A `given` one that differs is refused: requests
    naming no account would otherwise land in different accounts depending on the node."""
    stored = store.registry_setting(DEFAULT_ACCOUNT_SETTING)
    if stored is None:
        stored = store.settle_registry_setting(DEFAULT_ACCOUNT_SETTING, check_account(given or proposed))
    if given is not None and given != stored:
        raise DefaultAccountConflict(given, stored)
    return stored


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
