"""The audit log: one JSON line per authorisation decision and per mutating call, in the data directory.

The request path only queues a line (in memory, bounded); one writer thread appends what has gathered in
one write: at once when it has been idle for `FLUSH_SECONDS` (a lone call's line is in the file within
milliseconds), else at most every `FLUSH_SECONDS`, sooner once `_BATCH` bytes wait, so a busy registry makes
one write (and one lock) per interval instead of three system calls per request. A clean shutdown (`close`)
writes every queued line; a crash loses at most the last `FLUSH_SECONDS` of lines.

Once a write fails (a full disk), lines keep queueing and the writer retries until space returns, so a full
disk never fails a request; the queue is bounded (bytes), and a line that finds it full is dropped, counted
and logged loudly, never silently lost. `close` (clean shutdown, or the end of a CLI command) writes what is
queued.

Lines are appended with O_APPEND, so concurrent workers never interleave them. Only a write the disk cut
short can leave part of a line; its writer then keeps an exclusive `flock` on the file until the rest is
written, and every writer takes that lock, so no other process's line lands in the middle.
"""

from __future__ import annotations

import atexit
import collections
import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Final

log = logging.getLogger("dockyard.audit")

DEFAULT_CAPACITY: Final = 64 * 1024 * 1024  # bytes of lines held while the disk refuses them
RETRY_SECONDS: Final = 1.0
CLOSE_SECONDS: Final = 10.0  # how long `close` keeps retrying a disk that is still full
_BATCH: Final = 1024 * 1024  # bytes per write
FLUSH_SECONDS: Final = 0.1  # the most a busy writer waits between writes: what a crash can lose
IDLE_SECONDS: Final = 30.0  # a writer with nothing to do ends; the next line starts one


class JsonLinesAudit:
    def __init__(
        self,
        path: Path,
        capacity: int = DEFAULT_CAPACITY,
        retry_seconds: float = RETRY_SECONDS,
        close_seconds: float = CLOSE_SECONDS,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self.path = path
        self.capacity = capacity
        self.retry_seconds = retry_seconds
        self.close_seconds = close_seconds
        self.flush_seconds = flush_seconds
        self.dropped = 0  # lines refused because the queue was full (or left unwritten at close)
        self._descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._pending: collections.deque[bytes] = collections.deque()
        self._pending_bytes = 0
        self._tail = b""  # the rest of a line the disk cut short; written first, under the held lock
        self._locked = False
        self._failing = False
        self._closing = False
        self._closed = False
        self._condition = threading.Condition()
        self._writer: threading.Thread | None = None
        atexit.register(self.close)  # a CLI command's lines are written before the process ends

    @property
    def pending(self) -> int:
        """Lines queued and not yet written."""
        with self._condition:
            return len(self._pending) + (1 if self._tail else 0)

    def record(self, event: dict[str, Any]) -> None:
        line = (json.dumps(event, separators=(",", ":"), default=str) + "\n").encode()
        with self._condition:
            if self._closing:
                self._drop(1, "arrived after the log was closed")
                return
            if self._pending_bytes + len(line) > self.capacity:
                self._drop(1, f"found {self._pending_bytes} bytes already waiting for the disk (the limit)")
                return
            was_empty = not self._pending
            self._pending.append(line)
            self._pending_bytes += len(line)
            # Wake the writer only when there is news for it: a first line (it may write at once) or a full
            # batch; otherwise it comes back by itself within `flush_seconds`.
            if was_empty or self._writer is None or self._pending_bytes >= _BATCH:
                self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(target=self._run, name=f"log-writer {self.path.name}", daemon=True)
            self._writer.start()
        self._condition.notify()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued line is written (or `timeout` seconds passed); True when none is left."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._pending or self._tail:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
            return True

    def close(self) -> None:
        """Write what is queued (retrying a full disk for up to `close_seconds`), then close the file."""
        with self._condition:
            if self._closing:
                return
            self._closing = True
            self._condition.notify_all()
            writer = self._writer
        atexit.unregister(self.close)
        if writer is not None:
            writer.join(self.close_seconds + self.retry_seconds)
        with self._condition:
            left = len(self._pending) + (1 if self._tail else 0)
            if left:
                self._drop(left, "could not be written before closing (is the disk still full?)")
            self._pending.clear()
            self._pending_bytes = 0
            self._tail = b""
            if writer is None or not writer.is_alive():
                self._release()
                os.close(self._descriptor)
                self._closed = True

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        first = self.dropped == count
        if first or why.startswith("could not") or self.dropped // 1000 != (self.dropped - count) // 1000:
            log.error("%s: %d line(s) DROPPED (%d in all): %s", self.path, count, self.dropped, why)

    # ------------------------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        close_deadline: float | None = None
        retry_at = 0.0  # after a failed write: not before this, however many lines arrive meanwhile
        next_write = 0.0  # after a write: gather lines until then (unless a batch is full, or closing)
        while True:
            with self._condition:
                while True:
                    now = time.monotonic()
                    if self._closing and close_deadline is None:
                        close_deadline = now + self.close_seconds
                    work = bool(self._pending or self._tail)
                    gathered = self._closing or self._pending_bytes >= _BATCH or now >= next_write
                    if work and now >= retry_at and gathered:
                        break
                    if not work and self._closing:
                        return
                    if not work:
                        if not self._condition.wait(IDLE_SECONDS) and not (self._pending or self._closing):
                            self._writer = None  # idle: the next line starts a writer again
                            return
                        continue
                    self._condition.wait(max(retry_at, next_write if not gathered else 0.0) - now)
                batch = self._take_batch()
            written = self._write(batch) or 0
            with self._condition:
                self._settle(written)
                self._condition.notify_all()
            if written == len(batch):
                retry_at = 0.0
                next_write = time.monotonic() + self.flush_seconds
            elif close_deadline is not None and time.monotonic() >= close_deadline:
                return
            else:
                retry_at = time.monotonic() + self.retry_seconds

    def _take_batch(self) -> bytes:
        """The tail (if any) and the queued lines that fit one write; they stay queued until written."""
        parts, size = [self._tail], len(self._tail)
        for line in self._pending:
            if size and size + len(line) > _BATCH:
                break
            parts.append(line)
            size += len(line)
        return b"".join(parts)

    def _write(self, batch: bytes, wait: bool = True) -> int | None:
        """Append `batch`; returns how many of its bytes reached the file (all of them unless it failed), or
        None when not `wait`ing and another process holds the lock."""
        written = 0
        try:
            if not self._locked:
                try:
                    fcntl.flock(self._descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                except BlockingIOError:
                    return None
                self._locked = True
            while written < len(batch):
                written += os.write(self._descriptor, batch[written:])
        except OSError as error:
            if not self._failing:
                log.error("%s: writing failed (%s); holding lines in memory, retrying", self.path, error)
            self._failing = True
            return written
        if self._failing:
            self._failing = False
            log.warning("%s: writing works again; the lines held meanwhile are being written", self.path)
        return written

    def _settle(self, written: int) -> None:
        """Take off the queue what the first `written` bytes of the batch covered; a cut line's rest becomes
        the tail."""
        covered = min(written, len(self._tail))
        self._tail = self._tail[covered:]
        written -= covered
        while written and self._pending:
            line = self._pending.popleft()
            self._pending_bytes -= len(line)
            if written < len(line):
                self._tail = line[written:]
                written = 0
            else:
                written -= len(line)
        if not self._tail:
            self._release()  # no line is half-written: other writers may go again

    def _release(self) -> None:
        if self._locked:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
            self._locked = False
