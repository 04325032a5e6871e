"""Fresh, empty metadata databases for tests: SQLite files, and PostgreSQL when CI provides a server.

PostgreSQL tests need DOCKYARD_TEST_DATABASE_URL (set by .ci/services/postgres.sh). Outside CI they are
skipped with that reason when it is missing; in CI (CI=true) a missing server fails the run instead of
silently testing less.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_ENV = "DOCKYARD_TEST_DATABASE_URL"


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / f'metadata-{uuid.uuid4().hex[:8]}.db'}"


def postgres_url(_tmp_path: Path) -> str:
    """A new database on the test PostgreSQL server, for one test."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{POSTGRES_ENV} is not set: .ci/run must start PostgreSQL")
        pytest.skip(f"{POSTGRES_ENV} is not set (start one with .ci/services/postgres.sh)")
    name = f"dockyard_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(base).set(database=name).render_as_string(hide_password=False)
