"""The replication worker: claims queued replications from the metadata store and runs them off the request path.

Every server process runs one; a task is claimed by exactly one worker (SKIP LOCKED on PostgreSQL, a
compare-and-set claim on either backend), and a dead worker's claim expires so another node takes it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.concurrency import run_in_threadpool

from dockyard.domain.replication import Replicator

log = logging.getLogger("dockyard.jobs.replication")


class ReplicationWorker:
    def __init__(self, replicator: Replicator, idle_seconds: float = 1.0) -> None:
        self.replicator = replicator
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
                busy = await run_in_threadpool(self.replicator.work_once)
            except Exception:  # e.g. the database unreachable for a moment: the next round tries again
                log.exception("replication worker step failed")
                busy = False
            if not busy:
                await asyncio.sleep(self.idle_seconds)
