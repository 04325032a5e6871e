"""The storage layer on a real full filesystem (a small tmpfs mounted per test; we run as root): the audit log
holds lines in memory and writes them whole once space returns, blob writes and SQLite writes raise
`InsufficientStorage` and leave nothing half-written, reads keep working, leftovers are swept."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dockyard.domain.errors import InsufficientStorage
from dockyard.domain.names import Digest, RepositoryRef
from dockyard.domain.ports import BlobStore, KeyDomain, UploadSession
from dockyard.http.aws_json import error_response
from dockyard.storage.audit import JsonLinesAudit
from dockyard.storage.blobs.domains import single_domain
from dockyard.storage.blobs.encrypted import EncryptedBlobStore, MasterKeyProvider
from dockyard.storage.blobs.filesystem import FilesystemBlobStore
from dockyard.storage.full import is_storage_full
from dockyard.storage.metadata import SqlMetadataStore, make_engine
from dockyard.storage.migrate import upgrade
from tests.support.disks import small_tmpfs

MiB = 1024 * 1024
PAGE = 4096  # tmpfs hands out space a page at a time
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of the test's own."""
    with small_tmpfs(tmp_path / "disk", "4m") as mount_point:
        yield mount_point


def fill(disk: Path) -> Path:
    """Take every free byte of the filesystem with a filler file; delete it to give the space back."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as file:
        for size in (MiB, PAGE, 1):
            with contextlib.suppress(OSError):
                while True:
                    file.write(b"\0" * size)
    with pytest.raises(OSError) as full:
        (disk / "probe").write_bytes(b"x" * PAGE)
    assert full.value.errno == errno.ENOSPC
    return filler


def lines_of(path: Path) -> list[dict[str, object]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), raw[-80:]
    return [json.loads(line) for line in raw.splitlines()]


# ------------------------------------------------------------------------------------------- audit log


def test_audit_lines_recorded_on_a_full_disk_are_written_once_space_returns(disk: Path) -> None:
    audit = JsonLinesAudit(disk / "audit.log", retry_seconds=0.05)
    try:
        audit.record({"n": 0})
        assert audit.flush(5)
        filler = fill(disk)
        for n in range(1, 51):  # more than the page the file already holds
            audit.record({"n": n, "pad": "x" * 200})  # returns at once: nothing on the request path waits
        assert not audit.flush(0.3)
        assert audit.pending > 0
        filler.unlink()
        assert audit.flush(5)
        assert [line["n"] for line in lines_of(disk / "audit.log")] == list(range(51))
        assert audit.dropped == 0
    finally:
        audit.close()


def test_a_line_the_full_disk_cut_short_is_completed_before_any_other_writer_may_append(disk: Path) -> None:
    path = disk / "audit.log"
    audit = JsonLinesAudit(path, retry_seconds=0.05)
    try:
        audit.record({"pad": "p" * (PAGE - 200)})  # leaves the file's only page ~190 bytes short of full
        assert audit.flush(5)
        filler = fill(disk)
        audit.record({"long": "l" * 1000})  # ~190 bytes fit in the page, the rest waits for space
        assert not audit.flush(0.3)
        assert path.stat().st_size == PAGE  # cut short: part of the line is on disk
        other = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            with pytest.raises(BlockingIOError):  # another worker cannot append into the middle of that line
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            filler.unlink()
            assert audit.flush(5)
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released once the line is whole
            fcntl.flock(other, fcntl.LOCK_UN)
        finally:
            os.close(other)
        assert [sorted(line) for line in lines_of(path)] == [["pad"], ["long"]]
    finally:
        audit.close()


def test_a_full_queue_drops_loudly_and_counts(disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    audit = JsonLinesAudit(disk / "audit.log", capacity=500, retry_seconds=0.05)
    try:
        filler = fill(disk)
        with caplog.at_level(logging.ERROR, logger="dockyard.audit"):
            for n in range(100):
                audit.record({"n": n})
        assert audit.dropped > 0
        assert any("DROPPED" in record.getMessage() for record in caplog.records)
        filler.unlink()
        assert audit.flush(5)
        kept = [line["n"] for line in lines_of(disk / "audit.log")]
        assert kept == list(range(len(kept)))
        assert len(kept) + audit.dropped == 100
    finally:
        audit.close()


def test_close_writes_every_queued_line(tmp_path: Path) -> None:
    audit = JsonLinesAudit(tmp_path / "audit.log")
    for n in range(1000):
        audit.record({"n": n})
    audit.close()
    assert [line["n"] for line in lines_of(tmp_path / "audit.log")] == list(range(1000))


def test_close_on_a_disk_still_full_counts_and_logs_what_is_lost(disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    audit = JsonLinesAudit(disk / "audit.log", retry_seconds=0.05, close_seconds=0.2)
    fill(disk)
    audit.record({"n": 1})
    with caplog.at_level(logging.ERROR, logger="dockyard.audit"):
        audit.close()
    assert audit.dropped == 1
    assert any("could not be written" in record.getMessage() for record in caplog.records)


# ------------------------------------------------------------------------------------------- blob stores


def plain(root: Path) -> BlobStore:
    return FilesystemBlobStore(root)


def encrypted(root: Path) -> BlobStore:
    return EncryptedBlobStore(FilesystemBlobStore(root), MasterKeyProvider(bytes(range(32))))


@pytest.mark.parametrize("make", [plain, encrypted], ids=["filesystem", "encrypted-filesystem"])
def test_an_append_that_fills_the_disk_leaves_the_upload_as_it_was(
    disk: Path, make: Callable[[Path], BlobStore]
) -> None:
    store = make(disk / "store")
    upload_id = str(uuid.uuid4())
    first, second = os.urandom(MiB), os.urandom(8 * MiB)  # the second does not fit
    store.start_upload(upload_id)
    writer = store.append_upload(upload_id)
    writer.write(first)
    writer.close()
    before = store.upload_size(upload_id)
    assert before == MiB
    writer = store.append_upload(upload_id)
    with pytest.raises(InsufficientStorage):
        writer.write(second)
    writer.close()  # what an abandoned request does
    assert store.upload_size(upload_id) == before
    assert b"".join(store.read_upload(upload_id)) == first
    # Space enough again (the rest fits now): the client resumes where it was told it stood.
    rest = second[: MiB // 2]
    writer = store.append_upload(upload_id)
    writer.write(rest)
    writer.close()
    digest = Digest.of(first + rest)
    store.commit_upload(upload_id, digest)
    assert b"".join(store.read_blob(digest)) == first + rest


def test_put_blob_on_a_full_disk_raises_the_storage_error_and_leaves_no_temporary_file(disk: Path) -> None:
    store = FilesystemBlobStore(disk / "store")
    filler = fill(disk)
    data = os.urandom(64 * 1024)
    with pytest.raises(InsufficientStorage) as full:
        store.put_blob(Digest.of(data), data)
    assert "no space left on the registry's storage" in full.value.message
    assert list((disk / "store" / "tmp").iterdir()) == []
    filler.unlink()
    store.put_blob(Digest.of(data), data)
    assert b"".join(store.read_blob(Digest.of(data))) == data


def test_leftovers_older_than_the_grace_are_swept_live_uploads_and_fresh_files_kept(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "store")
    live, orphan, fresh = (str(uuid.uuid4()) for _ in range(3))
    for upload_id in (live, orphan, fresh):
        store.start_upload(upload_id)
    stale_tmp = tmp_path / "store" / "tmp" / "0123abcd"
    stale_tmp.write_bytes(b"partial")
    old = (datetime.now(UTC) - timedelta(hours=2)).timestamp()
    for path in (stale_tmp, tmp_path / "store" / "uploads" / live, tmp_path / "store" / "uploads" / orphan):
        os.utime(path, (old, old))
    swept = single_domain(store).sweep_leftovers(
        KeyDomain(), datetime.now(UTC) - timedelta(hours=1), lambda upload_id: upload_id == live
    )
    assert swept == 2
    assert not stale_tmp.exists()
    assert store.upload_size(orphan) is None
    assert store.upload_size(live) == 0
    assert store.upload_size(fresh) == 0


# ------------------------------------------------------------------------------------------- metadata


def test_sqlite_on_a_full_disk_reads_and_refuses_writes_with_the_storage_error(disk: Path) -> None:
    engine = make_engine(f"sqlite:///{disk / 'metadata.db'}")
    upgrade(engine)
    store = SqlMetadataStore(engine)
    try:
        store.ensure_account("123456789012", T0)
        repository, _ = store.create_repository(RepositoryRef("123456789012", "us-east-1", "team/app"), T0)
        with engine.connect() as connection:  # a checkpointed WAL is reused in place: writes then need no space
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = fill(disk)
        with pytest.raises(InsufficientStorage) as full:
            for n in range(100):  # the first write may still fit in a page the database holds
                store.create_upload(UploadSession(str(uuid.uuid4()), repository.id, T0 + timedelta(seconds=n)))
        assert "metadata database" in full.value.message
        assert is_storage_full(full.value.__cause__ or full.value)
        assert store.get_repository(repository.ref) == repository
        filler.unlink()
        store.create_upload(UploadSession(str(uuid.uuid4()), repository.id, T0))
    finally:
        store.close()  # the shared generation's file is mapped: the tmpfs could not be unmounted
        engine.dispose()


def test_the_ecr_api_answers_507_server_exception_naming_the_storage() -> None:
    response = error_response(InsufficientStorage())
    assert response.status_code == 507
    body = json.loads(bytes(response.body))
    assert body == {"__type": "ServerException", "message": "no space left on the registry's storage"}
