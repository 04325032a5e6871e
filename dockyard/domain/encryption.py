"""Repository encryption as ECR defines it: `encryptionConfiguration` binds a repository to a key domain.

AES256 repositories share the registry-managed domain; a KMS (or KMS_DSSE) repository is bound at creation to
one key of the built-in key service (dockyard/domain/kms.py): the key it names (id, ARN, alias or alias ARN,
resolved to the key's ARN, which DescribeRepositories then shows), or the account's AWS-managed `aws/ecr` key
when it names none. The binding never changes (ECR's encryption configuration is immutable). Every data key of
the repository's blobs and manifests is then wrapped by that key, so disabling it makes the repository's
content unreadable (`KmsKeyUnusable`, nothing deleted) until it is enabled again.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, Protocol

from dockyard.domain.clock import utc_now
from dockyard.domain.errors import DockyardError, ErrorKind
from dockyard.domain.kms import KEY_KIND, MANAGED_ECR_ALIAS, KeyService, KmsKey, load_key
from dockyard.domain.kms import NotFound as KeyNotFound
from dockyard.domain.names import RepositoryRef
from dockyard.domain.ports import KeyDomain, RepositorySettings

KMS_TYPES: Final = frozenset({"KMS", "KMS_DSSE"})
SYSTEM_ACCOUNT: Final = "000000000000"
"""Owns the registry-managed storage key (no credentials, users or repositories: nobody can act as it)."""
STORAGE_KEY_REGION: Final = "dockyard"
STORAGE_KEY_ALIAS: Final = "alias/dockyard/storage"
BOUND_KEY_KIND: Final = "kms-bound-key:"  # registry documents naming every key a repository was bound to
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


@dataclass(frozen=True)
class KeyInfo:
    """What the registry needs of a key: its ARN, where it lives, its state, and the backend's own handle."""

    arn: str
    account_id: str
    region: str
    state: str  # Enabled, Disabled, PendingDeletion, …
    handle: object = None


class KeyBackend(Protocol):
    """Where customer keys live: the built-in key service, or an external KMS (`--kms-endpoint-url`).

    `describe` raises `KeyNotFound`; `encrypt`/`decrypt` raise `KeyDisabled`, `KeyInvalidState` or
    `InvalidCiphertext` as KMS does.
    """

    checks_account: bool
    """Whether a key must be in the repository's own account (the built-in service shares our account ids;
    an external KMS has accounts of its own)."""

    def describe(self, account_id: str, region: str, reference: str) -> KeyInfo: ...

    def default_key(self, account_id: str, region: str) -> KeyInfo:
        """The key for KMS repositories naming none (AWS's `aws/ecr`)."""
        ...

    def encrypt(self, key: KeyInfo, plaintext: bytes, context: dict[str, str]) -> bytes: ...

    def decrypt(self, key: KeyInfo, blob: bytes, context: dict[str, str]) -> bytes: ...


class BuiltInKeys:
    """`KeyBackend` over the built-in key service."""

    checks_account = True

    def __init__(self, service: KeyService) -> None:
        self.service = service

    def describe(self, account_id: str, region: str, reference: str) -> KeyInfo:
        return _info(self.service.get(account_id, region, reference))

    def default_key(self, account_id: str, region: str) -> KeyInfo:
        return _info(self.service.managed_key(account_id, region, MANAGED_ECR_ALIAS))

    def encrypt(self, key: KeyInfo, plaintext: bytes, context: dict[str, str]) -> bytes:
        return self.service.encrypt(_kms_key(key), plaintext, context)

    def decrypt(self, key: KeyInfo, blob: bytes, context: dict[str, str]) -> bytes:
        return self.service.decrypt_with(self.service.check_usable(_kms_key(key)), blob, context)


def _info(key: KmsKey) -> KeyInfo:
    return KeyInfo(key.arn, key.account_id, key.region, key.state, key)


def _kms_key(key: KeyInfo) -> KmsKey:
    assert isinstance(key.handle, KmsKey), "a built-in key's handle is its KmsKey"
    return key.handle


