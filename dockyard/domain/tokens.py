"""Signed, self-contained tokens: ECR authorization tokens and download URLs.

A token is `base64url(claims JSON) "." base64url(HMAC-SHA256)`; it holds no `:` (the aws CLI splits the
decoded `AWS:<password>` on `:`). Any node holding the same master key verifies it: no per-process state,
and tokens survive restarts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive_key(master_key: bytes, purpose: str) -> bytes:
    """A key for one purpose, so a token of one kind is never valid as another."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(master_key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(self, claims: dict[str, Any], expires_at: datetime) -> str:
        payload = _b64(json.dumps({**claims, "exp": int(expires_at.timestamp())}, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def verify(self, token: str, now: datetime) -> dict[str, Any] | None:
        """The claims of a genuine, unexpired token; None for anything else."""
        payload, separator, mac = token.partition(".")
        if not separator or not hmac.compare_digest(self._mac(payload).encode(), mac.encode()):
            return None
        try:
            claims = json.loads(_unb64(payload))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int) or claims["exp"] < now.timestamp():
            return None
        return claims

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())
