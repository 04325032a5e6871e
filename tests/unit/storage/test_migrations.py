"""The Alembic migrations build exactly the schema the code declares."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from dockyard.storage.metadata import make_engine, metadata_obj
from dockyard.storage.migrate import alembic_config, current_revision, head_revision, is_current, upgrade


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


def test_the_head_read_from_the_files_is_alembics(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'metadata.db'}")
    assert head_revision() == ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def test_a_database_behind_is_brought_to_the_head(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'metadata.db'}")
    script = ScriptDirectory.from_config(alembic_config(engine))
    behind = script.get_revision(script.get_current_head()).down_revision
    assert isinstance(behind, str)
    with engine.connect() as connection:
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, behind)
        connection.commit()
    assert not is_current(engine)
    upgrade(engine)
    assert current_revision(engine) == script.get_current_head()
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), metadata_obj) == []


def test_a_current_schema_is_checked_without_loading_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'metadata.db'}"
    upgrade(make_engine(url))
    code = (
        "import sys\nfrom dockyard.storage.metadata import make_engine\nfrom dockyard.storage.migrate import upgrade\n"
        f"upgrade(make_engine({url!r}))\nprint('alembic' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_new_database_has_no_revision(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'metadata.db'}")
    assert current_revision(engine) is None
    assert not is_current(engine)
