"""A full disk, recognised in whatever the storage libraries raise, becomes the registry's one error for it.

Writes that hit a full disk (or a quota) must answer `InsufficientStorage` (507 on /v2, an AWS-shaped
ServerException on the API) rather than an anonymous 500: the client learns why, and that retrying once
space returns will work.
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Final

from dockyard.domain.errors import InsufficientStorage

FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
POSTGRES_DISK_FULL: Final = "53100"  # SQLSTATE disk_full ("could not extend file … No space left on device")


def is_storage_full(error: BaseException) -> bool:
    """Whether `error`, or anything it wraps or was raised from, says the storage has no room left."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, InsufficientStorage):
            return True
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            return True
        if isinstance(current, sqlite3.OperationalError) and (
            getattr(current, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or "database or disk is full" in str(current)
        ):
            return True
        if getattr(current, "sqlstate", None) == POSTGRES_DISK_FULL:  # psycopg 3
            return True
        wrapped = getattr(current, "orig", None)  # SQLAlchemy's DBAPIError keeps the driver's error here
        current = wrapped if isinstance(wrapped, BaseException) else (current.__cause__ or current.__context__)
    return False


def storage_full(what: str) -> InsufficientStorage:
    """The error for a write of `what` that found no room (the message names the cause, then the write)."""
    return InsufficientStorage(f"no space left on the registry's storage ({what} failed)")
