"""Encryption at rest: a `BlobStore` wrapper that never hands its inner store a byte of plaintext.

`EncryptedBlobStore(inner, keys)` wraps any blob store (filesystem, S3) and speaks the same contract: digests,
sizes, ranges and uploads are all about the PLAINTEXT; only the bytes the inner store keeps are ciphertext.
Everything is AES-256-GCM from `cryptography`.

Keys (envelope encryption)
    Every upload, and every `put_blob`, gets a fresh random 256-bit data key, which stays the key of the blob
    it becomes (wrapped by the key that was current when the upload began). The data key is wrapped by a
    key-encryption key through a `DataKeyProvider` (`MasterKeyProvider` here: a key derived with HKDF from the
    registry's 32-byte master key; a KMS-backed provider elsewhere) and the wrapped form is stored in the header
    with the key id that wrapped it. Rotating the master key means building the provider with the new key and
    the old ones as `retired`: new objects use the new key, old ones stay readable. Dedup stays by plaintext
    digest within one store (one key domain).

One layout for uploads and blobs (format 2; integers big-endian)
    The bytes of an upload ARE the bytes of the blob it becomes: committing appends a trailer and publishes the
    upload with the inner store's own `commit_upload` (fsync + rename on disk, a completed object on S3); no
    byte is decrypted, re-encrypted or written twice.

    header (written by the first append)
        magic b"DYE2", version (1 byte, = 2), header length H (2), segment size S (4), then three fields of a
        2-byte length and its bytes: the upload id (UTF-8; a random one for `put_blob`), the key id (UTF-8),
        the wrapped data key; last the header tag (16): a GCM tag over nothing under the data key, nonce twelve
        0x00 bytes, associated data b"dockyard header v2\\0" and every header byte before the tag.
    records, one after the other, n + 32 bytes each
        plaintext length n (4; 1..S), nonce (12), the AES-GCM ciphertext of the n bytes and its tag (16).
        Associated data: b"dockyard record v2\\0", the header tag, the plaintext offset of the record's first
        byte (8) and n (4). The nonce is 0x01, a run id (8) and a counter (3): every append writer draws a
        random run id and counts its records (drawing a new run id after 2^24), so a nonce never repeats under
        a data key, also when an append that was discarded is sent again with other bytes.
        Records follow a grid of S: a writer that starts mid-segment first seals a short record up to the
        next multiple of S, then records of S bytes, and what is left when it is closed. Uploads from sensible
        clients (monolithic, streamed, chunks that are multiples of S) are therefore "regular": every record
        holds S bytes but the last; appends of odd sizes leave short records in the middle ("irregular").
    trailer (appended by `commit_upload`)
        marker 0xFFFFFFFF (where the next record's length would be), the index, and a footer of fixed size:
        plaintext length N (8), record count c (8), run count r (4), flags (1; bit 0: irregular), nonce (12:
        0x02 and 11 random bytes), tag (16). The index lists the runs, each as the number of its first record
        (8) and its run id (8), then, for an irregular upload only, the plaintext offset (8) of every record.
        The tag is a GCM tag over nothing under the data key, associated data b"dockyard trailer v2\\0", the
        digest, 0x00, the header tag, the four footer fields and the index.

Reading a blob
    The reader opens the stored object once: the inner store's file when it offers one (`inner.local_path`,
    read with pread into one reused buffer), else by ranges through `inner.blob_size` and `inner.read_blob`.
    From the object's size it knows where the footer is: it reads the header (one probe at offset 0) and the
    trailer (one probe at the end, a second read only for a long index), unwraps the data key and verifies
    both tags before it returns anything, also in `blob_size` (what HEAD asks). Record i lies at H + 32·i +
    p(i), its plaintext offset p(i) being i·S in a regular blob and the index entry (found by binary search)
    in an irregular one, and the last record must end where the trailer begins. A ranged read fetches and
    decrypts only the records it touches, one at a time, and hands out chunks of about `YIELD_BYTES`: memory
    stays within a few of those whatever the blob size. Each record must carry the length and the run id the
    trailer gives for it, and its tag must verify.
    So a flipped bit anywhere, a truncation (the footer is no longer where the size says), records dropped,
    reordered or duplicated (their offsets are bound), records or whole files swapped between uploads or blobs
    (another data key; the trailer binds the digest), records of a discarded append put back in place of the
    ones kept (another run id), a header claiming another segment size: all fail. What it cannot tell is an
    older authentic copy of the same blob put back, which holds the same plaintext.
    A digest committed again replaces the stored object by another encryption of the same plaintext. An open
    file keeps its version; a read by ranges that raced with the replacement (the header of one version,
    records of the other) opens the blob again and goes on from the first byte it has not yielded, at most
    twice. `local_path` and `redirect_url` are None: there is no
    zero-copy through encryption, and a client sent to the inner store would get ciphertext.

Uploads
    `start_upload` stores nothing; the first append writes the header with the upload's fresh data key.
    `read_upload` decrypts the records in order. `upload_size` is the sum of the record lengths: the store
    remembers (per process) the inner size it last saw with the record layout (count, plaintext size, the
    offsets once irregular, the runs) and re-scans the record prefixes (no decryption) only when the inner size
    moved without it, e.g. after another node appended. An append opens the inner writer (exclusive) before it
    looks at that state, so what it continues from cannot move under it.

Torn tails (a writer killed mid-write)
    A server killed while it appends leaves the last record cut short at any byte (prefix, ciphertext, or the
    header of a first append); one killed while it commits, a trailer cut short. `upload_size` and
    `read_upload` count and return the whole records only and ignore such a tail, because from another node
    an append still in progress looks the same. An append or a commit holds the upload's exclusive inner
    writer, so no other append is under way: a tail it finds is the leftover of a writer that died, and it
    cuts it off (`UploadWriter.truncate`) before it writes; the upload goes on from the offset its status
    reported, its records as they were. A server that restarted reads the records back (the Registry hashes
    them again) before its first append, so they are authenticated before anything follows them.

Committing
    `commit_upload(upload_id, digest)` does not verify the digest: by the BlobStore contract the caller did
    (`Registry.complete_upload` and `Registry.copy_blob` hash the plaintext as it arrives, or read it back with
    `read_upload`, and compare before calling). It appends the trailer for that digest through `inner.append_upload` and
    publishes with `inner.commit_upload(upload_id, digest)`. The process that received the appends needs no read
    for this; another one re-scans the record prefixes first. If a process dies after appending the trailer and
    before publishing, a retried `commit_upload` finds the trailer, checks it is the one this layout and this
    digest give (its tag under the upload's key included) and publishes; an append after a whole trailer is
    refused with `UploadCorrupted` (the client starts the upload over: a commit on another node may be about
    to publish those bytes, so they are not cut off). `abort_upload` removes the upload, trailer and
    all. Committing one upload twice at the same time is not supported. `put_blob` (manifests) writes the same
    layout in one inner `put_blob`.

Failures
    Any authentication or structural failure raises `BlobCorrupted` (HTTP 500, never wrong bytes) and logs on
    the "dockyard.crypto" logger; for an upload in progress, its subclass `UploadCorrupted` (404
    BLOB_UPLOAD_UNKNOWN: the client starts the upload again instead of retrying a 500 for ever). A blob or
    upload whose key id the provider does not hold (a wrong or missing master key) raises the subclass
    `DataKeyUnavailable`. Other errors of a provider (e.g. a KMS key that is disabled)
    pass through unchanged. A streamed read can fail after it yielded some bytes: those bytes are authentic
    (they come from records that verified), the rest is withheld.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import threading
import uuid
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dockyard.domain.errors import BlobUnknown, BlobUploadUnknown, DockyardError, ErrorKind
from dockyard.domain.keys import MASTER_KEY_BYTES
from dockyard.domain.names import Digest
from dockyard.domain.ports import BlobStore, UploadWriter

logger = logging.getLogger("dockyard.crypto")

DEFAULT_SEGMENT_SIZE: Final = 1024 * 1024
"""Measured on the development machine (2 vCPUs, x86-64 with AES-NI and VAES, Python 3.11, cryptography 50).

