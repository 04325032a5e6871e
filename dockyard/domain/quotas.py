"""Service quotas: ECR's defaults (spec notes, section 10), adjustable per account.

A quota is checked before the work it limits; exceeding one is `LimitExceededException` on the API and
`DENIED` on the registry door.
"""

from __future__ import annotations

from typing import Final

from dockyard.domain.errors import InvalidParameter, LimitExceeded
from dockyard.domain.ports import QuotaStore

MIB: Final = 1024 * 1024
DEFAULTS: Final[dict[str, int]] = {
    "repositories-per-region": 100_000,
    "images-per-repository": 100_000,
    "tags-per-image": 1_000,
    "layer-parts": 4_200,
    "layer-part-min-bytes": 5 * MIB,
    "layer-part-max-bytes": 20 * MIB,  # the model's limit for layerPartBlob; ECR's quota page says 10 MiB
    "layer-max-bytes": 52_000 * MIB,
}


class Quotas:
    def __init__(self, store: QuotaStore) -> None:
        self.store = store

    def limit(self, account_id: str, name: str) -> int:
        if name not in DEFAULTS:
            raise InvalidParameter(f"unknown quota {name!r}; known: {', '.join(sorted(DEFAULTS))}")
        override = self.store.get_quota(account_id, name)
        return DEFAULTS[name] if override is None else override

    def set(self, account_id: str, name: str, value: int) -> None:
        self.limit(account_id, name)
        if value < 0:
            raise InvalidParameter("a quota is a non-negative integer")
        self.store.set_quota(account_id, name, value)

    def check(self, account_id: str, name: str, current: int, adding: int = 1) -> None:
        limit = self.limit(account_id, name)
        if current + adding > limit:
            raise LimitExceeded(
                f"The {name} quota of {limit} for account {account_id} would be exceeded; "
                "raise it with `dockyard admin quota set`"
            )
