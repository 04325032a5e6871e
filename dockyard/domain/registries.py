"""Registry-level settings of an account in a region: the registry policy and replication configuration.

Each is a JSON document kept verbatim in the metadata store under its kind.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from dockyard.domain.cache import TtlCache
from dockyard.domain.clock import Clock, utc_now
from dockyard.domain.errors import InvalidParameter, RegistryPolicyNotFound
from dockyard.domain.names import ALIAS_RE, PUBLIC_REGION
from dockyard.domain.policies import Policy, PolicyInvalid
from dockyard.domain.ports import Document, DocumentStore

log = logging.getLogger("dockyard.registries")
# ECR's one sentence for any refused registry policy (scripts match it); what is wrong goes to the log.
INVALID_REGISTRY_POLICY: Final = (
    "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid registry policy provided'"
)

REGISTRY_POLICY: Final = "registry-policy"
REPLICATION: Final = "replication-configuration"
SCANNING: Final = "scanning-configuration"
# ECR honours only these actions in a registry policy (spec notes, section 9).
REGISTRY_POLICY_ACTIONS: Final = frozenset(
    {"ecr:ReplicateImage", "ecr:BatchImportUpstreamImage", "ecr:CreateRepository"}
)
_ALL_ECR_ACTIONS_SAMPLE: Final = (
    "ecr:BatchGetImage",
    "ecr:PutImage",
    "ecr:DeleteRepository",
    "ecr:GetAuthorizationToken",
)


PUBLIC_ALIAS: Final = "public-alias"


class Registries:
    def __init__(self, store: DocumentStore, clock: Clock = utc_now) -> None:
        self.store = store
        self.clock = clock
        # Alias -> account is read by every public pull; aliases change rarely.
        self._alias_owners: TtlCache[str | None] = TtlCache(5.0)

    # ------------------------------------------------------------------------------------ public registry

    def public_alias(self, account_id: str) -> str:
        """The account's public registry alias, given a default one (`r<account id>`) on first use."""
        document = self.store.get_registry_document(account_id, PUBLIC_REGION, PUBLIC_ALIAS)
        if document is not None:
            return document.text
        alias = f"r{account_id}"
        self.store.put_registry_document(account_id, PUBLIC_REGION, PUBLIC_ALIAS, alias, self.clock())
        return alias

    def set_public_alias(self, account_id: str, alias: str) -> str:
        if not ALIAS_RE.fullmatch(alias) or not 2 <= len(alias) <= 50:
            raise InvalidParameter(f"Invalid registry alias {alias!r}: 2-50 lowercase letters, digits, '.', '_', '-'")
        owner = self.store.find_registry_document(PUBLIC_REGION, PUBLIC_ALIAS, alias)
        if owner is not None and owner != account_id:
            raise InvalidParameter(f"The registry alias {alias!r} is already taken")
        self.store.put_registry_document(account_id, PUBLIC_REGION, PUBLIC_ALIAS, alias, self.clock())
        self._alias_owners.clear()
        return alias

    def account_for_alias(self, alias: str) -> str | None:
        owner = self._alias_owners.get_or_load(
            alias, lambda: self.store.find_registry_document(PUBLIC_REGION, PUBLIC_ALIAS, alias)
        )
        if owner is None:
            self._alias_owners.invalidate(alias)
        return owner

    def set_policy(self, account_id: str, region: str, text: str) -> str:
        try:
            policy = Policy.parse(text, kind="resource")
        except PolicyInvalid as error:
            log.info("registry policy of %s refused: %s", account_id, error.message)
            raise InvalidParameter(INVALID_REGISTRY_POLICY) from None
        # Any other action, or a wildcard that covers others, is refused (action names are case-insensitive).
        allowed = {action.lower() for action in REGISTRY_POLICY_ACTIONS}
        stray = [action for action in policy.mentioned_actions() if action.lower() not in allowed]
        if stray:
            log.info(
                "registry policy of %s refused: a registry policy can only grant ecr:ReplicateImage, "
                "ecr:BatchImportUpstreamImage and ecr:CreateRepository, not %s",
                account_id,
                ", ".join(stray),
            )
            raise InvalidParameter(INVALID_REGISTRY_POLICY)
        self.store.put_registry_document(account_id, region, REGISTRY_POLICY, text, self.clock())
        return text

    def policy(self, account_id: str, region: str) -> Document:
        document = self.store.get_registry_document(account_id, region, REGISTRY_POLICY)
        if document is None:
            raise RegistryPolicyNotFound(f"Registry policy does not exist in the registry with id '{account_id}'")
        return document

    def delete_policy(self, account_id: str, region: str) -> Document:
        document = self.policy(account_id, region)
        self.store.delete_registry_document(account_id, region, REGISTRY_POLICY)
        return document

    def set_configuration(self, account_id: str, region: str, kind: str, value: dict[str, Any]) -> dict[str, Any]:
        self.store.put_registry_document(account_id, region, kind, json.dumps(value), self.clock())
        return value

    def configuration(self, account_id: str, region: str, kind: str, default: dict[str, Any]) -> dict[str, Any]:
        document = self.store.get_registry_document(account_id, region, kind)
        if document is None:
            return default
        value: dict[str, Any] = json.loads(document.text)
        return value
