"""The KMS door (`TrentService`, AWS JSON 1.1): the built-in key service, reachable with boto3's `kms` client.

Every operation on a key is authorised against its key policy and the caller's identity policies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from starlette.requests import Request

from dockyard.domain.iam import Authenticator, Authorizer, Principal
from dockyard.domain.kms import KeyService, KmsKey, KmsValidation
from dockyard.http.auth import request_context
from dockyard.http.aws_door import AwsJsonDoor
from dockyard.http.sigv4 import Verified

KMS_TARGET: Final = "TrentService"
_DATA_KEY_BYTES: Final = {"AES_256": 32, "AES_128": 16}


@dataclass(frozen=True)
class KmsCall:
    principal: Principal
    region: str
    params: dict[str, Any]
    context: dict[str, str]

    @property
    def account(self) -> str:
        return self.principal.account_id


class KmsDoor(AwsJsonDoor[KmsCall]):
    SERVICE = "kms"

    def __init__(self, keys: KeyService, authenticator: Authenticator, authorizer: Authorizer) -> None:
        self.keys = keys
        self.authorizer = authorizer
        super().__init__(authenticator, keys.clock)

    def make_call(self, verified: Verified, request: Request, params: dict[str, Any]) -> KmsCall:
        return KmsCall(verified.principal, verified.region, params, request_context(request))

    def run(self, operation: str, handler: Callable[[KmsCall], dict[str, Any]], call: KmsCall) -> dict[str, Any]:
        """Operations naming a key are authorised on it in `_key`; the others are account-level."""
        if "KeyId" not in call.params and operation != "Decrypt":
            self.authorizer.authorize_account(call.principal, f"kms:{operation}", call.account, call.context)
        return handler(call)

    def _key(self, call: KmsCall, action: str, reference: str | None = None) -> KmsKey:
        key = self.keys.get(call.account, call.region, reference or call.params["KeyId"])
        self.authorizer.authorize_resource(
            call.principal, f"kms:{action}", key.arn, key.account_id, key.policy, call.context
        )
        return key

    # ------------------------------------------------------------------------------------ keys

    def create_key(self, call: KmsCall) -> dict[str, Any]:
        spec = call.params.get("KeySpec", "SYMMETRIC_DEFAULT")
        if spec != "SYMMETRIC_DEFAULT" or call.params.get("KeyUsage", "ENCRYPT_DECRYPT") != "ENCRYPT_DECRYPT":
            raise KmsValidation("Only symmetric ENCRYPT_DECRYPT keys (SYMMETRIC_DEFAULT) are supported")
        key = self.keys.create_key(
            call.account, call.region, call.params.get("Description", ""), call.params.get("Policy")
        )
        return {"KeyMetadata": _metadata(key)}

    def describe_key(self, call: KmsCall) -> dict[str, Any]:
        return {"KeyMetadata": _metadata(self._key(call, "DescribeKey"))}

    def list_keys(self, call: KmsCall) -> dict[str, Any]:
        keys = self.keys.list_keys(call.account, call.region)
        start = int(call.params.get("Marker") or 0)
        limit = int(call.params.get("Limit", 100))
        page = keys[start : start + limit]
        truncated = start + limit < len(keys)
        return {
            "Keys": [{"KeyId": k.key_id, "KeyArn": k.arn} for k in page],
            "Truncated": truncated,
            "NextMarker": str(start + limit) if truncated else None,
        }

    def enable_key(self, call: KmsCall) -> dict[str, Any]:
        self.keys.set_enabled(self._key(call, "EnableKey"), True)
        return {}

    def disable_key(self, call: KmsCall) -> dict[str, Any]:
        self.keys.set_enabled(self._key(call, "DisableKey"), False)
        return {}

    def schedule_key_deletion(self, call: KmsCall) -> dict[str, Any]:
        days = int(call.params.get("PendingWindowInDays", 30))
        key = self.keys.schedule_deletion(self._key(call, "ScheduleKeyDeletion"), days)
        return {"KeyId": key.arn, "DeletionDate": key.deletion_date, "KeyState": key.state, "PendingWindowInDays": days}

    def cancel_key_deletion(self, call: KmsCall) -> dict[str, Any]:
        key = self.keys.cancel_deletion(self._key(call, "CancelKeyDeletion"))
        return {"KeyId": key.arn}

    def get_key_policy(self, call: KmsCall) -> dict[str, Any]:
        return {"Policy": self._key(call, "GetKeyPolicy").policy, "PolicyName": "default"}

    def put_key_policy(self, call: KmsCall) -> dict[str, Any]:
        self.keys.put_policy(self._key(call, "PutKeyPolicy"), call.params["Policy"])
        return {}

    # ------------------------------------------------------------------------------------ rotation

    def enable_key_rotation(self, call: KmsCall) -> dict[str, Any]:
        period = call.params.get("RotationPeriodInDays")
        self.keys.set_rotation(self._key(call, "EnableKeyRotation"), True, period)
        return {}

    def disable_key_rotation(self, call: KmsCall) -> dict[str, Any]:
        self.keys.set_rotation(self._key(call, "DisableKeyRotation"), False)
        return {}

    def get_key_rotation_status(self, call: KmsCall) -> dict[str, Any]:
        key = self._key(call, "GetKeyRotationStatus")
        since = key.last_rotated_at or key.created_at
        next_date = since + timedelta(days=key.rotation_period_days) if key.rotation_enabled else None
        return {
            "KeyRotationEnabled": key.rotation_enabled,
            "KeyId": key.arn,
            "RotationPeriodInDays": key.rotation_period_days if key.rotation_enabled else None,
            "NextRotationDate": next_date,
        }

    def rotate_key_on_demand(self, call: KmsCall) -> dict[str, Any]:
        key = self.keys.rotate(self._key(call, "RotateKeyOnDemand"))
        return {"KeyId": key.arn}

    # ------------------------------------------------------------------------------------ aliases

    def create_alias(self, call: KmsCall) -> dict[str, Any]:
        key = self._key(call, "CreateAlias", call.params["TargetKeyId"])
        self.keys.create_alias(call.account, call.region, call.params["AliasName"], key.key_id)
        return {}

    def list_aliases(self, call: KmsCall) -> dict[str, Any]:
        aliases = self.keys.list_aliases(call.account, call.region)
        if call.params.get("KeyId"):
            key_id = self._key(call, "ListAliases").key_id
            aliases = [(name, target) for name, target in aliases if target == key_id]
        return {
            "Aliases": [
                {
                    "AliasName": name,
                    "AliasArn": f"arn:aws:kms:{call.region}:{call.account}:{name}",
                    "TargetKeyId": target,
                }
                for name, target in aliases
            ],
            "Truncated": False,
        }

    # ------------------------------------------------------------------------------------ cryptography

    def generate_data_key(self, call: KmsCall) -> dict[str, Any]:
        key = self._key(call, "GenerateDataKey")
        size = call.params.get("NumberOfBytes") or _DATA_KEY_BYTES.get(call.params.get("KeySpec", "AES_256"))
        if size is None or (call.params.get("NumberOfBytes") and call.params.get("KeySpec")):
            raise KmsValidation("Specify either KeySpec (AES_256 or AES_128) or NumberOfBytes")
        plaintext, blob = self.keys.generate_data_key(key, size, call.params.get("EncryptionContext", {}))
        return {"CiphertextBlob": blob, "Plaintext": plaintext, "KeyId": key.arn}

    def encrypt(self, call: KmsCall) -> dict[str, Any]:
        key = self._key(call, "Encrypt")
        blob = self.keys.encrypt(key, call.params["Plaintext"], call.params.get("EncryptionContext", {}))
        return {"CiphertextBlob": blob, "KeyId": key.arn, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}

    def decrypt(self, call: KmsCall) -> dict[str, Any]:
        blob: bytes = call.params["CiphertextBlob"]
        context = call.params.get("EncryptionContext", {})
        key, plaintext = self.keys.decrypt(call.account, call.region, blob, context)
        self._key(call, "Decrypt", key.key_id)
        if (
            call.params.get("KeyId")
            and self.keys.get(call.account, call.region, call.params["KeyId"]).key_id != key.key_id
        ):
            raise KmsValidation("The ciphertext was not encrypted under the given KeyId")
        return {"KeyId": key.arn, "Plaintext": plaintext, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}


def _metadata(key: KmsKey) -> dict[str, Any]:
    return {
        "AWSAccountId": key.account_id,
        "KeyId": key.key_id,
        "Arn": key.arn,
        "CreationDate": key.created_at,
        "Enabled": key.state == "Enabled",
        "Description": key.description,
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": key.state,
        "DeletionDate": key.deletion_date,
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        "MultiRegion": False,
    }