In-process CPU throughput over the filesystem store on tmpfs (256 MiB, 64 KiB writes; plain store: push 2.6,
pull 6.7-7.1 GB/s): push 2.0-2.1 GB/s for 64-256 KiB segments and 1.9 GB/s from 512 KiB to 4 MiB (a larger
ciphertext is fresh memory each time); pull 2.9-3.2 GB/s for 64-256 KiB (records are joined into chunks of
`YIELD_BYTES`, one more copy), 3.5 at 512 KiB, 3.9-4.1 from 1 MiB up. Through HTTP (benchmarks/encryption.py,
1 GiB, one worker, loopback), where the plain store answers pulls with zero-copy `pathsend`: pulls reached
0.79 of plain throughput with 128 KiB segments and 0.95 with 1 MiB; pushes are within noise of plain for both.
Larger segments buy nothing more and cost memory (one segment per open append writer) and ranged reads (up to
two extra segments decrypted per range)."""
MIN_SEGMENT_SIZE: Final = 64
MAX_SEGMENT_SIZE: Final = 64 * 1024 * 1024
YIELD_BYTES: Final = 1024 * 1024
"""Plaintext handed out per chunk by reads, several records joined when they are smaller: the HTTP door moves
every chunk through a thread hop, which costs more than the copy for small chunks."""
DATA_KEY_BYTES: Final = 32
TAG_BYTES: Final = 16
NONCE_BYTES: Final = 12
RECORD_OVERHEAD: Final = 32  # length (4), nonce (12), tag (16)

_MAGIC: Final = b"DYE2"
_VERSION: Final = 2
_HEADER_FIXED = struct.Struct(">4sBHI")  # magic, version, header length, segment size
_LENGTH16 = struct.Struct(">H")
_MAX_HEADER: Final = 16 * 1024
_HEADER_PROBE: Final = 1024  # one read fetches the whole header of any ordinary key id and wrapped key
_READ_BYTES: Final = 1024 * 1024  # the inner read size a ranged read aims at (whole records when regular)
_TAIL_PROBE: Final = 16 * 1024  # one read fetches the trailer of blobs of up to ~1000 appends (or whole if small)
_RECORD_PREFIX = struct.Struct(">I12s")  # plaintext length, nonce
_RECORD_AAD = struct.Struct(">QI")  # plaintext offset, plaintext length
_MARKER: Final = b"\xff\xff\xff\xff"
_RUN = struct.Struct(">Q8s")  # first record, run id
_OFFSET = struct.Struct(">Q")
_FOOTER_FIELDS = struct.Struct(">QQIB")  # plaintext length, record count, run count, flags
_FOOTER_BYTES: Final = _FOOTER_FIELDS.size + NONCE_BYTES + TAG_BYTES
_IRREGULAR: Final = 0x01
_HEADER_NONCE: Final = bytes(NONCE_BYTES)
_RECORD_MARK: Final = b"\x01"
_TRAILER_MARK: Final = b"\x02"
_RUN_ID_BYTES: Final = 8
_COUNTER_LIMIT: Final = 1 << 24  # records per run id (3-byte counter)
_HEADER_AAD: Final = b"dockyard header v2\x00"
_RECORD_AAD_PREFIX: Final = b"dockyard record v2\x00"
_TRAILER_AAD: Final = b"dockyard trailer v2\x00"
_UPLOAD_CACHE_ENTRIES: Final = 4096
_REOPENS: Final = 2  # times a read opens a blob again that was replaced while it was read


# --------------------------------------------------------------------------------------------- errors


class BlobCorrupted(DockyardError):
    """Stored bytes failed authentication (tampering, truncation, bit rot): nothing unverified is returned."""

    kind = ErrorKind("UNKNOWN", 500, "ServerException", "stored content failed integrity verification")


class UploadCorrupted(BlobCorrupted):
    """The stored bytes of an upload in progress failed verification: the session cannot go on.

    A 404 BLOB_UPLOAD_UNKNOWN, so that the client starts the upload again rather than retrying a 500 for ever.
    """

    kind = ErrorKind(
        "BLOB_UPLOAD_UNKNOWN",
        404,
        "UploadNotFoundException",
        "the upload's stored bytes failed integrity verification; start the upload again",
    )


class DataKeyUnavailable(BlobCorrupted):
    """The key that wrapped an object's data key is not held (a wrong or missing master key)."""

    kind = ErrorKind("UNKNOWN", 500, "ServerException", "no key to decrypt stored content")


# --------------------------------------------------------------------------------------------- keys


class DataKeyProvider(Protocol):
    """Wraps and unwraps data keys with key-encryption keys named by key ids.

    `unwrap` raises `DataKeyUnavailable` for a key id it does not hold and `BlobCorrupted` for a wrapped key
    that fails verification; it never returns a key other than the one wrapped.
    """

    def current_key_id(self) -> str:
        """The key id new objects are wrapped with."""
        ...

    def wrap(self, plaintext_key: bytes, key_id: str) -> bytes: ...

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes: ...


