"""The usage flusher: stopping it flushes what the meter counted; a failed flush keeps the counts for the next."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from datetime import datetime

import pytest

from dockyard.domain.names import RepositoryRef
from dockyard.domain.ports import RepositoryUsage, StoredBytes, UsageCounter
from dockyard.domain.usage import UsageMeter
from dockyard.jobs.usage import UsageFlusher

APP = RepositoryRef("123456789012", "us-east-1", "team/app")


class Store:
    def __init__(self, failures: int = 0) -> None:
        self.added: list[UsageCounter] = []
        self.failures = failures
        self.stored = threading.Event()

    def add_usage(self, counters: Iterable[UsageCounter]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unreachable")
        self.added.extend(counters)
        self.stored.set()

    def repository_storage(self) -> list[StoredBytes]:
        return []

    def put_storage_samples(self, hour: datetime, samples: Iterable[StoredBytes]) -> None:
        pass

    def usage_totals(self, account_id: str, start: datetime, end: datetime) -> list[RepositoryUsage]:
        return []


def test_stopping_flushes_what_was_counted() -> None:
    meter, store = UsageMeter(), Store()

    async def serve() -> None:
        flusher = UsageFlusher(meter, store, interval=3_600)
        flusher.start()
        meter.pulled(APP, 10)
        await asyncio.sleep(0)  # the loop is waiting out its interval
        meter.pushed(APP)
        await flusher.stop()

    asyncio.run(serve())
    assert [(c.ref, c.transfer_bytes, c.pulls, c.pushes) for c in store.added] == [(APP, 10, 1, 1)]


def test_a_failed_flush_is_logged_and_its_counts_wait_for_the_next(caplog: pytest.LogCaptureFixture) -> None:
    meter, store = UsageMeter(), Store(failures=1)

    async def serve() -> None:
        flusher = UsageFlusher(meter, store, interval=0)
        meter.pulled(APP, 10)
        flusher.start()
        assert await asyncio.to_thread(store.stored.wait, 30)  # the first flush fails, a later one stores them
        await flusher.stop()

    with caplog.at_level(logging.ERROR, "dockyard.jobs.usage"):
        asyncio.run(serve())
    assert [(c.transfer_bytes, c.pulls) for c in store.added] == [(10, 1)]
    assert "flushing usage counters failed" in caplog.text
