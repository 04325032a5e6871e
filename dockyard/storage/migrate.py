"""Apply the Alembic migrations at start, so every node runs the same schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    return config


# Any fixed number: the key of the PostgreSQL advisory lock that serialises migrations across nodes.
MIGRATION_LOCK_KEY = 0x646F636B79617264  # "dockyard"


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision. On PostgreSQL nodes starting together take turns under an
    advisory lock (the later ones then find nothing to do). On SQLite the migration is one write transaction
    begun IMMEDIATE: a deferred one would read the schema version, then fail at once with "database is locked"
    when it tries to write after another node did, instead of waiting its turn."""
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
