"""The Docker registry token flow: short-lived, scope-limited bearer tokens for clients that use it.

A client asks the token endpoint for scopes such as `repository:team/app:pull,push`; the answer grants
the intersection of what it asked and what IAM allows (granting fewer actions is not an error). The token is
signed (no per-process state) and names its grants; the registry door checks each request against them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from dockyard.domain.errors import Unauthorized
from dockyard.domain.iam import Principal
from dockyard.domain.names import RepositoryRef
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

    def render(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"


@dataclass(frozen=True)
class BearerGrant:
    principal: Principal | None
    registry_account: str
    scopes: tuple[Scope, ...]

    def allows(self, scope_type: str, name: str, action: str) -> bool:
        return any(
            s.type == scope_type and s.name == name and (action in s.actions or "*" in s.actions) for s in self.scopes
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
        registry_account: str,
        resolve: Callable[[str], RepositoryRef | None],
        requested: list[Scope],
        allowed: Allowed,
        allowed_catalog: Callable[[Principal | None], bool],
        now: datetime,
    ) -> tuple[str, datetime, list[Scope]]:
        """A token for the intersection of `requested` and what the principal may do."""
        granted = []
        for scope in requested:
            if scope.type == "registry":
                actions = frozenset(scope.actions if scope.name == "catalog" and allowed_catalog(principal) else ())
            else:
                ref = resolve(scope.name)
                actions = frozenset(
                    action
                    for action in _expand(scope.actions)
                    if ref is not None and all(allowed(principal, a, ref) for a in SCOPE_ACTIONS[action])
                )
            granted.append(Scope(scope.type, scope.name, actions))
        claims: dict[str, Any] = {
            "k": principal.access_key_id if principal else None,
            "r": registry_account,
            "access": [{"type": s.type, "name": s.name, "actions": sorted(s.actions)} for s in granted],
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
        scopes = tuple(
            Scope(str(item["type"]), str(item["name"]), frozenset(item["actions"])) for item in claims["access"]
        )
        return BearerGrant(principal, str(claims["r"]), scopes)


def _expand(actions: frozenset[str]) -> frozenset[str]:
    if "*" in actions:
        return frozenset(SCOPE_ACTIONS)
    return frozenset(action for action in actions if action in SCOPE_ACTIONS)
