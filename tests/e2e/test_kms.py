"""The built-in key service through boto3's `kms` client, against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, ServerProcess


@pytest.fixture
def kms(server: ServerProcess) -> Iterator[Any]:
    yield boto3.client(
        "kms",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


def test_data_keys_round_trip_and_survive_rotation(kms: Any) -> None:
    key = kms.create_key(Description="repository key")["KeyMetadata"]
    assert key["KeyState"] == "Enabled" and key["Arn"].endswith(key["KeyId"])
    kms.create_alias(AliasName="alias/team", TargetKeyId=key["KeyId"])
    data = kms.generate_data_key(KeyId="alias/team", KeySpec="AES_256", EncryptionContext={"repository": "a"})
    assert len(data["Plaintext"]) == 32
    opened = kms.decrypt(CiphertextBlob=data["CiphertextBlob"], EncryptionContext={"repository": "a"})
    assert opened["Plaintext"] == data["Plaintext"] and opened["KeyId"] == key["Arn"]

    kms.rotate_key_on_demand(KeyId=key["KeyId"])
    again = kms.decrypt(CiphertextBlob=data["CiphertextBlob"], EncryptionContext={"repository": "a"})
    assert again["Plaintext"] == data["Plaintext"]
    fresh = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"secret")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=fresh)["Plaintext"] == b"secret"
    assert [a["AliasName"] for a in kms.list_aliases()["Aliases"]] == ["alias/team"]
    assert key["KeyId"] in {k["KeyId"] for k in kms.list_keys()["Keys"]}


def test_context_disabled_keys_and_deletion_are_enforced(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"payload", EncryptionContext={"a": "1"})["CiphertextBlob"]
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"a": "2"})
    kms.disable_key(KeyId=key_id)
    with pytest.raises(kms.exceptions.DisabledException):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"a": "1"})
    kms.enable_key(KeyId=key_id)
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"a": "1"})["Plaintext"] == b"payload"
    scheduled = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert scheduled["KeyState"] == "PendingDeletion"
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.describe_key(KeyId="alias/missing")