class RepositoryKeys:
    """Binds repositories to keys, and answers whether a bound key can be used right now.

    Customer keys come from `customer` (the built-in key service unless an external KMS is configured); the
    registry-managed storage key always lives in the built-in service. Key states are read through a short
    per-process cache (`KEY_STATE_TTL`), so a pull does not look the key up on every request while a state
    change still reaches every node within a second.
    """

    def __init__(
        self,
        keys: KeyService,
        ensure_account: Callable[[str], None] = lambda _account: None,
        customer: KeyBackend | None = None,
    ) -> None:
        self.keys = keys
        self.builtin = BuiltInKeys(keys)
        self.customer: KeyBackend = customer or self.builtin
        self._ensure_account = ensure_account
        self._storage_key: str | None = None
        self._monotonic = time.monotonic
        self._cache: dict[str, tuple[float, KeyInfo | DockyardError]] = {}
        self._lock = threading.Lock()
        keys.listeners.append(self.forget)

    def bind(self, ref: RepositoryRef, settings: RepositorySettings) -> RepositorySettings:
        """Settings with `kms_key` resolved to the ARN of a usable key in the repository's Region."""
        if settings.encryption_type not in KMS_TYPES:
            return settings
        try:
            key = self._named_key(ref, settings.kms_key) if settings.kms_key else self._default_key(ref)
        except KeyNotFound as error:
            raise KmsKeyUnusable(error.message, detail={"kmsError": "NotFoundException"}) from None
        if key.state != "Enabled":
            raise KmsKeyUnusable(
                f"KMS key {key.arn} is {key.state.lower()}: a repository can only be created with an enabled key",
                detail={"kmsError": "DisabledException" if key.state == "Disabled" else "KMSInvalidStateException"},
            )
        # Remembered so the garbage collector sweeps this key's domain even after its last repository is gone
        # (an external KMS's keys are known only through the repositories bound to them).
        kind = BOUND_KEY_KIND + hashlib.sha256(key.arn.encode()).hexdigest()[:32]  # kinds are at most 64 chars
        self.keys.store.put_registry_document(ref.account_id, ref.region, kind, key.arn, utc_now())
        return replace(settings, kms_key=key.arn)

    def usable_key(self, key_arn: str) -> KeyInfo:
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

    def backend_of(self, key_arn: str) -> KeyBackend:
        return self.builtin if _is_storage_key(key_arn) else self.customer

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
        """Every customer key of the built-in key service, whatever its state (domains that may hold content),
        and the keys repositories are bound to (an external KMS's keys are known only through them)."""
        documents = self.keys.store.list_registry_documents(None, None, KEY_KIND)
        builtin = {key.arn for key in (load_key(text) for _, text in documents) if key.account_id != SYSTEM_ACCOUNT}
        bound = {text for _, text in self.keys.store.list_registry_documents(None, None, BOUND_KEY_KIND)}
        return sorted(builtin | bound)

    def _default_key(self, ref: RepositoryRef) -> KeyInfo:
        return self.customer.default_key(ref.account_id, ref.region)

    def _named_key(self, ref: RepositoryRef, reference: str) -> KeyInfo:
        account, region = ref.account_id, ref.region
        if reference.startswith("arn:"):
            parts = reference.split(":", 5)
            if len(parts) != 6 or parts[2] != "kms":
                raise KmsKeyUnusable(f"{reference!r} is not a KMS key ARN", detail={"kmsError": "NotFoundException"})
            region, account = parts[3], parts[4]
        if region != ref.region or (self.customer.checks_account and account != ref.account_id):
            raise KmsKeyUnusable(
                f"KMS key {reference} must be in the repository's account {ref.account_id} and Region {ref.region}",
                detail={"kmsError": "NotFoundException"},
            )
        return self.customer.describe(account, region, reference)

    def _read_key(self, key_arn: str) -> KeyInfo | DockyardError:
        parts = key_arn.split(":", 5)
        try:
            key = self.backend_of(key_arn).describe(parts[4], parts[3], key_arn)
        except (KeyNotFound, IndexError):
            return KmsKeyUnusable(
                f"the repository's KMS key {key_arn} no longer exists", detail={"kmsError": "NotFoundException"}
            )
        if key.state == "Disabled":
            return KmsKeyUnusable(
                f"the repository's KMS key {key_arn} is disabled: enable it to read or write this repository",
                detail={"kmsError": "DisabledException"},
            )
        if key.state != "Enabled":
            return KmsKeyUnusable(
                f"the repository's KMS key {key_arn} is {key.state}: it must be enabled to read or write this "
                "repository",
                detail={"kmsError": "KMSInvalidStateException"},
            )
        return key


def _is_storage_key(key_arn: str) -> bool:
    return key_arn.startswith(f"arn:aws:kms:{STORAGE_KEY_REGION}:{SYSTEM_ACCOUNT}:key/")
