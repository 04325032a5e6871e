"""Owner-only modes hold whatever the umask: the blob store and SQLite's files are created 0600 in 0700
directories even under umask 0, and `make_private` narrows what Dockyard owns, nothing else."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from dockyard.domain.names import Digest
from dockyard.storage.blobs.filesystem import FilesystemBlobStore
from dockyard.storage.metadata import make_engine
from dockyard.storage.private import make_private

UPLOAD = "0b6c1b2e-4a55-4c3e-9d7e-3f2b1a0c9d8e"


@pytest.fixture
def no_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]}


def test_blob_store_creates_owner_only_whatever_the_umask(tmp_path: Path, no_umask: None) -> None:
    store = FilesystemBlobStore(tmp_path / "storage")
    data = b"layer bytes"
    store.put_blob(Digest.of(data), data)
    store.start_upload(UPLOAD)
    writer = store.append_upload(UPLOAD)
    writer.write(b"uploaded")
    writer.close()
    store.commit_upload(UPLOAD, Digest.of(b"uploaded"))
    store.start_upload(UPLOAD.replace("0b", "1b", 1))  # one left in progress
    found = modes(tmp_path / "storage")
    assert len([name for name in found if name.startswith("blobs/sha256/") and name.count("/") == 3]) == 2
    assert {name: oct(mode) for name, mode in found.items() if mode not in (0o600, 0o700)} == {}
    for name, mode in found.items():
        assert mode == (0o700 if (tmp_path / "storage" / name).is_dir() else 0o600), name


def test_sqlite_files_are_owner_only_whatever_the_umask(tmp_path: Path, no_umask: None) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'metadata.db'}")
    with engine.connect() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        connection.execute(text("INSERT INTO t VALUES (1)"))
        found = modes(tmp_path)
    engine.dispose()
    assert {"metadata.db", "metadata.db-wal", "metadata.db-shm"} <= set(found)
    assert all(mode == 0o600 for name, mode in found.items() if name != "."), found


def test_make_private_narrows_what_dockyard_owns_and_nothing_else(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    blob = data_dir / "storage" / "blobs" / "sha256" / "ab" / ("ab" * 32)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x")
    for name in ("metadata.db", "metadata.db-wal", "master.key", "audit.log"):
        (data_dir / name).write_bytes(b"x")
    (data_dir / "notes").write_text("the operator's")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "file").write_text("linked to")
    (data_dir / "storage" / "link").symlink_to(outside)
    for path in [data_dir, *data_dir.rglob("*"), outside, outside / "file"]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    make_private(data_dir)
    found = modes(data_dir)
    assert found.pop("notes") == 0o644
    found.pop("storage/link")
    assert {name: oct(mode) for name, mode in found.items() if mode not in (0o600, 0o700)} == {}
    assert stat.S_IMODE(outside.stat().st_mode) == 0o755  # a symbolic link is not followed
    assert stat.S_IMODE((outside / "file").stat().st_mode) == 0o644
    # Once walked, the blob tree is not walked again at every start (this version creates it owner-only).
    assert (data_dir / ".owner-only").stat().st_mode & 0o777 == 0o600
    blob.chmod(0o644)
    (data_dir / "master.key").chmod(0o644)
    make_private(data_dir)
    assert stat.S_IMODE(blob.stat().st_mode) == 0o644
    assert stat.S_IMODE((data_dir / "master.key").stat().st_mode) == 0o600  # top-level files still are
