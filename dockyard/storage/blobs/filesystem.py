"""The filesystem blob store: the embedded default.

Layout under the root directory (owned here; nothing else writes it):

    blobs/<algorithm>/<first two hex digits>/<hex>   published content, immutable once renamed in
    uploads/<upload id>                              bytes of one upload in progress, appended in order
    tmp/<random>                                     small writes on their way to blobs/

Paths are only ever built from a parsed `Digest` and an upload id that matched `UPLOAD_ID_RE`. A blob is
published by fsync of its bytes, an atomic rename into place and fsync of the directory, so after a crash a
blob is either whole or absent; leftovers in uploads/ and tmp/ are garbage for the collector
(`sweep_leftovers`). Everything is created owner-only (0600 files, 0700 directories): image content is nobody
else's to read.

A full disk (ENOSPC, EDQUOT) is `InsufficientStorage`, and leaves nothing half-written behind: a small write's
temporary file is removed, and an upload is cut back to where the failed request's writer began, so its
size and bytes stay a consistent prefix the client can resume from once space returns.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Final

from dockyard.domain.errors import BlobUnknown, BlobUploadUnknown, DockyardError, RangeInvalid
from dockyard.domain.names import Digest
from dockyard.storage.full import is_storage_full, storage_full
from dockyard.storage.private import create_private_file, private_directory, write_new_private_file

UPLOAD_ID_RE: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
READ_CHUNK: Final = 1024 * 1024


class FileUploadWriter:
    """Appends to one upload, holding its exclusive lock; a failed write cuts the upload back to where this
    writer began (the lock makes that safe: nobody else appends meanwhile)."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._start = os.fstat(file.fileno()).st_size
        self._failed = False
        self._wrote = False

    def truncate(self, size: int) -> None:
        if self._wrote:
            raise ValueError("truncate an upload before writing to it")
        descriptor = self._file.fileno()
        if not 0 <= size <= os.fstat(descriptor).st_size:
            raise ValueError(f"cannot truncate an upload to {size} bytes: it holds fewer")
        # The file is open for appending: what is written next lands after the kept bytes.
        os.ftruncate(descriptor, size)
        self._start = size  # a failed write later cuts back to here, not to the torn tail

    def write(self, data: bytes) -> None:
        if self._failed:
            # The upload was cut back when a write failed; what a caller still writes while unwinding (an
            # encrypting writer sealing its buffer on close) must not land after the cut.
            return
        # An unbuffered file may take fewer bytes than offered; keep going until all are written.
        self._wrote = self._wrote or bool(data)
        view = memoryview(data)
        try:
            while view:
                written = self._file.write(view)
                view = view[written or 0 :]
        except OSError as error:
            # A disk that filled mid-request leaves part of a chunk (or of an encrypted record) behind: drop
            # this request's bytes so the upload's size is again what the client was last told.
            self._failed = True
            os.ftruncate(self._file.fileno(), self._start)
            if is_storage_full(error):
                raise storage_full("writing upload data") from error
            raise

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
        try:
            write_new_private_file(temporary, data)
            self._publish(temporary, target)
        except BaseException as error:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()  # a partial file would only wait for the collector
            if is_storage_full(error):
                raise storage_full("writing blob data") from error
            raise

    def delete_blob(self, digest: Digest) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._blob_path(digest).unlink()

    # ------------------------------------------------------------------------------------ uploads

    def start_upload(self, upload_id: str) -> None:
        try:
            os.close(create_private_file(self._upload_path(upload_id)))
        except OSError as error:
            if is_storage_full(error):
                raise storage_full("starting an upload") from error
            raise

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
        try:
            with file:
                # Delayed allocation (ext4, XFS) may first report a full disk here, not at write().
                os.fsync(file.fileno())
                # A fresh mtime: the collector's grace period runs from publication, not from the first byte.
                os.utime(file.fileno())
            self._publish(source, self._blob_path(digest))
        except FileNotFoundError:  # aborted between the fsync and the rename
            raise BlobUploadUnknown(detail={"upload": upload_id}) from None
        except OSError as error:
            if is_storage_full(error):
                raise storage_full("publishing an upload") from error
            raise

    def abort_upload(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._upload_path(upload_id).unlink()

    def sweep_leftovers(self, written_before: datetime, is_live_upload: Callable[[str], bool]) -> int:
        """Delete what failed writes and killed processes left behind, untouched since `written_before`: files
        in tmp/ and upload files no session names any more. Returns the files deleted."""
        deleted = 0
        for folder in ("tmp", "uploads"):
            for path in (self.root / folder).iterdir():
                if folder == "uploads" and not UPLOAD_ID_RE.fullmatch(path.name):
                    continue  # not an upload of ours
                try:
                    status = path.stat()
                    if (
                        not stat.S_ISREG(status.st_mode)
                        or datetime.fromtimestamp(status.st_mtime, UTC) >= written_before
                    ):
                        continue
                    if folder == "uploads" and is_live_upload(path.name):
                        continue  # the session's to finish, or to expire with it
                    path.unlink()
                except FileNotFoundError:
                    continue  # published or deleted meanwhile
                deleted += 1
        return deleted

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
