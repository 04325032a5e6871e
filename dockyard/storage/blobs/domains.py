"""Blob stores per key domain: the registry-managed domain and one per customer (KMS) key.

Each domain is its own namespace in the underlying storage (the default domain at the root, a KMS key's
under `domains/kms-<key id>/`), so deduplication never crosses keys: a blob pushed to a repository on key A is
stored, and readable, only under A's data keys; a repository on key B gets its own copy, encrypted under B.
KMS domains are always encrypted, whatever `--encrypt-at-rest` says, since their owner asked for a key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Final

from dockyard.domain.encryption import STORAGE_KEY_REGION, SYSTEM_ACCOUNT, KmsKeyUnusable, RepositoryKeys
from dockyard.domain.kms import Disabled as KeyDisabled
from dockyard.domain.kms import InvalidCiphertext
from dockyard.domain.kms import InvalidState as KeyInvalidState
from dockyard.domain.kms import NotFound as KeyNotFound
from dockyard.domain.ports import BlobStore, KeyDomain, LeftoverSweeper
from dockyard.storage.blobs.encrypted import BlobCorrupted, DataKeyProvider, DataKeyUnavailable, EncryptedBlobStore

DOMAINS_FOLDER: Final = "domains"


class KmsDataKeys:
    """Data keys wrapped by one key of the key service (its Encrypt/Decrypt, as ECR uses AWS KMS).

    The encryption context names the domain, so a wrapped key cannot be replayed under another purpose.
    """

    def __init__(self, keys: RepositoryKeys, key_arn: str) -> None:
        self.keys = keys
        self.key_arn = key_arn
        self._context = {"dockyard:blob-domain": KeyDomain(key_arn).name}

    def current_key_id(self) -> str:
        return self.key_arn

    def wrap(self, plaintext_key: bytes, key_id: str) -> bytes:
        key_id = self._own(key_id)
        key = self.keys.usable_key(key_id)
        return self._translated(lambda: self.keys.backend_of(key_id).encrypt(key, plaintext_key, self._context))

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        key_id = self._own(key_id)
        key = self.keys.usable_key(key_id)
        return self._translated(lambda: self.keys.backend_of(key_id).decrypt(key, wrapped, self._context))

    def _translated(self, call: Callable[[], bytes]) -> bytes:
        """KMS answers as the registry's errors: a state changed since the cached check, or a forged key."""
        try:
            return call()
        except InvalidCiphertext:
            raise BlobCorrupted("the wrapped data key failed verification under its KMS key") from None
        except (KeyDisabled, KeyInvalidState, KeyNotFound) as error:
            self.keys.forget(self.key_arn)
            raise KmsKeyUnusable(error.message, detail={"kmsError": error.ecr_exception}) from None

    def _own(self, key_id: str) -> str:
        if key_id != self.key_arn:
            raise DataKeyUnavailable(f"content of this domain names key {key_id!r}, not the domain's {self.key_arn}")
        return key_id


class StorageDataKeys(KmsDataKeys):
    """The default (AES256) domain's data keys, wrapped by the registry-managed storage key.

    Any storage key the key service holds unwraps (nodes racing at first start may each have made one).
    """

    def __init__(self, keys: RepositoryKeys) -> None:
        self.keys = keys
        self._context = {"dockyard:blob-domain": KeyDomain().name}

    def current_key_id(self) -> str:
        return self.keys.storage_key_arn()

    def _own(self, key_id: str) -> str:
        if not key_id.startswith(f"arn:aws:kms:{STORAGE_KEY_REGION}:{SYSTEM_ACCOUNT}:key/"):
            raise DataKeyUnavailable(f"content of the default domain names key {key_id!r}, not a storage key")
        return key_id


class KeyDomainStores:
    """`BlobStores` over one storage location: a cached store per domain, made on first use."""

    def __init__(
        self,
        raw: Callable[[str | None], BlobStore],
        repository_keys: RepositoryKeys | None,
        default_keys: DataKeyProvider | None,
    ) -> None:
        """`raw(None)` is the storage root, `raw("domains/<name>")` a domain's namespace; `default_keys` None
        leaves the default domain in plain text; `repository_keys` None refuses KMS domains."""
        self._raw = raw
        self._repository_keys = repository_keys
        self._default = raw(None) if default_keys is None else EncryptedBlobStore(raw(None), default_keys)
        self._stores: dict[str, BlobStore] = {}
        self._lock = threading.Lock()

    @property
    def default(self) -> BlobStore:
        return self._default

    def store(self, domain: KeyDomain) -> BlobStore:
        if domain.kms_key_arn is None:
            return self._default
        with self._lock:
            store = self._stores.get(domain.name)
            if store is None:
                inner = self._raw(f"{DOMAINS_FOLDER}/{domain.name}")
                store = EncryptedBlobStore(inner, KmsDataKeys(self._keys(), domain.kms_key_arn))
                self._stores[domain.name] = store
        return store

    def check_usable(self, domain: KeyDomain) -> None:
        if domain.kms_key_arn is not None:
            self._keys().usable_key(domain.kms_key_arn)

    def domains(self) -> list[KeyDomain]:
        arns = self._repository_keys.key_arns() if self._repository_keys is not None else []
        return [KeyDomain(), *(KeyDomain(arn) for arn in arns)]

    def sweep_leftovers(
        self, domain: KeyDomain, written_before: datetime, is_live_upload: Callable[[str], bool]
    ) -> int:
        # The raw store beneath any encryption: leftovers are files, whatever their bytes are.
        raw = self._raw(None if domain.kms_key_arn is None else f"{DOMAINS_FOLDER}/{domain.name}")
        return raw.sweep_leftovers(written_before, is_live_upload) if isinstance(raw, LeftoverSweeper) else 0

    def _keys(self) -> RepositoryKeys:
        if self._repository_keys is None:
            raise DataKeyUnavailable("this server has no key service for KMS-encrypted repositories")
        return self._repository_keys


def single_domain(store: BlobStore) -> KeyDomainStores:
    """Every domain on one store, for tools and tests that need no key service (KMS domains are refused)."""
    return KeyDomainStores(lambda _subspace: store, None, None)
