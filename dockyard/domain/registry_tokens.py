"""The Docker registry token flow: short-lived, scope-limited bearer tokens for clients that use it.

A client asks the token endpoint for scopes such as `repository:team/app:pull,push`; the answer grants
the intersection of what it asked and what IAM allows (granting fewer actions is not an error). The token is
signed (no per-process state) and names its grants, each with the registry it was decided for (an account's
private registry in a region, or its public one); the registry door checks each request against them, so a
token never acts on a registry other than the one IAM was asked about, whatever host the client sends it to.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from dockyard.domain.errors import Unauthorized
from dockyard.domain.iam import Principal
from dockyard.domain.names import RegistryId, RepositoryRef
from dockyard.domain.tokens import TokenSigner

TOKEN_LIFETIME: Final = timedelta(minutes=5)
# What each registry action needs in ECR terms.
SCOPE_ACTIONS: Final[dict[str, tuple[str, ...]]] = {
    "pull": ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"),
    "push": ("ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage"),
    "delete": ("ecr:BatchDeleteImage",),
}
CATALOG_ACTION: Final = "ecr:DescribeRepositories"
_SCOPE_RE: Final = re.compile(r"(repository|registry)(?:\([a-z]+\))?:(.+):([a-z*]+(?:,[a-z*]+)*)")


@dataclass(frozen=True)
class Scope:
    type: str  # "repository" or "registry"
    name: str
    actions: frozenset[str]
    registry: RegistryId | None = None  # where a granted scope holds; None as a client asks for it

    def render(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"


@dataclass(frozen=True)
class BearerGrant:
    principal: Principal | None
    registry: RegistryId  # the registry the token was asked for (where a name without a host points)
    scopes: tuple[Scope, ...]

    def allows(self, scope_type: str, name: str, action: str, registry: RegistryId) -> bool:
        return any(
            s.type == scope_type
            and s.name == name
            and s.registry == registry
            and (action in s.actions or "*" in s.actions)
            for s in self.scopes
        )


def parse_scopes(texts: Iterable[str]) -> list[Scope]:
    """Scopes as clients send them; the name may hold `host:port/`, so type and actions split at the ends."""
    scopes = []
    for text in texts:
        for part in text.split():
            match = _SCOPE_RE.fullmatch(part)
            if match is not None:
                kind, name, actions = match.groups()
                scopes.append(Scope(kind, name, frozenset(actions.split(","))))
    return scopes


Allowed = Callable[[Principal | None, str, RepositoryRef], bool]


class RegistryTokens:
    def __init__(self, signer: TokenSigner) -> None:
        self._signer = signer

    def issue(
        self,
        principal: Principal | None,
        registry: RegistryId,
        resolve: Callable[[str], RepositoryRef | None],
        requested: list[Scope],
        allowed: Allowed,
        allowed_catalog: Callable[[Principal | None], bool],
        now: datetime,
    ) -> tuple[str, datetime, list[Scope]]:
        """A token for the intersection of `requested` and what the principal may do, each scope on the registry
        its name resolved to (the catalog: on `registry`)."""
        granted = []
        for scope in requested:
            target: RegistryId | None
            if scope.type == "registry":
                target = registry
                actions = frozenset(scope.actions if scope.name == "catalog" and allowed_catalog(principal) else ())
            else:
                ref = resolve(scope.name)
                target = ref.registry if ref is not None else None
                actions = frozenset(
                    action
                    for action in _expand(scope.actions)
                    if ref is not None and all(allowed(principal, a, ref) for a in SCOPE_ACTIONS[action])
                )
            granted.append(Scope(scope.type, scope.name, actions, target))
        claims: dict[str, Any] = {
            "k": principal.access_key_id if principal else None,
            "r": registry.account_id,
            "g": registry.region,
            "access": [
                {
                    "type": s.type,
                    "name": s.name,
                    "actions": sorted(s.actions),
                    "registry": [s.registry.account_id, s.registry.region] if s.registry else None,
                }
                for s in granted
            ],
        }
        expires_at = now + TOKEN_LIFETIME
        return self._signer.issue(claims, expires_at), expires_at, granted

    def verify(self, token: str, now: datetime, principal_of: Callable[[str], Principal | None]) -> BearerGrant:
        claims = self._signer.verify(token, now)
        if claims is None:
            raise Unauthorized("the bearer token is invalid or has expired")
        principal = None
        if claims.get("k"):
            principal = principal_of(str(claims["k"]))
            if principal is None:
                raise Unauthorized("the access key of this bearer token no longer exists")
        if not claims.get("g"):
            raise Unauthorized("the bearer token is invalid or has expired")  # issued before tokens named a region
        scopes = tuple(
            Scope(str(item["type"]), str(item["name"]), frozenset(item["actions"]), _registry(item.get("registry")))
            for item in claims["access"]
        )
        return BearerGrant(principal, RegistryId(str(claims["r"]), str(claims["g"])), scopes)


def _registry(value: Any) -> RegistryId | None:
    if isinstance(value, list) and len(value) == 2:
        return RegistryId(str(value[0]), str(value[1]))
    return None


def _expand(actions: frozenset[str]) -> frozenset[str]:
    if "*" in actions:
        return frozenset(SCOPE_ACTIONS)
    return frozenset(action for action in actions if action in SCOPE_ACTIONS)
