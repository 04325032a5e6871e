"""Flushes this process's usage meter into the metadata store every few seconds, and once more at shutdown.

Every server process runs one (each has its own meter); it is not a leased job: the counts are added, so any
number of processes flush into the same hourly rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.concurrency import run_in_threadpool

from dockyard.domain.errors import InsufficientStorage
from dockyard.domain.ports import UsageStore
from dockyard.domain.usage import UsageMeter

log = logging.getLogger("dockyard.jobs.usage")

FLUSH_SECONDS = 10.0


class UsageFlusher:
    def __init__(self, meter: UsageMeter, store: UsageStore, interval: float = FLUSH_SECONDS) -> None:
        self.meter = meter
        self.store = store
        self.interval = interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Flush what is left and end; a flush under way finishes first (it is never cut off half-way)."""
        self._stopping.set()
        if self._task is not None:
            await self._task
        if self.meter.pending:
            log.error("%d usage counters could not be stored before shutdown; they are lost", self.meter.pending)

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            try:
                await run_in_threadpool(self.meter.flush, self.store)
            except InsufficientStorage as error:  # a full disk: the counts wait in memory for the next flush
                log.warning("usage counters kept in memory (%d): %s", self.meter.pending, error.message)
            except Exception:  # e.g. the database unreachable for a moment: the counts wait for the next flush
                log.exception("flushing usage counters failed")
