"""The S3 blob store: blobs and uploads in a bucket, so that any number of stateless nodes can share them.

The caller builds the boto3 S3 client (endpoint URL, region, credentials, path-style addressing); this module
only decides what goes where. Layout under `<prefix>/` in the bucket (owned here; nothing else writes it):

    blobs/<algorithm>/<first two hex digits>/<hex>       published content; it appears whole, or not at all
    uploads/<upload id>/state                           JSON: the upload's segments, open part list and tail
    uploads/<upload id>/segments/<nnnnn>.<token>        a multipart upload of the upload's bytes, open or done
    uploads/<upload id>/tail.<token>                    the last bytes when fewer than 5 MiB, never rewritten

Keys are only ever built from a parsed `Digest`, an upload id that matched `UPLOAD_ID_RE`, and segment and
tail names that match `_NAME_RE`.

Writing: the bytes of an upload go, as they arrive, into a real S3 multipart upload on a segment key, one
part per PART_SIZE (8 MiB; parts grow by 8 MiB every 1,000, so 10,000 parts hold 430 GiB), sent by a small
thread pool while more bytes arrive: a writer holds the part it fills plus at most PARTS_IN_FLIGHT parts being
sent, so memory stays bounded and nothing is spooled to disk. The multipart upload stays open across appends,
requests and nodes: its UploadId and the ETag and size of every part are in the state object, so the next
append, on any node, sends the following part numbers to it. `close` sends what remains as one more part
when it has S3's minimum part size (5 MiB, which every part but the last needs), else stores it as the tail
object, which the next append reads back (at most 5 MiB) and puts in front of its bytes. Then `close` writes
the state (one PUT), after the parts and the tail it names are stored, so `upload_size` and `read_upload`
on any node see whole appends only. Before that PUT it compares the state's ETag (one HEAD) with the one its
append began from and gives up (`BlobUploadUnknown`) if the state changed or vanished: an upload aborted
meanwhile is not brought back, and a concurrent writer (which the OCI protocol rules out) does not silently
lose bytes; not every S3 server offers conditional PUT, so this narrows the window rather than closing it,
and the metadata store remains the source of truth for upload sessions. A writer takes the state it continues
when it receives its first byte, not when it is opened: the newest this process has read or written (a store
remembers that of its last RECENT_STATES uploads, with its ETag), else read again. It accepts any change made
in between that is not another append (the `appends` count): a `read_upload` in between (the Registry and the
encrypted store read an upload back between opening a writer and writing) may have sealed the open multipart
upload. What a process remembers never replaces a read for `upload_size`, `read_upload` or a commit, and a
stale memory only makes the ETag check at `close` fail. Parts sent by a writer that is discarded, or that
fails, are never named by the state: the upload stays as it was (a multipart upload the writer made itself is
aborted; stray parts of an open one are left out when it completes, and `abort_upload` or the commit's
clean-up aborts it otherwise).

Reading back: S3 cannot read the parts of an unfinished multipart upload, and a node that lacks the running
sha256 of an upload (every node but the one that received the previous append) must recompute it from the
stored bytes. So `read_upload` first seals the open multipart upload: it completes it, which makes it an
ordinary object, a segment, and the next append opens a new multipart upload on the next segment key.
Sealing keeps the `appends` count, so a writer opened before it carries on. On one node (the common case:
the node keeps the running hash) nothing is ever sealed before the commit.

Committing: the open multipart upload is sealed with the tail as its last part (a server-side
`upload_part_copy` of at most 5 MiB), so an upload is then usually one segment, published on the blob's key by
one `copy_object`. Ceph radosgw copies an object within a bucket by reference (a 1 GiB copy takes 0.1 s on
loopback, against 4 s or more for `upload_part_copy` of the same bytes); AWS copies server-side. Pieces of
more than `copy_object_limit` (S3's limit for CopyObject is 5 GiB), and uploads of several segments (read back
before their commit by a node without the running hash), are published by a multipart upload on the blob's key
whose parts are `upload_part_copy` calls, 256 MiB ranges at most, its UploadId recorded in the state first so
that `abort_upload` (or a retried commit) can abort it if the committing node dies. Either way the blob
becomes visible atomically. A commit that died after sealing is retried as it is: a sealed multipart upload is
recognised by its object's size. Then the upload's multipart uploads are aborted and every object under
`uploads/<id>/` is deleted, the state last. ETags serve only as S3's part handles and as the state's change
marker, never as digests: the caller verified the digest from the bytes. A bucket lifecycle rule that aborts
incomplete multipart uploads after a day is a sensible backstop for uploads that are never completed nor
aborted.

Truncating (`S3UploadWriter.truncate`, before a writer's first byte; the encrypted store cuts off a record
that a writer which died left torn): the open multipart upload is sealed, the pieces before the cut are kept,
the one it cuts is kept as a shorter copy (its first bytes as the tail when they are under 5 MiB, else a new
segment copied server-side by `upload_part_copy` ranges), and the state names them, at once; the pieces after
it are deleted. Appends on S3 are whole (the state names only closed appends), so a tail torn by a crash never
arises in this store itself.

Uploads staged by the previous layout (`parts/<nnnnn>.<token>` objects, one per 5-8 MiB) are read as
segments, so they can be continued and committed.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, cast

from botocore.exceptions import ClientError

from dockyard.domain.errors import BlobUnknown, BlobUploadInvalid, BlobUploadUnknown, DockyardError
from dockyard.domain.names import Digest
from dockyard.storage.blobs.filesystem import UPLOAD_ID_RE

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, CopySourceTypeDef, GetObjectOutputTypeDef

MIB: Final = 1024 * 1024
GIB: Final = 1024 * MIB
PART_SIZE: Final = 8 * MIB  # one part of an upload's multipart upload (parts 1-1000; then 16 MiB, 24 MiB, ...)
PART_GROWTH: Final = 1000  # parts of one size before they grow by PART_SIZE
PARTS_IN_FLIGHT: Final = 2  # parts one writer sends at once while it fills the next
UPLOAD_THREADS: Final = 16  # parts sent at once by all the writers of one store
MIN_PART_SIZE: Final = 5 * MIB  # S3's minimum for every part of a multipart upload but the last
MAX_PARTS: Final = 10_000  # S3's maximum number of parts
COPY_OBJECT_LIMIT: Final = 5 * GIB  # S3's largest CopyObject source
COPY_RANGE: Final = 256 * MIB  # at most this much per upload_part_copy when pieces are copied as parts
READ_RANGE: Final = 8 * MIB  # bytes asked for by one ranged GET
READ_CHUNK: Final = MIB  # bytes yielded at a time
COPY_THREADS: Final = 8  # concurrent upload_part_copy calls at commit
DELETE_BATCH: Final = 1000  # S3's maximum keys per DeleteObjects
RECENT_STATES: Final = 1024  # uploads whose last state seen (and its ETag) a store remembers

_SEGMENT_RE: Final = re.compile(r"(?:segments|parts)/[0-9]{5}\.[0-9a-f]{16}")  # parts/: the previous layout
_TAIL_RE: Final = re.compile(r"tail\.[0-9a-f]{16}")
_NAME_RE: Final = re.compile(rf"{_SEGMENT_RE.pattern}|{_TAIL_RE.pattern}")
_CONTENT_RANGE_RE: Final = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_MISSING: Final = frozenset({"404", "NoSuchKey", "NotFound"})
_NO_SUCH_UPLOAD: Final = "NoSuchUpload"


def part_size(number: int) -> int:
    """The size of part `number` (1-based) of a multipart upload a writer sends."""
    return PART_SIZE * (1 + (number - 1) // PART_GROWTH)


@dataclass(frozen=True)
class _Multipart:
    """An open multipart upload: the segment object it becomes, S3's UploadId, and its parts in order."""

    name: str
    upload: str
    parts: tuple[tuple[str, int], ...] = ()  # (ETag, size) of parts 1, 2, ...

    @property
    def size(self) -> int:
        return sum(size for _, size in self.parts)


