"""The S3 blob store beyond the shared contract: multipart uploads that stay open across appends and nodes.

Each test runs against moto and, when DOCKYARD_TEST_S3_ENDPOINT names one, a real radosgw (see conftest.py).
Blobs are tens of MiB here, so that appends fill several parts of S3's real minimum size (5 MiB).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from dockyard.domain.errors import BlobUploadUnknown
from dockyard.domain.names import Digest
from dockyard.storage.blobs import s3
from dockyard.storage.blobs.encrypted import EncryptedBlobStore, MasterKeyProvider
from dockyard.storage.blobs.s3 import MIB, PARTS_IN_FLIGHT, S3BlobStore
from tests.unit.storage.conftest import moto_s3_store, radosgw_s3_store

STORES: dict[str, Callable[[Path], AbstractContextManager[S3BlobStore]]] = {
    "moto": moto_s3_store,
    "radosgw": radosgw_s3_store,
}
DATA = random.Random(7).randbytes(30 * MIB + 12345)
DIGEST = Digest.of(DATA)


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[S3BlobStore]:
    with STORES[request.param](tmp_path) as made:
        yield made


def node(store: S3BlobStore, **options: Any) -> S3BlobStore:
    """Another node: the same bucket and prefix, no state shared in memory."""
    return S3BlobStore(store.bucket, store.prefix, store.client, **options)


def new_upload(store: S3BlobStore | EncryptedBlobStore) -> str:
    upload_id = str(uuid.uuid4())
    store.start_upload(upload_id)
    return upload_id


def append(store: S3BlobStore, upload_id: str, data: bytes, write_size: int = 1_000_003) -> None:
    """One append, written in pieces the way a request body arrives."""
    writer = store.append_upload(upload_id)
    for start in range(0, len(data), write_size):
        writer.write(data[start : start + write_size])
    writer.close()


def read(store: S3BlobStore, digest: Digest) -> bytes:
    return b"".join(store.read_blob(digest))


def leftovers(store: S3BlobStore) -> tuple[list[str], list[str]]:
    """Objects under uploads/ and multipart uploads anywhere under the prefix."""
    objects = [
        item["Key"]
        for page in store.client.get_paginator("list_objects_v2").paginate(
            Bucket=store.bucket, Prefix=f"{store.prefix}/uploads/"
        )
        for item in page.get("Contents", [])
    ]
    multiparts = [
        item["Key"]
        for page in store.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=store.bucket, Prefix=f"{store.prefix}/"
        )
        for item in page.get("Uploads", [])
    ]
    return objects, multiparts


@contextlib.contextmanager
def recorded_calls(store: S3BlobStore) -> Iterator[list[str]]:
    """The names of the S3 operations the client makes meanwhile (from any thread)."""
    calls: list[str] = []

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    store.client.meta.events.register("before-call.s3", record)
    try:
        yield calls
    finally:
        store.client.meta.events.unregister("before-call.s3", record)


@contextlib.contextmanager
def hooked(store: S3BlobStore, event: str, handler: Callable[..., Any]) -> Iterator[None]:
    store.client.meta.events.register(event, handler)
    try:
        yield
    finally:
        store.client.meta.events.unregister(event, handler)


def test_one_append_goes_into_one_multipart_upload_published_by_one_copy(store: S3BlobStore) -> None:
    upload_id = new_upload(store)
    with recorded_calls(store) as calls:
        append(store, upload_id, DATA)
    state, _ = store._state(upload_id)
    assert state.open is not None and state.segments == ()
    assert [size for _, size in state.open.parts] == [8 * MIB] * 3 + [6 * MIB + 12345]
    assert state.tail is None and state.size == len(DATA)
    assert calls.count("UploadPart") == 4 and "PutObject" in calls  # the parts, then the state
    with recorded_calls(store) as calls:
        node(store).commit_upload(upload_id, DIGEST)
    assert "UploadPartCopy" not in calls and calls.count("CopyObject") == 1
    assert read(store, DIGEST) == DATA
    assert store.upload_size(upload_id) is None
    assert leftovers(store) == ([], [])


def test_chunked_appends_on_alternating_nodes(store: S3BlobStore) -> None:
    """Small chunks become a tail the next append (elsewhere) takes back; the tail ends up as the last part."""
    first, second, third = store, node(store), node(store)
    upload_id = new_upload(first)
    bounds = [0, 3 * MIB, 3 * MIB + 10, 12 * MIB, 13 * MIB, 29 * MIB, len(DATA)]
    for number, (start, end) in enumerate(itertools.pairwise(bounds)):
        writer, other = (first, second) if number % 2 == 0 else (second, first)
        append(writer, upload_id, DATA[start:end])
        assert other.upload_size(upload_id) == end
    state, _ = third._state(upload_id)
    assert state.segments == () and state.open is not None and state.tail is not None  # one multipart upload
    with recorded_calls(store) as calls:
        third.commit_upload(upload_id, DIGEST)
    assert calls.count("UploadPartCopy") == 1 and calls.count("CopyObject") == 1  # the tail, then the blob
    assert read(first, DIGEST) == DATA
    assert leftovers(store) == ([], [])


def test_reading_an_upload_back_seals_it_and_appends_carry_on(store: S3BlobStore) -> None:
    """A node without the running hash reads the bytes back: the open multipart upload becomes a segment,
    even between the opening of a writer and its first byte (as the encrypted store and Registry do)."""
    upload_id = new_upload(store)
    append(store, upload_id, DATA[: 20 * MIB + 5])
    other = node(store)
    writer = other.append_upload(upload_id)
    assert b"".join(other.read_upload(upload_id)) == DATA[: 20 * MIB + 5]
    state, _ = store._state(upload_id)
    assert state.open is None and [size for _, size in state.segments] == [16 * MIB] and state.tail is not None
    assert store.upload_size(upload_id) == 20 * MIB + 5
    writer.write(DATA[20 * MIB + 5 :])
    writer.close()
    assert b"".join(store.read_upload(upload_id)) == DATA  # sealed again: two segments
    append(store, upload_id, b"")  # nothing written: nothing changes
    store.commit_upload(upload_id, DIGEST)
    assert read(other, DIGEST) == DATA
    assert leftovers(store) == ([], [])


def test_segments_are_published_by_a_multipart_copy(store: S3BlobStore) -> None:
    upload_id = new_upload(store)
    for start, end in [(0, 9 * MIB), (9 * MIB, 21 * MIB), (21 * MIB, len(DATA))]:
        append(store, upload_id, DATA[start:end])
        b"".join(node(store).read_upload(upload_id))
    state, _ = store._state(upload_id)
    assert [size for _, size in state.segments] == [8 * MIB, 13 * MIB, 8 * MIB] and state.open is None
    assert state.tail is not None
    with recorded_calls(store) as calls:
        store.commit_upload(upload_id, DIGEST)
    assert calls.count("UploadPartCopy") == 4 and "CopyObject" not in calls  # the segments and the tail
    assert read(store, DIGEST) == DATA
    assert leftovers(store) == ([], [])


def test_a_blob_larger_than_the_copy_limit_is_copied_in_ranges(
    store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3, "COPY_RANGE", 8 * MIB)
    limited = node(store, copy_object_limit=10 * MIB)
    upload_id = new_upload(limited)
    append(limited, upload_id, DATA)
    with recorded_calls(store) as calls:
        limited.commit_upload(upload_id, DIGEST)
    assert calls.count("UploadPartCopy") == 4 and "CopyObject" not in calls  # 4 ranges of 7.5 MiB
    assert read(store, DIGEST) == DATA
    assert leftovers(store) == ([], [])


def test_a_writer_opened_before_another_append_gives_up(store: S3BlobStore) -> None:
    upload_id = new_upload(store)
    append(store, upload_id, DATA[: 6 * MIB])
    late, early = store.append_upload(upload_id), node(store).append_upload(upload_id)
    early.write(DATA[6 * MIB : 7 * MIB])
    racing = node(store).append_upload(upload_id)
    racing.write(DATA[6 * MIB : 16 * MIB])
    racing.close()
    with pytest.raises(BlobUploadUnknown):
        early.close()  # the state changed while it wrote
    with pytest.raises(BlobUploadUnknown):  # another append closed since it was opened
        late.write(DATA[6 * MIB : 7 * MIB])
        late.close()
    late.close()  # after a failure: leaves the upload alone
    assert b"".join(store.read_upload(upload_id)) == DATA[: 16 * MIB]
    append(store, upload_id, DATA[16 * MIB :])
    store.commit_upload(upload_id, DIGEST)
    assert read(store, DIGEST) == DATA
    assert leftovers(store) == ([], [])


def test_discarded_appends_leave_the_upload_as_it_was(store: S3BlobStore) -> None:
    upload_id = new_upload(store)
    writer = store.append_upload(upload_id)
    writer.write(DATA[: 20 * MIB])  # a multipart upload of its own, parts on their way
    writer.discard()
    assert store.upload_size(upload_id) == 0
    assert leftovers(store)[1] == []  # aborted
    append(store, upload_id, DATA[: 10 * MIB])
    writer = node(store).append_upload(upload_id)
    writer.write(b"\0" * (20 * MIB))  # stray parts 2, 3, 4 of the open multipart upload
    writer.discard()
    assert store.upload_size(upload_id) == 10 * MIB
    append(store, upload_id, DATA[10 * MIB :])  # parts 2, 3, ... again
    store.commit_upload(upload_id, DIGEST)
    assert read(store, DIGEST) == DATA
    assert leftovers(store) == ([], [])


def test_a_failed_part_fails_the_append_and_keeps_the_upload(store: S3BlobStore) -> None:
    upload_id = new_upload(store)
    append(store, upload_id, DATA[: 10 * MIB])
    sent: list[int] = []

    def fail_the_second(**_: Any) -> None:
        sent.append(1)
        if len(sent) == 2:
            raise ConnectionError("the S3 server went away")

    writer = store.append_upload(upload_id)
    with hooked(store, "before-call.s3.UploadPart", fail_the_second), pytest.raises(ConnectionError):
        for start in range(10 * MIB, len(DATA), MIB):
            writer.write(DATA[start : start + MIB])
        writer.close()
    writer.close()  # what the server does after a failed request: nothing more happens
    assert store.upload_size(upload_id) == 10 * MIB
    append(store, upload_id, DATA[10 * MIB :])
    store.commit_upload(upload_id, DIGEST)
    assert read(store, DIGEST) == DATA


def test_a_writer_sends_a_bounded_number_of_parts_at_once(store: S3BlobStore) -> None:
    lock, state = threading.Lock(), {"now": 0, "most": 0}

    def start(**_: Any) -> None:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.05)

    def end(**_: Any) -> None:
        with lock:
            state["now"] -= 1

    upload_id = new_upload(store)
    with hooked(store, "before-call.s3.UploadPart", start), hooked(store, "after-call.s3.UploadPart", end):
        append(store, upload_id, DATA)
    assert state["most"] == PARTS_IN_FLIGHT
    store.abort_upload(upload_id)


def test_abort_removes_segments_parts_tail_and_state(store: S3BlobStore) -> None:
    upload_id = new_upload(store)
    append(store, upload_id, DATA[: 12 * MIB])
    b"".join(store.read_upload(upload_id))  # a segment
    append(store, upload_id, DATA[12 * MIB : 25 * MIB + 7])  # an open multipart upload and a tail
    writer = store.append_upload(upload_id)
    writer.write(DATA[: 9 * MIB])  # and a part nobody names
    for sending, _ in writer._sending:
        sending.result()  # moto cannot abort a multipart upload while a part is arriving
    node(store).abort_upload(upload_id)
    assert store.upload_size(upload_id) is None
    assert leftovers(store) == ([], [])
    with pytest.raises(BlobUploadUnknown):
        writer.close()
    with pytest.raises(BlobUploadUnknown):
        store.commit_upload(upload_id, DIGEST)


@pytest.fixture
def radosgw_store(tmp_path: Path) -> Iterator[S3BlobStore]:
    """Only a real S3 server: moto 5 fails with KeyError, not NoSuchUpload, on upload_part_copy to a completed
    multipart upload, which is exactly what a retried commit meets."""
    with radosgw_s3_store(tmp_path) as made:
        yield made


@pytest.mark.parametrize("with_tail", [True, False])
def test_a_commit_that_died_after_sealing_is_retried(radosgw_store: S3BlobStore, with_tail: bool) -> None:
    store = radosgw_store
    upload_id = new_upload(store)
    append(store, upload_id, DATA[: 24 * MIB])
    append(store, upload_id, DATA[24 * MIB : 27 * MIB])
    state, _ = store._state(upload_id)
    assert state.open is not None and state.tail is not None
    store._seal(upload_id, state, with_tail)  # completed, but the state was never written
    node(store).commit_upload(upload_id, Digest.of(DATA[: 27 * MIB]))
    assert read(store, Digest.of(DATA[: 27 * MIB])) == DATA[: 27 * MIB]
    assert leftovers(store) == ([], [])


def test_an_upload_staged_by_the_previous_layout_is_continued_and_committed(store: S3BlobStore) -> None:
    upload_id = new_upload(store)
    root = f"{store.prefix}/uploads/{upload_id}/"
    token = "0123456789abcdef"
    for number, start in enumerate(range(0, 16 * MIB, 8 * MIB), 1):
        store.client.put_object(
            Bucket=store.bucket, Key=f"{root}parts/{number:05d}.{token}", Body=DATA[start : start + 8 * MIB]
        )
    store.client.put_object(Bucket=store.bucket, Key=f"{root}tail.{token}", Body=DATA[16 * MIB : 17 * MIB])
    parts = [[f"parts/{number:05d}.{token}", 8 * MIB] for number in (1, 2)]
    state = {"parts": parts, "tail": [f"tail.{token}", MIB]}
    store.client.put_object(Bucket=store.bucket, Key=f"{root}state", Body=json.dumps(state).encode())
    assert store.upload_size(upload_id) == 17 * MIB
    append(store, upload_id, DATA[17 * MIB :])
    store.commit_upload(upload_id, DIGEST)
    assert read(store, DIGEST) == DATA
    assert leftovers(store) == ([], [])


def test_encrypted_uploads_over_s3_on_two_nodes(store: S3BlobStore) -> None:
    first, second = (EncryptedBlobStore(node(store), MasterKeyProvider(bytes(range(32)))) for _ in range(2))
    upload_id = new_upload(first)
    bounds = [0, 11 * MIB, 11 * MIB + 3, 27 * MIB, len(DATA)]
    for number, (start, end) in enumerate(itertools.pairwise(bounds)):
        writer = (first, second)[number % 2].append_upload(upload_id)
        writer.write(DATA[start:end])
        writer.close()
        assert (second, first)[number % 2].upload_size(upload_id) == end
    first.commit_upload(upload_id, DIGEST)
    assert b"".join(second.read_blob(DIGEST)) == DATA
    assert b"".join(second.read_blob(DIGEST, 12 * MIB, 100)) == DATA[12 * MIB : 12 * MIB + 100]
    assert leftovers(store) == ([], [])


@pytest.mark.parametrize(
    ("size", "pieces"),
    [
        (14 * MIB, ([8 * MIB, 6 * MIB], False)),  # in the second segment, more than a part: copied
        (9 * MIB, ([8 * MIB], True)),  # in the second segment, less than a part: the tail
        (8 * MIB, ([8 * MIB], False)),  # between the segments
        (21 * MIB + 3, ([8 * MIB, 13 * MIB], True)),  # in the open multipart upload, sealed first
        (29 * MIB + 5, ([8 * MIB, 13 * MIB, 8 * MIB], True)),  # in the tail
        (3, ([], True)),
        (0, ([], False)),
    ],
)
def test_a_truncated_upload_keeps_whole_pieces_and_a_cut_copy_of_one(
    store: S3BlobStore, size: int, pieces: tuple[list[int], bool]
) -> None:
    """Wherever the cut falls, the state names only the first `size` bytes; whatever follows is deleted."""
    upload_id = new_upload(store)
    for start, end in [(0, 9 * MIB), (9 * MIB, 21 * MIB)]:
        append(store, upload_id, DATA[start:end])
        b"".join(node(store).read_upload(upload_id))  # sealed: segments of 8 and 13 MiB
    append(store, upload_id, DATA[21 * MIB :])  # an open multipart upload of one 8 MiB part, and a tail
    state, _ = store._state(upload_id)
    assert state.open is not None and state.tail is not None and len(state.segments) == 2
    writer = node(store).append_upload(upload_id)
    writer.truncate(size)
    state, _ = store._state(upload_id)
    assert ([piece for _, piece in state.segments], state.tail is not None) == pieces
    assert state.open is None and state.size == size
    writer.write(DATA[size : size + 7 * MIB])
    writer.close()
    assert b"".join(store.read_upload(upload_id)) == DATA[: size + 7 * MIB]
    objects, multiparts = leftovers(store)
    assert len(objects) == len(store._state(upload_id)[0].pieces) + 1 and multiparts == []  # + the state
    store.commit_upload(upload_id, Digest.of(DATA[: size + 7 * MIB]))
    assert read(store, Digest.of(DATA[: size + 7 * MIB])) == DATA[: size + 7 * MIB]
    assert leftovers(store) == ([], [])


def test_a_truncation_cuts_into_the_open_multipart_upload(store: S3BlobStore) -> None:
    upload_id = new_upload(store)
    append(store, upload_id, DATA[: 20 * MIB])
    writer = store.append_upload(upload_id)
    writer.truncate(12 * MIB)  # parts cannot be read: the multipart upload is sealed, then cut
    writer.write(DATA[12 * MIB :])
    writer.close()
    store.commit_upload(upload_id, DIGEST)
    assert read(store, DIGEST) == DATA
    assert leftovers(store) == ([], [])


def test_a_truncation_after_another_append_gives_up(store: S3BlobStore) -> None:
    upload_id = new_upload(store)
    append(store, upload_id, DATA[:MIB])
    writer = store.append_upload(upload_id)
    append(node(store), upload_id, DATA[MIB : 2 * MIB])
    with pytest.raises(BlobUploadUnknown):
        writer.truncate(10)
    assert b"".join(store.read_upload(upload_id)) == DATA[: 2 * MIB]
