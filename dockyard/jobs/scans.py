"""The scan worker: polls the scan queue (in the metadata store) and runs scans off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.concurrency import run_in_threadpool

from dockyard.domain.scanning.service import ImageScanner

log = logging.getLogger("dockyard.jobs.scans")


class ScanWorker:
    def __init__(self, scanner: ImageScanner, idle_seconds: float = 1.0) -> None:
        self.scanner = scanner
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
                busy = await run_in_threadpool(self.scanner.work_once)
            except Exception:
                log.exception("scan worker step failed")
                busy = False
            if not busy:
                await asyncio.sleep(self.idle_seconds)
