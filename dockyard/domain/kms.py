"""A KMS-compatible key service: customer keys whose material never leaves the service in the clear.

Key material is sealed with the registry's master key and kept (with the key's metadata) as a registry
document per key; aliases likewise. Ciphertext blobs name their key and material version, so rotation adds a
version and old blobs still decrypt. Disabling a key makes everything under it unreadable until re-enabled;
scheduled deletion waits 7-30 days, as AWS KMS does.

Ciphertext blob: b"DKY1" | key id (36 ASCII) | material version (2 bytes, big-endian) | nonce (12) | AES-GCM
ciphertext+tag, with the key id and the encryption context as associated data.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dockyard.domain.clock import Clock, utc_now
from dockyard.domain.errors import DockyardError, ErrorKind
from dockyard.domain.keys import SecretBox
from dockyard.domain.policies import Policy, PolicyInvalid
from dockyard.domain.ports import DocumentStore

KEY_KIND: Final = "kms-key:"
ALIAS_KIND: Final = "kms-alias:"
_MAGIC: Final = b"DKY1"
_NONCE: Final = 12
_ALIAS_PREFIX: Final = "alias/"
MANAGED_ECR_ALIAS: Final = "alias/aws/ecr"  # the AWS-managed key ECR uses for KMS repositories naming none


def _kind(code: str, status: int, message: str) -> ErrorKind:
    return ErrorKind("DENIED", status, code, message)


class NotFound(DockyardError):
    kind = _kind("NotFoundException", 400, "the key does not exist")


class Disabled(DockyardError):
    kind = _kind("DisabledException", 400, "the key is disabled")


class InvalidState(DockyardError):
    kind = _kind("KMSInvalidStateException", 400, "the key is not in a valid state for this operation")


class InvalidCiphertext(DockyardError):
    kind = _kind("InvalidCiphertextException", 400, "the ciphertext is invalid")


class AlreadyExists(DockyardError):
    kind = _kind("AlreadyExistsException", 400, "the resource already exists")


class InvalidAliasName(DockyardError):
    kind = _kind("InvalidAliasNameException", 400, "the alias name is not valid")


class MalformedKeyPolicy(DockyardError):
    kind = _kind("MalformedPolicyDocumentException", 400, "the key policy is malformed")


class KmsValidation(DockyardError):
    kind = _kind("ValidationException", 400, "the request is invalid")


@dataclass(frozen=True)
class KmsKey:
    key_id: str
    account_id: str
    region: str
    description: str
    state: str  # Enabled, Disabled, PendingDeletion
    created_at: datetime
    policy: str
    materials: tuple[str, ...]  # sealed material, version n at index n-1
    rotation_enabled: bool = False
    rotation_period_days: int = 365
    last_rotated_at: datetime | None = None
    deletion_date: datetime | None = None
    aliases: tuple[str, ...] = field(default=())

    @property
    def arn(self) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:key/{self.key_id}"


def default_policy(account_id: str) -> str:
    """AWS's default key policy: the account (through IAM) controls the key."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        }
    )


