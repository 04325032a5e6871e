"""The BlobStore contract (dockyard.domain.ports.BlobStore), run against every implementation.

To add a store, add one entry to BLOB_STORES: a name and a factory taking a fresh temporary directory. The
factory returns the store, or a context manager that gives the store and cleans up after the test.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from dockyard.domain.errors import BlobUnknown, BlobUploadUnknown
from dockyard.domain.names import Digest
from dockyard.domain.ports import BlobStore
from dockyard.storage.blobs.encrypted import EncryptedBlobStore, MasterKeyProvider
from dockyard.storage.blobs.filesystem import FilesystemBlobStore
from tests.unit.storage.conftest import moto_s3_store, radosgw_s3_store

BLOB_STORES: dict[str, Callable[[Path], BlobStore | AbstractContextManager[BlobStore]]] = {
    "filesystem": lambda root: FilesystemBlobStore(root / "store"),
    "encrypted-filesystem": lambda root: EncryptedBlobStore(
        FilesystemBlobStore(root / "store"), MasterKeyProvider(bytes(range(32)))
    ),
    "s3-moto": moto_s3_store,  # moto's in-process S3 mock
    "s3-radosgw": radosgw_s3_store,  # a real Ceph radosgw from DOCKYARD_TEST_S3_*: skipped without one, fails on CI
}

DATA = bytes(range(256)) * 9000  # 2.2 MiB: more than one read chunk
DIGEST = Digest.of(DATA)


@pytest.fixture(params=sorted(BLOB_STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    made = BLOB_STORES[request.param](tmp_path)
    if isinstance(made, AbstractContextManager):
        with made as blob_store:
            yield blob_store
    else:
        yield made


def new_id() -> str:
    return str(uuid.uuid4())


def read(store: BlobStore, digest: Digest, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join(store.read_blob(digest, offset, length))


def upload(store: BlobStore, *parts: bytes) -> str:
    upload_id = new_id()
    store.start_upload(upload_id)
    for part in parts:
        writer = store.append_upload(upload_id)
        writer.write(part)
        writer.close()
    return upload_id


# ------------------------------------------------------------------------------------------ blobs


def test_put_then_read(store: BlobStore) -> None:
    store.put_blob(DIGEST, DATA)
    assert store.blob_size(DIGEST) == len(DATA)
    assert read(store, DIGEST) == DATA


def test_unknown_blob(store: BlobStore) -> None:
    assert store.blob_size(DIGEST) is None
    with pytest.raises(BlobUnknown):
        read(store, DIGEST)


def test_empty_blob(store: BlobStore) -> None:
    empty = Digest.of(b"")
    store.put_blob(empty, b"")
    assert store.blob_size(empty) == 0
    assert read(store, empty) == b""


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, 1),
        (0, None),
        (1, 10),
        (1024 * 1024 - 3, 7),
        (1024 * 1024, 1024 * 1024 + 5),
        (len(DATA) - 1, None),
        (len(DATA) - 10, 100),
        (len(DATA), None),
        (len(DATA) + 5, 3),
        (17, 0),
    ],
)
def test_ranged_read(store: BlobStore, offset: int, length: int | None) -> None:
    store.put_blob(DIGEST, DATA)
    end = len(DATA) if length is None else offset + length
    assert read(store, DIGEST, offset, length) == DATA[offset:end]


def test_put_twice_keeps_one_readable_copy(store: BlobStore) -> None:
    store.put_blob(DIGEST, DATA)
    store.put_blob(DIGEST, DATA)
    assert read(store, DIGEST) == DATA


def test_delete(store: BlobStore) -> None:
    store.put_blob(DIGEST, DATA)
    store.delete_blob(DIGEST)
    assert store.blob_size(DIGEST) is None
    with pytest.raises(BlobUnknown):
        read(store, DIGEST)


def test_delete_unknown_blob_is_a_no_op(store: BlobStore) -> None:
    store.delete_blob(DIGEST)
    assert store.blob_size(DIGEST) is None


def test_algorithms_do_not_collide(store: BlobStore) -> None:
    sha512 = Digest.of(b"other", "sha512")
    store.put_blob(DIGEST, DATA)
    store.put_blob(sha512, b"other")
    assert read(store, sha512) == b"other"
    assert read(store, DIGEST) == DATA


def test_local_path_is_none_or_the_bytes(store: BlobStore) -> None:
    store.put_blob(DIGEST, DATA)
    path = store.local_path(DIGEST)
    assert path is None or Path(path).read_bytes() == DATA


# ------------------------------------------------------------------------------------------ uploads


def test_upload_starts_empty(store: BlobStore) -> None:
    upload_id = upload(store)
    assert store.upload_size(upload_id) == 0
    assert b"".join(store.read_upload(upload_id)) == b""


def test_appends_accumulate_in_order(store: BlobStore) -> None:
    upload_id = upload(store, DATA[:10], DATA[10:2_000_000], DATA[2_000_000:])
    assert store.upload_size(upload_id) == len(DATA)
    assert b"".join(store.read_upload(upload_id)) == DATA


def test_one_writer_many_writes(store: BlobStore) -> None:
    upload_id = upload(store)
    writer = store.append_upload(upload_id)
    for start in range(0, 100, 10):
        writer.write(DATA[start : start + 10])
    writer.close()
    assert b"".join(store.read_upload(upload_id)) == DATA[:100]


@pytest.mark.parametrize("size", [0, 10, 1_000_000, 2_000_000, len(DATA) - 1, len(DATA)])
def test_a_truncated_upload_keeps_its_first_bytes_and_appends_follow(store: BlobStore, size: int) -> None:
    upload_id = upload(store, DATA[:10], DATA[10:2_000_000], DATA[2_000_000:])
    writer = store.append_upload(upload_id)
    writer.truncate(size)
    writer.write(b"after")
    writer.close()
    assert store.upload_size(upload_id) == size + 5
    assert b"".join(store.read_upload(upload_id)) == DATA[:size] + b"after"
    store.commit_upload(upload_id, Digest.of(DATA[:size] + b"after"))
    assert read(store, Digest.of(DATA[:size] + b"after")) == DATA[:size] + b"after"


def test_truncation_takes_effect_at_once(store: BlobStore) -> None:
    upload_id = upload(store, DATA)
    writer = store.append_upload(upload_id)
    writer.truncate(1000)
    writer.discard()
    assert b"".join(store.read_upload(upload_id)) == DATA[:1000]
    writer = store.append_upload(upload_id)
    with pytest.raises(ValueError):
        writer.truncate(1001)  # beyond the upload's end
    writer.write(b"x")
    with pytest.raises(ValueError):
        writer.truncate(10)  # only before writing
    writer.close()
    assert b"".join(store.read_upload(upload_id)) == DATA[:1000] + b"x"


def test_blob_is_invisible_before_commit(store: BlobStore) -> None:
    upload(store, DATA)
    assert store.blob_size(DIGEST) is None
    with pytest.raises(BlobUnknown):
        read(store, DIGEST)


def test_commit_publishes_and_drops_the_upload(store: BlobStore) -> None:
    upload_id = upload(store, DATA[:100], DATA[100:])
    store.commit_upload(upload_id, DIGEST)
    assert read(store, DIGEST) == DATA
    assert store.blob_size(DIGEST) == len(DATA)
    assert store.upload_size(upload_id) is None


def test_committing_the_same_digest_twice_keeps_one_readable_copy(store: BlobStore) -> None:
    first, second = upload(store, DATA), upload(store, DATA)
    store.commit_upload(first, DIGEST)
    store.commit_upload(second, DIGEST)
    assert read(store, DIGEST) == DATA
    assert store.upload_size(second) is None


def test_commit_over_a_put_blob(store: BlobStore) -> None:
    store.put_blob(DIGEST, DATA)
    store.commit_upload(upload(store, DATA), DIGEST)
    assert read(store, DIGEST) == DATA


def test_abort(store: BlobStore) -> None:
    upload_id = upload(store, DATA)
    store.abort_upload(upload_id)
    assert store.upload_size(upload_id) is None
    assert store.blob_size(DIGEST) is None
    store.abort_upload(upload_id)  # twice is harmless


def test_uploads_are_independent(store: BlobStore) -> None:
    first, second = upload(store, b"first"), upload(store, b"second")
    store.abort_upload(first)
    assert b"".join(store.read_upload(second)) == b"second"


def test_unknown_upload_id(store: BlobStore) -> None:
    unknown = new_id()
    assert store.upload_size(unknown) is None
    with pytest.raises(BlobUploadUnknown):
        store.append_upload(unknown)
    with pytest.raises(BlobUploadUnknown):
        b"".join(store.read_upload(unknown))
    store.abort_upload(unknown)


def test_commit_of_unknown_or_aborted_upload(store: BlobStore) -> None:
    aborted = upload(store, DATA)
    store.abort_upload(aborted)
    for upload_id in (new_id(), aborted):
        with pytest.raises(BlobUploadUnknown):
            store.commit_upload(upload_id, DIGEST)
    assert store.blob_size(DIGEST) is None


@pytest.mark.parametrize(
    "upload_id", ["../x", "../../etc/passwd", "/tmp/x", "..", "a/b", "x\x00y", "../blobs/sha256/aa/" + "a" * 64]
)
def test_path_traversal_upload_ids_are_rejected(store: BlobStore, tmp_path: Path, upload_id: str) -> None:
    for sentinel in (tmp_path / "x", tmp_path / "store" / "x"):
        sentinel.write_bytes(b"keep")
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    for operation in (store.start_upload, store.append_upload, store.read_upload):
        with pytest.raises(BlobUploadUnknown):
            operation(upload_id)
    with pytest.raises(BlobUploadUnknown):
        store.commit_upload(upload_id, DIGEST)
    with contextlib.suppress(BlobUploadUnknown):  # may refuse, or find nothing
        assert store.upload_size(upload_id) is None
    with contextlib.suppress(BlobUploadUnknown):
        store.abort_upload(upload_id)
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before
