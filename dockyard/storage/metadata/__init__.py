"""The metadata store: SQLAlchemy Core over SQLite (default) or PostgreSQL. See store.py for the schema map."""

from dockyard.storage.metadata.engine import make_engine
from dockyard.storage.metadata.schema import metadata_obj
from dockyard.storage.metadata.store import SqlMetadataStore

__all__ = ["SqlMetadataStore", "make_engine", "metadata_obj"]