class KeyService:
    def __init__(self, store: DocumentStore, box: SecretBox, clock: Clock = utc_now) -> None:
        self.store = store
        self.box = box
        self.clock = clock
        self.listeners: list[Callable[[str], None]] = []  # told the ARN of every key this process changes

    # ------------------------------------------------------------------------------------ keys

    def create_key(self, account_id: str, region: str, description: str = "", policy: str | None = None) -> KmsKey:
        policy = policy or default_policy(account_id)
        _check_policy(policy)
        key = KmsKey(
            key_id=str(uuid.uuid4()),
            account_id=account_id,
            region=region,
            description=description,
            state="Enabled",
            created_at=self.clock(),
            policy=policy,
            materials=(self._new_material(),),
        )
        self._save(key)
        return key

    def get(self, account_id: str, region: str, reference: str) -> KmsKey:
        """A key by id, key ARN, alias name or alias ARN; a key whose deletion date passed is gone."""
        key_id = self._resolve(account_id, region, reference)
        document = self.store.get_registry_document(account_id, region, KEY_KIND + key_id)
        if document is None:
            raise NotFound(f"Key '{reference}' does not exist")
        key = load_key(document.text)
        if key.deletion_date is not None and key.deletion_date <= self.clock():
            raise NotFound(f"Key '{key.arn}' was deleted")
        return key

    def list_keys(self, account_id: str, region: str) -> list[KmsKey]:
        keys = [load_key(text) for _, text in self.store.list_registry_documents(account_id, region, KEY_KIND)]
        now = self.clock()
        return sorted((k for k in keys if k.deletion_date is None or k.deletion_date > now), key=lambda k: k.key_id)

    def set_enabled(self, key: KmsKey, enabled: bool) -> KmsKey:
        if key.state == "PendingDeletion":
            raise InvalidState(f"{key.arn} is pending deletion.")
        return self._save(replace(key, state="Enabled" if enabled else "Disabled"))

    def schedule_deletion(self, key: KmsKey, days: int) -> KmsKey:
        if not 7 <= days <= 30:
            raise KmsValidation("PendingWindowInDays must be between 7 and 30")
        return self._save(replace(key, state="PendingDeletion", deletion_date=self.clock() + timedelta(days=days)))

    def cancel_deletion(self, key: KmsKey) -> KmsKey:
        if key.state != "PendingDeletion":
            raise InvalidState(f"{key.arn} is not pending deletion.")
        return self._save(replace(key, state="Disabled", deletion_date=None))

    def put_policy(self, key: KmsKey, policy: str) -> KmsKey:
        _check_policy(policy)
        return self._save(replace(key, policy=policy))

    def set_rotation(self, key: KmsKey, enabled: bool, period_days: int | None = None) -> KmsKey:
        usable = self.check_usable(key)
        return self._save(replace(usable, rotation_enabled=enabled, rotation_period_days=period_days or 365))

    def rotate(self, key: KmsKey) -> KmsKey:
        """New material for new ciphertexts; older versions stay to decrypt what they encrypted."""
        usable = self.check_usable(key)
        materials = (*usable.materials, self._new_material())
        return self._save(replace(usable, materials=materials, last_rotated_at=self.clock()))

    def rotate_due(self) -> int:
        """Automatic rotation of every enabled key whose period has passed (run daily by the scheduler)."""
        now = self.clock()
        rotated = 0
        for _, text in self.store.list_registry_documents(None, None, KEY_KIND):
            key = load_key(text)
            since = key.last_rotated_at or key.created_at
            if key.rotation_enabled and key.state == "Enabled" and now - since >= timedelta(key.rotation_period_days):
                self.rotate(key)
                rotated += 1
        return rotated

    def managed_key(self, account_id: str, region: str, alias: str) -> KmsKey:
        """The AWS-managed key behind `alias` (e.g. alias/aws/ecr), created on first use as AWS does.

        Two nodes creating it at once each make a key and the alias ends on one of them; a repository bound
        to the other keeps working (repositories are bound by key ARN, not by alias).
        """
        document = self.store.get_registry_document(account_id, region, ALIAS_KIND + alias)
        if document is not None:
            return self.get(account_id, region, document.text)
        key = self.create_key(account_id, region, f"Default key that protects my {alias.rsplit('/', 1)[-1]} data")
        self.store.put_registry_document(account_id, region, ALIAS_KIND + alias, key.key_id, self.clock())
        return key

    # ------------------------------------------------------------------------------------ aliases

    def create_alias(self, account_id: str, region: str, alias: str, target: str) -> None:
        if not alias.startswith(_ALIAS_PREFIX) or alias.startswith("alias/aws/") or len(alias) > 256:
            raise InvalidAliasName(f"Alias must start with 'alias/' and not with 'alias/aws/': {alias!r}")
        key = self.get(account_id, region, target)
        if self.store.get_registry_document(account_id, region, ALIAS_KIND + alias) is not None:
            raise AlreadyExists(f"An alias with the name {alias} already exists")
        self.store.put_registry_document(account_id, region, ALIAS_KIND + alias, key.key_id, self.clock())

    def list_aliases(self, account_id: str, region: str) -> list[tuple[str, str]]:
        """(alias name, key id) pairs."""
        documents = self.store.list_registry_documents(account_id, region, ALIAS_KIND)
        return sorted((kind.removeprefix(ALIAS_KIND), text) for kind, text in documents)

    # ------------------------------------------------------------------------------------ cryptography

    def generate_data_key(self, key: KmsKey, size: int, context: dict[str, str]) -> tuple[bytes, bytes]:
        """A fresh data key: (plaintext, ciphertext blob under `key`)."""
        plaintext = os.urandom(size)
        return plaintext, self.encrypt(key, plaintext, context)

    def encrypt(self, key: KmsKey, plaintext: bytes, context: dict[str, str]) -> bytes:
        usable = self.check_usable(key)
        version = len(usable.materials)
        nonce = os.urandom(_NONCE)
        aead = AESGCM(self._material(usable, version))
        sealed = aead.encrypt(nonce, plaintext, _aad(usable.key_id, context))
        return _MAGIC + usable.key_id.encode() + version.to_bytes(2, "big") + nonce + sealed

    def decrypt(self, account_id: str, region: str, blob: bytes, context: dict[str, str]) -> tuple[KmsKey, bytes]:
        key = self.check_usable(self.get(account_id, region, _ciphertext_key_id(blob)))
        return key, self.decrypt_with(key, blob, context)

    def decrypt_with(self, key: KmsKey, blob: bytes, context: dict[str, str]) -> bytes:
        """Decrypt a ciphertext blob of `key` (already looked up and checked usable by the caller)."""
        if _ciphertext_key_id(blob) != key.key_id:
            raise InvalidCiphertext("The ciphertext was not encrypted under this key")
        version = int.from_bytes(blob[40:42], "big")
        if not 1 <= version <= len(key.materials):
            raise InvalidCiphertext("The ciphertext names a key material version that does not exist")
        nonce, sealed = blob[42 : 42 + _NONCE], blob[42 + _NONCE :]
        try:
            return AESGCM(self._material(key, version)).decrypt(nonce, sealed, _aad(key.key_id, context))
        except InvalidTag:
            raise InvalidCiphertext("The ciphertext or its encryption context is not valid") from None

    # ------------------------------------------------------------------------------------ helpers

    def check_usable(self, key: KmsKey) -> KmsKey:
        if key.state == "Disabled":
            raise Disabled(f"{key.arn} is disabled.")
        if key.state == "PendingDeletion":
            raise InvalidState(f"{key.arn} is pending deletion.")
        return key

    def _resolve(self, account_id: str, region: str, reference: str) -> str:
        if reference.startswith("arn:"):
            reference = reference.split(":", 5)[-1]
            reference = reference.removeprefix("key/")
        if reference.startswith(_ALIAS_PREFIX):
            document = self.store.get_registry_document(account_id, region, ALIAS_KIND + reference)
            if document is None:
                raise NotFound(f"Alias '{reference}' is not found.")
            return document.text
        try:
            return str(uuid.UUID(reference))
        except ValueError:
            raise NotFound(f"Invalid keyId '{reference}'") from None

    def _new_material(self) -> str:
        return self.box.seal(os.urandom(32).hex())

    def _material(self, key: KmsKey, version: int) -> bytes:
        return bytes.fromhex(self.box.open(key.materials[version - 1]))

    def _save(self, key: KmsKey) -> KmsKey:
        self.store.put_registry_document(key.account_id, key.region, KEY_KIND + key.key_id, dump_key(key), self.clock())
        for listener in self.listeners:
            listener(key.arn)
        return key


def _ciphertext_key_id(blob: bytes) -> str:
    if len(blob) < 4 + 36 + 2 + _NONCE + 16 or not blob.startswith(_MAGIC):
        raise InvalidCiphertext("The ciphertext is not one this service produced")
    return blob[4:40].decode("ascii", "replace")


def _aad(key_id: str, context: dict[str, str]) -> bytes:
    return key_id.encode() + b"\n" + json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


def _check_policy(text: str) -> None:
    try:
        Policy.parse(text, kind="resource")
    except PolicyInvalid as error:
        raise MalformedKeyPolicy(error.message) from None


def dump_key(key: KmsKey) -> str:
    data: dict[str, Any] = asdict(key)
    for name in ("created_at", "last_rotated_at", "deletion_date"):
        data[name] = data[name].isoformat() if data[name] else None
    return json.dumps(data)


def load_key(text: str) -> KmsKey:
    data = json.loads(text)
    for name in ("created_at", "last_rotated_at", "deletion_date"):
        data[name] = datetime.fromisoformat(data[name]) if data[name] else None
    data["materials"] = tuple(data["materials"])
    data["aliases"] = tuple(data.get("aliases", ()))
    return KmsKey(**data)
