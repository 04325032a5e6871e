"""Rotating the master key: re-seal what it seals, touch no blob.

The master key seals two kinds of secrets in the metadata store: access-key secrets and the material of every
key of the key service (customer KMS keys, the AWS-managed `aws/ecr` keys and the registry-managed storage key).
Blob and manifest data keys are wrapped by those keys, never by the master key itself, so re-sealing the key
material under a new master key re-keys the whole registry without reading or rewriting a single blob.
Everything is re-sealed in one transaction: the metadata opens with either the old key or the new one, never
with a mix. Login tokens (GetAuthorizationToken) and bearer tokens are signed with keys derived from the master
key, so those outstanding become invalid (clients run `docker login` again).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dockyard.domain.keys import SecretBox, WrongMasterKey
from dockyard.domain.kms import KEY_KIND, dump_key, load_key
from dockyard.domain.ports import CredentialStore, MetadataStore


@dataclass(frozen=True)
class ResealReport:
    secrets: int
    keys: int


def reseal_with(store: CredentialStore, old: SecretBox, new: SecretBox) -> ResealReport:
    """Re-seal every secret sealed with `old` under `new` (raises `WrongMasterKey` if `old` is not the one)."""

    def secret(sealed: str) -> str:
        return new.seal(old.open(sealed))

    def key_document(text: str) -> str:
        key = load_key(text)
        return dump_key(replace(key, materials=tuple(secret(material) for material in key.materials)))

    secrets, keys = store.reseal(secret, KEY_KIND, key_document)
    return ResealReport(secrets, keys)


def sealed_sample(store: MetadataStore) -> str | None:
    """One sealed secret of the store (to tell which master key it opens with), None when nothing is sealed."""
    for account in store.list_accounts():
        for key_id in store.root_credential_ids(account):
            credential = store.get_credential(key_id)
            if credential is not None:
                return credential.sealed_secret
    for _, text in store.list_registry_documents(None, None, KEY_KIND):
        return load_key(text).materials[0]
    return None


def opens_with(box: SecretBox, sample: str | None) -> bool:
    """Whether `sample` (see `sealed_sample`) opens with `box`; True when there is nothing sealed yet."""
    if sample is None:
        return True
    try:
        box.open(sample)
    except WrongMasterKey:
        return False
    return True
