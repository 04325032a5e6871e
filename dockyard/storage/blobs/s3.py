"""The S3 blob store: blobs and uploads in a bucket, so that any number of stateless nodes can share them.

The caller builds the boto3 S3 client (endpoint URL, region, credentials, path-style addressing); this module
only decides what goes where. Layout under `<prefix>/` in the bucket (owned here; nothing else writes it):

    blobs/<algorithm>/<first two hex digits>/<hex>       published content; it appears whole, or not at all
    uploads/<upload id>/state                           JSON: the upload's parts and tail, in order (the truth)
    uploads/<upload id>/parts/<nnnnn>.<writer token>    one 5-8 MiB piece of the upload, never rewritten
    uploads/<upload id>/tail.<writer token>             the last bytes when fewer than 5 MiB, never rewritten

Keys are only ever built from a parsed `Digest`, an upload id that matched `UPLOAD_ID_RE`, and part and
tail names that match `_NAME_RE`.

Why uploads are separate objects and not one S3 multipart upload opened by `start_upload`: S3 cannot read
the parts of an unfinished multipart upload, and a node that lacks the running sha256 of an upload (every
node but the one that received the previous chunk) must recompute it from the stored bytes; a multipart
upload's key is also fixed when it is created, before the digest (the final key) is known. So every stored
byte stays readable as an ordinary object, and the multipart upload is made at commit, straight onto the
blob's final key, from server-side copies (`upload_part_copy`) of the parts: no byte passes through a node
twice, and the blob becomes visible atomically when `complete_multipart_upload` succeeds.

Writing: a writer buffers at most one part (8 MiB) and stores each full part as it fills. `close` stores
what remains: as one more part when it has S3's minimum part size (5 MiB, which every part but the last of
a multipart upload needs), else as the tail object, which the next append, on any node, reads back (at
most 5 MiB) and puts in front of its bytes. Memory per writer is bounded by one part, and nothing is
spooled to disk. The state object names the parts and the tail; it is rewritten (one atomic PUT) at
`close`, after the objects it names are stored, so `upload_size` and `read_upload` on any node see whole
appends only, and a crash before that PUT leaves unnamed objects under `uploads/<id>/`, which commit and
abort delete with the rest of the prefix. Part and tail names carry a random per-writer token, so a writer
never overwrites an object that a state names. Before its PUT, `close` compares the state's ETag (one HEAD)
with the one its append began from and gives up (`BlobUploadUnknown`) if the state changed or vanished: an
upload aborted meanwhile is not brought back, and a concurrent writer (which the OCI protocol rules out)
does not silently lose bytes. Not every S3 server offers conditional PUT, so this check narrows the window
rather than closing it; the metadata store remains the source of truth for upload sessions. `discard`
deletes what the writer stored and leaves the upload as it was.

Committing: no parts and no tail make an empty object; a single part or tail is one `copy_object`; more
are one multipart upload on the final key, its UploadId recorded in the state before the part copies so
that `abort_upload` (or a retried commit) can abort it if the committing node dies. Then every object under
`uploads/<id>/` is deleted, the state last. ETags serve only as S3's part handles and as the state's change
marker, never as digests: the caller verified the digest from the bytes. A blob has at most 10,000 parts,
so 48-78 GiB depending on chunk sizes. A bucket lifecycle rule that aborts incomplete multipart uploads
after a day is a sensible backstop for commits that die.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from dockyard.domain.errors import BlobUnknown, BlobUploadInvalid, BlobUploadUnknown, DockyardError
from dockyard.domain.names import Digest
from dockyard.storage.blobs.filesystem import UPLOAD_ID_RE

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, GetObjectOutputTypeDef

MIB: Final = 1024 * 1024
PART_SIZE: Final = 8 * MIB  # what a writer buffers before storing a part
MIN_PART_SIZE: Final = 5 * MIB  # S3's minimum for every part of a multipart upload but the last
MAX_PARTS: Final = 10_000  # S3's maximum number of parts
READ_RANGE: Final = 8 * MIB  # bytes asked for by one ranged GET
READ_CHUNK: Final = MIB  # bytes yielded at a time
COPY_THREADS: Final = 8  # concurrent upload_part_copy calls at commit
DELETE_BATCH: Final = 1000  # S3's maximum keys per DeleteObjects

_NAME_RE: Final = re.compile(r"parts/[0-9]{5}\.[0-9a-f]{16}|tail\.[0-9a-f]{16}")
_CONTENT_RANGE_RE: Final = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_MISSING: Final = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass(frozen=True)
class _UploadState:
    """The content of `uploads/<id>/state`: the upload is its parts, then its tail, in this order."""

    parts: tuple[tuple[str, int], ...] = ()
    tail: tuple[str, int] | None = None
    commit: tuple[str, str] | None = None  # (digest, UploadId) of the multipart upload a commit opened

    @property
    def size(self) -> int:
        return sum(size for _, size in self.pieces)

    @property
    def pieces(self) -> tuple[tuple[str, int], ...]:
        return self.parts if self.tail is None else (*self.parts, self.tail)

    def dump(self) -> bytes:
        document: dict[str, Any] = {"parts": [list(part) for part in self.parts], "tail": self.tail and list(self.tail)}
        if self.commit is not None:
            document["commit"] = list(self.commit)
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def load(cls, data: bytes) -> _UploadState:
        try:
            document = json.loads(data)
            parts = tuple(_piece(item) for item in document["parts"])
            tail = None if document["tail"] is None else _piece(document["tail"])
            commit = document.get("commit")
            if commit is not None:
                digest, multipart = commit
                commit = (str(Digest.parse(digest)), str(multipart))
        except (ValueError, KeyError, TypeError, DockyardError) as error:
            raise BlobUploadInvalid("the upload's stored state is unreadable") from error
        return cls(parts, tail, commit)


def _piece(item: Any) -> tuple[str, int]:
    name, size = item
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or not isinstance(size, int) or size < 0:
        raise ValueError(f"not a part or tail: {item!r}")
    return name, size


class S3UploadWriter:
    """Appends to one upload; see the module docstring for how parts, the tail and the state relate."""

    def __init__(self, store: S3BlobStore, upload_id: str, state: _UploadState, version: str) -> None:
        self._store = store
        self._upload_id = upload_id
        self._base = state
        self._version = version  # the state object's ETag when the append began
        self._token = secrets.token_hex(8)
        self._parts: list[tuple[str, int]] = []  # stored by this writer, not yet named by the state
        self._buffer = bytearray()
        self._started = False  # something was written (after the tail was read back into the buffer)
        self._closed = False

    def write(self, data: bytes) -> None:
        if self._closed:
            raise ValueError("write to a closed upload writer")
        if not data:
            return
        if not self._started:
            if self._base.tail is not None:
                self._buffer += self._store._read_staged(self._upload_id, self._base.tail[0])
            self._started = True
        view = memoryview(data)
        while view:
            room = PART_SIZE - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) >= PART_SIZE:
                self._store_part()

    def close(self) -> None:
        """Store what was written and name it in the state: from now on every node sees it."""
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return  # nothing written: the upload is as it was
        try:
            tail = None
            if len(self._buffer) >= MIN_PART_SIZE:
                self._store_part()
            elif self._buffer:
                tail = (f"tail.{self._token}", len(self._buffer))
                self._store._put_staged(self._upload_id, tail[0], bytes(self._buffer))
                self._buffer.clear()
            if self._store._state_version(self._upload_id) != self._version:
                raise BlobUploadUnknown(
                    "the upload was aborted or changed by another writer", detail={"upload": self._upload_id}
                )
        except BaseException:
            self._delete_own(tail_too=True)
            raise
        # If this PUT fails after all, the objects stay for commit or abort to delete: the PUT may have landed.
        self._store._put_state(self._upload_id, replace(self._base, parts=(*self._base.parts, *self._parts), tail=tail))
        if self._base.tail is not None:  # now part of a part, or replaced by the new tail
            with contextlib.suppress(ClientError):
                self._store._delete_staged(self._upload_id, [self._base.tail[0]])

    def discard(self) -> None:
        """Drop what this writer wrote: the upload stays as it was when the writer was opened."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        self._delete_own(tail_too=False)

    def _store_part(self) -> None:
        number = len(self._base.parts) + len(self._parts) + 1
        if number >= MAX_PARTS:  # the last number is kept for a tail
            raise BlobUploadInvalid(
                f"upload larger than this store's limit of {MAX_PARTS - 1} parts", detail={"upload": self._upload_id}
            )
        size = min(len(self._buffer), PART_SIZE)
        name = f"parts/{number:05d}.{self._token}"
        with memoryview(self._buffer) as view:
            body = bytes(view[:size])  # one copy: a bytearray slice would make two
        self._store._put_staged(self._upload_id, name, body)
        self._parts.append((name, size))
        del self._buffer[:size]

    def _delete_own(self, tail_too: bool) -> None:
        names = [name for name, _ in self._parts]
        if tail_too:
            names.append(f"tail.{self._token}")
        with contextlib.suppress(ClientError):
            self._store._delete_staged(self._upload_id, names)


