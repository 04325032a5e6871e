"""One scheduler for background work (lifecycle sweeps, garbage collection), leased through the metadata store.

Every server process runs the loop; a job runs where its lease is taken, so a fleet of nodes runs each job
once per interval, and a dead node's lease expires so another node takes the job over. While a job runs, a
heartbeat thread renews its lease every third of the lease, so a run longer than the lease (a big GC or
lifecycle sweep) keeps it, and the lease can stay short so a dead node's job is taken over soon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol

from starlette.concurrency import run_in_threadpool

from dockyard.domain.clock import Clock, utc_now
from dockyard.domain.ports import LeaseStore

log = logging.getLogger("dockyard.jobs")

DEFAULT_LEASE = timedelta(minutes=5)  # renewed while the job runs: only how long a dead node's job waits
DEFAULT_TICK_SECONDS = 30.0


@dataclass(frozen=True)
class Job:
    name: str
    interval: timedelta
    run: Callable[[], object]
    lease: timedelta = DEFAULT_LEASE


class Ticker(Protocol):
    """How a heartbeat waits between renewals (tests step it by hand)."""

    def wait(self, seconds: float) -> bool:
        """Wait `seconds`; False once `stop` has been called."""
        ...

    def stop(self) -> None: ...


class EventTicker:
    def __init__(self) -> None:
        self._stopped = threading.Event()

    def wait(self, seconds: float) -> bool:
        return not self._stopped.wait(seconds)

    def stop(self) -> None:
        self._stopped.set()


class LeaseHeartbeat:
    """Renews a lease every third of its length from a thread of its own while the `with` block runs.

    A renewal that finds the lease gone (this node stalled past the expiry and another node took it) is logged
    as an error and ends the heartbeat: the job cannot be stopped safely halfway, so it runs to its end, and
    the log says it may have run twice. A renewal that fails (the database unreachable) is retried next beat.
    """

    def __init__(
        self, store: LeaseStore, name: str, owner: str, lease: timedelta, clock: Clock, ticker: Ticker
    ) -> None:
        self.store = store
        self.name = name
        self.owner = owner
        self.lease = lease
        self.clock = clock
        self.ticker = ticker
        self.lost = False
        self._thread = threading.Thread(target=self._beat_until_stopped, name=f"lease {name}", daemon=True)

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.ticker.stop()
        self._thread.join()

    def _beat_until_stopped(self) -> None:
        period = self.lease.total_seconds() / 3
        while self.ticker.wait(period):
            if not self.beat():
                return

    def beat(self) -> bool:
        """Renew the lease once; False when it is lost."""
        try:
            held = self.store.renew_lease(self.name, self.owner, self.clock() + self.lease)
        except Exception:  # e.g. the database unreachable for a moment: the next beat tries again
            log.exception("renewing lease %s failed; trying again in %.0f s", self.name, self.lease.total_seconds() / 3)
            return True
        if not held:
            self.lost = True
            log.error(
                "LEASE LOST: %s is no longer held by %s while its job still runs here; another node may run the "
                "same job at the same time (this node stalled past the lease's expiry?)",
                self.name,
                self.owner,
            )
        return held


class Scheduler:
    def __init__(
        self,
        store: LeaseStore,
        jobs: list[Job],
        clock: Clock = utc_now,
        tick_seconds: float = DEFAULT_TICK_SECONDS,
        ticker: Callable[[], Ticker] = EventTicker,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.ticker = ticker
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
        lease = f"job:{job.name}"
        if not self.store.try_lease(lease, self.owner, now + job.lease, now):
            return False
        try:
            if not self._due(job, self.clock()):  # another node ran it between our check and our lease
                return False
            with LeaseHeartbeat(self.store, lease, self.owner, job.lease, self.clock, self.ticker()) as heartbeat:
                job.run()
            self.store.set_job_last_run(job.name, self.clock())
            if heartbeat.lost:
                log.error("background job %s finished after losing its lease %s", job.name, lease)
        except Exception:
            log.exception("background job %s failed", job.name)
        finally:
            self.store.release_lease(lease, self.owner)  # deletes nothing once the lease is another node's
        return True

    def _due(self, job: Job, now: datetime) -> bool:
        last = self.store.job_last_run(job.name)
        return last is None or now - last >= job.interval
