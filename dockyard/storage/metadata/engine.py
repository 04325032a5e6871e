"""Engines with the per-backend settings Dockyard relies on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
)
from sqlalchemy.engine import ExceptionContext

from dockyard.storage.full import is_storage_full, storage_full
from dockyard.storage.private import create_private_file


def make_engine(url: str, pool_size: int = 10) -> Engine:
    """An engine with the per-backend settings Dockyard relies on."""
    if url.startswith("sqlite"):
        engine = create_engine(url, pool_size=pool_size, max_overflow=2 * pool_size)
        database = engine.url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            # SQLite creates the database (and its -wal and -shm, which copy the database's mode) world-readable
            # unless the file exists: make it owner-only first.
            os.close(create_private_file(Path(database), exclusive=False))
        _configure_sqlite(engine)
    else:
        # No pool pre-ping: it costs a round trip on every checkout (a quarter of a cached read's). A connection
        # the server dropped fails one statement, is discarded by the pool, and the next checkout gets a new one.
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)
    event.listen(engine, "handle_error", _full_disk_is_insufficient_storage)
    return engine


def _full_disk_is_insufficient_storage(context: ExceptionContext) -> None:
    """SQLite's "database or disk is full" (SQLITE_FULL) and PostgreSQL's disk_full are the storage error,
    not a 500: reads still work (WAL), only writes fail, and they work again once space returns."""
    if is_storage_full(context.original_exception):
        raise storage_full("writing to the metadata database") from context.original_exception


def _configure_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, and BEGIN IMMEDIATE for writes.

    pysqlite's own transaction handling is switched off so that a write transaction takes the write lock
    when it begins: a deferred transaction that reads first and writes later fails with SQLITE_BUSY instead
    of waiting when another writer committed in between.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if options.get("single_read"):
            return  # one SELECT is atomic by itself: no BEGIN/COMMIT round trips on the hot read path
        connection.exec_driver_sql(f"BEGIN {'IMMEDIATE' if options.get('writes') else 'DEFERRED'}")