class S3BlobStore:
    """BlobStore over an S3 bucket (AWS S3, Ceph radosgw, ...) through a caller-made boto3 client."""

    def __init__(self, bucket: str, prefix: str, client: S3Client, redirect_seconds: int = 0) -> None:
        self.redirect_seconds = redirect_seconds
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self._root = f"{self.prefix}/" if self.prefix else ""

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
            raise ValueError(f"not a part or tail name: {name!r}")
        return self._upload_root(upload_id) + name

    # ------------------------------------------------------------------------------------ blobs

    def blob_size(self, digest: Digest) -> int | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._blob_key(digest))["ContentLength"]
        except ClientError as error:
            if _code(error) in _MISSING:
                return None
            raise

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
        stored = self._fetch_state(upload_id)
        return None if stored is None else _UploadState.load(stored[0]).size

    def append_upload(self, upload_id: str) -> S3UploadWriter:
        state, version = self._state(upload_id)
        return S3UploadWriter(self, upload_id, state, version)

    def read_upload(self, upload_id: str) -> Iterator[bytes]:
        """The upload's bytes in order; the state is read before returning (unknown uploads raise at once)."""
        state, _ = self._state(upload_id)
        return self._stream_staged(upload_id, [name for name, _ in state.pieces])

    def commit_upload(self, upload_id: str, digest: Digest) -> None:
        state, _ = self._state(upload_id)
        target = self._blob_key(digest)
        sources = [self._staged_key(upload_id, name) for name, _ in state.pieces]
        try:
            if not sources:
                self.client.put_object(Bucket=self.bucket, Key=target, Body=b"")
            elif len(sources) == 1:  # at most PART_SIZE bytes: far below copy_object's 5 GiB limit
                self.client.copy_object(
                    Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": sources[0]}
                )
            else:
                self._multipart_copy(upload_id, state, sources, digest)
        except ClientError as error:
            if _code(error) in _MISSING:  # a staged object vanished: aborted meanwhile
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

    def _read_staged(self, upload_id: str, name: str) -> bytes:
        return b"".join(self._stream_staged(upload_id, [name]))

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

    def _state(self, upload_id: str) -> tuple[_UploadState, str]:
        stored = self._fetch_state(upload_id)
        if stored is None:
            raise BlobUploadUnknown(detail={"upload": upload_id})
        return _UploadState.load(stored[0]), stored[1]

    def _state_version(self, upload_id: str) -> str | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._state_key(upload_id)).get("ETag", "")
        except ClientError as error:
            if _code(error) in _MISSING:
                return None
            raise

    def _put_state(self, upload_id: str, state: _UploadState) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=self._state_key(upload_id), Body=state.dump(), ContentType="application/json"
        )

    def _multipart_copy(self, upload_id: str, state: _UploadState, sources: list[str], digest: Digest) -> None:
        self._abort_commit(state)  # left by a commit that died on the way
        target, target_digest = self._blob_key(digest), str(digest)
        multipart = self.client.create_multipart_upload(Bucket=self.bucket, Key=target)["UploadId"]
        try:
            self._put_state(upload_id, replace(state, commit=(target_digest, multipart)))

            def copy(numbered: tuple[int, str]) -> CompletedPartTypeDef:
                number, source = numbered
                result = self.client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=target,
                    UploadId=multipart,
                    PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": source},
                )
                return {"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]}  # a handle, not a digest

            with ThreadPoolExecutor(min(COPY_THREADS, len(sources))) as pool:
                parts = list(pool.map(copy, enumerate(sources, 1)))
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
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self._blob_key(Digest.parse(digest)), UploadId=multipart
                )

    def _delete_upload(self, upload_id: str) -> None:
        """Delete every object of the upload, named by the state or not; the state goes last."""
        root = self._upload_root(upload_id)
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
