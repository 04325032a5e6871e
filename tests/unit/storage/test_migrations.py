"""The Alembic migrations build exactly the schema the code declares."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from dockyard.storage.metadata import make_engine, metadata_obj
from dockyard.storage.migrate import upgrade


def test_migrations_match_the_declared_schema(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'metadata.db'}")
    upgrade(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata_obj)
    assert differences == []


def test_upgrade_is_idempotent(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'metadata.db'}")
    upgrade(engine)
    upgrade(engine)
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() is not None
