"""EncryptedBlobStore over the filesystem store: nothing in plain text, exact ranges and uploads, tamper evidence.

The BlobStore contract itself runs against this store from test_blob_store_contract.py; these tests cover what
only encryption adds. They know the filesystem store's layout (blobs/<algorithm>/<xx>/<hex>, uploads/<id>) and the
encrypted format documented in dockyard/storage/blobs/encrypted.py, to tamper with the stored bytes.
"""

from __future__ import annotations

import itertools
import logging
import random
import struct
import tempfile
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.domain.errors import BlobUnknown, BlobUploadUnknown
from dockyard.domain.names import Digest
from dockyard.domain.ports import BlobStore
from dockyard.storage.blobs.encrypted import (
    TAG_BYTES,
    BlobCorrupted,
    DataKeyUnavailable,
    EncryptedBlobStore,
    MasterKeyProvider,
    _staging_id,
)
from dockyard.storage.blobs.filesystem import FilesystemBlobStore

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
SEGMENT = 4096
DATA = random.Random(7).randbytes(5 * SEGMENT + 123)  # six segments, the last one short
DIGEST = Digest.of(DATA)
TEXT = b"".join(
    b"Dockyard layer %05d: the quick brown fox jumps over the lazy dog; password=hunter2\n" % line
    for line in range(1500)
)
PROPERTIES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make(root: Path, key: bytes = KEY, segment: int = SEGMENT, retired: tuple[bytes, ...] = ()) -> EncryptedBlobStore:
    return EncryptedBlobStore(FilesystemBlobStore(root), MasterKeyProvider(key, retired), segment)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> EncryptedBlobStore:
    return make(root)


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


def blob_file(root: Path, digest: Digest) -> Path:
    return root / "blobs" / digest.algorithm / digest.hex[:2] / digest.hex


def upload_file(root: Path, upload_id: str) -> Path:
    return root / "uploads" / upload_id


def header_length(stored: bytes) -> int:
    length: int = struct.unpack_from(">H", stored, 5)[0]
    return length


def segment_offset(stored: bytes, index: int) -> int:
    return header_length(stored) + index * (SEGMENT + TAG_BYTES)


# ------------------------------------------------------------------------------------------ nothing in plain text


def leaked_windows(plaintext: bytes, root: Path) -> list[Path]:
    """Files under `root` that hold any 32-byte window of `plaintext`.

    Any 32-byte window of the plaintext contains a whole 16-byte block aligned to the plaintext's start, so
    it is enough to look for those blocks at every offset of every file.
    """
    blocks = {plaintext[start : start + 16] for start in range(0, len(plaintext) - 15, 16)}
    leaks = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stored = path.read_bytes()
        if any(stored[start : start + 16] in blocks for start in range(len(stored) - 15)):
            leaks.append(path)
    return leaks


def test_the_leak_scanner_finds_plain_text(tmp_path: Path) -> None:
    plain = FilesystemBlobStore(tmp_path)
    plain.put_blob(Digest.of(TEXT), TEXT)
    assert leaked_windows(TEXT[1000:1032], tmp_path) == [blob_file(tmp_path, Digest.of(TEXT))]


def test_no_plain_text_on_disk(root: Path, store: EncryptedBlobStore) -> None:
    secret = random.Random(3).randbytes(150_000)
    store.put_blob(Digest.of(TEXT), TEXT)
    store.commit_upload(upload(store, secret[:70_000], secret[70_000:]), Digest.of(secret))
    staged = upload(store, TEXT[:5], TEXT[5:50_000], TEXT[50_000:])  # left in progress
    partial = upload(store, secret[:1000])
    writer = store.append_upload(partial)
    writer.write(secret[1000:9000])
    writer.discard()  # sealed records stay, the unsealed remainder goes
    assert read(store, Digest.of(TEXT)) == TEXT
    assert read(store, Digest.of(secret)) == secret
    assert b"".join(store.read_upload(staged)) == TEXT
    for plaintext in (secret, TEXT):
        assert leaked_windows(plaintext, root) == []
    everything = b"".join(path.read_bytes() for path in root.rglob("*") if path.is_file())
    for word in (b"quick brown fox", b"hunter2", b"Dockyard layer"):
        assert word not in everything


