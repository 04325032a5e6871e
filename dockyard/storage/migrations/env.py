"""Alembic environment: runs on the connection `dockyard.storage.migrate.upgrade` hands in."""

from __future__ import annotations

from alembic import context

from dockyard.storage.metadata import metadata_obj

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata_obj, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
