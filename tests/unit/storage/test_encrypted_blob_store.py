"""EncryptedBlobStore over the filesystem store: nothing in plain text, exact ranges and uploads, tamper evidence.

The BlobStore contract itself runs against this store from test_blob_store_contract.py; these tests cover what
only encryption adds. They know the filesystem store's layout (blobs/<algorithm>/<xx>/<hex>, uploads/<id>) and the
encrypted format documented in dockyard/storage/blobs/encrypted.py, to tamper with the stored bytes.
"""

from __future__ import annotations

import contextlib
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
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.domain.errors import BlobUnknown, BlobUploadUnknown, DockyardError, ErrorKind
from dockyard.domain.names import Digest
from dockyard.domain.ports import BlobStore
from dockyard.storage.blobs import encrypted
from dockyard.storage.blobs.encrypted import (
    _FOOTER_BYTES,
    RECORD_OVERHEAD,
    TAG_BYTES,
    BlobCorrupted,
    DataKeyUnavailable,
    EncryptedBlobStore,
    MasterKeyProvider,
    UploadCorrupted,
)
from dockyard.storage.blobs.filesystem import FilesystemBlobStore
from tests.unit.storage.conftest import moto_s3_store

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
SEGMENT = 4096
RECORD = SEGMENT + RECORD_OVERHEAD
DATA = random.Random(7).randbytes(5 * SEGMENT + 123)  # six records, the last one short
DIGEST = Digest.of(DATA)
TEXT = b"".join(
    b"Dockyard layer %05d: the quick brown fox jumps over the lazy dog; password=hunter2\n" % line
    for line in range(1500)
)
PROPERTIES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class NoLocalPath:
    """The filesystem store without `local_path`, as S3 is: the encrypted store then reads through `read_blob`.

    Records the ranges read, and can run a hook before serving a read (to change the stored bytes meanwhile).
    """

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.reads: list[tuple[int, int | None]] = []
        self.before_read: Callable[[int], None] | None = None

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def local_path(self, digest: Digest) -> str | None:
        return None

    def read_blob(self, digest: Digest, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        self.reads.append((offset, length))
        if self.before_read is not None:
            self.before_read(offset)
        return self.inner.read_blob(digest, offset, length)


def make(
    root: Path,
    key: bytes = KEY,
    segment: int = SEGMENT,
    retired: tuple[bytes, ...] = (),
    via_read_blob: bool = False,
) -> EncryptedBlobStore:
    inner: BlobStore = FilesystemBlobStore(root)
    if via_read_blob:
        inner = NoLocalPath(inner)  # type: ignore[assignment]
    return EncryptedBlobStore(inner, MasterKeyProvider(key, retired), segment)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture(params=["local file", "read_blob"])
def store(request: pytest.FixtureRequest, root: Path) -> EncryptedBlobStore:
    """Blobs read through the inner store's file (filesystem) and through its `read_blob` (as on S3)."""
    return make(root, via_read_blob=request.param == "read_blob")


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


def record_at(stored: bytes, index: int) -> int:
    """Where record `index` of a regular blob (or upload) of SEGMENT-sized records starts."""
    return header_length(stored) + index * RECORD


def trailer_length(stored: bytes) -> int:
    _, count, runs, flags = struct.unpack_from(">QQIB", stored, len(stored) - _FOOTER_BYTES)
    return 4 + 16 * runs + (8 * count if flags & 1 else 0) + _FOOTER_BYTES


def footer_at(field: str) -> Callable[[bytes], int]:
    start = {"length": 0, "count": 8, "runs": 16, "flags": 20, "nonce": 21, "tag": 33}[field]
    return lambda stored: len(stored) - _FOOTER_BYTES + start


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
    via_read_blob=st.booleans(),
    ranges=st.lists(st.tuples(st.integers(0, 3100), st.none() | st.integers(0, 3100)), min_size=1, max_size=10),
)
def test_ranged_reads_are_the_plaintext_slices(
    data: bytes, segment: int, by_upload: bool, via_read_blob: bool, ranges: list[tuple[int, int | None]]
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = make(Path(directory), segment=segment, via_read_blob=via_read_blob)
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
    via_read_blob=st.booleans(),
    draw=st.data(),
)
def test_chunked_uploads_reproduce_the_plaintext(
    data: bytes,
    cuts: list[int],
    segment: int,
    new_process_per_append: bool,
    via_read_blob: bool,
    draw: st.DataObject,
) -> None:
    """Appends of odd sizes, each possibly on another process (a fresh store), each in several writes: the
    upload and the committed blob (irregular records, found through the trailer's index) read back exactly,
    also at random ranges."""
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
        if draw.draw(st.booleans()):
            store = make(Path(directory), segment=segment)  # committed by another process
        store.commit_upload(upload_id, digest)
        assert store.upload_size(upload_id) is None
        reader = make(Path(directory), segment=segment, via_read_blob=via_read_blob)
        assert reader.blob_size(digest) == len(data)
        assert read(reader, digest) == data
        for _ in range(5):
            offset = draw.draw(st.integers(0, len(data) + 2))
            length = draw.draw(st.none() | st.integers(0, len(data) + 2))
            end = len(data) if length is None else offset + length
            assert read(reader, digest, offset, length) == data[offset:end]


