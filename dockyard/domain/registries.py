"""Registry-level settings of an account in a region: the registry policy and replication configuration.

Each is a JSON document kept verbatim in the metadata store under its kind.
"""

from __future__ import annotations

import json
from typing import Any, Final

from dockyard.domain.clock import Clock, utc_now
from dockyard.domain.errors import InvalidParameter, RegistryPolicyNotFound
from dockyard.domain.policies import Policy, PolicyInvalid
from dockyard.domain.ports import Document, DocumentStore

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


class Registries:
    def __init__(self, store: DocumentStore, clock: Clock = utc_now) -> None:
        self.store = store
        self.clock = clock

    def set_policy(self, account_id: str, region: str, text: str) -> str:
        try:
            policy = Policy.parse(text, kind="resource")
        except PolicyInvalid as error:
            raise InvalidParameter(f"Invalid registry policy provided: {error.message}") from None
        # Any other action, or a wildcard that covers others, is refused (action names are case-insensitive).
        stray = [action for action in policy.mentioned_actions() if action.lower() not in REGISTRY_POLICY_ACTIONS]
        if stray:
            raise InvalidParameter(
                "Invalid registry policy provided: a registry policy can only grant ecr:ReplicateImage, "
                f"ecr:BatchImportUpstreamImage and ecr:CreateRepository, not {', '.join(stray)}"
            )
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
