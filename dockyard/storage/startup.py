"""What every start does before anything is served: the data directory made private, the master key, the
metadata store at the newest schema.

`dockyard serve` needs only this (to register the root credentials) before it hands over to the supervisor,
so it stays apart from the wired services (`dockyard.services`), whose domain modules it would load for nothing.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from dockyard.config import MASTER_KEY_ENV, Settings
from dockyard.domain.keys import MASTER_KEY_BYTES, SecretBox
from dockyard.storage.metadata import SqlMetadataStore, make_engine
from dockyard.storage.migrate import upgrade
from dockyard.storage.private import create_private_file, make_private, private_directory


@dataclass(frozen=True)
class Prepared:
    """The metadata store, migrated, and the box that seals secrets under the master key."""

    metadata: SqlMetadataStore
    box: SecretBox


def prepare_data_dir(settings: Settings) -> None:
    private_directory(settings.data_dir)
    make_private(settings.data_dir)  # what an older version left readable by others


def prepare_metadata(settings: Settings) -> Prepared:
    """Create the data directory and apply migrations (when the schema is behind): once before any worker."""
    prepare_data_dir(settings)
    engine = make_engine(settings.database, pool_size=1)
    upgrade(engine)
    return Prepared(SqlMetadataStore(engine), SecretBox(load_master_key(settings.data_dir)))


def load_master_key(data_dir: Path) -> bytes:
    """The master key from the environment (base64), else the data directory key file made at first start."""
    if os.environ.get(MASTER_KEY_ENV):
        key = base64.b64decode(os.environ[MASTER_KEY_ENV])
        if len(key) != MASTER_KEY_BYTES:
            raise ValueError(f"{MASTER_KEY_ENV} must be {MASTER_KEY_BYTES} bytes, base64-encoded")
        return key
    path = data_dir / "master.key"
    if not path.exists():
        write_private_file(path, base64.b64encode(secrets.token_bytes(MASTER_KEY_BYTES)) + b"\n")
    return base64.b64decode(path.read_bytes().strip())


def write_private_file(path: Path, content: bytes) -> None:
    """Create a file only its owner can read (0600), never exposing it with wider permissions."""
    with os.fdopen(create_private_file(path), "wb") as file:
        file.write(content)