def test_sensible_uploads_are_regular_and_odd_ones_carry_an_index(root: Path) -> None:
    store = make(root)
    shapes = {
        "monolithic": [DATA],
        "chunks of whole segments": [DATA[: 2 * SEGMENT], DATA[2 * SEGMENT : 4 * SEGMENT], DATA[4 * SEGMENT :]],
        "odd chunks": [DATA[:1000], DATA[1000:9000], DATA[9000:]],
    }
    trailers = {}
    for name, parts in shapes.items():
        store.commit_upload(upload(store, *parts), DIGEST)
        stored = blob_file(root, DIGEST).read_bytes()
        assert read(store, DIGEST) == DATA
        trailers[name] = trailer_length(stored)
    run = 16  # each run of records (one per append) is listed with its first record and its id
    assert trailers["monolithic"] == 4 + run + _FOOTER_BYTES
    assert trailers["chunks of whole segments"] == 4 + 3 * run + _FOOTER_BYTES  # no offsets: still regular
    # 1000 | 3096 (back on the grid) 4096 808 | 3288 (back on the grid) 4096 4096 123: eight records, eight offsets
    assert trailers["odd chunks"] == 4 + 3 * run + 8 * 8 + _FOOTER_BYTES


def test_one_writer_keeps_the_grid_whatever_the_sizes_of_its_writes(root: Path) -> None:
    store = make(root)
    upload_id = new_id()
    store.start_upload(upload_id)
    writer = store.append_upload(upload_id)
    for start in range(0, len(DATA), 777):
        writer.write(DATA[start : start + 777])
    writer.close()
    store.commit_upload(upload_id, DIGEST)
    stored = blob_file(root, DIGEST).read_bytes()
    assert trailer_length(stored) == 4 + 16 + _FOOTER_BYTES  # regular: every record SEGMENT bytes but the last
    assert len(stored) == header_length(stored) + 6 * RECORD_OVERHEAD + len(DATA) + trailer_length(stored)
    assert read(store, DIGEST, SEGMENT - 3, 10) == DATA[SEGMENT - 3 : SEGMENT + 7]


def test_a_long_index_is_read_on_its_own(root: Path) -> None:
    """An irregular blob of thousands of records: its index no longer fits the probe read at the end."""
    store = make(root, segment=64, via_read_blob=True)
    inner = store.inner
    assert isinstance(inner, NoLocalPath)
    data = random.Random(5).randbytes(200_000)
    store.commit_upload(upload(store, data[:10], data[10:]), Digest.of(data))  # 10 | 54, 64, 64, ...: irregular
    stored = blob_file(root, Digest.of(data)).read_bytes()
    assert trailer_length(stored) > 16 * 1024
    inner.reads.clear()
    assert store.blob_size(Digest.of(data)) == len(data)
    assert len(inner.reads) == 3  # the end, the header, then the whole trailer
    for offset in (0, 9, 10, 63, 64, 100_001, len(data) - 1):
        assert read(store, Digest.of(data), offset, 130) == data[offset : offset + 130]


def test_a_writer_draws_a_new_run_id_when_its_counter_runs_out(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encrypted, "_COUNTER_LIMIT", 2)
    store = make(root)
    store.commit_upload(upload(store, DATA), DIGEST)
    stored = blob_file(root, DIGEST).read_bytes()
    assert trailer_length(stored) == 4 + 3 * 16 + _FOOTER_BYTES  # six records: three runs of two
    nonces = {stored[record_at(stored, index) + 4 : record_at(stored, index) + 16] for index in range(6)}
    assert len(nonces) == 6
    assert read(store, DIGEST) == DATA
    assert read(store, DIGEST, 2 * SEGMENT - 5, 10) == DATA[2 * SEGMENT - 5 : 2 * SEGMENT + 5]


def test_segment_size_of_a_blob_is_its_own(root: Path) -> None:
    """A blob keeps the segment size it was written with; a store configured otherwise still reads it."""
    make(root, segment=1000).put_blob(DIGEST, DATA)
    assert read(make(root, segment=SEGMENT), DIGEST, 2990, 30) == DATA[2990:3020]


def test_an_upload_keeps_its_segment_size_on_another_node(root: Path) -> None:
    upload_id = upload(make(root, segment=1000), DATA[:1500])
    other = make(root, segment=SEGMENT)
    writer = other.append_upload(upload_id)
    writer.write(DATA[1500:])
    writer.close()
    other.commit_upload(upload_id, DIGEST)
    stored = blob_file(root, DIGEST).read_bytes()
    assert struct.unpack_from(">I", stored, 7)[0] == 1000
    assert read(other, DIGEST, 5000, 3000) == DATA[5000:8000]


# ------------------------------------------------------------------------------------------ what is read


def test_blob_size_reads_the_header_and_the_trailer_only(root: Path) -> None:
    store = make(root, via_read_blob=True)
    inner = store.inner
    assert isinstance(inner, NoLocalPath)
    big = DATA * 40  # far longer than a probe
    store.put_blob(Digest.of(big), big)
    inner.reads.clear()
    assert store.blob_size(Digest.of(big)) == len(big)
    size = blob_file(root, Digest.of(big)).stat().st_size
    assert sorted(inner.reads) == [(0, 1024), (size - 16 * 1024, 16 * 1024)]
    assert store.local_path(Digest.of(big)) is None
    assert store.redirect_url(Digest.of(big)) is None


def test_a_small_blob_is_opened_with_one_read(root: Path) -> None:
    store = make(root, via_read_blob=True)
    inner = store.inner
    assert isinstance(inner, NoLocalPath)
    store.put_blob(Digest.of(b"{}"), b"{}")
    inner.reads.clear()
    assert read(store, Digest.of(b"{}")) == b"{}"
    assert len(inner.reads) == 2  # header and trailer at once, then the one record


def test_ranged_reads_fetch_only_the_records_they_touch(root: Path) -> None:
    store = make(root, via_read_blob=True)
    inner = store.inner
    assert isinstance(inner, NoLocalPath)
    store.put_blob(DIGEST, DATA)
    stored = blob_file(root, DIGEST).read_bytes()
    inner.reads.clear()
    assert read(store, DIGEST, 3 * SEGMENT + 10, SEGMENT) == DATA[3 * SEGMENT + 10 : 4 * SEGMENT + 10]
    assert inner.reads[-1] == (record_at(stored, 3), 2 * RECORD)


