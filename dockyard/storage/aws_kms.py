"""Customer keys in an external KMS (AWS KMS, or anything speaking its API) for KMS repositories.

With `--kms-endpoint-url`, repositories created with `encryptionType` KMS are bound to keys of that KMS,
reached with the standard AWS credential chain of the server (environment, profile, instance role), as ECR
reaches KMS with its service role. Data keys are wrapped with the key's Encrypt and unwrapped with Decrypt
(with the key id pinned and the encryption context bound), so a disabled or deleted key stops the repository
as it does with the built-in key service. The registry-managed storage key of AES256 repositories stays in
the built-in service.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from dockyard.domain.encryption import KeyInfo, KmsKeyUnusable
from dockyard.domain.kms import MANAGED_ECR_ALIAS, InvalidCiphertext
from dockyard.domain.kms import Disabled as KeyDisabled
from dockyard.domain.kms import InvalidState as KeyInvalidState
from dockyard.domain.kms import NotFound as KeyNotFound

_NOT_FOUND: Final = frozenset({"NotFoundException", "NotFound"})
_INVALID_STATE: Final = frozenset({"KMSInvalidStateException", "KMSInvalidState"})


class AwsKmsKeys:
    """`KeyBackend` over an external KMS; one client per Region, made on first use."""

    checks_account = False  # the KMS's accounts are not the registry's

    def __init__(self, client_for_region: Callable[[str], Any]) -> None:
        self._client_for_region = client_for_region
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def describe(self, account_id: str, region: str, reference: str) -> KeyInfo:
        metadata = self._call(region, "DescribeKey", KeyId=reference)["KeyMetadata"]
        arn: str = metadata["Arn"]
        parts = arn.split(":", 5)
        return KeyInfo(arn, metadata.get("AWSAccountId", parts[4]), parts[3], metadata["KeyState"])

    def default_key(self, account_id: str, region: str) -> KeyInfo:
        try:
            return self.describe(account_id, region, MANAGED_ECR_ALIAS)
        except KeyNotFound:
            raise KmsKeyUnusable(
                f"the external KMS has no {MANAGED_ECR_ALIAS} key in {region} (AWS makes it when ECR first uses it): "
                "name a key in encryptionConfiguration.kmsKey",
                detail={"kmsError": "NotFoundException"},
            ) from None

    def encrypt(self, key: KeyInfo, plaintext: bytes, context: dict[str, str]) -> bytes:
        answer = self._call(key.region, "Encrypt", KeyId=key.arn, Plaintext=plaintext, EncryptionContext=context)
        blob: bytes = answer["CiphertextBlob"]
        return blob

    def decrypt(self, key: KeyInfo, blob: bytes, context: dict[str, str]) -> bytes:
        answer = self._call(key.region, "Decrypt", KeyId=key.arn, CiphertextBlob=blob, EncryptionContext=context)
        plaintext: bytes = answer["Plaintext"]
        return plaintext

    def _call(self, region: str, operation: str, **params: Any) -> dict[str, Any]:
        """One KMS call, its errors as the key service's (the registry answers them as KmsException)."""
        client = self._client(region)
        method = {"DescribeKey": client.describe_key, "Encrypt": client.encrypt, "Decrypt": client.decrypt}
        try:
            answer: dict[str, Any] = method[operation](**params)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            message = error.response.get("Error", {}).get("Message", "") or f"KMS {operation} failed with {code}"
            if code in _NOT_FOUND:
                raise KeyNotFound(message) from None
            if code == "DisabledException":
                raise KeyDisabled(message) from None
            if code in _INVALID_STATE:
                raise KeyInvalidState(message) from None
            if code == "InvalidCiphertextException":
                raise InvalidCiphertext(message) from None
            raise KmsKeyUnusable(f"KMS {operation}: {code}: {message}", detail={"kmsError": code}) from None
        except BotoCoreError as error:
            raise KmsKeyUnusable(
                f"KMS {operation} failed: {error}", detail={"kmsError": "KMSInternalException"}
            ) from None
        return answer

    def _client(self, region: str) -> Any:
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                client = self._clients[region] = self._client_for_region(region)
        return client
