"""Plumbing shared by the store's parts: connections, dialect-aware inserts and upserts, caches."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from dockyard.domain.cache import TtlCache
from dockyard.domain.ports import (
    Document,
    ManifestRecord,
    Repository,
)
from dockyard.storage.private import FILE_MODE


class SharedGeneration:
    """Eight bytes in a file beside an SQLite database, mapped into the memory of every process using it (server
    workers, CLI commands): a process that changes manifests, tags or blob links writes new bytes there after it
    commits, and every other process sees the change on its next read of the map, a memory read, no system
    call. So on one data directory the pull cache is never stale, whichever process wrote."""

    def __init__(self, path: Path) -> None:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            os.fchmod(descriptor, FILE_MODE)  # owner-only, whatever the umask (storage/private.py)
            if os.fstat(descriptor).st_size < 8:
                os.ftruncate(descriptor, 8)
            self._map = mmap.mmap(descriptor, 8)
        finally:
            os.close(descriptor)

    def read(self) -> bytes:
        return self._map[:8]

    def bump(self) -> None:
        self._map[:8] = os.urandom(8)  # any change will do: readers compare with what they saw last

    def close(self) -> None:
        self._map.close()


def shared_generation_for(engine: Engine) -> SharedGeneration | None:
    """For an SQLite file database, its shared generation (`<database>-pullcache`); None for other backends."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return SharedGeneration(Path(database + "-pullcache"))


class StoreBase:
    """Implements every metadata protocol of `dockyard.domain.ports` over one SQLAlchemy engine."""

    def __init__(self, engine: Engine, cache_ttl: float = 1.0) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        # Repositories and their documents are read on every request and change rarely (see TtlCache).
        self._repositories: TtlCache[Repository | None] = TtlCache(cache_ttl)
        self._documents: TtlCache[Document | None] = TtlCache(cache_ttl)
        # What a pull reads (a tag's or digest's manifest record, a blob link's size), for the registry door's
        # GET/HEAD only: present answers only (an absent one is asked again, so content pushed through another
        # node is found at once). Every write to manifests, tags or links through this store forgets them all
        # at once; a write through another process or node is seen within `cache_ttl` (docs/architecture.md).
        self._pull_records: TtlCache[ManifestRecord | None] = TtlCache(cache_ttl)
        self._pull_links: TtlCache[int | None] = TtlCache(cache_ttl)
        # Bumped by every such write: an answer read while one committed is not kept (it may be from before it).
        self._content_generation = 0
        # On SQLite, writes through other processes on the data directory are seen at once (SharedGeneration);
        # blob links are cached only then: a link another node removed must be seen at once (a client that
        # skipped an upload would find its manifest refused), while other nodes can only be heard from by TTL.
        self._shared = shared_generation_for(engine)
        self._shared_seen = self._shared.read() if self._shared is not None else b""
        # An IAM user's inline policies, read on each of its requests: the same bound as repository policies.
        self._user_policies: TtlCache[dict[str, str]] = TtlCache(cache_ttl)

    def close(self) -> None:
        """Let go of the shared generation's mapping (a process that is done with the store; the engine is the
        caller's to dispose of)."""
        if self._shared is not None:
            self._shared.close()

    def _forget_content(self) -> None:
        """After a write to manifests, tags or blob links: the pull caches must not answer from before it."""
        self._content_generation += 1
        self._pull_records.clear()
        self._pull_links.clear()
        if self._shared is not None:
            self._shared.bump()
            self._shared_seen = self._shared.read()

    def _pull_generation(self) -> tuple[int, bytes]:
        """Where the pull caches stand: first forgotten if another process wrote since this one last looked."""
        if self._shared is not None:
            shared = self._shared.read()
            if shared != self._shared_seen:
                self._shared_seen = shared
                self._content_generation += 1
                self._pull_records.clear()
                self._pull_links.clear()
            return self._content_generation, shared
        return self._content_generation, b""

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection for one read, without BEGIN/ROLLBACK round trips: each SELECT is atomic by itself
        (on PostgreSQL autocommit, the same snapshot rule as READ COMMITTED's per-statement snapshots)."""
        with self.engine.connect() as connection:
            if self._dialect == "postgresql":
                yield connection.execution_options(isolation_level="AUTOCOMMIT", single_read=True)
            else:
                yield connection.execution_options(single_read=True)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            connection = connection.execution_options(writes=True)
            with connection.begin():
                yield connection

    def _insert(self, table: Table) -> Any:
        dialect_insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        return dialect_insert(table)

    def _insert_ignore(self, table: Table) -> Insert:
        statement: Insert = self._insert(table).on_conflict_do_nothing()
        return statement

    def _upsert(self, table: Table, keys: dict[str, Any], values: dict[str, Any]) -> None:
        statement = self._insert(table).values(**keys, **values)
        with self._write() as connection:
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=[table.c[name] for name in keys],
                    set_={name: statement.excluded[name] for name in values},
                )
            )