def test_reads_through_the_inner_file_do_not_use_read_blob(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = make(root)
    store.put_blob(DIGEST, DATA)

    def no_reading(digest: Digest, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        raise AssertionError("read through read_blob although the inner store has a file")

    monkeypatch.setattr(store.inner, "read_blob", no_reading)
    assert store.blob_size(DIGEST) == len(DATA)
    assert read(store, DIGEST, 100, 10_000) == DATA[100:10_100]


@pytest.mark.parametrize("via_read_blob", [False, True])
def test_memory_stays_flat_for_large_blobs(root: Path, via_read_blob: bool) -> None:
    store = make(root, segment=64 * 1024, via_read_blob=via_read_blob)
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
    assert commit_peak < 256 * 1024  # the trailer and its index: no byte of the upload is read or rewritten
    # The chunk the reader still holds, the records of the next one and their join (YIELD_BYTES each), a read chunk
    assert read_peak < 5 * 1024 * 1024


def test_commit_reads_nothing_back_and_publishes_the_upload_bytes(
    root: Path, store: EncryptedBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload_id = upload(store, DATA[:SEGMENT], DATA[SEGMENT:])
    staged = upload_file(root, upload_id).read_bytes()

    def no_reading(upload_id: str) -> Iterator[bytes]:
        raise AssertionError("the upload was read back at commit")

    monkeypatch.setattr(store.inner, "read_upload", no_reading)
    store.commit_upload(upload_id, DIGEST)
    stored = blob_file(root, DIGEST).read_bytes()
    assert stored[: len(staged)] == staged  # the records are published as they were written
    assert len(stored) == len(staged) + trailer_length(stored)
    assert read(store, DIGEST) == DATA


# ------------------------------------------------------------------------------------------ tampering


def flip(position: Callable[[bytes], int]) -> Callable[[bytes], bytes]:
    def tamper(stored: bytes) -> bytes:
        at = position(stored)
        return stored[:at] + bytes([stored[at] ^ 0x01]) + stored[at + 1 :]

    return tamper


def cut(position: Callable[[bytes], int]) -> Callable[[bytes], bytes]:
    return lambda stored: stored[: position(stored)]


def swap_records(first: int, second: int) -> Callable[[bytes], bytes]:
    def tamper(stored: bytes) -> bytes:
        def at(index: int) -> slice:
            return slice(record_at(stored, index), record_at(stored, index + 1))

        swapped = bytearray(stored)
        swapped[at(first)], swapped[at(second)] = stored[at(second)], stored[at(first)]
        return bytes(swapped)

    return tamper


def header_field(number: int) -> Callable[[bytes], int]:
    """The first byte of the header's length-prefixed field `number` (0: upload id, 1: key id, 2: wrapped key)."""

    def position(stored: bytes) -> int:
        at = 11
        for _ in range(number):
            at += 2 + struct.unpack_from(">H", stored, at)[0]
        return at + 2

    return position


HEADER_TAMPERING: dict[str, Callable[[bytes], bytes]] = {
    "magic": flip(lambda s: 0),
    "version": flip(lambda s: 4),
    "header length": flip(lambda s: 6),
    "segment size": flip(lambda s: 9),
    "upload id": flip(header_field(0)),
    "key id": flip(header_field(1)),
    "wrapped key": flip(lambda s: header_length(s) - TAG_BYTES - 5),
    "header tag": flip(lambda s: header_length(s) - 1),
    "truncated header": cut(lambda s: header_length(s) - 3),
    "too short for a header": cut(lambda s: 9),
    "empty file": cut(lambda s: 0),
}

TRAILER_TAMPERING: dict[str, Callable[[bytes], bytes]] = {
    "marker": flip(lambda s: len(s) - trailer_length(s)),
    "run id": flip(lambda s: len(s) - trailer_length(s) + 4 + 12),
    "plaintext length": flip(footer_at("length")),
    "record count": flip(footer_at("count")),
    "run count": flip(footer_at("runs")),
    "flags": flip(footer_at("flags")),
    "trailer nonce": flip(footer_at("nonce")),
    "trailer tag": flip(lambda s: len(s) - 1),
    "last byte cut": cut(lambda s: len(s) - 1),
    "trailer cut": cut(lambda s: len(s) - trailer_length(s)),
    "cut mid-record": cut(lambda s: record_at(s, 2) + 100),
    "last record dropped": lambda s: s[: record_at(s, 5)] + s[len(s) - trailer_length(s) :],
    "a record duplicated": lambda s: s[: record_at(s, 2)] + s[record_at(s, 1) : len(s)],
    "only the header": cut(header_length),
}

RECORD_TAMPERING: dict[str, Callable[[bytes], bytes]] = {
    "first ciphertext byte": flip(lambda s: record_at(s, 0) + 16),
    "middle record byte": flip(lambda s: record_at(s, 3) + 2000),
    "record length": flip(lambda s: record_at(s, 1) + 3),
    "record nonce": flip(lambda s: record_at(s, 2) + 6),
    "record tag": flip(lambda s: record_at(s, 5) - 1),
    "last record's tag": flip(lambda s: len(s) - trailer_length(s) - 1),
    "records swapped": swap_records(1, 2),
    "records rotated": lambda s: (
        s[: record_at(s, 0)]
        + s[record_at(s, 1) : record_at(s, 5)]
        + s[record_at(s, 0) : record_at(s, 1)]
        + s[record_at(s, 5) :]
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


@pytest.mark.parametrize(
    "tamper", [*HEADER_TAMPERING.values(), *TRAILER_TAMPERING.values()], ids=[*HEADER_TAMPERING, *TRAILER_TAMPERING]
)
def test_a_tampered_header_or_trailer_fails(
    root: Path, store: EncryptedBlobStore, tamper: Callable[[bytes], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    store.commit_upload(upload(store, DATA[:5000], DATA[5000:]), DIGEST)  # a second run: the index is not empty
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


@pytest.mark.parametrize("tamper", RECORD_TAMPERING.values(), ids=RECORD_TAMPERING.keys())
def test_tampered_records_fail(
    root: Path, store: EncryptedBlobStore, tamper: Callable[[bytes], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    store.put_blob(DIGEST, DATA)
    path = blob_file(root, DIGEST)
    path.write_bytes(tamper(path.read_bytes()))
    assert store.blob_size(DIGEST) == len(DATA)  # the header and the trailer are intact
    with caplog.at_level(logging.ERROR, logger="dockyard.crypto"):
        read_until_failure(store, DIGEST)
    assert "integrity verification failed" in caplog.text


def test_reads_away_from_a_damaged_record_still_succeed(root: Path, store: EncryptedBlobStore) -> None:
    store.put_blob(DIGEST, DATA)
    path = blob_file(root, DIGEST)
    path.write_bytes(flip(lambda s: record_at(s, 3) + 7)(path.read_bytes()))
    assert read(store, DIGEST, 0, 3 * SEGMENT) == DATA[: 3 * SEGMENT]
    assert read(store, DIGEST, 4 * SEGMENT) == DATA[4 * SEGMENT :]
    with pytest.raises(BlobCorrupted):
        read(store, DIGEST, 3 * SEGMENT + 100, 10)  # inside the damaged record
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


def test_a_blob_filed_under_another_digest_fails(root: Path, store: EncryptedBlobStore) -> None:
    """The trailer binds the digest: the same bytes moved to another digest's place are refused."""
    store.put_blob(DIGEST, DATA)
    forged = Digest.of(b"something else")
    blob_file(root, forged).parent.mkdir(parents=True, exist_ok=True)
    blob_file(root, forged).write_bytes(blob_file(root, DIGEST).read_bytes())
    with pytest.raises(BlobCorrupted):
        store.blob_size(forged)


@pytest.mark.parametrize("part", ["record", "trailer"])
def test_a_part_from_another_blob_fails(root: Path, store: EncryptedBlobStore, part: str) -> None:
    other = bytes(reversed(DATA))
    store.put_blob(DIGEST, DATA)
    store.put_blob(Digest.of(other), other)
    target, source = blob_file(root, DIGEST), blob_file(root, Digest.of(other)).read_bytes()
    stored = target.read_bytes()
    if part == "record":
        start, end = record_at(stored, 2), record_at(stored, 3)
        target.write_bytes(stored[:start] + source[start:end] + stored[end:])
        read_until_failure(store, DIGEST)
    else:
        target.write_bytes(
            stored[: len(stored) - trailer_length(stored)] + source[len(source) - trailer_length(source) :]
        )
        with pytest.raises(BlobCorrupted):
            store.blob_size(DIGEST)


def test_records_of_a_discarded_append_cannot_be_put_back(root: Path) -> None:
    """An append the inner store dropped (S3 deletes what a discarded writer stored) may be sent again with
    other bytes at the same offsets, under the same data key: its old records, valid on their own, must not
    pass for the ones kept."""
    store = make(root)
    upload_id = upload(store, DATA[:SEGMENT])
    path = upload_file(root, upload_id)
    before = path.read_bytes()
    writer = store.append_upload(upload_id)
    writer.write(b"\x00" * SEGMENT)  # bytes the client later replaced
    writer.close()
    dropped = path.read_bytes()[len(before) :]
    path.write_bytes(before)  # the inner store forgot that append
    data = DATA[: 2 * SEGMENT]
    retried = make(root)  # the retry lands on another node
    writer = retried.append_upload(upload_id)
    writer.write(data[SEGMENT:])
    writer.close()
    retried.commit_upload(upload_id, Digest.of(data))
    blob = blob_file(root, Digest.of(data))
    stored = blob.read_bytes()
    assert read(retried, Digest.of(data)) == data
    blob.write_bytes(stored[: len(before)] + dropped + stored[len(before) + len(dropped) :])
    assert retried.blob_size(Digest.of(data)) == len(data)
    with pytest.raises(BlobCorrupted):
        read(retried, Digest.of(data), SEGMENT, 10)


def test_an_empty_blob_round_trips_and_is_authenticated(root: Path, store: EncryptedBlobStore) -> None:
    empty = Digest.of(b"")
    store.put_blob(empty, b"")
    assert store.blob_size(empty) == 0
    assert read(store, empty) == b""
    assert read(store, empty, 5, 3) == b""
    path = blob_file(root, empty)
    path.write_bytes(flip(footer_at("length"))(path.read_bytes()))  # claim bytes it has not
    with pytest.raises(BlobCorrupted):
        store.blob_size(empty)


def test_an_empty_upload_commits_to_an_empty_blob(root: Path, store: EncryptedBlobStore) -> None:
    empty = Digest.of(b"")
    store.commit_upload(upload(store), empty)
    assert store.blob_size(empty) == 0
    assert read(store, empty) == b""
    store.commit_upload(upload(store, b""), empty)  # an append of nothing writes the header only
    assert read(store, empty) == b""


def test_a_blob_committed_again_while_it_is_read_is_read_to_the_end(root: Path) -> None:
    """Through `read_blob` the object may be replaced between two reads by another encryption of the same
    plaintext (a second push of the same digest): the read carries on in the new one."""
    store = make(root, via_read_blob=True)
    inner = store.inner
    assert isinstance(inner, NoLocalPath)
    store.commit_upload(upload(store, DATA), DIGEST)
    first_record = header_length(blob_file(root, DIGEST).read_bytes())
    replaced = []

    def recommit(offset: int) -> None:
        if offset == first_record and not replaced:  # header and trailer were read: the records come from the new
            replaced.append(offset)
            store.commit_upload(upload(store, DATA[:100], DATA[100:]), DIGEST)

    inner.before_read = recommit
    assert read(store, DIGEST, 5) == DATA[5:]
    assert replaced


# ------------------------------------------------------------------------------------------ uploads tampered with


def test_a_flipped_byte_in_a_staged_upload_fails_and_is_never_served(root: Path, store: EncryptedBlobStore) -> None:
    upload_id = upload(store, DATA[:10_000], DATA[10_000:])
    path = upload_file(root, upload_id)
    path.write_bytes(flip(lambda s: len(s) - 200)(path.read_bytes()))
    with pytest.raises(BlobCorrupted):
        b"".join(store.read_upload(upload_id))
    # The Registry's digest check read the bytes as they arrived; the commit itself reads nothing back, so the
    # damage surfaces when the record is read: an error, never wrong bytes.
    store.commit_upload(upload_id, DIGEST)
    assert read(store, DIGEST, 0, 10_000) == DATA[:10_000]
    read_until_failure(store, DIGEST)


def test_reordered_upload_records_fail(root: Path, store: EncryptedBlobStore) -> None:
    upload_id = upload(store, b"a" * 100, b"b" * 100)  # two records of the same size
    path = upload_file(root, upload_id)
    stored = path.read_bytes()
    record = 100 + RECORD_OVERHEAD
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
        with pytest.raises(BlobCorrupted):
            make(root).upload_size(upload_id)  # the header names its upload


def test_a_torn_upload_tail_is_not_counted_and_the_next_append_drops_it(root: Path, store: EncryptedBlobStore) -> None:
    upload_id = upload(store, DATA[:3000], DATA[3000:5000])
    path = upload_file(root, upload_id)
    path.write_bytes(path.read_bytes()[:-10])  # a writer killed mid-record (or, seen from afar, still writing)
    assert store.upload_size(upload_id) == SEGMENT  # records 3000 | 1096 (back on the grid), 904 (torn)
    assert b"".join(store.read_upload(upload_id)) == DATA[:SEGMENT]
    restarted = make(root)
    writer = restarted.append_upload(upload_id)
    writer.write(DATA[SEGMENT:])
    writer.close()
    restarted.commit_upload(upload_id, DIGEST)
    assert read(store, DIGEST) == DATA


def test_a_torn_tail_is_dropped_by_a_commit_too(root: Path, store: EncryptedBlobStore) -> None:
    upload_id = upload(store, DATA[:3000], DATA[3000:5000])
    path = upload_file(root, upload_id)
    path.write_bytes(path.read_bytes()[:-10])
    make(root).commit_upload(upload_id, Digest.of(DATA[:SEGMENT]))
    assert read(store, Digest.of(DATA[:SEGMENT])) == DATA[:SEGMENT]


@pytest.mark.parametrize(
    ("damage", "received"),
    [
        (lambda s: s + b"\x00\x00\x01", 5000),  # a record prefix cut short: an append just begun, or killed
        (lambda s: s + struct.pack(">I12s", SEGMENT + 1, b"\x01" * 12), None),  # longer than any record
        (lambda s: s + struct.pack(">I12s", 10, b"\x07" * 12) + bytes(10 + TAG_BYTES), None),  # not a record nonce
    ],
    ids=["torn prefix", "implausible length", "unknown nonce"],
)
def test_an_upload_with_a_malformed_record_prefix(
    root: Path, store: EncryptedBlobStore, damage: Callable[[bytes], bytes], received: int | None
) -> None:
    upload_id = upload(store, DATA[:3000], DATA[3000:5000])
    path = upload_file(root, upload_id)
    path.write_bytes(damage(path.read_bytes()))
    if received is None:  # not what a writer that died leaves: the upload cannot go on (the client restarts it)
        for attempt in (
            lambda: store.upload_size(upload_id),
            lambda: b"".join(store.read_upload(upload_id)),
            lambda: store.append_upload(upload_id),
        ):
            with pytest.raises(UploadCorrupted) as failure:
                attempt()
            assert failure.value.http_status == 404 and failure.value.oci_code == "BLOB_UPLOAD_UNKNOWN"
    else:
        assert store.upload_size(upload_id) == received
        assert b"".join(store.read_upload(upload_id)) == DATA[:received]
        writer = store.append_upload(upload_id)
        writer.write(DATA[received:])
        writer.close()
        store.commit_upload(upload_id, DIGEST)
        assert read(store, DIGEST) == DATA


def torn_copy(inner: BlobStore, upload_id: str, stored: bytes) -> None:
    """Make the inner upload hold exactly `stored` (as a writer that died would leave it), through its own API."""
    inner.abort_upload(upload_id)
    inner.start_upload(upload_id)
    writer = inner.append_upload(upload_id)
    writer.write(stored)
    writer.close()


def inner_bytes(inner: BlobStore, upload_id: str) -> bytes:
    return b"".join(inner.read_upload(upload_id))


def check_a_torn_last_record(inner: BlobStore, before: list[int], last: int, cut: int, rest: int) -> None:
    """Appends of `before` bytes, then one of `last` bytes (one record) of which `cut` bytes were stored:
    a store that starts afresh (a restarted server) reports the appends before it and continues from there."""
    data = (DATA * 2)[: sum(before) + last + rest]
    assert len(data) == sum(before) + last + rest
    writing = EncryptedBlobStore(inner, MasterKeyProvider(KEY), SEGMENT)
    upload_id = new_id()
    writing.start_upload(upload_id)
    kept = 0
    for size in before:
        writer = writing.append_upload(upload_id)
        writer.write(data[kept : kept + size])
        writer.close()
        kept += size
    whole = inner_bytes(inner, upload_id)
    writer = writing.append_upload(upload_id)
    writer.write(data[kept : kept + last])
    writer.close()
    stored = inner_bytes(inner, upload_id)
    record = len(stored) - len(whole)
    assert record == last + RECORD_OVERHEAD  # one record
    torn = cut % record  # 0: the append was killed before it wrote anything
    torn_copy(inner, upload_id, stored[: len(whole) + torn])

    restarted = EncryptedBlobStore(inner, MasterKeyProvider(KEY), SEGMENT)
    assert restarted.upload_size(upload_id) == kept
    assert b"".join(restarted.read_upload(upload_id)) == data[:kept]
    writer = restarted.append_upload(upload_id)
    writer.write(data[kept:])
    writer.close()
    assert inner_bytes(inner, upload_id)[: len(whole)] == whole  # the whole records stayed as they were
    assert restarted.upload_size(upload_id) == len(data)
    restarted.commit_upload(upload_id, Digest.of(data))
    assert read(writing, Digest.of(data)) == data


TORN_LAST_RECORD = {
    "before": st.lists(st.integers(1, 2 * SEGMENT), min_size=1, max_size=3),
    "last": st.integers(1, SEGMENT),
    "cut": st.integers(0, SEGMENT + RECORD_OVERHEAD - 1),
    "rest": st.integers(0, 2 * SEGMENT),
}


def fitting(before: list[int], last: int) -> int:
    """`last` cut down to what one record after `before` can hold (up to the next line of the grid)."""
    return min(last, SEGMENT - sum(before) % SEGMENT)


@settings(PROPERTIES, max_examples=120)
@given(**TORN_LAST_RECORD)
def test_a_torn_last_record_on_the_filesystem_resumes_after_the_whole_ones(
    before: list[int], last: int, cut: int, rest: int
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        inner = FilesystemBlobStore(Path(directory))
        check_a_torn_last_record(inner, before, fitting(before, last), cut, rest)


def test_a_torn_last_record_on_s3_resumes_after_the_whole_ones(tmp_path: Path) -> None:
    with moto_s3_store(tmp_path) as inner:

        @settings(PROPERTIES, max_examples=25)
        @given(**TORN_LAST_RECORD)
        def check(before: list[int], last: int, cut: int, rest: int) -> None:
            check_a_torn_last_record(inner, before, fitting(before, last), cut, rest)

        check()


@pytest.mark.parametrize("inner_store", ["filesystem", "s3"])
def test_a_record_torn_at_every_position_resumes_after_the_whole_ones(tmp_path: Path, inner_store: str) -> None:
    before, last = [3000, SEGMENT - 3000 + 10], 20  # a short record: each position costs a dozen S3 calls
    stores = (
        contextlib.nullcontext(FilesystemBlobStore(tmp_path / "store"))
        if inner_store == "filesystem"
        else moto_s3_store(tmp_path)
    )
    with stores as inner:
        for cut in range(last + RECORD_OVERHEAD):
            check_a_torn_last_record(inner, before, last, cut, 0)


@pytest.mark.parametrize("cut", [1, 10, 11, 40, -17, -1])
def test_a_torn_header_leaves_an_empty_upload(root: Path, store: EncryptedBlobStore, cut: int) -> None:
    upload_id = upload(store, DATA[:100])
    path = upload_file(root, upload_id)
    stored = path.read_bytes()
    path.write_bytes(stored[: cut % header_length(stored)])  # the first append died while it wrote the header
    restarted = make(root)
    assert restarted.upload_size(upload_id) == 0
    assert b"".join(restarted.read_upload(upload_id)) == b""
    writer = restarted.append_upload(upload_id)
    writer.write(DATA)
    writer.close()
    restarted.commit_upload(upload_id, DIGEST)
    assert read(store, DIGEST) == DATA


def test_an_append_after_a_whole_trailer_is_refused_with_a_4xx(root: Path, store: EncryptedBlobStore) -> None:
    upload_id = upload(store, DATA[:3000])
    path = upload_file(root, upload_id)
    records = path.read_bytes()
    store.commit_upload(upload_id, Digest.of(DATA[:3000]))
    path.write_bytes(
        blob_file(root, Digest.of(DATA[:3000])).read_bytes()
    )  # a commit that died between its trailer and publishing
    assert len(path.read_bytes()) > len(records)
    with pytest.raises(UploadCorrupted) as failure:
        make(root).append_upload(upload_id)
    assert failure.value.http_status == 404


# ------------------------------------------------------------------------------------------ keys


class KeyServiceDown(DockyardError):
    kind = ErrorKind("UNAVAILABLE", 503, "KmsException", "the key service is down")


class FlakyKeys(MasterKeyProvider):
    """A provider with a long key id (a header longer than one probe) whose unwrap can fail its own way."""

    def __init__(self) -> None:
        super().__init__(KEY)
        self.down = False

    def current_key_id(self) -> str:
        return "arn:aws:kms:us-east-1:123456789012:key/" + "k" * 1500

    def wrap(self, plaintext_key: bytes, key_id: str) -> bytes:
        return super().wrap(plaintext_key, super().current_key_id())

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        if self.down:
            raise KeyServiceDown()
        return super().unwrap(wrapped, super().current_key_id())


def test_a_provider_error_passes_through_and_long_headers_are_read_whole(root: Path) -> None:
    keys = FlakyKeys()
    store = EncryptedBlobStore(NoLocalPath(FilesystemBlobStore(root)), keys, SEGMENT)  # type: ignore[arg-type]
    store.put_blob(DIGEST, DATA)
    upload_id = upload(store, DATA[:100])
    assert header_length(blob_file(root, DIGEST).read_bytes()) > 1024
    assert store.blob_size(DIGEST) == len(DATA)
    assert read(store, DIGEST, 7000, 100) == DATA[7000:7100]
    keys.down = True
    with pytest.raises(KeyServiceDown):
        store.blob_size(DIGEST)
    with pytest.raises(KeyServiceDown):
        read(store, DIGEST)
    with pytest.raises(KeyServiceDown):
        EncryptedBlobStore(FilesystemBlobStore(root), keys, SEGMENT).upload_size(upload_id)


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
    writer = rotated.append_upload(upload_id)  # the upload keeps its own data key ...
    writer.write(DATA[2000:])
    writer.close()
    newer = DATA[:999]
    rotated.put_blob(Digest.of(newer), newer)
    rotated.commit_upload(upload_id, DIGEST)
    assert read(rotated, DIGEST) == DATA
    assert read(rotated, Digest.of(newer)) == newer
    with pytest.raises(DataKeyUnavailable):
        read(make(root), Digest.of(newer))
    assert read(make(root), DIGEST) == DATA  # ... which the blob keeps: wrapped by the key the upload began under
    with pytest.raises(DataKeyUnavailable):
        read(make(root, key=OTHER_KEY), DIGEST)


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


# ------------------------------------------------------------------------------------------ crashes and other nodes


class CrashingCommit(Exception):
    pass


def crash_at_publication(store: EncryptedBlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(upload_id: str, digest: Digest) -> None:
        raise CrashingCommit("the process died after appending the trailer")

    monkeypatch.setattr(store.inner, "commit_upload", crash)


@pytest.mark.parametrize("retry_on", ["the same process", "another process"])
def test_a_commit_that_died_before_publishing_is_retried(
    root: Path, store: EncryptedBlobStore, monkeypatch: pytest.MonkeyPatch, retry_on: str
) -> None:
    upload_id = upload(store, DATA[:5000], DATA[5000:])
    with monkeypatch.context() as patch:
        crash_at_publication(store, patch)
        with pytest.raises(CrashingCommit):
            store.commit_upload(upload_id, DIGEST)
    sealed = upload_file(root, upload_id).read_bytes()
    assert store.blob_size(DIGEST) is None
    assert b"".join(make(root).read_upload(upload_id)) == DATA  # the records are still all there is to read
    assert make(root).upload_size(upload_id) == len(DATA)
    retrier = store if retry_on == "the same process" else make(root)
    with pytest.raises(BlobCorrupted):
        retrier.commit_upload(upload_id, Digest.of(b"another digest"))  # the trailer was sealed for DIGEST
    assert upload_file(root, upload_id).read_bytes() == sealed  # no second trailer
    retrier.commit_upload(upload_id, DIGEST)
    assert read(make(root), DIGEST) == DATA
    assert list((root / "uploads").iterdir()) == []


def test_an_append_after_the_trailer_is_refused(
    root: Path, store: EncryptedBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload_id = upload(store, DATA[:5000])
    with monkeypatch.context() as patch:
        crash_at_publication(store, patch)
        with pytest.raises(CrashingCommit):
            store.commit_upload(upload_id, Digest.of(DATA[:5000]))
    for appender in (store, make(root)):
        with pytest.raises(BlobCorrupted):
            appender.append_upload(upload_id)
    store.abort_upload(upload_id)  # the client starts over
    assert list((root / "uploads").iterdir()) == []
    assert store.upload_size(upload_id) is None


@pytest.mark.parametrize("damage", ["run id", "plaintext length", "trailer nonce", "trailer tag"])
def test_a_damaged_trailer_of_an_unpublished_commit_is_refused(
    root: Path, store: EncryptedBlobStore, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    upload_id = upload(store, DATA)
    with monkeypatch.context() as patch:
        crash_at_publication(store, patch)
        with pytest.raises(CrashingCommit):
            store.commit_upload(upload_id, DIGEST)
    path = upload_file(root, upload_id)
    path.write_bytes(TRAILER_TAMPERING[damage](path.read_bytes()))
    with pytest.raises(UploadCorrupted):
        make(root).commit_upload(upload_id, DIGEST)
    assert store.blob_size(DIGEST) is None


@pytest.mark.parametrize("kept", [1, 3, 4, 20, -1], ids=lambda kept: f"{kept} bytes kept")
def test_a_trailer_cut_short_is_dropped_and_the_commit_done_again(
    root: Path, store: EncryptedBlobStore, monkeypatch: pytest.MonkeyPatch, kept: int
) -> None:
    upload_id = upload(store, DATA[:3000], DATA[3000:])  # irregular: the trailer holds an index of offsets
    path = upload_file(root, upload_id)
    records = len(path.read_bytes())
    with monkeypatch.context() as patch:
        crash_at_publication(store, patch)
        with pytest.raises(CrashingCommit):
            store.commit_upload(upload_id, DIGEST)
    stored = path.read_bytes()
    path.write_bytes(stored[: records + kept % (len(stored) - records)])  # a commit killed mid-trailer
    assert make(root).upload_size(upload_id) == len(DATA)  # seen from another node, a commit may be writing it
    make(root).commit_upload(upload_id, DIGEST)  # holding the upload's writer: the commit that wrote it died
    assert read(store, DIGEST) == DATA


def test_bytes_after_a_trailer_are_refused(
    root: Path, store: EncryptedBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload_id = upload(store, DATA)
    with monkeypatch.context() as patch:
        crash_at_publication(store, patch)
        with pytest.raises(CrashingCommit):
            store.commit_upload(upload_id, DIGEST)
    with upload_file(root, upload_id).open("ab") as file:
        file.write(b"more")
    with pytest.raises(UploadCorrupted):
        make(root).upload_size(upload_id)


def test_a_failing_inner_close_forgets_what_the_writer_believed(
    root: Path, store: EncryptedBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload_id = upload(store, DATA[:100])
    opened = store.inner.append_upload

    class Failing:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def write(self, data: bytes) -> None:
            self.inner.write(data)

        def close(self) -> None:
            self.inner.close()
            raise OSError("the state could not be stored")

    monkeypatch.setattr(store.inner, "append_upload", lambda upload_id: Failing(opened(upload_id)))
    writer = store.append_upload(upload_id)
    writer.write(DATA[100:200])
    with pytest.raises(OSError, match="state"):
        writer.close()
    monkeypatch.undo()
    assert store.upload_size(upload_id) == 200  # asked the inner store again: the filesystem kept the bytes


def test_a_write_that_fails_mid_record_leaves_the_upload_resumable(
    root: Path, store: EncryptedBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk: the inner store takes part of a record, then fails; the request gives up (closes)."""
    upload_id = upload(store, DATA[:3000])
    opened = store.inner.append_upload

    class DiskFull:
        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.room = 2 * RECORD + 100

        def write(self, data: bytes) -> None:
            taken = data[: self.room]
            self.inner.write(taken)
            self.room -= len(taken)
            if len(taken) < len(data):
                raise OSError(28, "No space left on device")

        def close(self) -> None:
            self.inner.close()

        def discard(self) -> None:
            self.inner.discard()

    monkeypatch.setattr(store.inner, "append_upload", lambda upload_id: DiskFull(opened(upload_id)))
    writer = store.append_upload(upload_id)
    with pytest.raises(OSError, match="space"):
        writer.write(DATA[3000:])
    writer.close()  # what the Registry does when a request fails: keep what is there
    monkeypatch.undo()
    received = 3000 + (SEGMENT - 3000) + SEGMENT  # the whole records: to the grid line, then one more
    assert store.upload_size(upload_id) == received
    assert b"".join(store.read_upload(upload_id)) == DATA[:received]
    writer = store.append_upload(upload_id)  # the inner writer was closed: the upload is not locked
    writer.write(DATA[received:])
    writer.close()
    store.commit_upload(upload_id, DIGEST)
    assert read(store, DIGEST) == DATA


def test_a_failing_inner_commit_leaves_the_upload_for_a_retry(
    root: Path, store: EncryptedBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload_id = upload(store, DATA)

    def broken(upload_id: str, digest: Digest) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(store.inner, "commit_upload", broken)
        with pytest.raises(OSError, match="disk full"):
            store.commit_upload(upload_id, DIGEST)
    assert [path.name for path in (root / "uploads").iterdir()] == [upload_id]
    assert b"".join(make(root).read_upload(upload_id)) == DATA
    store.commit_upload(upload_id, DIGEST)
    assert read(store, DIGEST) == DATA


def test_an_upload_continued_by_another_node(root: Path) -> None:
    """Two stores over one inner store, as two nodes over one bucket: each continues what the other wrote."""
    first, second = make(root), make(root)
    upload_id = new_id()
    first.start_upload(upload_id)
    assert second.upload_size(upload_id) == 0
    parts = [DATA[:1000], DATA[1000 : 3 * SEGMENT], DATA[3 * SEGMENT : 3 * SEGMENT + 7], DATA[3 * SEGMENT + 7 :]]
    received = 0
    for number, part in enumerate(parts):
        node, other = (first, second) if number % 2 == 0 else (second, first)
        assert node.upload_size(upload_id) == received
        writer = node.append_upload(upload_id)
        writer.write(part)
        writer.close()
        received += len(part)
        assert other.upload_size(upload_id) == received
        assert b"".join(other.read_upload(upload_id)) == DATA[:received]
    first.commit_upload(upload_id, DIGEST)  # first's view is stale (second appended last): it scans again
    assert read(second, DIGEST) == DATA
    for offset in range(0, len(DATA), 3001):
        assert read(second, DIGEST, offset, 5000) == DATA[offset : offset + 5000]


def test_two_nodes_over_s3(tmp_path: Path) -> None:
    """Over the S3 store (moto): uploads staged as parts and a tail, published by multipart copy, read by ranges."""
    data = random.Random(9).randbytes(3 * 1024 * 1024 + 12345)
    digest = Digest.of(data)
    with moto_s3_store(tmp_path) as inner:
        first, second = (EncryptedBlobStore(inner, MasterKeyProvider(KEY), 64 * 1024) for _ in range(2))
        upload_id = new_id()
        first.start_upload(upload_id)
        bounds = [0, 1_000_000, 1_000_000 + 512 * 1024, 2_999_999, len(data)]
        for number, (start, end) in enumerate(itertools.pairwise(bounds)):
            node, other = (first, second) if number % 2 == 0 else (second, first)
            writer = node.append_upload(upload_id)
            writer.write(data[start:end])
            writer.close()
            assert other.upload_size(upload_id) == end
        assert b"".join(first.read_upload(upload_id)) == data
        second.commit_upload(upload_id, digest)
        assert first.blob_size(digest) == len(data)
        assert read(first, digest) == data
        for offset in (0, 65_535, 999_999, 1_000_000, 2_999_990, len(data) - 1):
            assert read(second, digest, offset, 70_000) == data[offset : offset + 70_000]
        second.put_blob(Digest.of(b"{}"), b"{}")
        assert read(first, Digest.of(b"{}")) == b"{}"


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
    assert size == 2 * SEGMENT  # the filesystem keeps what was written; the unsealed tail is gone
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


def test_the_writing_process_reads_no_upload_bytes(store: EncryptedBlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry asks an upload's size before and while it appends, then commits: none of that may re-read
    the upload."""
    upload_id = new_id()
    store.start_upload(upload_id)

    def no_reading(upload_id: str) -> Iterator[bytes]:
        raise AssertionError("the upload was read")

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
    store.commit_upload(upload_id, DIGEST)
    monkeypatch.undo()
    assert read(store, DIGEST) == DATA
