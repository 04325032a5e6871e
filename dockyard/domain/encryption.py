"""Repository encryption as ECR defines it: `encryptionConfiguration` binds a repository to a key domain.

AES256 repositories share the registry-managed domain; a KMS (or KMS_DSSE) repository is bound at creation to
one key of the built-in key service (dockyard/domain/kms.py): the key it names (id, ARN, alias or alias ARN,
resolved to the key's ARN, which DescribeRepositories then shows), or the account's AWS-managed `aws/ecr` key
when it names none. The binding never changes (ECR's encryption configuration is immutable). Every data key of
the repository's blobs and manifests is then wrapped by that key, so disabling it makes the repository's
content unreadable (`KmsKeyUnusable`, nothing deleted) until it is enabled again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from dockyard.domain.errors import DockyardError, ErrorKind
from dockyard.domain.kms import KEY_KIND, MANAGED_ECR_ALIAS, KeyService, KmsKey, load_key
from dockyard.domain.kms import Disabled as KeyDisabled
from dockyard.domain.kms import InvalidState as KeyInvalidState
from dockyard.domain.kms import NotFound as KeyNotFound
from dockyard.domain.names import RepositoryRef
from dockyard.domain.ports import KeyDomain, RepositorySettings

KMS_TYPES: Final = frozenset({"KMS", "KMS_DSSE"})
SYSTEM_ACCOUNT: Final = "000000000000"
"""Owns the registry-managed storage key (no credentials, users or repositories: nobody can act as it)."""
STORAGE_KEY_REGION: Final = "dockyard"
STORAGE_KEY_ALIAS: Final = "alias/dockyard/storage"
KEY_STATE_TTL: Final = 1.0
"""Seconds a node trusts the key state it read: a key disabled on one node stops reads everywhere within it."""


class KmsKeyUnusable(DockyardError):
    """The repository's key is disabled, pending deletion or gone: its content can be neither read nor written."""

    kind = ErrorKind("DENIED", 403, "KmsException", "the repository's KMS key cannot be used")


def key_domain(settings: RepositorySettings) -> KeyDomain:
    """The domain a repository's content lives in: its KMS key's, or the registry-managed one."""
    if settings.encryption_type in KMS_TYPES and settings.kms_key:
        return KeyDomain(settings.kms_key)
    return KeyDomain()


class RepositoryKeys:
    """Binds repositories to keys, and answers whether a bound key can be used right now.

    Key states are read through a short per-process cache (`KEY_STATE_TTL`), so a pull does not read the
    key's document on every request while a state change still reaches every node within a second.
    """

    def __init__(self, keys: KeyService, ensure_account: Callable[[str], None] = lambda _account: None) -> None:
        self.keys = keys
        self._ensure_account = ensure_account
        self._storage_key: str | None = None
        self._monotonic = time.monotonic
        self._cache: dict[str, tuple[float, KmsKey | DockyardError]] = {}
        self._lock = threading.Lock()
        keys.listeners.append(self.forget)

    def bind(self, ref: RepositoryRef, settings: RepositorySettings) -> RepositorySettings:
        """Settings with `kms_key` resolved to the ARN of a usable key in the repository's account and region."""
        if settings.encryption_type not in KMS_TYPES:
            return settings
        if settings.kms_key:
            key = self._named_key(ref, settings.kms_key)
        else:
            key = self.keys.managed_key(ref.account_id, ref.region, MANAGED_ECR_ALIAS)
        if key.state != "Enabled":
            raise KmsKeyUnusable(
                f"KMS key {key.arn} is {key.state.lower()}: a repository can only be created with an enabled key",
                detail={"kmsError": "DisabledException" if key.state == "Disabled" else "KMSInvalidStateException"},
            )
        return replace(settings, kms_key=key.arn)

    def usable_key(self, key_arn: str) -> KmsKey:
        """The key behind `key_arn` when it is enabled; `KmsKeyUnusable` otherwise."""
        now = self._monotonic()
        with self._lock:
            cached = self._cache.get(key_arn)
        if cached is None or cached[0] <= now:
            cached = (now + KEY_STATE_TTL, self._read_key(key_arn))
            with self._lock:
                self._cache[key_arn] = cached
        outcome = cached[1]
        if isinstance(outcome, DockyardError):
            raise outcome
        return outcome

    def storage_key_arn(self) -> str:
        """The registry-managed key that wraps the data keys of AES256 repositories (made on first use).

        Its material is sealed by the master key like every key's, so rotating the master key re-seals it
        and no blob is touched. Nodes racing at first use may each make one; every object names the key that
        wrapped it, so both stay readable.
        """
        if self._storage_key is None:
            self._ensure_account(SYSTEM_ACCOUNT)
            key = self.keys.managed_key(SYSTEM_ACCOUNT, STORAGE_KEY_REGION, STORAGE_KEY_ALIAS)
            self._storage_key = key.arn
        return self._storage_key

    def forget(self, key_arn: str) -> None:
        """Drop the cached state (this node just changed the key)."""
        with self._lock:
            self._cache.pop(key_arn, None)

    def key_arns(self) -> list[str]:
        """Every key of the key service, whatever its state (the domains that may hold content)."""
        documents = self.keys.store.list_registry_documents(None, None, KEY_KIND)
        return sorted(
            key.arn for key in map(load_key, (text for _, text in documents)) if key.account_id != SYSTEM_ACCOUNT
        )

    def _named_key(self, ref: RepositoryRef, reference: str) -> KmsKey:
        account, region = ref.account_id, ref.region
        if reference.startswith("arn:"):
            parts = reference.split(":", 5)
            if len(parts) != 6 or parts[2] != "kms":
                raise KmsKeyUnusable(f"{reference!r} is not a KMS key ARN", detail={"kmsError": "NotFoundException"})
            region, account = parts[3], parts[4]
        if (account, region) != (ref.account_id, ref.region):
            raise KmsKeyUnusable(
                f"KMS key {reference} must be in the repository's account {ref.account_id} and Region {ref.region}",
                detail={"kmsError": "NotFoundException"},
            )
        try:
            return self.keys.get(account, region, reference)
        except KeyNotFound as error:
            raise KmsKeyUnusable(error.message, detail={"kmsError": "NotFoundException"}) from None

    def _read_key(self, key_arn: str) -> KmsKey | DockyardError:
        parts = key_arn.split(":", 5)
        try:
            key = self.keys.get(parts[4], parts[3], key_arn)
            self.keys.check_usable(key)
        except (KeyNotFound, IndexError):
            return KmsKeyUnusable(
                f"the repository's KMS key {key_arn} no longer exists", detail={"kmsError": "NotFoundException"}
            )
        except KeyDisabled:
            return KmsKeyUnusable(
                f"the repository's KMS key {key_arn} is disabled: enable it to read or write this repository",
                detail={"kmsError": "DisabledException"},
            )
        except KeyInvalidState:
            return KmsKeyUnusable(
                f"the repository's KMS key {key_arn} is pending deletion: cancel the deletion and enable it",
                detail={"kmsError": "KMSInvalidStateException"},
            )
        return key