@dataclass(frozen=True)
class _UploadState:
    """The content of `uploads/<id>/state`: the upload is its segments, its open multipart upload, its tail."""

    segments: tuple[tuple[str, int], ...] = ()
    open: _Multipart | None = None
    tail: tuple[str, int] | None = None
    appends: int = 0  # closed appends so far: tells another append from a seal
    commit: tuple[str, str] | None = None  # (digest, UploadId) of the multipart copy a commit opened

    @property
    def size(self) -> int:
        return sum(size for _, size in self.segments) + (self.open.size if self.open else 0) + self.tail_size

    @property
    def tail_size(self) -> int:
        return 0 if self.tail is None else self.tail[1]

    @property
    def pieces(self) -> tuple[tuple[str, int], ...]:
        """The readable objects, in order (only the whole upload when nothing is open)."""
        return self.segments if self.tail is None else (*self.segments, self.tail)

    def dump(self) -> bytes:
        document: dict[str, Any] = {
            "segments": [list(segment) for segment in self.segments],
            "open": self.open and {"name": self.open.name, "upload": self.open.upload, "parts": self.open.parts},
            "tail": self.tail and list(self.tail),
            "appends": self.appends,
        }
        if self.commit is not None:
            document["commit"] = list(self.commit)
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def load(cls, data: bytes) -> _UploadState:
        try:
            document = json.loads(data)
            segments = tuple(_piece(item, _SEGMENT_RE) for item in document.get("segments", document.get("parts")))
            opened = document.get("open")
            if opened is not None:
                name, upload = opened["name"], opened["upload"]
                if not isinstance(name, str) or not _SEGMENT_RE.fullmatch(name) or not isinstance(upload, str):
                    raise ValueError(f"not an open multipart upload: {opened!r}")
                opened = _Multipart(name, upload, tuple(_part(item) for item in opened["parts"]))
            tail = None if document["tail"] is None else _piece(document["tail"], _TAIL_RE)
            appends = document.get("appends", 0)
            if not isinstance(appends, int):
                raise ValueError(f"not a count: {appends!r}")
            commit = document.get("commit")
            if commit is not None:
                digest, multipart = commit
                commit = (str(Digest.parse(digest)), str(multipart))
        except (ValueError, KeyError, TypeError, DockyardError) as error:
            raise BlobUploadInvalid("the upload's stored state is unreadable") from error
        return cls(segments, opened, tail, appends, commit)