class MasterKeyProvider:
    """Key-encryption keys derived from 32-byte master keys (the current one, and retired ones to read with).

    Each master key yields, through HKDF-SHA256, a key-encryption key used for this purpose only (the master
    key itself also seals secrets elsewhere) and a key id that names it without revealing it. A data key is
    wrapped as nonce ‖ AES-GCM(data key) with the key id as associated data.
    """

    _KEK_INFO: Final = b"dockyard blob key-encryption key v1"
    _ID_INFO: Final = b"dockyard blob key id v1"
    _WRAP_AAD: Final = b"dockyard data key v1\x00"

    def __init__(self, master_key: bytes, retired: Iterable[bytes] = ()) -> None:
        self._keks: dict[str, AESGCM] = {}
        self._current = ""
        for key in (master_key, *retired):
            if len(key) != MASTER_KEY_BYTES:
                raise ValueError(f"a master key must be {MASTER_KEY_BYTES} bytes")
            key_id = "mk-" + _hkdf(key, self._ID_INFO, 8).hex()
            self._keks.setdefault(key_id, AESGCM(_hkdf(key, self._KEK_INFO, 32)))
            self._current = self._current or key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keks)

    def current_key_id(self) -> str:
        return self._current

    def wrap(self, plaintext_key: bytes, key_id: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._kek(key_id).encrypt(nonce, plaintext_key, self._WRAP_AAD + key_id.encode())

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        kek = self._kek(key_id)
        try:
            return kek.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], self._WRAP_AAD + key_id.encode())
        except (InvalidTag, ValueError):
            raise BlobCorrupted("the wrapped data key failed verification") from None

    def _kek(self, key_id: str) -> AESGCM:
        kek = self._keks.get(key_id)
        if kek is None:
            raise DataKeyUnavailable(f"key {key_id!r} is not among the master keys this server holds")
        return kek


