"""The filesystem blob store: the embedded default.

Layout under the root directory (owned here; nothing else writes it):

    blobs/<algorithm>/<first two hex digits>/<hex>   published content, immutable once renamed in
    uploads/<upload id>                              bytes of one upload in progress, appended in order
    tmp/<random>                                     small writes on their way to blobs/

Paths are only ever built from a parsed `Digest` and an upload id that matched `UPLOAD_ID_RE`. A blob is
published by fsync of its bytes, an atomic rename into place and fsync of the directory, so after a crash a
blob is either whole or absent; leftovers in uploads/ and tmp/ are garbage for the collector. Everything is
created owner-only (0600 files, 0700 directories): image content is nobody else's to read.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Final

from dockyard.domain.errors import BlobUnknown, BlobUploadUnknown, DockyardError, RangeInvalid
from dockyard.domain.names import Digest
from dockyard.storage.private import create_private_file, private_directory

UPLOAD_ID_RE: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
READ_CHUNK: Final = 1024 * 1024


class FileUploadWriter:
    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    def write(self, data: bytes) -> None:
        # An unbuffered file may take fewer bytes than offered; keep going until all are written.
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            view = view[written or 0 :]

    def close(self) -> None:
        self._file.close()

    def discard(self) -> None:
        self._file.close()


class FilesystemBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        for folder in ("blobs", "uploads", "tmp"):
            private_directory(root / folder)

    # ------------------------------------------------------------------------------------ paths

    def _blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex[:2] / digest.hex

    def _upload_path(self, upload_id: str) -> Path:
        if not UPLOAD_ID_RE.fullmatch(upload_id):
            raise BlobUploadUnknown(detail={"upload": upload_id})
        return self.root / "uploads" / upload_id

    # ------------------------------------------------------------------------------------ blobs

    def blob_size(self, digest: Digest) -> int | None:
        try:
            return self._blob_path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def read_blob(self, digest: Digest, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        try:
            file = self._blob_path(digest).open("rb")
        except FileNotFoundError:
            raise BlobUnknown(detail={"digest": str(digest)}) from None
        return _read_range(file, offset, length)

    def local_path(self, digest: Digest) -> str | None:
        return str(self._blob_path(digest))

    def redirect_url(self, digest: Digest) -> str | None:
        return None

    def put_blob(self, digest: Digest, data: bytes) -> None:
        target = self._blob_path(digest)
        if target.exists():
            with contextlib.suppress(FileNotFoundError):
                os.utime(target)  # about to be referenced again: restart the collector's grace period
            if target.exists():
                return
        temporary = self.root / "tmp" / secrets.token_hex(16)  # fresh, so its mtime starts the GC grace
        with os.fdopen(create_private_file(temporary), "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        self._publish(temporary, target)

    def delete_blob(self, digest: Digest) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._blob_path(digest).unlink()

    # ------------------------------------------------------------------------------------ uploads

    def start_upload(self, upload_id: str) -> None:
        os.close(create_private_file(self._upload_path(upload_id)))

    def upload_size(self, upload_id: str) -> int | None:
        try:
            return self._upload_path(upload_id).stat().st_size
        except FileNotFoundError:
            return None

    def append_upload(self, upload_id: str) -> FileUploadWriter:
        path = self._upload_path(upload_id)
        if not path.exists():
            raise BlobUploadUnknown(detail={"upload": upload_id})
        file = path.open("ab", buffering=0)
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the writer closes
        except BlockingIOError:
            file.close()
            raise RangeInvalid(
                "another request is appending to this upload", detail={"received": path.stat().st_size}
            ) from None
        return FileUploadWriter(file)

    def read_upload(self, upload_id: str) -> Iterator[bytes]:
        try:
            file = self._upload_path(upload_id).open("rb")
        except FileNotFoundError:
            raise BlobUploadUnknown(detail={"upload": upload_id}) from None
        return _read_range(file, 0, None)

    def commit_upload(self, upload_id: str, digest: Digest) -> None:
        source = self._upload_path(upload_id)
        try:
            file = source.open("rb+")
        except FileNotFoundError:
            raise BlobUploadUnknown(detail={"upload": upload_id}) from None
        with file:
            os.fsync(file.fileno())
            # A fresh mtime: the collector's grace period runs from publication, not from the first byte.
            os.utime(file.fileno())
        try:
            self._publish(source, self._blob_path(digest))
        except FileNotFoundError:  # aborted between the fsync and the rename
            raise BlobUploadUnknown(detail={"upload": upload_id}) from None

    def abort_upload(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._upload_path(upload_id).unlink()

    def stored_blobs(self) -> Iterator[tuple[Digest, datetime]]:
        for algorithm_dir in (self.root / "blobs").iterdir():
            for path in algorithm_dir.glob("*/*"):
                try:
                    digest = Digest.parse(f"{algorithm_dir.name}:{path.name}")
                    written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                except (DockyardError, FileNotFoundError):
                    continue  # not ours, or deleted meanwhile
                yield digest, written

    # ------------------------------------------------------------------------------------ helpers

    def _publish(self, source: Path, target: Path) -> None:
        """Atomically move durable bytes into place; an existing copy has the same content (same digest)."""
        private_directory(target.parent)
        os.replace(source, target)
        _fsync_directory(target.parent)


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _read_range(file: BinaryIO, offset: int, length: int | None) -> Iterator[bytes]:
    with file:
        file.seek(offset)
        remaining = length
        while remaining is None or remaining > 0:
            chunk = file.read(READ_CHUNK if remaining is None else min(READ_CHUNK, remaining))
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
