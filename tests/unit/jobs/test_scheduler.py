"""Job leases: renewed by a heartbeat while a job runs, on SQLite and PostgreSQL.

Time never passes by itself here: the scheduler's clock is a FakeClock the test moves, and the heartbeat waits
on a SteppedTicker the test steps, so every renewal happens at a moment the test chose.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dockyard import cli
from dockyard.config import Settings
from dockyard.jobs.scheduler import Job, Scheduler
from dockyard.server import prepare
from dockyard.storage.metadata import SqlMetadataStore, make_engine
from dockyard.storage.migrate import upgrade
from tests.support.databases import postgres_url, sqlite_url
from tests.support.server import free_port

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LEASE = timedelta(minutes=5)
HOUR = timedelta(hours=1)
STEP_TIMEOUT = 30.0  # seconds: only a broken heartbeat ever waits this long
NAME = "job:garbage-collection"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlMetadataStore]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else postgres_url(tmp_path)
    engine = make_engine(url)
    upgrade(engine)
    yield SqlMetadataStore(engine)
    engine.dispose()


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


class SteppedTicker:
    """The heartbeat's waits, each ended by the test: `step` lets one renewal through and returns once it is
    done (the heartbeat waits again); `release` lets one through without waiting for it."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._tokens = 0
        self._stopped = False
        self._waiting = False
        self.periods: list[float] = []

    def wait(self, seconds: float) -> bool:
        with self._changed:
            self.periods.append(seconds)
            self._waiting = True
            self._changed.notify_all()
            self._changed.wait_for(lambda: self._tokens > 0 or self._stopped)
            self._waiting = False
            if self._tokens:
                self._tokens -= 1
                return True
            return False

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def release(self) -> None:
        with self._changed:
            self._tokens += 1
            self._changed.notify_all()

    def step(self) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self._waiting and not self._tokens, STEP_TIMEOUT), "no heartbeat"
            waits = len(self.periods)
            self._tokens += 1
            self._changed.notify_all()
            assert self._changed.wait_for(lambda: len(self.periods) > waits, STEP_TIMEOUT), "renewal never ended"


# ------------------------------------------------------------------------------------------ the store


def test_renewing_extends_only_the_holders_lease(store: SqlMetadataStore) -> None:
    assert store.try_lease(NAME, "node-a", T0 + LEASE, T0)
    assert store.renew_lease(NAME, "node-a", T0 + 4 * LEASE)
    # Past the original expiry the renewed lease still holds.
    assert not store.try_lease(NAME, "node-b", T0 + 2 * LEASE, T0 + 2 * LEASE)
    # Another owner cannot renew (and so extend) a lease it does not hold.
    assert not store.renew_lease(NAME, "node-b", T0 + HOUR)
    assert store.try_lease(NAME, "node-b", T0 + 5 * LEASE, T0 + 4 * LEASE)  # node-a's renewal expired at 4 leases


def test_a_lease_taken_over_or_released_is_not_renewed(store: SqlMetadataStore) -> None:
    assert store.try_lease(NAME, "node-a", T0 + LEASE, T0)
    assert store.try_lease(NAME, "node-b", T0 + 3 * LEASE, T0 + 2 * LEASE)  # node-a's lease had expired
    assert not store.renew_lease(NAME, "node-a", T0 + HOUR)
    assert not store.try_lease(NAME, "node-c", T0 + HOUR, T0 + 2 * LEASE + timedelta(seconds=1))  # node-b's is intact
    store.release_lease(NAME, "node-b")
    assert not store.renew_lease(NAME, "node-b", T0 + HOUR)  # released: nothing to renew, and no row made
    assert store.try_lease(NAME, "node-c", T0 + 4 * LEASE, T0 + 3 * LEASE)


def test_an_expired_lease_nobody_took_is_renewed(store: SqlMetadataStore) -> None:
    assert store.try_lease(NAME, "node-a", T0 + LEASE, T0)
    assert store.renew_lease(NAME, "node-a", T0 + 3 * LEASE)  # asked late, at 2 leases: still node-a's
    assert not store.try_lease(NAME, "node-b", T0 + 3 * LEASE, T0 + 2 * LEASE)


# ------------------------------------------------------------------------------------------ the scheduler


def scheduler(store: SqlMetadataStore, clock: FakeClock, ticker: SteppedTicker, run: Job) -> Scheduler:
    return Scheduler(store, [run], clock=clock, ticker=lambda: ticker)


