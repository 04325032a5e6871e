"""Apply the Alembic migrations at start, so every node runs the same schema.

Most starts find the schema current, so `upgrade` first compares the database's revision (one SELECT of
`alembic_version`) with the newest revision named in the migration files (read as text); only a schema that is
behind, or anything unexpected, loads Alembic (its import alone costs about a third of a second).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
_REVISION = re.compile(r"^revision(?:\s*:\s*str)?\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision(?:\s*:[^=]+)?\s*=\s*(None|['\"]([^'\"]+)['\"])", re.MULTILINE)


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config  # here: only a schema that is behind needs Alembic

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    return config


# Any fixed number: the key of the PostgreSQL advisory lock that serialises migrations across nodes.
MIGRATION_LOCK_KEY = 0x646F636B79617264  # "dockyard"


@cache
def head_revision() -> str | None:
    """The one revision no other migration file revises, or None when the files do not say it plainly
    (several heads, a merge revision, a file written some other way): then Alembic decides."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        if path.name == "__init__.py":
            continue
        source = path.read_text(encoding="utf-8")
        revision, down = _REVISION.findall(source), _DOWN_REVISION.findall(source)
        if len(revision) != 1 or len(down) != 1:
            return None
        revisions.add(revision[0])
        if down[0][0] != "None":
            revised.add(down[0][1])
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 and revised <= revisions else None


def current_revision(engine: Engine) -> str | None:
    """The database's revision, or None for a database Alembic has not versioned (a new one)."""
    with engine.connect() as connection:
        try:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        except DBAPIError:  # no such table: a new database
            return None
    return rows[0] if len(rows) == 1 else None


def is_current(engine: Engine) -> bool:
    head = head_revision()
    return head is not None and current_revision(engine) == head


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision. On PostgreSQL nodes starting together take turns under an
    advisory lock (the later ones then find nothing to do). On SQLite the migration is one write transaction
    begun IMMEDIATE: a deferred one would read the schema version, then fail at once with "database is locked"
    when it tries to write after another node did, instead of waiting its turn."""
    if is_current(engine):
        return
    from alembic import command  # here: see the module's docstring

    config = alembic_config(engine)
    with engine.connect() as plain:
        connection = plain.execution_options(writes=True)
        postgres = engine.dialect.name == "postgresql"
        if postgres:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
        try:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
        finally:
            if postgres:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                connection.commit()