def _hkdf(key: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


# --------------------------------------------------------------------------------------------- format


class _Corrupt(Exception):
    """Internal: why verification failed; the store turns it into a logged `BlobCorrupted`."""


_FAILURES: Final = (_Corrupt, InvalidTag, ValueError, struct.error)


@dataclass(frozen=True)
class _Header:
    """A verified header: the data key and what the records' associated data needs."""

    length: int
    segment_size: int
    upload_id: str
    aead: AESGCM
    tag: bytes


def _new_header(keys: DataKeyProvider, upload_id: str, segment_size: int) -> tuple[bytes, _Header]:
    """A fresh data key: the header bytes to store first, and the header they verify as."""
    data_key = AESGCM.generate_key(bit_length=8 * DATA_KEY_BYTES)
    key_id = keys.current_key_id()
    fields = b"".join(
        _with_length(field) for field in (upload_id.encode(), key_id.encode(), keys.wrap(data_key, key_id))
    )
    length = _HEADER_FIXED.size + len(fields) + TAG_BYTES
    body = _HEADER_FIXED.pack(_MAGIC, _VERSION, length, segment_size) + fields
    aead = AESGCM(data_key)
    tag = aead.encrypt(_HEADER_NONCE, b"", _HEADER_AAD + body)
    return body + tag, _Header(length, segment_size, upload_id, aead, tag)


def _header_size(fixed: bytes) -> int:
    """The header length announced by its fixed part (checked for plausibility only)."""
    if len(fixed) < _HEADER_FIXED.size:
        raise _Corrupt("shorter than a header")
    magic, version, length, segment_size = _HEADER_FIXED.unpack_from(fixed)
    if magic != _MAGIC or version != _VERSION:
        raise _Corrupt(f"not encrypted content of a known version ({magic!r}, {version})")
    if not _HEADER_FIXED.size + 3 * _LENGTH16.size + TAG_BYTES <= length <= _MAX_HEADER:
        raise _Corrupt(f"implausible header length {length}")
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise _Corrupt(f"implausible segment size {segment_size}")
    return int(length)


def _open_header(keys: DataKeyProvider, raw: bytes) -> _Header:
    """Parse and verify a whole header (`raw` holds exactly its bytes): unwraps the data key."""
    length = _header_size(raw)
    if len(raw) != length:
        raise _Corrupt("truncated header")
    segment_size = _HEADER_FIXED.unpack_from(raw)[3]
    body, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
    upload_id, at = _take_field(body, _HEADER_FIXED.size)
    key_id, at = _take_field(body, at)
    wrapped, at = _take_field(body, at)
    if at != len(body):
        raise _Corrupt("header length does not match its fields")
    data_key = keys.unwrap(wrapped, key_id.decode())
    if len(data_key) != DATA_KEY_BYTES:
        raise _Corrupt("the unwrapped data key has the wrong length")
    aead = AESGCM(data_key)
    try:
        aead.decrypt(_HEADER_NONCE, tag, _HEADER_AAD + body)
    except InvalidTag:
        raise _Corrupt("the header failed authentication") from None
    return _Header(length, segment_size, upload_id.decode(), aead, tag)


def _with_length(field: bytes) -> bytes:
    return _LENGTH16.pack(len(field)) + field


def _take_field(raw: bytes, at: int) -> tuple[bytes, int]:
    (length,) = _LENGTH16.unpack_from(raw, at)
    start = at + _LENGTH16.size
    if start + length > len(raw):
        raise _Corrupt("a header field runs past the header")
    return raw[start : start + length], start + length


def _record_aad(header_tag: bytes, offset: int, length: int) -> bytes:
    return _RECORD_AAD_PREFIX + header_tag + _RECORD_AAD.pack(offset, length)


class _Layout:
    """Where the records of an upload or a blob lie: their plaintext lengths and the runs that wrote them.

    Regular (every record S bytes but the last) until proven otherwise; from the first short record in the
    middle on, the plaintext offset of every record is kept (8 bytes each).
    """

    def __init__(self, segment_size: int, header_length: int) -> None:
        self.segment_size = segment_size
        self.header_length = header_length
        self.count = 0
        self.plain_size = 0
        self.last_length = 0
        self.offsets: array[int] | None = None
        self.run_starts: list[int] = []
        self.run_ids: list[bytes] = []

    def copy(self) -> _Layout:
        twin = _Layout(self.segment_size, self.header_length)
        twin.count, twin.plain_size, twin.last_length = self.count, self.plain_size, self.last_length
        twin.offsets = None if self.offsets is None else array("Q", self.offsets)
        twin.run_starts, twin.run_ids = list(self.run_starts), list(self.run_ids)
        return twin

    @property
    def end(self) -> int:
        """The inner position just after the last record (where a trailer begins)."""
        return self.header_length + RECORD_OVERHEAD * self.count + self.plain_size

    def add(self, length: int, run_id: bytes) -> None:
        if self.offsets is None and self.count and self.last_length != self.segment_size:
            self.offsets = array("Q", range(0, self.count * self.segment_size, self.segment_size))
        if self.offsets is not None:
            self.offsets.append(self.plain_size)
        if not self.run_ids or self.run_ids[-1] != run_id:
            self.run_starts.append(self.count)
            self.run_ids.append(run_id)
        self.count += 1
        self.plain_size += length
        self.last_length = length

    def truncate(self, count: int) -> None:
        """Keep the first `count` records only."""
        if count >= self.count:
            return
        self.plain_size = self.record(count)[1]
        if self.offsets is not None:
            del self.offsets[count:]
        runs = bisect_left(self.run_starts, count)  # the runs that began before record `count`
        del self.run_starts[runs:], self.run_ids[runs:]
        self.count = count
        self.last_length = self.record(count - 1)[2] if count else 0

    def index_of(self, plain_offset: int) -> int:
        """The record holding the plaintext byte at `plain_offset` (< plain_size)."""
        if self.offsets is None:
            return plain_offset // self.segment_size
        return bisect_right(self.offsets, plain_offset) - 1

    def record(self, index: int) -> tuple[int, int, int]:
        """Record `index`'s inner position, plaintext offset and plaintext length."""
        if self.offsets is None:
            start = index * self.segment_size
            length = min(self.segment_size, self.plain_size - start)
        else:
            start = self.offsets[index]
            length = (self.offsets[index + 1] if index + 1 < self.count else self.plain_size) - start
        return self.header_length + RECORD_OVERHEAD * index + start, start, length

    def run_id(self, index: int) -> bytes:
        return self.run_ids[bisect_right(self.run_starts, index) - 1]

    def trailer_parts(self) -> tuple[bytes, bytes]:
        """The footer fields and the index the trailer of this layout holds."""
        runs = b"".join(_RUN.pack(start, run_id) for start, run_id in zip(self.run_starts, self.run_ids, strict=True))
        offsets = b""
        if self.offsets is not None:
            big_endian = array("Q", self.offsets)
            if sys.byteorder == "little":
                big_endian.byteswap()
            offsets = big_endian.tobytes()
        flags = _IRREGULAR if self.offsets is not None else 0
        return _FOOTER_FIELDS.pack(self.plain_size, self.count, len(self.run_ids), flags), runs + offsets

    @classmethod
    def from_trailer(cls, header: _Header, fields: bytes, index: bytes) -> _Layout:
        """The layout a verified trailer describes (sanity-checked; the records verify the rest)."""
        plain_size, count, run_count, flags = _FOOTER_FIELDS.unpack(fields)
        layout = cls(header.segment_size, header.length)
        layout.count, layout.plain_size = count, plain_size
        for start, run_id in _RUN.iter_unpack(index[: run_count * _RUN.size]):
            layout.run_starts.append(start)
            layout.run_ids.append(run_id)
        if (count == 0) != (run_count == 0) or (layout.run_starts and layout.run_starts[0] != 0):
            raise _Corrupt("the trailer's runs do not cover its records")
        if layout.run_starts != sorted(set(layout.run_starts)) or (count and layout.run_starts[-1] >= count):
            raise _Corrupt("the trailer's runs are out of order")
        if flags & _IRREGULAR:
            offsets = array("Q")
            offsets.frombytes(index[run_count * _RUN.size :])
            if sys.byteorder == "little":
                offsets.byteswap()
            if len(offsets) != count or (count and (offsets[0] != 0 or offsets[-1] >= plain_size)):
                raise _Corrupt("the trailer's offsets do not match its records")
            layout.offsets = offsets
        elif count != -(-plain_size // header.segment_size):
            raise _Corrupt("the trailer's record count does not match its length")
        layout.last_length = layout.record(count - 1)[2] if count else 0
        return layout


def _index_length(fields: bytes) -> int:
    _, count, run_count, flags = _FOOTER_FIELDS.unpack(fields)
    if flags & ~_IRREGULAR:
        raise _Corrupt(f"unknown trailer flags {flags:#x}")
    return int(run_count * _RUN.size + (count * _OFFSET.size if flags & _IRREGULAR else 0))


def _trailer_aad(digest: Digest, header_tag: bytes, fields: bytes, index: bytes) -> bytes:
    return _TRAILER_AAD + str(digest).encode() + b"\x00" + header_tag + fields + index


def _new_trailer(header: _Header, layout: _Layout, digest: Digest) -> bytes:
    fields, index = layout.trailer_parts()
    nonce = _TRAILER_MARK + os.urandom(NONCE_BYTES - 1)
    tag = header.aead.encrypt(nonce, b"", _trailer_aad(digest, header.tag, fields, index))
    return _MARKER + index + fields + nonce + tag


def _check_trailer(header: _Header, layout: _Layout, digest: Digest, trailer: bytes) -> None:
    """A trailer found after the records of an upload: it must be the one `layout` and `digest` give."""
    fields, index = layout.trailer_parts()
    expected = _MARKER + index + fields
    if len(trailer) != len(expected) + NONCE_BYTES + TAG_BYTES or trailer[: len(expected)] != expected:
        raise _Corrupt("the upload's trailer does not describe its records")
    nonce, tag = trailer[-TAG_BYTES - NONCE_BYTES : -TAG_BYTES], trailer[-TAG_BYTES:]
    try:
        header.aead.decrypt(nonce, tag, _trailer_aad(digest, header.tag, fields, index))
    except InvalidTag:
        raise _Corrupt(f"the upload's trailer was not written for {digest}") from None


class _Sealer:
    """Seals one run of records after `layout` (which it extends) under a header's data key."""

    def __init__(self, header: _Header, layout: _Layout) -> None:
        self.header = header
        self.layout = layout
        self._aead = header.aead
        self._aad_prefix = _RECORD_AAD_PREFIX + header.tag
        self._run_id = os.urandom(_RUN_ID_BYTES)
        self._counter = 0

    def seal(self, plaintext: bytes | bytearray | memoryview) -> tuple[bytes, bytes]:
        """The prefix and the ciphertext (with its tag) of the next record."""
        if self._counter == _COUNTER_LIMIT:
            self._run_id, self._counter = os.urandom(_RUN_ID_BYTES), 0
        length = len(plaintext)
        nonce = _RECORD_MARK + self._run_id + self._counter.to_bytes(3, "big")
        self._counter += 1
        aad = self._aad_prefix + _RECORD_AAD.pack(self.layout.plain_size, length)
        sealed = self._aead.encrypt(nonce, plaintext, aad)
        self.layout.add(length, self._run_id)
        return _RECORD_PREFIX.pack(length, nonce), sealed


def _open_record(
    header: _Header, piece: bytes | bytearray | memoryview, offset: int, length: int, run_id: bytes | None
) -> bytes:
    """The plaintext of one record (`piece` holds its bytes, prefix included) expected at `offset` with `length`
    bytes and, in a committed blob, written by the run `run_id`."""
    if len(piece) != length + RECORD_OVERHEAD:
        raise _Corrupt(f"the record at plaintext offset {offset} is truncated")
    stored_length, nonce = _RECORD_PREFIX.unpack_from(piece)
    if stored_length != length or nonce[:1] != _RECORD_MARK:
        raise _Corrupt(f"the record at plaintext offset {offset} is not the one expected there")
    if run_id is not None and nonce[1 : 1 + _RUN_ID_BYTES] != run_id:
        raise _Corrupt(f"the record at plaintext offset {offset} was written by another append")
    try:
        return header.aead.decrypt(
            nonce, memoryview(piece)[_RECORD_PREFIX.size :], _record_aad(header.tag, offset, length)
        )
    except InvalidTag:
        raise _Corrupt(f"the record at plaintext offset {offset} failed authentication") from None


def _parse_record_prefix(prefix: bytes, segment_size: int) -> tuple[int, bytes]:
    if len(prefix) != _RECORD_PREFIX.size:
        raise _Corrupt("the last record is truncated")
    length, nonce = _RECORD_PREFIX.unpack(prefix)
    if not 0 < length <= segment_size or nonce[:1] != _RECORD_MARK:
        raise _Corrupt(f"implausible record prefix (length {length})")
    return length, nonce


# --------------------------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class _UploadState:
    """What an upload's inner bytes hold: their size and, once the first append wrote a header, that header,
    the layout of the records after it and the trailer a commit appended (the layout is not changed again)."""

    inner_size: int
    header: _Header | None = None
    layout: _Layout | None = None
    trailer: bytes | None = None
    torn: int = 0  # bytes at the end that are no whole record, header or trailer (a writer cut short)

    @property
    def kept_size(self) -> int:
        """The inner size without the torn tail: where the next append continues."""
        return self.inner_size - self.torn

    @property
    def plain_size(self) -> int:
        return 0 if self.layout is None else self.layout.plain_size


@dataclass(frozen=True)
class _Blob:
    header: _Header
    layout: _Layout


class EncryptedBlobStore:
    """A `BlobStore` that encrypts everything it hands to `inner` (see the module docstring for the format)."""

    def __init__(self, inner: BlobStore, keys: DataKeyProvider, segment_size: int = DEFAULT_SEGMENT_SIZE) -> None:
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError(f"segment size must be between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE} bytes")
        self.inner = inner
        self.keys = keys
        self.segment_size = segment_size
        self._uploads: OrderedDict[str, _UploadState] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------ blobs

    def blob_size(self, digest: Digest) -> int | None:
        """The plaintext size, once the header and the trailer verified."""
        try:
            source, blob = self._open_blob(digest)
        except BlobUnknown:
            return None
        source.close()
        return blob.layout.plain_size

    def read_blob(self, digest: Digest, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The plaintext range, decrypted record by record as it is iterated.

        Nothing is read before the first iteration (the HTTP door calls this on its event loop and iterates
        in a thread), so an unknown blob raises `BlobUnknown`, and a forged one `BlobCorrupted`, from there.
        """
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        return self._read(digest, offset, length)

    def local_path(self, digest: Digest) -> str | None:
        return None

    def redirect_url(self, digest: Digest) -> str | None:
        return None  # the client would get ciphertext

    def put_blob(self, digest: Digest, data: bytes) -> None:
        header_bytes, header = _new_header(self.keys, str(uuid.uuid4()), self.segment_size)
        sealer = _Sealer(header, _Layout(header.segment_size, header.length))
        view = memoryview(data)
        parts = [header_bytes]
        for start in range(0, len(view), header.segment_size):
            parts.extend(sealer.seal(view[start : start + header.segment_size]))
        parts.append(_new_trailer(header, sealer.layout, digest))
        self.inner.put_blob(digest, b"".join(parts))

    def delete_blob(self, digest: Digest) -> None:
        self.inner.delete_blob(digest)

    def stored_blobs(self) -> Iterator[tuple[Digest, datetime]]:
        return self.inner.stored_blobs()

    # ------------------------------------------------------------------------------------ uploads

    def start_upload(self, upload_id: str) -> None:
        self.inner.start_upload(upload_id)
        self._remember(upload_id, _UploadState(0))  # the first append writes the header

    def upload_size(self, upload_id: str) -> int | None:
        try:
            return self._upload_state(upload_id).plain_size
        except BlobUploadUnknown:
            return None

    def append_upload(self, upload_id: str) -> UploadWriter:
        writer = self.inner.append_upload(upload_id)  # exclusive: the state read below cannot move under us
        try:
            state = self._writable_state(upload_id, writer)
            if state.trailer is not None:
                raise _corrupted(
                    f"upload {upload_id}", "append after a commit's trailer", {"upload": upload_id}, UploadCorrupted
                )
            header_bytes = b""
            if state.header is None:  # the first append: choose the upload's key and write the header
                header_bytes, header = _new_header(self.keys, upload_id, self.segment_size)
                state = _UploadState(state.inner_size, header, _Layout(header.segment_size, header.length))
            return _EncryptingUploadWriter(self, upload_id, writer, state, header_bytes)
        except BaseException:
            writer.discard()
            raise

    def read_upload(self, upload_id: str) -> Iterator[bytes]:
        return self._decrypt_upload(upload_id, self.inner.read_upload(upload_id))

    def commit_upload(self, upload_id: str, digest: Digest) -> None:
        """Append the trailer for `digest` (the caller verified the digest) and publish; see the module docstring."""
        writer = self.inner.append_upload(upload_id)  # BlobUploadUnknown before anything is written
        try:
            state = self._writable_state(upload_id, writer)
            if state.trailer is not None:  # a commit that died before publishing appended it
                assert state.header is not None and state.layout is not None
                try:
                    _check_trailer(state.header, state.layout, digest, state.trailer)
                except _Corrupt as error:
                    raise _corrupted(f"upload {upload_id}", error, {"upload": upload_id}, UploadCorrupted) from None
                writer.close()
            else:
                header_bytes, header, layout = b"", state.header, state.layout
                if header is None or layout is None:  # nothing was ever appended: an empty blob
                    header_bytes, header = _new_header(self.keys, upload_id, self.segment_size)
                    layout = _Layout(header.segment_size, header.length)
                trailer = _new_trailer(header, layout, digest)
                writer.write(header_bytes + trailer)
                writer.close()
                size = state.inner_size + len(header_bytes) + len(trailer)
                self._remember(upload_id, _UploadState(size, header, layout, trailer))
        except BaseException:
            writer.discard()
            self._forget(upload_id)
            raise
        self.inner.commit_upload(upload_id, digest)
        self._forget(upload_id)

    def abort_upload(self, upload_id: str) -> None:
        self.inner.abort_upload(upload_id)
        self._forget(upload_id)

    # ------------------------------------------------------------------------------------ blob internals

    def _open_blob(self, digest: Digest) -> tuple[_Source, _Blob]:
        """Open the stored blob and verify its header and trailer; read by ranges, once more if that failed
        (the object may have been replaced between two reads by a commit of the same digest)."""
        for attempt in range(2):
            source = _Source(self.inner, digest)
            try:
                return source, self._verify_blob(source, digest)
            except _FAILURES as error:
                source.close()
                if attempt or source.one_version:
                    raise _corrupted(f"blob {digest}", error, {"digest": str(digest)}) from None
            except BlobCorrupted as error:
                source.close()
                raise _corrupted(f"blob {digest}", error, {"digest": str(digest)}, type(error)) from None
            except BaseException:
                source.close()
                raise
        raise AssertionError("unreachable")

    def _reopen_blob(self, digest: Digest) -> tuple[_Source, _Blob] | None:
        """The blob opened again after a read by ranges failed, if it verifies; None otherwise (not logged)."""
        try:
            source = _Source(self.inner, digest)
        except DockyardError:
            return None
        try:
            return source, self._verify_blob(source, digest)
        except (*_FAILURES, DockyardError):
            source.close()
            return None

    def _verify_blob(self, source: _Source, digest: Digest) -> _Blob:
        size = source.size
        tail_start = max(0, size - _TAIL_PROBE)
        tail = source.read(tail_start, size - tail_start)
        raw = tail[:_HEADER_PROBE] if tail_start == 0 else source.read(0, min(size, _HEADER_PROBE))
        header_length = _header_size(raw)
        if len(raw) < header_length <= size:
            raw += source.read(len(raw), header_length - len(raw))
        header = _open_header(self.keys, raw[:header_length])
        if size < header.length + len(_MARKER) + _FOOTER_BYTES:
            raise _Corrupt("too short for a trailer")
        footer = tail[-_FOOTER_BYTES:]
        fields = footer[: _FOOTER_FIELDS.size]
        plain_size, count, _, _ = _FOOTER_FIELDS.unpack(fields)
        index_length = _index_length(fields)
        trailer_start = size - _FOOTER_BYTES - index_length - len(_MARKER)
        if trailer_start != header.length + RECORD_OVERHEAD * count + plain_size:
            raise _Corrupt("the trailer is not where the records end (truncated, or not a committed blob)")
        if trailer_start < tail_start:
            tail_start = trailer_start
            tail = source.read(tail_start, size - tail_start)
        trailer = tail[trailer_start - tail_start :]
        if trailer[: len(_MARKER)] != _MARKER:
            raise _Corrupt("no trailer marker after the records")
        index = trailer[len(_MARKER) : len(_MARKER) + index_length]
        nonce = footer[_FOOTER_FIELDS.size : _FOOTER_FIELDS.size + NONCE_BYTES]
        try:
            header.aead.decrypt(nonce, footer[-TAG_BYTES:], _trailer_aad(digest, header.tag, fields, index))
        except InvalidTag:
            raise _Corrupt("the trailer failed authentication (damaged, or written for another digest)") from None
        return _Blob(header, _Layout.from_trailer(header, fields, index))

    def _read(self, digest: Digest, offset: int, length: int | None) -> Iterator[bytes]:
        source, blob = self._open_blob(digest)
        try:
            end = blob.layout.plain_size if length is None else min(blob.layout.plain_size, offset + length)
            position, reopened = offset, 0
            while position < end:
                records = self._read_records(source, blob, position, end)
                try:
                    for chunk in records:
                        position += len(chunk)
                        yield chunk
                    return
                except _FAILURES as error:
                    failure = error
                finally:
                    records.close()
                # Read by ranges, the object may have been replaced under us by a commit of the same digest:
                # carry on in the new one.
                fresh = None
                if not source.one_version and reopened < _REOPENS:
                    reopened += 1
                    fresh = self._reopen_blob(digest)
                if fresh is not None:
                    fresh_source, fresh_blob = fresh
                    if (
                        fresh_blob.header.tag != blob.header.tag
                        and fresh_blob.layout.plain_size == blob.layout.plain_size
                    ):
                        source.close()
                        source, blob = fresh
                        continue
                    fresh_source.close()
                raise _corrupted(f"blob {digest}", failure, {"digest": str(digest)}) from None
        finally:
            source.close()

    def _read_records(self, source: _Source, blob: _Blob, offset: int, end: int) -> Generator[bytes, None, None]:
        """The plaintext of [offset, end) from the records holding it, in chunks of about `YIELD_BYTES`."""
        layout, header = blob.layout, blob.header
        first, last = layout.index_of(offset), layout.index_of(end - 1)
        start = layout.record(first)[0]
        last_position, _, last_length = layout.record(last)
        record_size = layout.segment_size + RECORD_OVERHEAD  # reads of whole records, when they are regular
        chunk_size = max(1, _READ_BYTES // record_size) * record_size
        chunks = source.chunks(start, last_position + RECORD_OVERHEAD + last_length - start, chunk_size)
        stream = _Stream(chunks)
        batch: list[bytes] = []
        batched = 0
        try:
            for index in range(first, last + 1):
                _, record_offset, record_length = layout.record(index)
                piece = stream.take(record_length + RECORD_OVERHEAD)
                plaintext = _open_record(header, piece, record_offset, record_length, layout.run_id(index))
                if index in (first, last):
                    plaintext = plaintext[max(0, offset - record_offset) : end - record_offset]
                batch.append(plaintext)
                batched += len(plaintext)
                if batched >= YIELD_BYTES:
                    yield _drain(batch)
                    batched = 0
            if batch:
                yield _drain(batch)
        finally:
            _close(chunks)

    # ------------------------------------------------------------------------------------ upload internals

    def _read_upload_header(self, upload_id: str, stream: _Stream) -> _Header | None:
        """Parse and verify an upload's header from the start of its bytes; None when they are empty or end
        before the header does (the first append was cut short: all there is is a torn tail)."""
        fixed = bytes(stream.take(_HEADER_FIXED.size))
        if len(fixed) < _HEADER_FIXED.size:
            return None
        length = _header_size(fixed)
        raw = fixed + bytes(stream.take(length - len(fixed)))
        if len(raw) < length:
            return None
        header = _open_header(self.keys, raw)
        if header.upload_id != upload_id:
            raise _Corrupt("the bytes belong to another upload")
        return header

    def _decrypt_upload(self, upload_id: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        stream = _Stream(chunks)
        try:
            header = self._read_upload_header(upload_id, stream)
            if header is None:
                return
            offset = 0
            batch: list[bytes] = []
            batched = 0
            while prefix := bytes(stream.take(_RECORD_PREFIX.size)):
                if prefix[: len(_MARKER)] == _MARKER:
                    break  # a commit's trailer: the records are all there is to read
                if len(prefix) < _RECORD_PREFIX.size:
                    break  # a torn last record: not part of the upload (the next append drops it)
                length, _ = _parse_record_prefix(prefix, header.segment_size)
                piece = bytearray(prefix)
                piece += stream.take(length + TAG_BYTES)
                if len(piece) < length + RECORD_OVERHEAD:
                    break  # likewise
                plaintext = _open_record(header, piece, offset, length, None)
                offset += length
                batch.append(plaintext)
                batched += length
                if batched >= YIELD_BYTES:
                    yield _drain(batch)
                    batched = 0
            if batch:
                yield _drain(batch)
        except _FAILURES as error:
            raise _corrupted(f"upload {upload_id}", error, {"upload": upload_id}, UploadCorrupted) from None
        except BlobCorrupted as error:
            raise _corrupted(f"upload {upload_id}", error, {"upload": upload_id}, _upload_kind(error)) from None
        finally:
            _close(chunks)

    def _scan_upload(self, upload_id: str) -> _UploadState:
        """Walk the record prefixes (no decryption) to learn the layout; verifies the header.

        Bytes at the end that are no whole record, header or trailer are counted as `torn`, not as part of the
        upload: seen from another node they may be an append still in progress; seen by the holder of the
        upload's writer, the tail of one that died (`_writable_state` drops them).
        """
        chunks = self.inner.read_upload(upload_id)
        stream = _Stream(chunks)
        try:
            header = self._read_upload_header(upload_id, stream)
            if header is None:
                return _UploadState(stream.position, torn=stream.position)
            layout = _Layout(header.segment_size, header.length)
            while prefix := bytes(stream.take(_RECORD_PREFIX.size)):
                if prefix[: len(_MARKER)] == _MARKER:  # a commit's trailer, as long as this layout's must be
                    size = len(_MARKER) + len(layout.trailer_parts()[1]) + _FOOTER_BYTES
                    trailer = prefix + bytes(stream.take(size - len(prefix)))
                    if len(trailer) < size:
                        break  # a commit writing it right now, or one that died
                    if stream.take(1):
                        raise _Corrupt("the trailer does not end the upload where it should")
                    return _UploadState(stream.position, header, layout, trailer)
                if len(prefix) < _RECORD_PREFIX.size:
                    break
                length, nonce = _parse_record_prefix(prefix, header.segment_size)
                if stream.skip(length + TAG_BYTES) != length + TAG_BYTES:
                    break
                layout.add(length, nonce[1 : 1 + _RUN_ID_BYTES])
            return _UploadState(stream.position, header, layout, torn=stream.position - layout.end)
        except _FAILURES as error:
            raise _corrupted(f"upload {upload_id}", error, {"upload": upload_id}, UploadCorrupted) from None
        except BlobCorrupted as error:
            raise _corrupted(f"upload {upload_id}", error, {"upload": upload_id}, _upload_kind(error)) from None
        finally:
            _close(chunks)

    def _upload_state(self, upload_id: str) -> _UploadState:
        inner_size = self.inner.upload_size(upload_id)
        if inner_size is None:
            self._forget(upload_id)
            raise BlobUploadUnknown(detail={"upload": upload_id})
        with self._lock:
            known = self._uploads.get(upload_id)
        if known is not None and known.inner_size == inner_size:
            return known
        state = self._scan_upload(upload_id)
        self._remember(upload_id, state)
        return state

    def _writable_state(self, upload_id: str, writer: UploadWriter) -> _UploadState:
        """The state an append or a commit holding the upload's (exclusive) inner `writer` continues from.

        No other append can be under way, so a torn tail is what a writer that died (a killed server) left:
        it is cut off, and the upload goes on after its last whole record. (The records themselves are
        authenticated when they are read back, as a server that restarted does to hash the upload again
        before it appends; a damaged one makes the upload fail with `UploadCorrupted`.)
        """
        state = self._upload_state(upload_id)
        if not state.torn:
            return state
        logger.warning(
            "upload %s: dropping the last %d stored bytes, a record, header or trailer cut short by a writer that died",
            upload_id,
            state.torn,
        )
        writer.truncate(state.kept_size)
        state = _UploadState(state.kept_size, state.header, state.layout)
        self._remember(upload_id, state)
        return state

    def _remember(self, upload_id: str, state: _UploadState) -> None:
        with self._lock:
            self._uploads[upload_id] = state
            self._uploads.move_to_end(upload_id)
            while len(self._uploads) > _UPLOAD_CACHE_ENTRIES:
                self._uploads.popitem(last=False)

    def _forget(self, upload_id: str) -> None:
        with self._lock:
            self._uploads.pop(upload_id, None)


class _EncryptingUploadWriter:
    """Seals records on the grid of the segment size as plaintext arrives, and the remainder on `close`."""

    def __init__(
        self, store: EncryptedBlobStore, upload_id: str, inner: UploadWriter, state: _UploadState, header: bytes
    ) -> None:
        assert state.header is not None and state.layout is not None
        self._store = store
        self._upload_id = upload_id
        self._inner = inner
        self._sealer = _Sealer(state.header, state.layout.copy())
        self._size = state.header.segment_size
        self._inner_size = state.inner_size
        self._buffer = bytearray(self._size)
        self._view = memoryview(self._buffer)
        self._filled = 0
        self._wrote = False
        self._failed = False
        if header:
            self._put(header)
            store._remember(upload_id, _UploadState(self._inner_size, state.header, state.layout))

    def truncate(self, size: int) -> None:
        """Drop the plaintext from `size` on, before anything is written: the records after it go, and the
        record `size` cuts is sealed again, shorter, by this writer's run."""
        layout = self._sealer.layout
        if self._wrote or self._filled:
            raise ValueError("truncate an upload before writing to it")
        if not 0 <= size <= layout.plain_size:
            raise ValueError(f"cannot truncate an upload to {size} bytes: it holds {layout.plain_size}")
        if size == layout.plain_size:
            return
        index = layout.index_of(size)
        position, offset, length = layout.record(index)
        kept = b""
        if offset < size:  # the record holding byte `size`: keep its first bytes
            chunks = self._store.inner.read_upload(self._upload_id)
            stream = _Stream(chunks)
            try:
                if stream.skip(position) != position:
                    raise _Corrupt("the upload is shorter than its records")
                piece = stream.take(length + RECORD_OVERHEAD)
                kept = _open_record(self._sealer.header, piece, offset, length, None)[: size - offset]
            except _FAILURES as error:
                detail = {"upload": self._upload_id}
                raise _corrupted(f"upload {self._upload_id}", error, detail, UploadCorrupted) from None
            finally:
                _close(chunks)
        self._store._forget(self._upload_id)
        self._inner.truncate(position)
        self._inner_size = position
        layout.truncate(index)
        if kept:  # sealed now, as a short record: the truncation holds even if this writer is discarded
            self._seal(memoryview(kept))
            self._wrote = True

    def write(self, data: bytes) -> None:
        self._wrote = self._wrote or bool(data)
        view = memoryview(data)
        while view:
            room = self._size - (self._sealer.layout.plain_size + self._filled) % self._size  # to the grid line
            if not self._filled and len(view) >= room:
                self._seal(view[:room])
                view = view[room:]
                continue
            take = min(room, len(view))
            self._view[self._filled : self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if take == room:
                self._seal_buffer()

    def close(self) -> None:
        if self._failed:
            # A write to the inner store failed (a full disk, say): what it holds may end in a torn record,
            # which the next append cuts off; nothing may follow it. The appends before are kept.
            self.discard()
            return
        try:
            if self._filled:
                self._seal_buffer()
        except BaseException:
            self.discard()
            raise
        try:
            self._inner.close()
        except BaseException:
            self._store._forget(self._upload_id)
            raise
        layout = self._sealer.layout
        self._store._remember(self._upload_id, _UploadState(self._inner_size, self._sealer.header, layout))

    def discard(self) -> None:
        self._filled = 0
        self._inner.discard()
        self._store._forget(self._upload_id)  # the inner store may or may not have kept what was written

    def _seal_buffer(self) -> None:
        self._seal(self._view[: self._filled])
        self._filled = 0

    def _seal(self, plaintext: memoryview) -> None:
        prefix, sealed = self._sealer.seal(plaintext)
        self._put(prefix)
        self._put(sealed)

    def _put(self, data: bytes) -> None:
        try:
            self._inner.write(data)
        except BaseException:
            self._failed = True
            raise
        self._inner_size += len(data)


# --------------------------------------------------------------------------------------------- helpers


def _corrupted(
    what: str, reason: object, detail: dict[str, str] | None, kind: type[BlobCorrupted] = BlobCorrupted
) -> BlobCorrupted:
    logger.error("integrity verification failed for %s: %s", what, reason or "authentication failed")
    return kind(detail=detail)


def _upload_kind(error: BlobCorrupted) -> type[BlobCorrupted]:
    """How a verification failure of an upload in progress is raised: the client starts it again (a 4xx);
    a key the server does not hold is the server's fault and stays what it is."""
    return type(error) if isinstance(error, DataKeyUnavailable) else UploadCorrupted


def _drain(batch: list[bytes]) -> bytes:
    """The batch as one chunk, emptied (so that only the joined copy stays alive while it is handed out)."""
    chunk = batch[0] if len(batch) == 1 else b"".join(batch)
    batch.clear()
    return chunk


def _close(chunks: Iterable[bytes | memoryview]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


class _Source:
    """The stored bytes of one blob, by range.

    When the inner store has a file for it (`local_path`), every read goes to that one open file: one
    consistent version even if a commit of the same digest replaces the path meanwhile, and records are read
    into one reused buffer (fresh memory for each read chunk costs more than decrypting it). Otherwise the
    inner store's `read_blob` serves each range.
    """

    def __init__(self, inner: BlobStore, digest: Digest) -> None:
        self._inner = inner
        self._digest = digest
        self._descriptor: int | None = None
        path = inner.local_path(digest)
        self.one_version = path is not None  # every read goes to one open file
        if path is None:
            size = inner.blob_size(digest)
            if size is None:
                raise BlobUnknown(detail={"digest": str(digest)})
        else:
            try:
                self._descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise BlobUnknown(detail={"digest": str(digest)}) from None
            size = os.fstat(self._descriptor).st_size
        self.size = size

    def read(self, start: int, length: int) -> bytes:
        """Exactly `length` bytes from `start`."""
        if self._descriptor is None:
            data = b"".join(self._inner.read_blob(self._digest, start, length))
        else:
            data = os.pread(self._descriptor, length, start)
        if len(data) != length:
            raise _Corrupt("the stored object changed size while it was read")
        return data

    def chunks(self, start: int, length: int, chunk_size: int) -> Iterator[bytes | memoryview]:
        """The range in chunks; from a file, views into one buffer, each valid until the next is taken."""
        if self._descriptor is None:
            return self._inner.read_blob(self._digest, start, length)
        return self._file_chunks(self._descriptor, start, start + length, chunk_size)

    @staticmethod
    def _file_chunks(descriptor: int, start: int, end: int, chunk_size: int) -> Iterator[memoryview]:
        buffer = memoryview(bytearray(max(1, min(chunk_size, end - start))))
        while start < end:
            read = os.preadv(descriptor, [buffer[: min(len(buffer), end - start)]], start)
            if read == 0:
                return
            start += read
            yield buffer[:read]

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


_EMPTY: Final = memoryview(b"")


class _Stream:
    """Exact-size pieces from an iterator of chunks: a view into a chunk when the piece lies within one, else
    a copy of just that piece (views stay valid: chunks are immutable)."""

    def __init__(self, chunks: Iterator[bytes | memoryview]) -> None:
        self._chunks = chunks
        self._view = _EMPTY
        self.position = 0

    def _next(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self._view = memoryview(chunk)
        return True

    def take(self, size: int) -> memoryview | bytearray:
        """`size` bytes, fewer only at the end of the stream."""
        if not self._view and not self._next():
            return bytearray()
        view = self._view
        if len(view) >= size:
            self._view = view[size:]
            self.position += size
            return view[:size]
        piece = bytearray(view)
        self._view = _EMPTY
        while len(piece) < size and self._next():
            need = size - len(piece)
            piece += self._view[:need]
            self._view = self._view[need:]
        self.position += len(piece)
        return piece

    def skip(self, size: int) -> int:
        """Skip `size` bytes (fewer only at the end of the stream); returns how many were skipped."""
        skipped = 0
        while skipped < size and (self._view or self._next()):
            step = min(len(self._view), size - skipped)
            self._view = self._view[step:]
            skipped += step
        self.position += skipped
        return skipped