def _piece(item: Any, pattern: re.Pattern[str]) -> tuple[str, int]:
    name, size = item
    if not isinstance(name, str) or not pattern.fullmatch(name) or not isinstance(size, int) or size < 0:
        raise ValueError(f"not a segment or tail: {item!r}")
    return name, size


def _part(item: Any) -> tuple[str, int]:
    etag, size = item
    if not isinstance(etag, str) or not isinstance(size, int) or size < 0:
        raise ValueError(f"not a part: {item!r}")
    return etag, size


class S3UploadWriter:
    """Appends to one upload; see the module docstring for how parts, the tail and the state relate."""

    def __init__(self, store: S3BlobStore, upload_id: str, opened: _UploadState) -> None:
        self._store = store
        self._upload_id = upload_id
        self._opened = opened  # the state when the writer was opened
        self._base: _UploadState | None = None  # the state this append continues, read at its first byte
        self._version = ""  # the ETag of that state
        self._token = secrets.token_hex(8)
        self._multipart: _Multipart | None = None  # where parts go: the open multipart upload, or one made here
        self._made = False  # this writer created self._multipart
        self._parts: list[tuple[str, int]] = []  # sent by this writer: (ETag, size)
        self._sending: deque[tuple[Future[str], int]] = deque()  # parts on their way, in order
        self._buffer = bytearray()
        self._failed = False
        self._closed = False

    def truncate(self, size: int) -> None:
        """Drop the upload's bytes from `size` on, at once (in the state), before this writer's first byte."""
        if self._base is not None or self._closed:
            raise ValueError("truncate an upload before writing to it")
        self._store._truncate(self._upload_id, self._opened, size)

    def write(self, data: bytes) -> None:
        if self._closed or self._failed:
            raise ValueError("write to a closed or failed upload writer")
        if not data:
            return
        try:
            if self._base is None:
                self._begin()
            view = memoryview(data)
            while view:
                room = part_size(self._next_number()) - len(self._buffer)
                self._buffer += view[:room]
                view = view[room:]
                if len(self._buffer) >= part_size(self._next_number()):
                    self._send()
        except BaseException:
            self._failed = True  # close() then leaves the upload as it was: a part may be missing
            raise

    def close(self) -> None:
        """Store what was written and name it in the state: from now on every node sees it."""
        if self._closed:
            return
        self._closed = True
        if self._base is None:
            return  # nothing written: the upload is as it was
        if self._failed:
            self._drop(tail_too=False)
            return
        base, tail = self._base, None
        try:
            if len(self._buffer) >= MIN_PART_SIZE:
                self._send()
            elif self._buffer:
                tail = (f"tail.{self._token}", len(self._buffer))
                self._store._put_staged(self._upload_id, tail[0], bytes(self._buffer))
                self._buffer = bytearray()
            while self._sending:
                self._receive()
            if self._store._state_version(self._upload_id) != self._version:
                raise BlobUploadUnknown(
                    "the upload was aborted or changed by another writer", detail={"upload": self._upload_id}
                )
        except BaseException:
            self._drop(tail_too=True)
            raise
        opened = base.open
        if self._parts:
            assert self._multipart is not None
            opened = replace(self._multipart, parts=(*self._multipart.parts, *self._parts))
        # If this PUT fails after all, what it names stays for commit or abort to delete: it may have landed.
        self._store._put_state(self._upload_id, replace(base, open=opened, tail=tail, appends=base.appends + 1))
        if base.tail is not None:  # now part of a part, or replaced by the new tail
            with contextlib.suppress(ClientError):
                self._store._delete_staged(self._upload_id, [base.tail[0]])

    def discard(self) -> None:
        """Drop what this writer wrote: the upload stays as it was when the writer was opened."""
        if self._closed:
            return
        self._closed = True
        self._buffer = bytearray()
        self._drop(tail_too=False)

    def _begin(self) -> None:
        """Take the state this append continues: the newest this process saw, else read it again."""
        known = self._store._recent_state(self._upload_id)
        if known is None or known[0].appends != self._opened.appends:
            known = self._store._state(self._upload_id)
        state, version = known
        if state.appends != self._opened.appends:
            raise BlobUploadUnknown("the upload was changed by another writer", detail={"upload": self._upload_id})
        self._base, self._version, self._multipart = state, version, state.open
        if state.tail is not None:
            self._buffer += self._store._read_staged(self._upload_id, state.tail[0])

    def _next_number(self) -> int:
        before = 0 if self._multipart is None else len(self._multipart.parts)
        return before + len(self._parts) + len(self._sending) + 1

    def _send(self) -> None:
        """Send the buffer as the next part, in the background; wait while too many are on their way."""
        assert self._base is not None
        number = self._next_number()
        if number >= MAX_PARTS:  # the last number is kept for the tail at commit
            raise BlobUploadInvalid(
                f"upload larger than this store's limit of {MAX_PARTS - 1} parts", detail={"upload": self._upload_id}
            )
        if self._multipart is None:
            name = f"segments/{len(self._base.segments) + 1:05d}.{self._token}"
            self._multipart = _Multipart(name, self._store._create_multipart(self._upload_id, name))
            self._made = True
        while len(self._sending) >= PARTS_IN_FLIGHT:
            self._receive()
        body, self._buffer = self._buffer, bytearray()  # handed over whole: no copy
        future = self._store._pool().submit(self._store._upload_part, self._upload_id, self._multipart, number, body)
        self._sending.append((future, len(body)))

    def _receive(self) -> None:
        future, size = self._sending.popleft()
        self._parts.append((future.result(), size))

    def _drop(self, tail_too: bool) -> None:
        for future, _ in self._sending:
            future.cancel()
        for future, _ in self._sending:
            with contextlib.suppress(BaseException):
                future.result()  # no part lands after the abort below
        self._sending.clear()
        with contextlib.suppress(ClientError):
            if self._made and self._multipart is not None:
                key = self._store._staged_key(self._upload_id, self._multipart.name)
                self._store._abort_multipart(key, self._multipart.upload)
            if tail_too:
                self._store._delete_staged(self._upload_id, [f"tail.{self._token}"])


