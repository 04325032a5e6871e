"""Encryption at rest: a `BlobStore` wrapper that never hands its inner store a byte of plaintext.

`EncryptedBlobStore(inner, keys)` wraps any blob store (filesystem today, S3 tomorrow) and speaks the same
contract: digests, sizes, ranges and uploads are all about the PLAINTEXT; only the bytes the inner store keeps
are ciphertext. Everything is AES-256-GCM from `cryptography`.

Keys (envelope encryption)
    Every committed blob, and every upload in progress, gets a fresh random 256-bit data key. The data key
    is wrapped by a key-encryption key through a `DataKeyProvider` (`MasterKeyProvider` here: a key derived
    with HKDF from the registry's 32-byte master key; a KMS-backed provider can come later) and the wrapped
    form is stored in the object's header together with the key id that wrapped it. Rotating the master
    key means building the provider with the new key and the old ones as `retired`: new objects use the new
    key, old objects stay readable. Dedup stays by plaintext digest within one key domain (one store).

Layout of a committed blob (what `inner` keeps under the plaintext digest; integers big-endian)
    header
        magic b"DYEB", version (1 byte, = 1), header length (2), segment size S (4), plaintext length N (8),
        key id length (2), key id (UTF-8), wrapped data key length (2), wrapped data key, tag (16)
    segments 0 … n-1, n = max(1, ceil(N / S)): each AES-GCM(plaintext of S bytes, the last one N - (n-1)·S
        bytes, possibly 0) followed by its 16-byte tag.
    The header tag is a GCM tag over nothing, with associated data binding the digest and every header byte
    before it, under the data key with a nonce no segment uses (twelve 0xff bytes). Segment i is sealed with the
    nonce i (8 bytes) ‖ final (4 bytes: 1 for the last segment, else 0) and associated data binding the
    digest, the header tag, i and the final marker. So a flipped bit anywhere, a truncation, a dropped
    final segment (the new last one was not sealed as final), reordered segments, segments or whole files
    swapped between blobs (other digest, other data key), a header edited to claim another length or
    segment size: all fail authentication. Deterministic nonces are safe because a data key seals exactly
    one blob (every commit draws a new one).
    A ranged read fetches and decrypts only the segments it touches, one at a time (memory stays near 2·S
    whatever the blob size); `blob_size` reads and verifies the header only; `local_path` is None (no
    zero-copy through encryption).

Layout of an upload in progress (what `inner` keeps under the same upload id; empty until the first append,
which writes the header with a fresh upload data key)
    header
        magic b"DYEU", version (1), header length (2), key id length (2), key id, wrapped data key length
        (2), wrapped data key, tag (16; GCM over nothing, associated data: upload id and the header bytes,
        nonce 12 zero bytes)
    records, one after the other: plaintext length n (4), nonce (12: 0x01 then 11 random bytes),
        AES-GCM(n plaintext bytes) and its tag. Associated data: the upload id, the header tag, the plaintext
        offset of the record's first byte and n.
    Each `append_upload` writer seals a record whenever S plaintext bytes have arrived and seals whatever is
    left when it is closed, so a segment boundary may fall anywhere across requests: the partial tail of one
    request is a short record of its own, durable as soon as the writer closes, and the next request (in
    this process or another) simply appends records after it. Binding the offset makes reordered, dropped or
    spliced records fail; binding the upload id and a per-upload data key makes records of another upload
    fail. Record nonces are random, not counters: a store whose `discard` forgets an append could see the
    same offset written twice with different bytes, which must never reuse a GCM nonce.
    `read_upload` decrypts the records in order. `upload_size` is the sum of the record lengths: the store
    remembers (per process) the inner size it last saw with that sum, and re-scans the record headers (no
    decryption) only when the inner size moved without it, e.g. after another process appended. A record cut
    short (a writer killed mid-write) makes the upload unusable (`BlobCorrupted`; the client starts over);
    bytes cut at a record boundary make a shorter upload, which the digest check at commit refuses.
    `commit_upload` re-segments by streaming: it decrypts the records, checks their plaintext length and
    digest against what it commits, seals fixed segments under a fresh blob key into a staging upload and
    publishes that with the inner store's own `commit_upload` (fsync + rename on disk, a completed object on
    S3): a crash leaves garbage, never a visible half-written blob. The staging upload's id is derived from
    the upload id (`uuid5`), so `abort_upload` of the upload (which the collector calls for expired
    sessions) also removes what a crashed commit left behind, and a retried commit starts it afresh.
    Committing the same upload twice at the same time is not supported: the staging upload is shared.

Failures
    Any authentication or structural failure raises `BlobCorrupted` (HTTP 500, never wrong bytes) and logs
    on the "dockyard.crypto" logger; a blob whose key id the provider does not hold (a wrong or missing
    master key) raises its subclass `DataKeyUnavailable`. A streamed read can fail after it yielded some
    bytes: those bytes are authentic (they come from segments that verified), the rest is withheld.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
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

DEFAULT_SEGMENT_SIZE: Final = 128 * 1024
"""Chosen from a measurement on the development machine (x86-64 with AES-NI and VAES, one core): AESGCM
encrypts at about 10 GB/s for 64-512 KiB segments, best at 128 KiB (10.6-12.3 GB/s), and falls to 6-8 GB/s
from 1 MiB up (the segment no longer stays in cache); end to end through the filesystem store, reads cost the
least CPU for 64-256 KiB segments (2.5-3 GB/s) against 1.9-2 GB/s at 1 MiB. Small segments also keep ranged
reads cheap (at most two extra segments decrypted) and memory low."""
MIN_SEGMENT_SIZE: Final = 64
MAX_SEGMENT_SIZE: Final = 64 * 1024 * 1024
DATA_KEY_BYTES: Final = 32
TAG_BYTES: Final = 16
NONCE_BYTES: Final = 12

_BLOB_MAGIC: Final = b"DYEB"
_UPLOAD_MAGIC: Final = b"DYEU"
_VERSION: Final = 1
_MAX_HEADER: Final = 16 * 1024
_HEADER_PROBE: Final = 512  # one read fetches the whole header of any ordinary key id and wrapped key
_BLOB_FIXED = struct.Struct(">4sBHIQ")  # magic, version, header length, segment size, plaintext length
_UPLOAD_FIXED = struct.Struct(">4sBH")  # magic, version, header length
_LENGTH16 = struct.Struct(">H")
_RECORD_PREFIX = struct.Struct(">I12s")  # plaintext length, nonce
_SEGMENT_AAD = struct.Struct(">QB")  # index, final
_RECORD_AAD = struct.Struct(">QI")  # plaintext offset, plaintext length
_BLOB_HEADER_NONCE: Final = b"\xff" * NONCE_BYTES
_UPLOAD_HEADER_NONCE: Final = bytes(NONCE_BYTES)
_RECORD_NONCE_MARK: Final = b"\x01"
_STAGING_NAMESPACE: Final = uuid.UUID("4f0d7a52-2b8e-4a3e-9a53-5d1c7d0e6b1f")
_UPLOAD_CACHE_ENTRIES: Final = 4096


# --------------------------------------------------------------------------------------------- errors


class BlobCorrupted(DockyardError):
    """Stored bytes failed authentication (tampering, truncation, bit rot): nothing unverified is returned."""

    kind = ErrorKind("UNKNOWN", 500, "ServerException", "stored content failed integrity verification")


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


# --------------------------------------------------------------------------------------------- blob format


class _BlobCipher:
    """The data key and associated data of one committed blob, for sealing or opening its segments."""

    def __init__(self, aead: AESGCM, digest: Digest, header_tag: bytes, segment_size: int, length: int) -> None:
        self.aead = aead
        self.segment_size = segment_size
        self.length = length
        self.count = max(1, -(-length // segment_size))
        self._aad_prefix = b"dockyard blob segment v1\x00" + str(digest).encode() + b"\x00" + header_tag

    def segment_length(self, index: int) -> int:
        return self.segment_size if index < self.count - 1 else self.length - (self.count - 1) * self.segment_size

    def _nonce_and_aad(self, index: int) -> tuple[bytes, bytes]:
        final = int(index == self.count - 1)
        return index.to_bytes(8, "big") + final.to_bytes(4, "big"), self._aad_prefix + _SEGMENT_AAD.pack(index, final)

    def seal(self, index: int, plaintext: bytes | memoryview) -> bytes:
        nonce, aad = self._nonce_and_aad(index)
        return self.aead.encrypt(nonce, plaintext, aad)

    def open(self, index: int, ciphertext: bytes | memoryview) -> bytes:
        nonce, aad = self._nonce_and_aad(index)
        return self.aead.decrypt(nonce, ciphertext, aad)


def _blob_header_aad(digest: Digest, header_body: bytes) -> bytes:
    return b"dockyard blob header v1\x00" + str(digest).encode() + b"\x00" + header_body


def _new_blob(keys: DataKeyProvider, digest: Digest, segment_size: int, length: int) -> tuple[bytes, _BlobCipher]:
    """A fresh data key for one blob: the header to store first and the cipher for its segments."""
    data_key = AESGCM.generate_key(bit_length=8 * DATA_KEY_BYTES)
    key_id = keys.current_key_id()
    wrapped = keys.wrap(data_key, key_id)
    key_part = _with_length(key_id.encode()) + _with_length(wrapped)
    header_length = _BLOB_FIXED.size + len(key_part) + TAG_BYTES
    body = _BLOB_FIXED.pack(_BLOB_MAGIC, _VERSION, header_length, segment_size, length) + key_part
    aead = AESGCM(data_key)
    tag = aead.encrypt(_BLOB_HEADER_NONCE, b"", _blob_header_aad(digest, body))
    return body + tag, _BlobCipher(aead, digest, tag, segment_size, length)


def _with_length(field: bytes) -> bytes:
    return _LENGTH16.pack(len(field)) + field


def _take_field(raw: bytes, at: int) -> tuple[bytes, int]:
    (length,) = _LENGTH16.unpack_from(raw, at)
    start = at + _LENGTH16.size
    if start + length > len(raw):
        raise ValueError("field runs past the header")
    return raw[start : start + length], start + length


class _Corrupt(Exception):
    """Internal: why verification failed; the store turns it into a logged `BlobCorrupted`."""


# --------------------------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class _UploadState:
    """What an upload's inner bytes hold: their size, the plaintext size, and the key (None: no header yet)."""

    inner_size: int
    plain_size: int
    aead: AESGCM | None = None
    header_tag: bytes = b""


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
        try:
            return self._open_blob(digest)[1].length  # the header only, verified
        except BlobUnknown:
            return None

    def read_blob(self, digest: Digest, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The plaintext range, decrypted segment by segment as it is iterated.

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
        header, cipher = _new_blob(self.keys, digest, self.segment_size, len(data))
        view = memoryview(data)
        size = cipher.segment_size
        sealed = [cipher.seal(i, view[i * size : (i + 1) * size]) for i in range(cipher.count)]
        self.inner.put_blob(digest, b"".join([header, *sealed]))

    def delete_blob(self, digest: Digest) -> None:
        self.inner.delete_blob(digest)

    def stored_blobs(self) -> Iterator[tuple[Digest, datetime]]:
        return self.inner.stored_blobs()

    # ------------------------------------------------------------------------------------ uploads

    def start_upload(self, upload_id: str) -> None:
        self.inner.start_upload(upload_id)
        self._remember(upload_id, _UploadState(0, 0))  # the first append writes the header

    def upload_size(self, upload_id: str) -> int | None:
        try:
            return self._upload_state(upload_id).plain_size
        except BlobUploadUnknown:
            return None

    def append_upload(self, upload_id: str) -> UploadWriter:
        state = self._upload_state(upload_id)
        header = b""
        if state.aead is None:  # the first append: choose the upload's key and write the header
            header, aead, header_tag = self._new_upload_header(upload_id)
            state = _UploadState(state.inner_size, 0, aead, header_tag)
        writer = self.inner.append_upload(upload_id)
        return _EncryptingUploadWriter(self, upload_id, writer, state, header)

    def read_upload(self, upload_id: str) -> Iterator[bytes]:
        return self._decrypt_upload(upload_id, self.inner.read_upload(upload_id))

    def commit_upload(self, upload_id: str, digest: Digest) -> None:
        state = self._upload_state(upload_id)  # BlobUploadUnknown before anything is written
        staging = _staging_id(upload_id)
        with contextlib.suppress(BlobUploadUnknown):
            self.inner.abort_upload(staging)  # what a crashed attempt left
        self.inner.start_upload(staging)
        try:
            self._write_blob(upload_id, digest, state.plain_size, staging)
            if self.inner.upload_size(upload_id) is None:  # aborted while we were re-encrypting
                raise BlobUploadUnknown(detail={"upload": upload_id})
            self.inner.commit_upload(staging, digest)
        except BaseException:
            with contextlib.suppress(DockyardError, OSError):
                self.inner.abort_upload(staging)
            raise
        self.inner.abort_upload(upload_id)
        self._forget(upload_id)

    def abort_upload(self, upload_id: str) -> None:
        self.inner.abort_upload(upload_id)
        self._forget(upload_id)
        with contextlib.suppress(BlobUploadUnknown):
            self.inner.abort_upload(_staging_id(upload_id))

    # ------------------------------------------------------------------------------------ blob internals

    def _open_blob(self, digest: Digest) -> tuple[int, _BlobCipher]:
        """Read, parse and verify the blob's header: its length and the cipher of its segments."""
        raw = b"".join(self.inner.read_blob(digest, 0, _HEADER_PROBE))
        try:
            if len(raw) < _BLOB_FIXED.size:
                raise _Corrupt("shorter than a header")
            magic, version, header_length, segment_size, length = _BLOB_FIXED.unpack_from(raw)
            if magic != _BLOB_MAGIC or version != _VERSION:
                raise _Corrupt(f"not an encrypted blob of a known version ({magic!r}, {version})")
            if not _BLOB_FIXED.size + TAG_BYTES <= header_length <= _MAX_HEADER:
                raise _Corrupt(f"implausible header length {header_length}")
            if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
                raise _Corrupt(f"implausible segment size {segment_size}")
            if len(raw) < header_length:
                raw += b"".join(self.inner.read_blob(digest, len(raw), header_length - len(raw)))
            if len(raw) < header_length:
                raise _Corrupt("truncated header")
            body, tag = raw[: header_length - TAG_BYTES], raw[header_length - TAG_BYTES : header_length]
            aead = self._unwrap(body, _BLOB_FIXED.size)
            aead.decrypt(_BLOB_HEADER_NONCE, tag, _blob_header_aad(digest, body))
        except (_Corrupt, InvalidTag, ValueError, struct.error) as error:
            raise _corrupted(f"blob {digest}", error, {"digest": str(digest)}) from None
        except BlobCorrupted as error:
            raise _corrupted(f"blob {digest}", error, {"digest": str(digest)}, type(error)) from None
        return header_length, _BlobCipher(aead, digest, tag, segment_size, length)

    def _unwrap(self, body: bytes, at: int) -> AESGCM:
        """The data key named by the key id and wrapped key found at `at` of a header body."""
        key_id, at = _take_field(body, at)
        wrapped, at = _take_field(body, at)
        if at != len(body):
            raise _Corrupt("header length does not match its fields")
        data_key = self.keys.unwrap(wrapped, key_id.decode())
        if len(data_key) != DATA_KEY_BYTES:
            raise _Corrupt("the unwrapped data key has the wrong length")
        return AESGCM(data_key)

    def _read(self, digest: Digest, offset: int, length: int | None) -> Iterator[bytes]:
        header_length, cipher = self._open_blob(digest)
        end = cipher.length if length is None else min(cipher.length, offset + length)
        if offset < end:
            yield from self._read_segments(digest, header_length, cipher, offset, end)

    def _read_segments(
        self, digest: Digest, header_length: int, cipher: _BlobCipher, offset: int, end: int
    ) -> Iterator[bytes]:
        size = cipher.segment_size
        first, last = offset // size, (end - 1) // size
        start = header_length + first * (size + TAG_BYTES)
        span = (last - first) * (size + TAG_BYTES) + cipher.segment_length(last) + TAG_BYTES
        chunks = self.inner.read_blob(digest, start, span)
        index = first
        try:
            for piece in _pieces(chunks, size + TAG_BYTES):
                if index > last or len(piece) != cipher.segment_length(index) + TAG_BYTES:
                    raise _Corrupt(f"segment {index} is truncated")
                plaintext = cipher.open(index, piece)
                low = offset - index * size if index == first else 0
                high = end - index * size if index == last else len(plaintext)
                yield plaintext if (low, high) == (0, len(plaintext)) else plaintext[low:high]
                index += 1
            if index <= last:
                raise _Corrupt(f"segments {index}..{last} are missing")
        except (_Corrupt, InvalidTag) as error:
            reason = error if isinstance(error, _Corrupt) else f"segment {index} failed authentication"
            raise _corrupted(f"blob {digest}", reason, {"digest": str(digest)}) from None
        finally:
            _close(chunks)

    def _write_blob(self, upload_id: str, digest: Digest, length: int, staging: str) -> None:
        """Stream the upload's plaintext into `staging` as a segmented blob, verifying length and digest."""
        header, cipher = _new_blob(self.keys, digest, self.segment_size, length)
        hasher = hashlib.new(digest.algorithm)
        received = 0
        plaintext = self.read_upload(upload_id)
        writer = self.inner.append_upload(staging)
        try:
            writer.write(header)
            for index, piece in enumerate(_pieces(plaintext, cipher.segment_size)):
                received += len(piece)
                if received > length:
                    break
                hasher.update(piece)
                writer.write(cipher.seal(index, piece))
            if length == 0 and received == 0:
                writer.write(cipher.seal(0, b""))
            if received != length:
                raise _corrupted(f"upload {upload_id}", f"holds {received} bytes, expected {length}", None)
            if hasher.hexdigest() != digest.hex:
                raise _corrupted(f"upload {upload_id}", f"content does not match {digest}", {"digest": str(digest)})
        except BaseException:
            writer.discard()
            raise
        finally:
            _close(plaintext)
        writer.close()

    # ------------------------------------------------------------------------------------ upload internals

    def _new_upload_header(self, upload_id: str) -> tuple[bytes, AESGCM, bytes]:
        data_key = AESGCM.generate_key(bit_length=8 * DATA_KEY_BYTES)
        key_id = self.keys.current_key_id()
        key_part = _with_length(key_id.encode()) + _with_length(self.keys.wrap(data_key, key_id))
        body = _UPLOAD_FIXED.pack(_UPLOAD_MAGIC, _VERSION, _UPLOAD_FIXED.size + len(key_part) + TAG_BYTES) + key_part
        aead = AESGCM(data_key)
        tag = aead.encrypt(_UPLOAD_HEADER_NONCE, b"", _upload_header_aad(upload_id, body))
        return body + tag, aead, tag

    def _open_upload_header(self, upload_id: str, reader: _Reader) -> tuple[AESGCM, bytes] | None:
        """Parse and verify an upload's header from the start of its bytes; None when they are empty."""
        fixed = reader.read(_UPLOAD_FIXED.size)
        if not fixed:
            return None
        if len(fixed) < _UPLOAD_FIXED.size:
            raise _Corrupt("shorter than a header")
        magic, version, header_length = _UPLOAD_FIXED.unpack(fixed)
        if magic != _UPLOAD_MAGIC or version != _VERSION:
            raise _Corrupt(f"not an encrypted upload of a known version ({magic!r}, {version})")
        if not _UPLOAD_FIXED.size + TAG_BYTES <= header_length <= _MAX_HEADER:
            raise _Corrupt(f"implausible header length {header_length}")
        rest = reader.read(header_length - _UPLOAD_FIXED.size)
        if len(rest) < header_length - _UPLOAD_FIXED.size:
            raise _Corrupt("truncated header")
        body, tag = fixed + rest[:-TAG_BYTES], rest[-TAG_BYTES:]
        aead = self._unwrap(body, _UPLOAD_FIXED.size)
        aead.decrypt(_UPLOAD_HEADER_NONCE, tag, _upload_header_aad(upload_id, body))
        return aead, tag

    def _decrypt_upload(self, upload_id: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        reader = _Reader(chunks)
        try:
            opened = self._open_upload_header(upload_id, reader)
            if opened is None:
                return
            aead, header_tag = opened
            offset = 0
            while (prefix := reader.read(_RECORD_PREFIX.size)) != b"":
                length, nonce = _parse_record_prefix(prefix)
                sealed = reader.read(length + TAG_BYTES)
                if len(sealed) != length + TAG_BYTES:
                    raise _Corrupt(f"the record at plaintext offset {offset} is truncated")
                try:
                    plaintext = aead.decrypt(nonce, sealed, _record_aad(upload_id, header_tag, offset, length))
                except InvalidTag:
                    raise _Corrupt(f"the record at plaintext offset {offset} failed authentication") from None
                offset += length
                yield plaintext
        except (_Corrupt, InvalidTag, ValueError, struct.error) as error:
            raise _corrupted(f"upload {upload_id}", error, {"upload": upload_id}) from None
        except BlobCorrupted as error:
            raise _corrupted(f"upload {upload_id}", error, {"upload": upload_id}, type(error)) from None
        finally:
            _close(chunks)

    def _scan_upload(self, upload_id: str) -> _UploadState:
        """Walk the record headers (no decryption) to learn the plaintext size; verifies the upload header."""
        chunks = self.inner.read_upload(upload_id)
        reader = _Reader(chunks)
        try:
            opened = self._open_upload_header(upload_id, reader)
            if opened is None:
                return _UploadState(0, 0)
            plain_size = 0
            while (prefix := reader.read(_RECORD_PREFIX.size)) != b"":
                length, _ = _parse_record_prefix(prefix)
                if reader.skip(length + TAG_BYTES) != length + TAG_BYTES:
                    raise _Corrupt(f"the record at plaintext offset {plain_size} is truncated")
                plain_size += length
            return _UploadState(reader.position, plain_size, *opened)
        except (_Corrupt, InvalidTag, ValueError, struct.error) as error:
            raise _corrupted(f"upload {upload_id}", error, {"upload": upload_id}) from None
        except BlobCorrupted as error:
            raise _corrupted(f"upload {upload_id}", error, {"upload": upload_id}, type(error)) from None
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
    """Seals a record per `segment_size` plaintext bytes as they arrive, and the remainder on `close`."""

    def __init__(
        self, store: EncryptedBlobStore, upload_id: str, inner: UploadWriter, state: _UploadState, header: bytes
    ) -> None:
        assert state.aead is not None
        self._store = store
        self._upload_id = upload_id
        self._inner = inner
        self._aead = state.aead
        self._header_tag = state.header_tag
        self._record_size = store.segment_size
        self._inner_size = state.inner_size
        self._offset = state.plain_size
        self._pending = bytearray()
        if header:
            self._put(header)
            self._remember()  # so a size asked for while this writer is open needs no re-scan

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        if self._pending:
            take = self._record_size - len(self._pending)
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) < self._record_size:
                return
            self._seal(self._pending)
            self._pending.clear()
        while len(view) >= self._record_size:
            self._seal(view[: self._record_size])
            view = view[self._record_size :]
        self._pending += view

    def close(self) -> None:
        if self._pending:
            self._seal(self._pending)
            self._pending.clear()
        self._inner.close()
        self._remember()

    def discard(self) -> None:
        self._pending.clear()
        self._inner.discard()
        self._store._forget(self._upload_id)  # the inner store may or may not have kept what was written

    def _seal(self, plaintext: bytes | bytearray | memoryview) -> None:
        length = len(plaintext)
        nonce = _RECORD_NONCE_MARK + os.urandom(NONCE_BYTES - 1)
        sealed = self._aead.encrypt(
            nonce, plaintext, _record_aad(self._upload_id, self._header_tag, self._offset, length)
        )
        self._put(_RECORD_PREFIX.pack(length, nonce))
        self._put(sealed)
        self._offset += length

    def _put(self, data: bytes) -> None:
        self._inner.write(data)
        self._inner_size += len(data)

    def _remember(self) -> None:
        state = _UploadState(self._inner_size, self._offset, self._aead, self._header_tag)
        self._store._remember(self._upload_id, state)


# --------------------------------------------------------------------------------------------- helpers


def _upload_header_aad(upload_id: str, body: bytes) -> bytes:
    return b"dockyard upload header v1\x00" + upload_id.encode() + b"\x00" + body


def _record_aad(upload_id: str, header_tag: bytes, offset: int, length: int) -> bytes:
    return (
        b"dockyard upload record v1\x00" + upload_id.encode() + b"\x00" + header_tag + _RECORD_AAD.pack(offset, length)
    )


def _parse_record_prefix(prefix: bytes) -> tuple[int, bytes]:
    if len(prefix) != _RECORD_PREFIX.size:
        raise _Corrupt("the last record is truncated")
    length, nonce = _RECORD_PREFIX.unpack(prefix)
    if not 0 < length <= MAX_SEGMENT_SIZE:
        raise _Corrupt(f"implausible record length {length}")
    return length, nonce


def _staging_id(upload_id: str) -> str:
    """Where a commit assembles the blob: derived from the upload id, so aborting the upload finds it."""
    return str(uuid.uuid5(_STAGING_NAMESPACE, "commit:" + upload_id))


def _corrupted(
    what: str, reason: object, detail: dict[str, str] | None, kind: type[BlobCorrupted] = BlobCorrupted
) -> BlobCorrupted:
    logger.error("integrity verification failed for %s: %s", what, reason or "authentication failed")
    return kind(detail=detail)


def _close(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


def _pieces(chunks: Iterable[bytes], size: int) -> Iterator[bytes | memoryview]:
    """Pieces of exactly `size` bytes (the last one may be shorter) from chunks of any sizes.

    A piece is either a copy or a view into an (immutable) chunk, so it stays valid after the next is taken.
    """
    pending = bytearray()
    for chunk in chunks:
        view = memoryview(chunk)
        if pending:
            take = size - len(pending)
            pending += view[:take]
            view = view[take:]
            if len(pending) < size:
                continue
            yield bytes(pending)
            pending.clear()
        while len(view) >= size:
            yield view[:size]
            view = view[size:]
        pending += view
    if pending:
        yield bytes(pending)


class _Reader:
    """Exact-length reads over an iterator of chunks, keeping at most one record's bytes in memory."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()
        self._start = 0
        self.position = 0

    def _fill(self, wanted: int) -> None:
        while len(self._buffer) - self._start < wanted:
            chunk = next(self._chunks, None)
            if chunk is None:
                return
            if self._start:
                del self._buffer[: self._start]
                self._start = 0
            self._buffer += chunk

    def read(self, size: int) -> bytes:
        """`size` bytes, fewer only at the end of the stream."""
        self._fill(size)
        end = min(self._start + size, len(self._buffer))
        data = bytes(self._buffer[self._start : end])
        self._start = end
        self.position += len(data)
        return data

    def skip(self, size: int) -> int:
        skipped = 0
        while skipped < size:
            self._fill(1)
            available = len(self._buffer) - self._start
            if available == 0:
                break
            step = min(available, size - skipped)
            self._start += step
            skipped += step
        self.position += skipped
        return skipped
