"""Usage metering and cost reports: the meter's hourly counts, the roll-up, and the report's maths."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.domain.names import RepositoryRef
from dockyard.domain.ports import RepositoryUsage, StoredBytes, UsageCounter
from dockyard.domain.usage import (
    GIB,
    Prices,
    UsageLedger,
    UsageMeter,
    hour_of,
    hours_in_month,
    month_pieces,
    month_range,
)

ACCOUNT = "123456789012"
APP = RepositoryRef(ACCOUNT, "us-east-1", "team/app")
WEB = RepositoryRef(ACCOUNT, "us-east-1", "team/web")


@dataclass
class FakeUsageStore:
    """The UsageStore protocol in memory: hourly samples and counters, summed as the SQL store sums them."""

    samples: dict[tuple[int, datetime], tuple[RepositoryRef, int]] = field(default_factory=dict)
    counters: dict[tuple[RepositoryRef, datetime], list[int]] = field(default_factory=dict)
    stored: list[StoredBytes] = field(default_factory=list)
    fail_adds: int = 0

    def add_usage(self, counters: Iterable[UsageCounter]) -> None:
        if self.fail_adds:
            self.fail_adds -= 1
            raise ConnectionError("database unreachable")
        for counter in counters:
            totals = self.counters.setdefault((counter.ref, counter.hour), [0, 0, 0])
            totals[0] += counter.transfer_bytes
            totals[1] += counter.pulls
            totals[2] += counter.pushes

    def repository_storage(self) -> list[StoredBytes]:
        return list(self.stored)

    def put_storage_samples(self, hour: datetime, samples: Iterable[StoredBytes]) -> None:
        for sample in samples:
            self.samples[(sample.repository_id, hour)] = (sample.ref, sample.size)

    def usage_totals(self, account_id: str, start: datetime, end: datetime) -> list[RepositoryUsage]:
        byte_hours: dict[tuple[str, str], int] = {}
        hours: dict[tuple[str, str], dict[datetime, int]] = {}
        for (_id, hour), (ref, size) in self.samples.items():
            if ref.account_id == account_id and start <= hour < end:
                key = (ref.region, ref.name)
                byte_hours[key] = byte_hours.get(key, 0) + size
                by_hour = hours.setdefault(key, {})
                by_hour[hour] = by_hour.get(hour, 0) + size
        counted: dict[tuple[str, str], list[int]] = {}
        for (ref, hour), values in self.counters.items():
            if ref.account_id == account_id and start <= hour < end:
                totals = counted.setdefault((ref.region, ref.name), [0, 0, 0])
                for index, value in enumerate(values):
                    totals[index] += value
        result = []
        for key in sorted(set(byte_hours) | set(counted)):
            by_hour = hours.get(key, {})
            transfer, pulls, pushes = counted.get(key, [0, 0, 0])
            result.append(
                RepositoryUsage(
                    *key,
                    storage_byte_hours=byte_hours.get(key, 0),
                    sampled_hours=len(by_hour),
                    last_stored_bytes=by_hour[max(by_hour)] if by_hour else 0,
                    transfer_bytes=transfer,
                    pulls=pulls,
                    pushes=pushes,
                )
            )
        return result


class SteppedClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# ------------------------------------------------------------------------------------------- meter


def test_the_meter_counts_per_repository_and_hour_and_starts_again_after_a_drain() -> None:
    clock = SteppedClock(datetime(2026, 11, 5, 9, 59, 59, tzinfo=UTC))
    meter = UsageMeter(clock)
    meter.pulled(APP, 500)
    meter.sent(APP, 1_000)
    meter.sent(WEB, 7)
    clock.now += timedelta(seconds=2)  # 10:00:01: a new hour's bucket
    meter.sent(APP, 30)
    meter.pushed(APP)
    nine, ten = datetime(2026, 11, 5, 9, tzinfo=UTC), datetime(2026, 11, 5, 10, tzinfo=UTC)
    assert sorted(meter.drain(), key=lambda c: (c.hour, c.ref.name)) == [
        UsageCounter(APP, nine, transfer_bytes=1_500, pulls=1),
        UsageCounter(WEB, nine, transfer_bytes=7),
        UsageCounter(APP, ten, transfer_bytes=30, pushes=1),
    ]
    assert meter.drain() == []


def test_counts_a_failed_flush_could_not_store_go_out_with_the_next_flush() -> None:
    clock = SteppedClock(datetime(2026, 11, 5, 9, 30, tzinfo=UTC))
    store = FakeUsageStore(fail_adds=1)
    meter = UsageMeter(clock)
    meter.pulled(APP, 100)
    with pytest.raises(ConnectionError):
        meter.flush(store)
    meter.pulled(APP, 50)
    assert meter.flush(store) == 1
    assert store.counters == {(APP, hour_of(clock.now)): [150, 2, 0]}
    assert meter.flush(store) == 0


def test_a_meter_held_back_by_a_full_store_is_bounded_and_drops_loudly(caplog: pytest.LogCaptureFixture) -> None:
    clock = SteppedClock(datetime(2026, 11, 5, 9, 30, tzinfo=UTC))
    meter = UsageMeter(clock, max_keys=2)
    meter.pulled(APP, 100)
    meter.pulled(WEB, 10)
    with caplog.at_level(logging.ERROR, logger="dockyard.usage"):
        meter.pulled(RepositoryRef(ACCOUNT, "us-east-1", "team/third"), 1)  # a third pair: no room
    meter.pulled(APP, 5)  # an existing pair still counts
    assert meter.dropped == 1
    assert any("DROPPED" in record.getMessage() for record in caplog.records)
    assert sorted((c.ref.name, c.transfer_bytes, c.pulls) for c in meter.drain()) == [
        ("team/app", 105, 2),
        ("team/web", 10, 1),
    ]


def test_no_count_is_lost_when_threads_add_while_another_flushes() -> None:
    meter = UsageMeter()
    store = FakeUsageStore()
    adders, rounds = 4, 2_000

    def add() -> None:
        for _ in range(rounds):
            meter.pulled(APP, 3)

    threads = [threading.Thread(target=add) for _ in range(adders)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        meter.flush(store)
    for thread in threads:
        thread.join()
    meter.flush(store)
    assert [sum(values[i] for values in store.counters.values()) for i in range(3)] == [
        3 * adders * rounds,
        adders * rounds,
        0,
    ]


# ------------------------------------------------------------------------------------------- roll-up


def test_a_roll_up_samples_every_repository_for_the_current_hour_and_a_rerun_overwrites_it() -> None:
    clock = SteppedClock(datetime(2026, 11, 5, 9, 10, tzinfo=UTC))
    store = FakeUsageStore(stored=[StoredBytes(1, APP, 100), StoredBytes(2, WEB, 5)])
    ledger = UsageLedger(store, clock)
    first = ledger.roll_up()
    assert (first.hour, first.repositories, first.stored_bytes) == (datetime(2026, 11, 5, 9, tzinfo=UTC), 2, 105)
    store.stored = [StoredBytes(1, APP, 300), StoredBytes(2, WEB, 5)]
    clock.now += timedelta(minutes=30)
    ledger.roll_up()
    assert store.samples == {(1, first.hour): (APP, 300), (2, first.hour): (WEB, 5)}


# ------------------------------------------------------------------------------------------- ranges


def test_month_ranges_and_pieces() -> None:
    assert month_range("2026-12") == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert hours_in_month(datetime(2028, 2, 10, tzinfo=UTC)) == 29 * 24
    start, end = datetime(2026, 11, 20, tzinfo=UTC), datetime(2027, 1, 3, tzinfo=UTC)
    assert month_pieces(start, end) == [
        (start, datetime(2026, 12, 1, tzinfo=UTC)),
        (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2027, 1, 1, tzinfo=UTC), end),
    ]
    with pytest.raises(ValueError, match="YYYY-MM"):
        month_range("2026-13")


def test_a_report_needs_a_non_empty_range() -> None:
    moment = datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="after its start"):
        UsageLedger(FakeUsageStore()).report(ACCOUNT, moment, moment)


# ------------------------------------------------------------------------------------------- report maths


def sample_every_hour(store: FakeUsageStore, repository_id: int, ref: RepositoryRef, start: datetime, end: datetime,
                      size: int) -> None:  # fmt: skip
    hour = start
    while hour < end:
        store.put_storage_samples(hour, [StoredBytes(repository_id, ref, size)])
        hour += timedelta(hours=1)


@settings(max_examples=40, deadline=None)
@given(year=st.integers(2000, 2100), month=st.integers(1, 12), size=st.integers(0, 2**50))
def test_a_constant_size_over_a_whole_month_is_that_size_in_gb_months(year: int, month: int, size: int) -> None:
    start, end = month_range(f"{year:04d}-{month:02d}")
    store = FakeUsageStore()
    sample_every_hour(store, 1, APP, start, end, size)
    report = UsageLedger(store).report(ACCOUNT, start, end)
    (line,) = report.repositories
    assert line.storage_gb_months == size / GIB
    assert line.sampled_hours == hours_in_month(start)
    assert line.stored_bytes == size
    assert math.isclose(line.storage_cost, size / GIB * 0.10)
    assert report.total.storage_gb_months == line.storage_gb_months


def test_a_missing_hour_is_not_filled_in_from_the_previous_sample() -> None:
    start, end = month_range("2026-11")  # 720 hours
    store = FakeUsageStore()
    sample_every_hour(store, 1, APP, start, start + timedelta(hours=360), GIB)  # half the month, then no samples
    line = UsageLedger(store).report(ACCOUNT, start, end).repositories[0]
    assert (line.storage_gb_months, line.sampled_hours, line.stored_bytes) == (0.5, 360, GIB)


usage_rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c/d", "e"]),  # repository
        st.integers(0, 24 * 62 - 1),  # hour since the range's start
        st.integers(0, 2**44),  # stored bytes
        st.integers(0, 2**44),  # bytes sent
        st.integers(0, 1_000),  # pulls
        st.integers(0, 100),  # pushes
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(rows=usage_rows, storage_price=st.floats(0, 10), transfer_price=st.floats(0, 10))
def test_costs_add_up_across_repositories(
    rows: list[tuple[str, int, int, int, int, int]], storage_price: float, transfer_price: float
) -> None:
    start = datetime(2026, 10, 20, tzinfo=UTC)  # the range spans parts of three months
    end = start + timedelta(hours=24 * 62)
    store = FakeUsageStore()
    names = sorted({name for name, *_ in rows})
    for name, offset, stored, sent, pulls, pushes in rows:
        ref = RepositoryRef(ACCOUNT, "us-east-1", name)
        hour = start + timedelta(hours=offset)
        store.put_storage_samples(hour, [StoredBytes(names.index(name), ref, stored)])
        store.add_usage([UsageCounter(ref, hour, sent, pulls, pushes)])
    prices = Prices(storage_per_gb_month=storage_price, transfer_out_per_gb=transfer_price)
    report = UsageLedger(store).report(ACCOUNT, start, end, prices)
    lines, total = report.repositories, report.total
    assert [line.repository for line in lines] == names

    def close(a: float, b: float) -> bool:
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)

    for line in lines:
        assert close(line.storage_cost, line.storage_gb_months * storage_price)
        assert close(line.transfer_cost, line.transfer_out_bytes / GIB * transfer_price)
        assert close(line.cost, line.storage_cost + line.transfer_cost)
    assert close(total.cost, sum(line.cost for line in lines))
    assert close(total.storage_gb_months, sum(line.storage_gb_months for line in lines))
    assert total.storage_byte_hours == sum(line.storage_byte_hours for line in lines)
    assert total.transfer_out_bytes == sum(sent for *_, sent, _p, _q in rows)
    assert total.pulls == sum(pulls for *_, pulls, _q in rows)
    assert total.pushes == sum(row[5] for row in rows)
    assert total.stored_bytes == sum(line.stored_bytes for line in lines)


def test_the_report_as_json_names_each_repository_and_the_total() -> None:
    start, end = month_range("2026-11")
    store = FakeUsageStore()
    store.put_storage_samples(start, [StoredBytes(1, APP, GIB)])
    store.add_usage([UsageCounter(APP, start, 2 * GIB, 3, 1)])
    document = UsageLedger(store).report(ACCOUNT, start, end).as_dict()
    assert document["start"] == "2026-11-01T00:00:00Z" and document["end"] == "2026-12-01T00:00:00Z"
    (line,) = document["repositories"]
    assert line["region"] == "us-east-1" and line["repository"] == "team/app"
    assert line["storage_gb_months"] == 1 / 720
    assert line["transfer_out_gb"] == 2
    assert math.isclose(line["cost"], 0.10 / 720 + 2 * 0.09)
    assert "repository" not in document["total"] and document["total"]["pulls"] == 3
