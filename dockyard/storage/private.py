"""Owner-only files and directories: the data directory holds secrets (master key, sealed credentials) and
every image's content, so nothing in it is readable by other users of the machine.

Modes are given where each file and directory is created (a umask can only narrow them, so they hold
whatever the umask), and `make_private` narrows what an older version left behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Final

FILE_MODE: Final = 0o600
DIRECTORY_MODE: Final = 0o700
UMASK: Final = 0o077
# What Dockyard itself writes at the top of a data directory (SQLite's companions included); anything
# else there is the operator's and is left alone.
OWNED_NAMES: Final = frozenset(
    {
        "metadata.db",
        "metadata.db-wal",
        "metadata.db-shm",
        "metadata.db-journal",
        "metadata.db-pullcache",  # the pull cache's shared generation (storage/metadata/base.py)
        "master.key",
        "master.key.next",
        "root-credentials.json",
        "default-account",
        "audit.log",
        "events.log",
        "storage",
        "tls",
        ".owner-only",
        ".lock",  # a server's hold on the data directory (dockyard.exclusive)
    }
)
NARROWED_MARK: Final = ".owner-only"  # this version narrowed the blob tree: what it adds is created owner-only


def private_directory(path: Path) -> None:
    """`path` and any missing parents, created 0700 (`Path.mkdir(parents=True)` gives parents the default)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process created it meanwhile
            directory.mkdir(mode=DIRECTORY_MODE)
            os.chmod(directory, DIRECTORY_MODE)  # mkdir's mode passes through the umask


def create_private_file(path: Path, *, exclusive: bool = True) -> int:
    """A write descriptor on `path`, created 0600 (an existing file keeps its content unless `exclusive`)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if exclusive else 0)
    descriptor = os.open(path, flags, FILE_MODE)
    os.fchmod(descriptor, FILE_MODE)  # an existing file keeps its mode through O_CREAT
    return descriptor


def write_new_private_file(path: Path, content: bytes) -> None:
    """Create `path` 0600 holding `content`, on disk (fsynced) when this returns: the first step of an atomic
    publish, whose caller then renames it into place."""
    with os.fdopen(create_private_file(path), "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())


def make_private(data_dir: Path) -> None:
    """Narrow the data directory and what Dockyard keeps in it to 0700 directories and 0600 files.

    The blob tree is walked once (about 1.3 s per 100,000 blobs): after that, a mark records that everything
    in it was created owner-only, and later starts check only the top-level files.
    """
    _narrow(data_dir, DIRECTORY_MODE)
    walked = (data_dir / NARROWED_MARK).exists()
    for name in OWNED_NAMES:
        path = data_dir / name
        if walked and path.is_dir():
            _narrow(path, DIRECTORY_MODE)
        elif path.is_dir() and not path.is_symlink():
            for root, _directories, files in os.walk(path):  # symbolic links to directories are not entered
                _narrow(Path(root), DIRECTORY_MODE)
                for file in files:
                    _narrow(Path(root) / file, FILE_MODE)
        elif path.is_file() and not path.is_symlink():
            _narrow(path, FILE_MODE)
    if not walked:
        os.close(create_private_file(data_dir / NARROWED_MARK, exclusive=False))


def _narrow(path: Path, mode: int) -> None:
    """Set `path`'s permission bits to `mode` unless they are already (no write for each of millions of blobs)."""
    with contextlib.suppress(FileNotFoundError):  # a blob collected or an upload finished meanwhile
        current = os.lstat(path)
        if stat.S_ISLNK(current.st_mode):
            return
        if stat.S_IMODE(current.st_mode) != mode:
            os.chmod(path, mode)