def test_a_job_running_longer_than_its_lease_keeps_it(store: SqlMetadataStore) -> None:
    clock, ticker = FakeClock(T0), SteppedTicker()
    seen: list[bool] = []

    def long_run() -> None:
        for _ in range(6):  # two whole leases of running
            clock.advance(LEASE / 3)
            ticker.step()
            seen.append(store.try_lease(NAME, "other-node", clock() + LEASE, clock()))

    job = Job("garbage-collection", HOUR, long_run, LEASE)
    assert scheduler(store, clock, ticker, job).run_if_due(job)

    assert seen == [False] * 6, "another node took the lease of a running job"
    assert ticker.periods == [LEASE.total_seconds() / 3] * 7  # six renewals, then the seventh wait was stopped
    assert store.job_last_run("garbage-collection") == T0 + 2 * LEASE
    assert store.try_lease(NAME, "other-node", clock() + LEASE, clock())  # released at the end


def test_a_lost_lease_is_logged_and_the_new_holders_lease_is_left_alone(
    store: SqlMetadataStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock, ticker = FakeClock(T0), SteppedTicker()

    def stalled_run() -> None:
        clock.advance(LEASE + timedelta(seconds=1))  # e.g. the node was frozen past the expiry: no renewal ran
        assert store.try_lease(NAME, "other-node", clock() + LEASE, clock())
        ticker.release()  # the late renewal finds the lease gone

    job = Job("garbage-collection", HOUR, stalled_run, LEASE)
    with caplog.at_level(logging.ERROR, logger="dockyard.jobs"):
        assert scheduler(store, clock, ticker, job).run_if_due(job)

    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith(f"LEASE LOST: {NAME} is no longer held") for m in messages), messages
    assert f"background job garbage-collection finished after losing its lease {NAME}" in messages
    assert ticker.periods == [LEASE.total_seconds() / 3]  # no renewal tried after the loss
    assert store.renew_lease(NAME, "other-node", clock() + LEASE), "the scheduler released the new holder's lease"
    assert store.job_last_run("garbage-collection") == clock()


class FlakyRenewals(SqlMetadataStore):
    """Its first renewal fails as an unreachable database would."""

    failures = 1

    def renew_lease(self, name: str, owner: str, until: datetime) -> bool:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unreachable")
        return super().renew_lease(name, owner, until)


def test_a_failed_renewal_is_retried_at_the_next_beat(
    store: SqlMetadataStore, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyRenewals(store.engine)
    clock, ticker = FakeClock(T0), SteppedTicker()
    seen: list[bool] = []

    def run() -> None:
        for _ in range(2):
            clock.advance(LEASE / 2)
            ticker.step()
        seen.append(store.try_lease(NAME, "other-node", clock() + LEASE, clock()))  # past the first expiry

    job = Job("garbage-collection", HOUR, run, LEASE)
    with caplog.at_level(logging.ERROR, logger="dockyard.jobs"):
        assert Scheduler(flaky, [job], clock=clock, ticker=lambda: ticker).run_if_due(job)
    assert seen == [False]
    assert [r.getMessage() for r in caplog.records if r.exc_info] == [
        f"renewing lease {NAME} failed; trying again in 100 s"
    ]
    assert not any("LEASE LOST" in r.getMessage() for r in caplog.records)


def test_serve_settings_set_the_lease_and_the_tick(tmp_path: Path) -> None:
    services = prepare(Settings(tmp_path / "data", "123456789012", job_lease=42.0, job_tick=7.0))
    try:
        built = services.scheduler()
        assert built.tick_seconds == 7.0
        assert {job.lease for job in built.jobs} == {timedelta(seconds=42)}
    finally:
        services.engine.dispose()
    defaults = Settings(tmp_path, "123456789012")
    assert (defaults.job_lease, defaults.job_tick) == (300.0, 30.0)


def test_serve_flags_reach_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[Settings] = []
    monkeypatch.setattr(cli, "_run_server", served.append)  # instead of exec'ing the server
    monkeypatch.setenv(cli.SETTINGS_ENV, "")  # `serve` sets it for the workers; restored after the test
    data_dir = tmp_path / "data"
    flags = ["--data-dir", str(data_dir), "--default-account", "123456789012", "--job-lease", "90", "--job-tick", "2.5"]
    flags += ["--port", str(free_port())]  # `serve` binds it before it would exec the server
    result = CliRunner().invoke(cli.app, ["serve", *flags])
    assert result.exit_code == 0, result.output
    assert [(s.job_lease, s.job_tick) for s in served] == [(90.0, 2.5)]
    refused = CliRunner().invoke(cli.app, ["serve", "--data-dir", str(data_dir), "--job-lease", "0.5"])
    assert refused.exit_code != 0
