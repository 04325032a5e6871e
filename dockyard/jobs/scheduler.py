"""One scheduler for background work (lifecycle sweeps, garbage collection), leased through the metadata store.

Every server process runs the loop; a job runs where its lease is taken, so a fleet of nodes runs each job
once per interval, and a dead node's lease expires so another node takes the job over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from starlette.concurrency import run_in_threadpool

from dockyard.domain.clock import Clock, utc_now
from dockyard.domain.ports import LeaseStore

log = logging.getLogger("dockyard.jobs")


@dataclass(frozen=True)
class Job:
    name: str
    interval: timedelta
    run: Callable[[], object]
    lease: timedelta = timedelta(minutes=30)


class Scheduler:
    def __init__(self, store: LeaseStore, jobs: list[Job], clock: Clock = utc_now, tick_seconds: float = 30.0) -> None:
        self.store = store
        self.jobs = jobs
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.owner = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
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
            for job in self.jobs:
                try:
                    await run_in_threadpool(self.run_if_due, job)
                except Exception:  # e.g. the database unreachable for a moment: the next tick tries again
                    log.exception("scheduling background job %s failed", job.name)
            # Jitter spreads the nodes' ticks so they do not race for the same lease every time.
            await asyncio.sleep(self.tick_seconds * (0.5 + random.random()))  # noqa: S311 (not cryptographic)

    def run_if_due(self, job: Job) -> bool:
        """Run `job` here if its interval has passed and this node takes its lease; True when it ran."""
        now = self.clock()
        if not self._due(job, now):
            return False
        if not self.store.try_lease(f"job:{job.name}", self.owner, now + job.lease, now):
            return False
        try:
            if not self._due(job, self.clock()):  # another node ran it between our check and our lease
                return False
            job.run()
            self.store.set_job_last_run(job.name, self.clock())
        except Exception:
            log.exception("background job %s failed", job.name)
        finally:
            self.store.release_lease(f"job:{job.name}", self.owner)
        return True

    def _due(self, job: Job, now: datetime) -> bool:
        last = self.store.job_last_run(job.name)
        return last is None or now - last >= job.interval