class S3BlobStore:
    """BlobStore over an S3 bucket (AWS S3, Ceph radosgw, ...) through a caller-made boto3 client.

    `copy_object_limit`: the largest upload published with one CopyObject (S3 allows 5 GiB); larger ones, and
    uploads of several segments, are copied as parts of a multipart upload, COPY_RANGE at a time, in parallel.
    On an S3 that copies by reference (Ceph radosgw) CopyObject is far cheaper; on one that copies the bytes,
    a lower limit spreads a large copy over COPY_THREADS requests.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str,
        client: S3Client,
        redirect_seconds: int = 0,
        copy_object_limit: int = COPY_OBJECT_LIMIT,
    ) -> None:
        self.redirect_seconds = redirect_seconds
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.copy_object_limit = min(copy_object_limit, COPY_OBJECT_LIMIT)
        self._root = f"{self.prefix}/" if self.prefix else ""
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, tuple[_UploadState, str]] = OrderedDict()  # state and ETag last seen here

    # ------------------------------------------------------------------------------------ keys

    def _blob_key(self, digest: Digest) -> str:
        return f"{self._root}blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"

    def _upload_root(self, upload_id: str) -> str:
        if not UPLOAD_ID_RE.fullmatch(upload_id):
            raise BlobUploadUnknown(detail={"upload": upload_id})
        return f"{self._root}uploads/{upload_id}/"

    def _state_key(self, upload_id: str) -> str:
        return self._upload_root(upload_id) + "state"

    def _staged_key(self, upload_id: str, name: str) -> str:
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"not a segment or tail name: {name!r}")
        return self._upload_root(upload_id) + name

    # ------------------------------------------------------------------------------------ blobs

    def blob_size(self, digest: Digest) -> int | None:
        return self._object_size(self._blob_key(digest))

    def read_blob(self, digest: Digest, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Stream [offset, offset + length) in ranged GETs of READ_RANGE; the first is made before returning."""
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        key = self._blob_key(digest)
        if length == 0:
            if self.blob_size(digest) is None:
                raise BlobUnknown(detail={"digest": str(digest)})
            return iter(())
        stop = None if length is None else offset + length
        first = self._get_range(key, digest, offset, stop)
        if first is None:  # the blob exists but ends before offset
            return iter(())
        size = _total_size(first, offset)
        return self._stream_ranges(key, digest, first, offset, size if stop is None else min(size, stop))

    def local_path(self, digest: Digest) -> str | None:
        return None

    def redirect_url(self, digest: Digest) -> str | None:
        """A presigned GET when redirects are on (`--s3-redirect`), as ECR redirects layer pulls to S3."""
        if not self.redirect_seconds:
            return None
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._blob_key(digest)},
            ExpiresIn=self.redirect_seconds,
        )
        return url

    def put_blob(self, digest: Digest, data: bytes) -> None:
        # Unconditional: the key names the content, and a rewrite restarts the collector's grace period.
        self.client.put_object(Bucket=self.bucket, Key=self._blob_key(digest), Body=data)

    def delete_blob(self, digest: Digest) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._blob_key(digest))

    def stored_blobs(self) -> Iterator[tuple[Digest, datetime]]:
        root = f"{self._root}blobs/"
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root):
            for item in page.get("Contents", []):
                algorithm, _, rest = item["Key"].removeprefix(root).partition("/")
                fanout, _, encoded = rest.partition("/")
                try:
                    digest = Digest.parse(f"{algorithm}:{encoded}")
                except DockyardError:
                    continue  # not ours
                if fanout == encoded[:2]:
                    yield digest, item["LastModified"].astimezone(UTC)

    # ------------------------------------------------------------------------------------ uploads

    def start_upload(self, upload_id: str) -> None:
        self._put_state(upload_id, _UploadState())

    def upload_size(self, upload_id: str) -> int | None:
        known = self._load_state(upload_id)
        return None if known is None else known[0].size

    def append_upload(self, upload_id: str) -> S3UploadWriter:
        state, _ = self._state(upload_id)
        return S3UploadWriter(self, upload_id, state)

    def read_upload(self, upload_id: str) -> Iterator[bytes]:
        """The upload's bytes in order; the state is read (and the open part list sealed) before returning."""
        state, _ = self._state(upload_id)
        if state.open is not None:
            state = self._seal(upload_id, state, with_tail=False)
            self._put_state(upload_id, state)
        return self._stream_staged(upload_id, [name for name, _ in state.pieces])

    def commit_upload(self, upload_id: str, digest: Digest) -> None:
        state, _ = self._state(upload_id)
        target = self._blob_key(digest)
        try:
            if state.open is not None:
                state = self._seal(upload_id, state, with_tail=True)
            pieces = [(self._staged_key(upload_id, name), size) for name, size in state.pieces]
            if not pieces:
                self.client.put_object(Bucket=self.bucket, Key=target, Body=b"")
            elif len(pieces) == 1 and pieces[0][1] <= self.copy_object_limit:
                self.client.copy_object(
                    Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": pieces[0][0]}
                )
            else:
                self._multipart_copy(upload_id, state, pieces, digest)
        except ClientError as error:
            if _code(error) in _MISSING or _code(error) == _NO_SUCH_UPLOAD:  # aborted meanwhile
                raise BlobUploadUnknown(detail={"upload": upload_id}) from None
            raise
        self._delete_upload(upload_id)

    def abort_upload(self, upload_id: str) -> None:
        stored = self._fetch_state(upload_id)
        if stored is not None:
            with contextlib.suppress(BlobUploadInvalid):
                self._abort_commit(_UploadState.load(stored[0]))
        self._delete_upload(upload_id)

    # ------------------------------------------------------------------------------------ helpers

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="s3-parts")
            return self._executor

    def _create_multipart(self, upload_id: str, name: str) -> str:
        return self.client.create_multipart_upload(Bucket=self.bucket, Key=self._staged_key(upload_id, name))[
            "UploadId"
        ]

    def _upload_part(self, upload_id: str, multipart: _Multipart, number: int, body: bytearray) -> str:
        """Send one part; its ETag (S3's handle for it, not a digest)."""
        return self.client.upload_part(
            Bucket=self.bucket,
            Key=self._staged_key(upload_id, multipart.name),
            UploadId=multipart.upload,
            PartNumber=number,
            Body=cast("bytes", body),  # botocore takes a bytearray as it is (the stubs say bytes only)
        )["ETag"]

    def _seal(self, upload_id: str, state: _UploadState, with_tail: bool) -> _UploadState:
        """Complete the open multipart upload (with the tail as its last part if asked): it becomes a segment."""
        assert state.open is not None
        multipart, tail = state.open, state.tail
        key = self._staged_key(upload_id, multipart.name)
        parts: list[CompletedPartTypeDef] = [
            {"PartNumber": number, "ETag": etag} for number, (etag, _) in enumerate(multipart.parts, 1)
        ]
        try:
            if with_tail and tail is not None:
                copied = self.client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=multipart.upload,
                    PartNumber=len(parts) + 1,
                    CopySource={"Bucket": self.bucket, "Key": self._staged_key(upload_id, tail[0])},
                )
                parts.append({"PartNumber": len(parts) + 1, "ETag": copied["CopyPartResult"]["ETag"]})
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=multipart.upload, MultipartUpload={"Parts": parts}
            )
            if len(parts) > len(multipart.parts):
                tail = None
        except ClientError as error:
            if _code(error) != _NO_SUCH_UPLOAD:
                raise
            # Completed already, by a seal whose node died before it wrote the state (or one running alongside).
            size = self._object_size(key)
            if size is None:
                raise BlobUploadUnknown(detail={"upload": upload_id}) from None
            if tail is not None and size == multipart.size + tail[1]:
                tail = None
            elif size != multipart.size:
                raise BlobUploadInvalid(
                    "a segment of the upload does not have the size its state gives", detail={"upload": upload_id}
                ) from None
        size = multipart.size + (state.tail_size if tail is None else 0)
        return replace(state, segments=(*state.segments, (multipart.name, size)), open=None, tail=tail)

    def _truncate(self, upload_id: str, opened: _UploadState, size: int) -> None:
        """Keep the first `size` bytes of the upload: the pieces before, a shorter copy of the piece `size` cuts.

        The open multipart upload is sealed first (its parts cannot be read or cut). A cut piece keeps its
        first bytes as the tail when they are fewer than S3's minimum part size, else as a new segment copied
        server-side. The `appends` count stays: a writer opened before (the one truncating) carries on.
        """
        state, version = self._state(upload_id)
        if state.appends != opened.appends:
            raise BlobUploadUnknown("the upload was changed by another writer", detail={"upload": upload_id})
        if not 0 <= size <= state.size:
            raise ValueError(f"cannot truncate an upload to {size} bytes: it holds {state.size}")
        if size == state.size:
            return
        if state.open is not None:
            state = self._seal(upload_id, state, with_tail=False)
        kept: list[tuple[str, int]] = []
        dropped: list[str] = []
        tail: tuple[str, int] | None = None
        start = 0
        for name, piece_size in state.pieces:
            if start + piece_size <= size:
                kept.append((name, piece_size))
            else:
                dropped.append(name)
                length = size - start
                if length <= 0:
                    pass
                elif length < MIN_PART_SIZE:
                    tail = (f"tail.{secrets.token_hex(8)}", length)
                    self._put_staged(upload_id, tail[0], self._read_staged(upload_id, name, length))
                else:
                    kept.append((self._copy_prefix(upload_id, name, length, len(kept) + 1), length))
            start += piece_size
        if self._state_version(upload_id) != version:
            raise BlobUploadUnknown("the upload was aborted or changed by another writer", detail={"upload": upload_id})
        self._put_state(upload_id, replace(state, segments=tuple(kept), open=None, tail=tail))
        with contextlib.suppress(ClientError):
            self._delete_staged(upload_id, dropped)

    def _copy_prefix(self, upload_id: str, name: str, length: int, number: int) -> str:
        """A new segment holding the first `length` bytes (5 MiB at least) of a staged piece, copied server-side."""
        segment = f"segments/{number:05d}.{secrets.token_hex(8)}"
        key, source = self._staged_key(upload_id, segment), self._staged_key(upload_id, name)
        multipart = self._create_multipart(upload_id, segment)
        try:
            parts: list[CompletedPartTypeDef] = []
            for part, bounds in enumerate(_copy_ranges(length, alone=True), 1):
                assert bounds is not None
                copied = self.client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=multipart,
                    PartNumber=part,
                    CopySource={"Bucket": self.bucket, "Key": source},
                    CopySourceRange=f"bytes={bounds[0]}-{bounds[1]}",
                )
                parts.append({"PartNumber": part, "ETag": copied["CopyPartResult"]["ETag"]})
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=multipart, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(ClientError):
                self._abort_multipart(key, multipart)
            raise
        return segment

    def _object_size(self, key: str) -> int | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except ClientError as error:
            if _code(error) in _MISSING:
                return None
            raise

    def _get_range(self, key: str, digest: Digest, start: int, stop: int | None) -> GetObjectOutputTypeDef | None:
        end = start + READ_RANGE if stop is None else min(stop, start + READ_RANGE)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
        except ClientError as error:
            if _code(error) in _MISSING:
                raise BlobUnknown(detail={"digest": str(digest)}) from None
            if _code(error) == "InvalidRange" or _status(error) == 416:
                return None
            raise

    def _stream_ranges(
        self, key: str, digest: Digest, response: GetObjectOutputTypeDef, position: int, end: int
    ) -> Iterator[bytes]:
        while True:
            before = position
            body = response["Body"]
            try:
                for chunk in body.iter_chunks(READ_CHUNK):
                    chunk = chunk[: end - position]
                    if chunk:
                        position += len(chunk)
                        yield chunk
                    if position >= end:
                        return
            finally:
                body.close()
            if position == before:
                return  # the object ended sooner than it said
            following = self._get_range(key, digest, position, end)
            if following is None:
                return
            response = following

    def _stream_staged(self, upload_id: str, names: list[str]) -> Iterator[bytes]:
        for name in names:
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self._staged_key(upload_id, name))["Body"]
            except ClientError as error:
                if _code(error) in _MISSING:
                    raise BlobUploadUnknown(detail={"upload": upload_id}) from None
                raise
            with contextlib.closing(body):
                yield from body.iter_chunks(READ_CHUNK)

    def _read_staged(self, upload_id: str, name: str, length: int | None = None) -> bytes:
        """A staged piece, or its first `length` bytes."""
        if length is None:
            return b"".join(self._stream_staged(upload_id, [name]))
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self._staged_key(upload_id, name), Range=f"bytes=0-{length - 1}"
            )
        except ClientError as error:
            if _code(error) in _MISSING:
                raise BlobUploadUnknown(detail={"upload": upload_id}) from None
            raise
        with contextlib.closing(response["Body"]) as body:
            data = body.read()
        if len(data) != length:
            raise BlobUploadInvalid(
                "a piece of the upload is shorter than its state says", detail={"upload": upload_id}
            )
        return data

    def _put_staged(self, upload_id: str, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._staged_key(upload_id, name), Body=data)

    def _delete_staged(self, upload_id: str, names: list[str]) -> None:
        self._delete_keys([self._staged_key(upload_id, name) for name in names])

    def _fetch_state(self, upload_id: str) -> tuple[bytes, str] | None:
        """The state object's bytes and version (its ETag: a change marker here, not a digest), or None."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._state_key(upload_id))
        except ClientError as error:
            if _code(error) in _MISSING:
                return None
            raise
        with contextlib.closing(response["Body"]) as body:
            return body.read(), response.get("ETag", "")

    def _load_state(self, upload_id: str) -> tuple[_UploadState, str] | None:
        """The state and its ETag, as stored now (remembered), or None when the upload is unknown."""
        stored = self._fetch_state(upload_id)
        known = None if stored is None else (_UploadState.load(stored[0]), stored[1])
        self._remember(upload_id, known)
        return known

    def _state(self, upload_id: str) -> tuple[_UploadState, str]:
        known = self._load_state(upload_id)
        if known is None:
            raise BlobUploadUnknown(detail={"upload": upload_id})
        return known

    def _remember(self, upload_id: str, known: tuple[_UploadState, str] | None) -> None:
        with self._lock:
            self._recent.pop(upload_id, None)
            if known is not None and known[1]:
                self._recent[upload_id] = known
                while len(self._recent) > RECENT_STATES:
                    self._recent.popitem(last=False)

    def _recent_state(self, upload_id: str) -> tuple[_UploadState, str] | None:
        with self._lock:
            return self._recent.get(upload_id)

    def _state_version(self, upload_id: str) -> str | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._state_key(upload_id)).get("ETag", "")
        except ClientError as error:
            if _code(error) in _MISSING:
                return None
            raise

    def _put_state(self, upload_id: str, state: _UploadState) -> None:
        self._remember(upload_id, None)  # whatever happens to this PUT, what was known is not the newest
        written = self.client.put_object(
            Bucket=self.bucket, Key=self._state_key(upload_id), Body=state.dump(), ContentType="application/json"
        )
        self._remember(upload_id, (state, written.get("ETag", "")))

    def _multipart_copy(
        self, upload_id: str, state: _UploadState, pieces: list[tuple[str, int]], digest: Digest
    ) -> None:
        """Publish the pieces on the blob's key as one multipart upload of server-side copies."""
        self._abort_commit(state)  # left by a commit that died on the way
        target, target_digest = self._blob_key(digest), str(digest)
        ranges = [(source, bounds) for source, size in pieces for bounds in _copy_ranges(size, len(pieces) == 1)]
        if len(ranges) > MAX_PARTS:
            raise BlobUploadInvalid("upload made of too many pieces to publish", detail={"upload": upload_id})
        multipart = self.client.create_multipart_upload(Bucket=self.bucket, Key=target)["UploadId"]
        try:
            self._put_state(upload_id, replace(state, commit=(target_digest, multipart)))

            def copy(numbered: tuple[int, tuple[str, tuple[int, int] | None]]) -> CompletedPartTypeDef:
                number, (source, bounds) = numbered
                copy_source: CopySourceTypeDef = {"Bucket": self.bucket, "Key": source}
                if bounds is None:
                    result = self.client.upload_part_copy(
                        Bucket=self.bucket, Key=target, UploadId=multipart, PartNumber=number, CopySource=copy_source
                    )
                else:
                    result = self.client.upload_part_copy(
                        Bucket=self.bucket,
                        Key=target,
                        UploadId=multipart,
                        PartNumber=number,
                        CopySource=copy_source,
                        CopySourceRange=f"bytes={bounds[0]}-{bounds[1]}",
                    )
                return {"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]}  # a handle, not a digest

            with ThreadPoolExecutor(min(COPY_THREADS, len(ranges))) as pool:
                parts = list(pool.map(copy, enumerate(ranges, 1)))
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=target, UploadId=multipart, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(ClientError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=target, UploadId=multipart)
            raise

    def _abort_commit(self, state: _UploadState) -> None:
        """Abort the multipart upload that a commit which died on the way left open (harmless when finished)."""
        if state.commit is not None:
            digest, multipart = state.commit
            with contextlib.suppress(ClientError):
                self._abort_multipart(self._blob_key(Digest.parse(digest)), multipart)

    def _abort_multipart(self, key: str, multipart: str) -> None:
        self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=multipart)

    def _delete_upload(self, upload_id: str) -> None:
        """Abort the upload's multipart uploads and delete its objects, named by the state or not, the state last."""
        root = self._upload_root(upload_id)
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=root):
            for pending in page.get("Uploads", []):
                with contextlib.suppress(ClientError):
                    self._abort_multipart(pending["Key"], pending["UploadId"])
        self._remember(upload_id, None)
        state_key = root + "state"
        keys = [
            item["Key"]
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root)
            for item in page.get("Contents", [])
            if item["Key"] != state_key
        ]
        self._delete_keys(keys)
        self.client.delete_object(Bucket=self.bucket, Key=state_key)

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            result = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
            )
            errors = [error for error in result.get("Errors", []) if error.get("Code") not in _MISSING]
            if errors:
                raise OSError(f"could not delete {len(errors)} objects, e.g. {errors[0]}")


def _copy_ranges(size: int, alone: bool) -> list[tuple[int, int] | None]:
    """Inclusive byte ranges that copy a piece of `size` bytes as parts (None: the whole piece in one part).

    Ranges are of equal size (within a byte), so none falls under S3's minimum part size unless the piece does;
    a piece that is `alone` (the whole upload, larger than CopyObject takes) is cut even when it is small.
    """
    if size <= COPY_RANGE and not alone:
        return [None]
    count = max(1, -(-size // COPY_RANGE))
    step = -(-size // count)
    return [(start, min(start + step, size) - 1) for start in range(0, size, step)]


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: ClientError) -> int | None:
    return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _total_size(response: GetObjectOutputTypeDef, start: int) -> int:
    """The object's size from a ranged GET's Content-Range (or its length when the server sent it whole)."""
    match = _CONTENT_RANGE_RE.fullmatch(response.get("ContentRange", ""))
    if match is not None:
        return int(match.group(3))
    if start == 0:
        return response["ContentLength"]
    raise OSError("the S3 server ignored a Range header")
