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
        return engine
    # No pool pre-ping: it costs a round trip on every checkout (a quarter of a cached read's). A connection
    # the server dropped fails one statement, is discarded by the pool, and the next checkout gets a new one.
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)


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