# ------------------------------------------------------------------------------------------ exact bytes (properties)


@PROPERTIES
@given(
    data=st.binary(max_size=3000),
    segment=st.sampled_from([64, 100, 1024]),
    by_upload=st.booleans(),
    ranges=st.lists(st.tuples(st.integers(0, 3100), st.none() | st.integers(0, 3100)), min_size=1, max_size=10),
)
def test_ranged_reads_are_the_plaintext_slices(
    data: bytes, segment: int, by_upload: bool, ranges: list[tuple[int, int | None]]
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = make(Path(directory), segment=segment)
        digest = Digest.of(data)
        if by_upload:
            store.commit_upload(upload(store, data[:77], data[77:]), digest)
        else:
            store.put_blob(digest, data)
        assert store.blob_size(digest) == len(data)
        assert read(store, digest) == data
        for offset, length in ranges:
            end = len(data) if length is None else offset + length
            assert read(store, digest, offset, length) == data[offset:end]


@PROPERTIES
@given(
    data=st.binary(max_size=2500),
    cuts=st.lists(st.integers(0, 2500), max_size=8),
    segment=st.sampled_from([64, 256]),
    new_process_per_append=st.booleans(),
    draw=st.data(),
)
def test_chunked_uploads_reproduce_the_plaintext(
    data: bytes, cuts: list[int], segment: int, new_process_per_append: bool, draw: st.DataObject
) -> None:
    """Appends split anywhere, each possibly on another process (a fresh store), each in several writes."""
    bounds = [0, *sorted(min(cut, len(data)) for cut in cuts), len(data)]
    with tempfile.TemporaryDirectory() as directory:
        store = make(Path(directory), segment=segment)
        upload_id = new_id()
        store.start_upload(upload_id)
        for start, end in itertools.pairwise(bounds):
            inner_cuts = sorted(draw.draw(st.lists(st.integers(start, end), max_size=3)))
            if new_process_per_append:
                store = make(Path(directory), segment=segment)
            writer = store.append_upload(upload_id)
            for low, high in zip([start, *inner_cuts], [*inner_cuts, end], strict=True):
                writer.write(data[low:high])
            writer.close()
            assert store.upload_size(upload_id) == end
            assert b"".join(store.read_upload(upload_id)) == data[:end]
        digest = Digest.of(data)
        store.commit_upload(upload_id, digest)
        assert store.upload_size(upload_id) is None
        assert store.blob_size(digest) == len(data)
        assert read(store, digest) == data
        assert read(make(Path(directory), segment=segment), digest) == data


def test_segment_size_of_a_blob_is_its_own(root: Path) -> None:
    """A blob keeps the segment size it was written with; a store configured otherwise still reads it."""
    make(root, segment=1000).put_blob(DIGEST, DATA)
    assert read(make(root, segment=SEGMENT), DIGEST, 2990, 30) == DATA[2990:3020]


# ------------------------------------------------------------------------------------------ what is read


class SpyStore:
    """A BlobStore that records the ranges read from it."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.reads: list[tuple[int, int | None]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def read_blob(self, digest: Digest, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        self.reads.append((offset, length))
        return self.inner.read_blob(digest, offset, length)


def test_blob_size_reads_only_the_header(root: Path) -> None:
    spy = SpyStore(FilesystemBlobStore(root))
    store = EncryptedBlobStore(spy, MasterKeyProvider(KEY), SEGMENT)  # type: ignore[arg-type]
    store.put_blob(DIGEST, DATA)
    assert store.blob_size(DIGEST) == len(DATA)
    assert [offset for offset, _ in spy.reads] == [0]
    assert spy.reads[0][1] is not None and spy.reads[0][1] <= 512
    assert store.local_path(DIGEST) is None


def test_ranged_reads_fetch_only_the_segments_they_touch(root: Path) -> None:
    spy = SpyStore(FilesystemBlobStore(root))
    store = EncryptedBlobStore(spy, MasterKeyProvider(KEY), SEGMENT)  # type: ignore[arg-type]
    store.put_blob(DIGEST, DATA)
    stored = blob_file(root, DIGEST).read_bytes()
    spy.reads.clear()
    assert read(store, DIGEST, 3 * SEGMENT + 10, SEGMENT) == DATA[3 * SEGMENT + 10 : 4 * SEGMENT + 10]
    assert spy.reads[1:] == [(segment_offset(stored, 3), 2 * (SEGMENT + TAG_BYTES))]


def test_memory_stays_flat_for_large_blobs(root: Path) -> None:
    store = make(root, segment=64 * 1024)
    data = random.Random(1).randbytes(24 * 1024 * 1024)
    digest = Digest.of(data)
    upload_id = new_id()
    store.start_upload(upload_id)
    for start in range(0, len(data), 3_000_000):
        writer = store.append_upload(upload_id)
        writer.write(data[start : start + 3_000_000])
        writer.close()
    tracemalloc.start()
    try:
        store.commit_upload(upload_id, digest)
        _, commit_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total = sum(len(chunk) for chunk in store.read_blob(digest))
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == len(data)
    assert commit_peak < 4 * 1024 * 1024  # a few segments and one read chunk of the inner store
    assert read_peak < 4 * 1024 * 1024


# ------------------------------------------------------------------------------------------ tampering


def flip(position: Callable[[bytes], int]) -> Callable[[bytes], bytes]:
    def tamper(stored: bytes) -> bytes:
        at = position(stored)
        return stored[:at] + bytes([stored[at] ^ 0x01]) + stored[at + 1 :]

    return tamper


def cut(position: Callable[[bytes], int]) -> Callable[[bytes], bytes]:
    return lambda stored: stored[: position(stored)]


def swap_segments(first: int, second: int) -> Callable[[bytes], bytes]:
    def tamper(stored: bytes) -> bytes:
        def at(index: int) -> slice:
            return slice(segment_offset(stored, index), segment_offset(stored, index + 1))

        swapped = bytearray(stored)
        swapped[at(first)], swapped[at(second)] = stored[at(second)], stored[at(first)]
        return bytes(swapped)

    return tamper


HEADER_TAMPERING: dict[str, Callable[[bytes], bytes]] = {
    "magic": flip(lambda s: 0),
    "version": flip(lambda s: 4),
    "header length": flip(lambda s: 6),
    "segment size": flip(lambda s: 9),
    "plaintext length": flip(lambda s: 18),
    "key id": flip(lambda s: 22),
    "wrapped key": flip(lambda s: header_length(s) - TAG_BYTES - 5),
    "header tag": flip(lambda s: header_length(s) - 1),
    "truncated header": cut(lambda s: header_length(s) - 3),
    "too short for a header": cut(lambda s: 9),
    "empty file": cut(lambda s: 0),
}

SEGMENT_TAMPERING: dict[str, Callable[[bytes], bytes]] = {
    "first segment byte": flip(lambda s: segment_offset(s, 0)),
    "middle segment byte": flip(lambda s: segment_offset(s, 3) + 2000),
    "segment tag": flip(lambda s: segment_offset(s, 4) - 1),
    "last byte": flip(lambda s: len(s) - 1),
    "truncated mid-segment": cut(lambda s: segment_offset(s, 2) + 100),
    "one byte short": cut(lambda s: len(s) - 1),
    "last segment dropped": cut(lambda s: segment_offset(s, 5)),
    "only the header": cut(header_length),
    "segments swapped": swap_segments(1, 2),
    "segments rotated": lambda s: (
        s[: segment_offset(s, 0)]
        + s[segment_offset(s, 1) : segment_offset(s, 5)]
        + s[segment_offset(s, 0) : segment_offset(s, 1)]
        + s[segment_offset(s, 5) :]
    ),
}


def read_until_failure(store: BlobStore, digest: Digest) -> bytes:
    """Read the whole blob, expecting BlobCorrupted; what came before the failure must be authentic."""
    received = bytearray()
    with pytest.raises(BlobCorrupted):
        for chunk in store.read_blob(digest):
            received += chunk
    assert bytes(received) == DATA[: len(received)]
    return bytes(received)


@pytest.mark.parametrize("tamper", HEADER_TAMPERING.values(), ids=HEADER_TAMPERING.keys())
def test_a_tampered_header_fails(
    root: Path, store: EncryptedBlobStore, tamper: Callable[[bytes], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    store.put_blob(DIGEST, DATA)
    path = blob_file(root, DIGEST)
    path.write_bytes(tamper(path.read_bytes()))
    with caplog.at_level(logging.ERROR, logger="dockyard.crypto"):
        with pytest.raises(BlobCorrupted):
            store.blob_size(DIGEST)
        with pytest.raises(BlobCorrupted):
            read(store, DIGEST, 10, 10)
        assert read_until_failure(store, DIGEST) == b""
    assert caplog.records and all(record.name == "dockyard.crypto" for record in caplog.records)
    assert str(DIGEST) in caplog.text


@pytest.mark.parametrize("tamper", SEGMENT_TAMPERING.values(), ids=SEGMENT_TAMPERING.keys())
def test_tampered_segments_fail(
    root: Path, store: EncryptedBlobStore, tamper: Callable[[bytes], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    store.commit_upload(upload(store, DATA[:5000], DATA[5000:]), DIGEST)
    path = blob_file(root, DIGEST)
    path.write_bytes(tamper(path.read_bytes()))
    assert store.blob_size(DIGEST) == len(DATA)  # the header is intact
    with caplog.at_level(logging.ERROR, logger="dockyard.crypto"):
        read_until_failure(store, DIGEST)
    assert "integrity verification failed" in caplog.text


def test_reads_away_from_a_damaged_segment_still_succeed(root: Path, store: EncryptedBlobStore) -> None:
    store.put_blob(DIGEST, DATA)
    path = blob_file(root, DIGEST)
    path.write_bytes(flip(lambda s: segment_offset(s, 3) + 7)(path.read_bytes()))
    assert read(store, DIGEST, 0, 3 * SEGMENT) == DATA[: 3 * SEGMENT]
    assert read(store, DIGEST, 4 * SEGMENT) == DATA[4 * SEGMENT :]
    with pytest.raises(BlobCorrupted):
        read(store, DIGEST, 3 * SEGMENT + 100, 10)  # inside the damaged segment
    with pytest.raises(BlobCorrupted):
        read(store, DIGEST, 3 * SEGMENT - 1, 2)  # straddling into it


def test_swapping_two_blobs_files_fails(root: Path, store: EncryptedBlobStore) -> None:
    other = bytes(reversed(DATA))  # same length, so the swap keeps every size
    store.put_blob(DIGEST, DATA)
    store.put_blob(Digest.of(other), other)
    first, second = blob_file(root, DIGEST), blob_file(root, Digest.of(other))
    first_bytes, second_bytes = first.read_bytes(), second.read_bytes()
    first.write_bytes(second_bytes)
    second.write_bytes(first_bytes)
    for digest in (DIGEST, Digest.of(other)):
        with pytest.raises(BlobCorrupted):
            store.blob_size(digest)
        with pytest.raises(BlobCorrupted):
            read(store, digest)


def test_a_segment_from_another_blob_fails(root: Path, store: EncryptedBlobStore) -> None:
    other = bytes(reversed(DATA))
    store.put_blob(DIGEST, DATA)
    store.put_blob(Digest.of(other), other)
    target, source = blob_file(root, DIGEST), blob_file(root, Digest.of(other)).read_bytes()
    stored = target.read_bytes()
    start, end = segment_offset(stored, 2), segment_offset(stored, 3)
    target.write_bytes(stored[:start] + source[start:end] + stored[end:])
    read_until_failure(store, DIGEST)


def test_a_blob_of_exactly_whole_segments_missing_its_last_fails(root: Path, store: EncryptedBlobStore) -> None:
    data = DATA[: 4 * SEGMENT]
    store.put_blob(Digest.of(data), data)
    path = blob_file(root, Digest.of(data))
    stored = path.read_bytes()
    assert len(stored) == segment_offset(stored, 4)
    path.write_bytes(stored[: segment_offset(stored, 3)])
    with pytest.raises(BlobCorrupted):
        read(store, Digest.of(data))


def test_an_empty_blob_round_trips_and_is_authenticated(root: Path, store: EncryptedBlobStore) -> None:
    empty = Digest.of(b"")
    store.put_blob(empty, b"")
    assert store.blob_size(empty) == 0
    assert read(store, empty) == b""
    path = blob_file(root, empty)
    path.write_bytes(flip(lambda s: 18)(path.read_bytes()))  # claim one byte
    with pytest.raises(BlobCorrupted):
        store.blob_size(empty)


# ------------------------------------------------------------------------------------------ uploads tampered with


def test_a_flipped_byte_in_a_staged_upload_fails(root: Path, store: EncryptedBlobStore) -> None:
    upload_id = upload(store, DATA[:10_000], DATA[10_000:])
    path = upload_file(root, upload_id)
    path.write_bytes(flip(lambda s: len(s) - 200)(path.read_bytes()))
    with pytest.raises(BlobCorrupted):
        b"".join(store.read_upload(upload_id))
    with pytest.raises(BlobCorrupted):
        store.commit_upload(upload_id, DIGEST)
    assert store.blob_size(DIGEST) is None


def test_reordered_upload_records_fail(root: Path, store: EncryptedBlobStore) -> None:
    upload_id = upload(store, b"a" * 100, b"b" * 100)  # two records of the same size
    path = upload_file(root, upload_id)
    stored = path.read_bytes()
    record = 4 + 12 + 100 + TAG_BYTES
    header, first, second = stored[: -2 * record], stored[-2 * record : -record], stored[-record:]
    path.write_bytes(header + second + first)
    with pytest.raises(BlobCorrupted):
        b"".join(store.read_upload(upload_id))


def test_swapped_upload_files_fail(root: Path, store: EncryptedBlobStore) -> None:
    first, second = upload(store, DATA[:500]), upload(store, DATA[500:1000])
    first_bytes = upload_file(root, first).read_bytes()
    upload_file(root, first).write_bytes(upload_file(root, second).read_bytes())
    upload_file(root, second).write_bytes(first_bytes)
    for upload_id in (first, second):
        with pytest.raises(BlobCorrupted):
            b"".join(store.read_upload(upload_id))


def test_a_torn_upload_tail_is_reported(root: Path, store: EncryptedBlobStore) -> None:
    upload_id = upload(store, DATA[:3000])
    path = upload_file(root, upload_id)
    path.write_bytes(path.read_bytes()[:-10])  # a writer killed mid-record
    with pytest.raises(BlobCorrupted):
        store.upload_size(upload_id)
    with pytest.raises(BlobCorrupted):
        make(root).append_upload(upload_id)


def test_commit_refuses_content_that_does_not_match_the_digest(root: Path, store: EncryptedBlobStore) -> None:
    upload_id = upload(store, DATA[:SEGMENT])
    path = upload_file(root, upload_id)
    first_append = path.read_bytes()
    writer = store.append_upload(upload_id)
    writer.write(DATA[SEGMENT:])
    writer.close()
    path.write_bytes(first_append)  # drop the whole second append: a well-formed but shorter upload
    assert make(root).upload_size(upload_id) == SEGMENT
    with pytest.raises(BlobCorrupted):
        make(root).commit_upload(upload_id, DIGEST)
    assert make(root).blob_size(DIGEST) is None
    with pytest.raises(BlobCorrupted):
        store.commit_upload(upload(store, DATA), Digest.of(b"something else"))


# ------------------------------------------------------------------------------------------ keys


def test_a_wrong_master_key_fails_rather_than_returning_garbage(root: Path, store: EncryptedBlobStore) -> None:
    store.put_blob(DIGEST, DATA)
    upload_id = upload(store, DATA[:1000])
    stranger = make(root, key=OTHER_KEY)
    with pytest.raises(DataKeyUnavailable):
        stranger.blob_size(DIGEST)
    with pytest.raises(DataKeyUnavailable):
        read(stranger, DIGEST)
    with pytest.raises(DataKeyUnavailable):
        stranger.upload_size(upload_id)
    with pytest.raises(DataKeyUnavailable):
        b"".join(stranger.read_upload(upload_id))
    with pytest.raises(DataKeyUnavailable):
        stranger.append_upload(upload_id)
    with pytest.raises(DataKeyUnavailable):
        stranger.commit_upload(upload_id, Digest.of(DATA[:1000]))
    assert DataKeyUnavailable.kind.http_status == 500
    assert issubclass(DataKeyUnavailable, BlobCorrupted)


def test_a_same_length_key_under_the_same_key_id_fails(root: Path, store: EncryptedBlobStore) -> None:
    """Even a provider that names another key with the blob's key id cannot decrypt it."""

    class Impostor(MasterKeyProvider):
        def __init__(self) -> None:
            super().__init__(OTHER_KEY)
            self._keks = {MasterKeyProvider(KEY).current_key_id(): self._keks[self.current_key_id()]}

    store.put_blob(DIGEST, DATA)
    with pytest.raises(BlobCorrupted):
        read(EncryptedBlobStore(FilesystemBlobStore(root), Impostor(), SEGMENT), DIGEST)


def test_key_rotation_keeps_old_blobs_readable(root: Path, store: EncryptedBlobStore) -> None:
    store.put_blob(DIGEST, DATA)
    upload_id = upload(store, DATA[:2000])
    rotated = make(root, key=OTHER_KEY, retired=(KEY,))
    assert read(rotated, DIGEST) == DATA
    writer = rotated.append_upload(upload_id)  # the upload keeps its own data key
    writer.write(DATA[2000:])
    writer.close()
    newer = DATA[:999]
    rotated.put_blob(Digest.of(newer), newer)
    rotated.commit_upload(upload_id, DIGEST)
    assert read(rotated, DIGEST) == DATA
    assert read(rotated, Digest.of(newer)) == newer
    with pytest.raises(DataKeyUnavailable):
        read(make(root), Digest.of(newer))
    assert read(make(root, key=OTHER_KEY), DIGEST) == DATA


def test_master_key_provider(tmp_path: Path) -> None:
    provider, other = MasterKeyProvider(KEY), MasterKeyProvider(OTHER_KEY, retired=[KEY])
    assert provider.current_key_id() == MasterKeyProvider(KEY).current_key_id()
    assert provider.current_key_id() != other.current_key_id()
    assert other.key_ids == (other.current_key_id(), provider.current_key_id())
    data_key = bytes(range(32, 64))
    wrapped = provider.wrap(data_key, provider.current_key_id())
    assert data_key not in wrapped
    assert provider.unwrap(wrapped, provider.current_key_id()) == data_key
    assert other.unwrap(wrapped, provider.current_key_id()) == data_key
    assert provider.wrap(data_key, provider.current_key_id()) != wrapped  # a fresh nonce every time
    with pytest.raises(DataKeyUnavailable):
        provider.unwrap(wrapped, other.current_key_id())
    with pytest.raises(BlobCorrupted):
        provider.unwrap(bytes([wrapped[0] ^ 1]) + wrapped[1:], provider.current_key_id())
    with pytest.raises(ValueError, match="32 bytes"):
        MasterKeyProvider(b"short")
    with pytest.raises(ValueError, match="segment size"):
        EncryptedBlobStore(FilesystemBlobStore(tmp_path), provider, 10)


def test_the_error_is_a_server_error() -> None:
    error = BlobCorrupted(detail={"digest": str(DIGEST)})
    assert (error.http_status, error.oci_code, error.ecr_exception) == (500, "UNKNOWN", "ServerException")
    assert error.message == "stored content failed integrity verification"


# ------------------------------------------------------------------------------------------ crashes and leftovers


def test_a_crashed_commit_leaves_nothing_visible_and_a_retry_succeeds(root: Path, store: EncryptedBlobStore) -> None:
    upload_id = upload(store, DATA)
    staging = _staging_id(upload_id)
    store.inner.start_upload(staging)  # what a commit killed half way leaves behind
    writer = store.inner.append_upload(staging)
    writer.write(b"half a blob")
    writer.close()
    assert store.blob_size(DIGEST) is None
    store.commit_upload(upload_id, DIGEST)
    assert read(store, DIGEST) == DATA
    assert sorted(path.name for path in (root / "uploads").iterdir()) == []


def test_abort_removes_a_crashed_commits_staging(root: Path, store: EncryptedBlobStore) -> None:
    upload_id = upload(store, DATA[:100])
    store.inner.start_upload(_staging_id(upload_id))
    store.abort_upload(upload_id)
    assert list((root / "uploads").iterdir()) == []


def test_a_failing_inner_commit_cleans_up(
    root: Path, store: EncryptedBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload_id = upload(store, DATA)

    def broken(upload_id: str, digest: Digest) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store.inner, "commit_upload", broken)
    with pytest.raises(OSError, match="disk full"):
        store.commit_upload(upload_id, DIGEST)
    assert [path.name for path in (root / "uploads").iterdir()] == [upload_id]
    assert b"".join(make(root).read_upload(upload_id)) == DATA


def test_the_first_append_may_come_from_another_process(root: Path, store: EncryptedBlobStore) -> None:
    upload_id = new_id()
    store.start_upload(upload_id)  # no bytes, so no header yet
    assert upload_file(root, upload_id).read_bytes() == b""
    assert store.upload_size(upload_id) == 0
    assert b"".join(store.read_upload(upload_id)) == b""
    writer = make(root).append_upload(upload_id)
    writer.write(DATA[:300])
    writer.close()
    assert b"".join(store.read_upload(upload_id)) == DATA[:300]


def test_discarded_writes_keep_only_sealed_records(root: Path, store: EncryptedBlobStore) -> None:
    upload_id = upload(store, DATA[:10])
    writer = store.append_upload(upload_id)
    writer.write(DATA[10 : 10 + 2 * SEGMENT + 50])
    writer.discard()
    size = store.upload_size(upload_id)
    assert size == 10 + 2 * SEGMENT  # the filesystem keeps what was written; the unsealed tail is gone
    assert b"".join(store.read_upload(upload_id)) == DATA[:size]
    writer = store.append_upload(upload_id)
    writer.write(DATA[size:])
    writer.close()
    store.commit_upload(upload_id, DIGEST)
    assert read(store, DIGEST) == DATA


def test_unknown_things_stay_unknown(store: EncryptedBlobStore) -> None:
    chunks = store.read_blob(DIGEST)  # nothing is read before the first iteration
    with pytest.raises(BlobUnknown):
        next(chunks)
    assert store.blob_size(DIGEST) is None
    with pytest.raises(BlobUploadUnknown):
        store.commit_upload(new_id(), DIGEST)
    with pytest.raises(ValueError, match="negative"):
        store.read_blob(DIGEST, -1)


def test_stored_blobs_and_delete_pass_through(store: EncryptedBlobStore) -> None:
    store.put_blob(DIGEST, DATA)
    listed: list[tuple[Digest, datetime]] = list(store.stored_blobs())
    assert [digest for digest, _ in listed] == [DIGEST]
    store.delete_blob(DIGEST)
    assert store.blob_size(DIGEST) is None


def test_sizes_asked_by_the_writing_process_read_no_upload_bytes(
    store: EncryptedBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry asks an upload's size before and while it appends: that must not re-read the upload."""
    upload_id = new_id()
    store.start_upload(upload_id)

    def no_reading(upload_id: str) -> Iterator[bytes]:
        raise AssertionError("the upload was read to learn its size")

    monkeypatch.setattr(store.inner, "read_upload", no_reading)
    for part in (DATA[:10], DATA[10:9000], DATA[9000:]):
        before = store.upload_size(upload_id)
        assert before is not None
        writer = store.append_upload(upload_id)  # the first one writes the header
        assert store.upload_size(upload_id) == before
        writer.write(part)
        writer.close()
        assert store.upload_size(upload_id) == before + len(part)
    assert store.upload_size(upload_id) == len(DATA)
