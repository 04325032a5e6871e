"""A registry's account settings (GetAccountSetting / PutAccountSetting) and its pull-time update exclusions.

Both live per account and region (a registry), as registry documents: one per setting, one per excluded
principal (`create_registry_document` inserts only when absent, so two concurrent registrations of one principal
cannot both succeed). Both are read on hot paths (a blob mount on push, a manifest GET): the values are cached
per registry for `SETTINGS_TTL` seconds. Writes through this process are seen at once; another node sees them
within that time, like IAM policy changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from dockyard.domain.cache import TtlCache
from dockyard.domain.clock import Clock, utc_now
from dockyard.domain.errors import (
    ExclusionAlreadyExists,
    ExclusionNotFound,
    InvalidParameter,
    LimitExceeded,
    Validation,
)
from dockyard.domain.ports import DocumentStore

SETTINGS_TTL: Final = 5.0
BASIC_SCAN_TYPE_VERSION: Final = "BASIC_SCAN_TYPE_VERSION"
REGISTRY_POLICY_SCOPE: Final = "REGISTRY_POLICY_SCOPE"
BLOB_MOUNTING: Final = "BLOB_MOUNTING"


@dataclass(frozen=True)
class SettingRule:
    default: str
    values: tuple[str, ...]  # what PutAccountSetting accepts


# ECR's names and values (API reference, PutAccountSetting).
# - BASIC_SCAN_TYPE_VERSION: which engine basic scanning uses. Dockyard has one scanner (OSV advisories), which
#   serves either value; the choice is kept and reported as ECR keeps it.
# - REGISTRY_POLICY_SCOPE: Dockyard enforces the V1 scope (a registry policy grants only ReplicateImage,
#   BatchImportUpstreamImage and CreateRepository, see registries.py); V2 (the registry policy evaluated on every
#   ECR request) is not built, so it is refused rather than recorded and silently not enforced.
# - BLOB_MOUNTING: ECR made cross-repository blob mounting an opt-in (its default is DISABLED). Dockyard has
#   always mounted, and the OCI spec lets a registry mount; turning it off by default would make every existing
#   deployment store shared layers again, so Dockyard's default stays ENABLED (a deliberate difference).
RULES: Final[dict[str, SettingRule]] = {
    BASIC_SCAN_TYPE_VERSION: SettingRule("AWS_NATIVE", ("AWS_NATIVE", "CLAIR")),
    REGISTRY_POLICY_SCOPE: SettingRule("V1", ("V1",)),
    BLOB_MOUNTING: SettingRule("ENABLED", ("ENABLED", "DISABLED")),
}
_SETTING_KIND: Final = "account-setting/"
_EXCLUSION_KIND: Final = "pull-time-exclusion/"
# ECR's ListPullTimeUpdateExclusions lists at most 100 principals (PullTimeUpdateExclusionList, max 100).
MAX_EXCLUSIONS: Final = 100


@dataclass(frozen=True)
class PullTimeExclusion:
    principal_arn: str
    created_at: datetime


class AccountSettings:
    def __init__(self, store: DocumentStore, clock: Clock = utc_now) -> None:
        self.store = store
        self.clock = clock
        self._values: TtlCache[dict[str, str]] = TtlCache(SETTINGS_TTL)
        self._excluded: TtlCache[frozenset[str]] = TtlCache(SETTINGS_TTL)

    # ------------------------------------------------------------------------------------------ settings

    def get(self, account_id: str, region: str, name: str) -> str:
        return self._settings(account_id, region).get(name) or _rule(name).default

    def put(self, account_id: str, region: str, name: str, value: str) -> str:
        rule = _rule(name)
        if value not in rule.values:
            if name == REGISTRY_POLICY_SCOPE:
                raise InvalidParameter(
                    f"Invalid parameter at 'value' failed to satisfy constraint: '{value}': this registry enforces "
                    "the V1 registry policy scope (ReplicateImage, BatchImportUpstreamImage, CreateRepository) only"
                )
            raise InvalidParameter(
                f"Invalid parameter at 'value' failed to satisfy constraint: 'Value {value} for setting {name} must "
                f"be one of [{', '.join(rule.values)}]'"
            )
        self.store.put_registry_document(account_id, region, _SETTING_KIND + name, value, self.clock())
        self._values.invalidate((account_id, region))
        return value

    def blob_mounting(self, account_id: str, region: str) -> bool:
        """Whether a push into this registry may mount a blob from another of its repositories."""
        return self.get(account_id, region, BLOB_MOUNTING) == "ENABLED"

    def _settings(self, account_id: str, region: str) -> dict[str, str]:
        def load() -> dict[str, str]:
            found = self.store.list_registry_documents(account_id, region, _SETTING_KIND)
            return {kind.removeprefix(_SETTING_KIND): text for kind, text in found}

        return self._values.get_or_load((account_id, region), load)

    # ------------------------------------------------------------------------------------------ exclusions

    def register_exclusion(self, account_id: str, region: str, principal_arn: str) -> PullTimeExclusion:
        if len(self.exclusions(account_id, region)) >= MAX_EXCLUSIONS:
            raise LimitExceeded(
                f"The registry with id '{account_id}' already has {MAX_EXCLUSIONS} pull time update exclusions"
            )
        now = self.clock()
        text = json.dumps({"principalArn": principal_arn, "createdAt": now.isoformat()})
        created = self.store.create_registry_document(account_id, region, _exclusion_kind(principal_arn), text, now)
        self._excluded.invalidate((account_id, region))
        if not created:
            raise ExclusionAlreadyExists(
                f"The pull time update exclusion for the principal '{principal_arn}' already exists in the "
                f"registry with id '{account_id}'"
            )
        return PullTimeExclusion(principal_arn, now)

    def deregister_exclusion(self, account_id: str, region: str, principal_arn: str) -> None:
        removed = self.store.delete_registry_document(account_id, region, _exclusion_kind(principal_arn))
        self._excluded.invalidate((account_id, region))
        if not removed:
            raise ExclusionNotFound(
                f"The pull time update exclusion for the principal '{principal_arn}' does not exist in the "
                f"registry with id '{account_id}'"
            )

    def exclusions(self, account_id: str, region: str) -> list[PullTimeExclusion]:
        """Every excluded principal of the registry, by ARN."""
        found = []
        for _, text in self.store.list_registry_documents(account_id, region, _EXCLUSION_KIND):
            document = json.loads(text)
            found.append(PullTimeExclusion(document["principalArn"], datetime.fromisoformat(document["createdAt"])))
        return sorted(found, key=lambda exclusion: exclusion.principal_arn)

    def pull_time_excluded(self, account_id: str, region: str, principal_arn: str | None) -> bool:
        """Whether a pull by this principal leaves lastRecordedPullTime alone (cached: it is on the pull path)."""
        if principal_arn is None:
            return False
        excluded = self._excluded.get_or_load(
            (account_id, region),
            lambda: frozenset(exclusion.principal_arn for exclusion in self.exclusions(account_id, region)),
        )
        return principal_arn in excluded


def _rule(name: str) -> SettingRule:
    rule = RULES.get(name)
    if rule is None:
        raise Validation(
            f"1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: Member must "
            f"satisfy enum value set: [{', '.join(sorted(RULES))}]"
        )
    return rule


def _exclusion_kind(principal_arn: str) -> str:
    """A document kind naming the principal: ARNs run to 200 characters, kinds to 64, so a digest of it."""
    return _EXCLUSION_KIND + hashlib.sha256(principal_arn.encode()).hexdigest()[:40]
