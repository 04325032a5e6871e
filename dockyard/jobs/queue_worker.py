"""A worker that drains one queue kept in the metadata store (scans, replications) off the request path.

Every server process runs one per queue; the queue's own claims (SKIP LOCKED on PostgreSQL, compare-and-set
on either backend, expiring so a dead node's work is taken over) make each item run on exactly one node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

log = logging.getLogger("dockyard.jobs")


class QueueWorker:
    def __init__(self, name: str, work_once: Callable[[], bool], idle_seconds: float = 1.0) -> None:
        """`work_once` claims and runs one item, returning False when the queue was empty."""
        self.name = name
        self.work_once = work_once
        self.idle_seconds = idle_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                busy = await run_in_threadpool(self.work_once)
            except Exception:  # e.g. the database unreachable for a moment: the next round tries again
                log.exception("%s worker step failed", self.name)
                busy = False
            if not busy:
                await asyncio.sleep(self.idle_seconds)
