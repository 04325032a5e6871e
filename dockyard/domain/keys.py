"""Sealing small secrets (access key secrets) with the registry's master key.

AES-256-GCM from `cryptography`; the sealed form is text so it can sit in any metadata column.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MASTER_KEY_BYTES = 32
_NONCE_BYTES = 12
_VERSION = "v1"


class WrongMasterKey(ValueError):
    """The metadata was sealed with another master key."""


class SecretBox:
    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != MASTER_KEY_BYTES:
            raise ValueError("the master key must be 32 bytes")
        self._aead = AESGCM(master_key)

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), _VERSION.encode())
        return f"{_VERSION}:" + base64.b64encode(nonce + sealed).decode()

    def open(self, sealed: str) -> str:
        version, _, payload = sealed.partition(":")
        if version != _VERSION:
            raise ValueError(f"unknown sealed-secret version {version!r}")
        raw = base64.b64decode(payload)
        try:
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _VERSION.encode()).decode()
        except InvalidTag:
            raise WrongMasterKey(
                "a stored secret does not open with this master key: every node must use the same master key "
                "(DOCKYARD_MASTER_KEY or <data-dir>/master.key) as the one that sealed the metadata"
            ) from None
