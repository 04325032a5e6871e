"""Usage metering and cost reports, priced the way ECR bills: storage per GB-month, data transfer out per GB.

Three parts:

- `UsageMeter` counts, per (repository, hour), what the registry door served (blob and manifest bytes of GETs,
  a redirected blob GET counting its whole size), manifest GETs (pulls) and manifest PUTs (pushes). The
  request path only adds to a dict under a lock; a background task flushes it into the metadata store every
  few seconds and at shutdown (`flush`), adding to the hourly counters other processes and nodes add to.
- `UsageLedger.roll_up` (the leased "usage-rollup" job) records, for the current hour, the bytes every
  repository stores: its distinct linked blobs plus its manifests. A later run in the same hour overwrites the
  hour's sample; the job runs twice an hour, so the scheduler's drift never skips a clock hour.
- `UsageLedger.report` prices an account's usage over a month (or any range of whole hours).

Storage GB-months are the sum over the hourly samples of bytes / 2^30 / the hours of the sample's month: a
repository of constant size S sampled every hour of a month is S / 2^30 GB-months. An hour without a sample
(no node was running) counts as nothing: its size is not guessed from the previous sample, so a report never
bills storage nobody measured; `sampled_hours` shows the coverage. GB are 2^30 bytes, as AWS bills them.
"""

from __future__ import annotations

import calendar
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from dockyard.domain.clock import Clock, utc_now
from dockyard.domain.names import RepositoryRef
from dockyard.domain.ports import RepositoryUsage, UsageCounter, UsageStore

log = logging.getLogger("dockyard.usage")

GIB: Final = 2**30
MAX_METER_KEYS: Final = 100_000  # (repository, hour) pairs held while the store refuses them
ROLLUP_INTERVAL: Final = timedelta(minutes=30)
HOUR: Final = timedelta(hours=1)


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour `moment` falls in."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# ------------------------------------------------------------------------------------------- metering


class UsageMeter:
    """This process's counters since the last flush, per (repository, hour). Adding costs a dict update.

    Bounded: while the store refuses the counts (a full disk), they wait here, at most `max_keys` (repository,
    hour) pairs of them; a count for a new pair beyond that is dropped, counted in `dropped` and logged loudly.
    """

    def __init__(self, clock: Clock = utc_now, max_keys: int = MAX_METER_KEYS) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self.dropped = 0
        self._lock = threading.Lock()
        self._counts: dict[tuple[RepositoryRef, datetime], list[int]] = {}

    @property
    def pending(self) -> int:
        """(repository, hour) counters not yet stored."""
        with self._lock:
            return len(self._counts)

    def sent(self, ref: RepositoryRef, size: int) -> None:
        """Bytes served (or redirected to the blob store) for the repository."""
        self._add(ref, size, 0, 0)

    def pulled(self, ref: RepositoryRef, size: int) -> None:
        """A manifest GET that served `size` bytes."""
        self._add(ref, size, 1, 0)

    def pushed(self, ref: RepositoryRef) -> None:
        """A manifest PUT."""
        self._add(ref, 0, 0, 1)

    def _add(self, ref: RepositoryRef, size: int, pulls: int, pushes: int) -> None:
        key = (ref, hour_of(self.clock()))
        with self._lock:
            counts = self._counts.get(key)
            if counts is None:
                if len(self._counts) >= self.max_keys:
                    self.dropped += 1
                    if self.dropped == 1 or self.dropped % 1000 == 0:
                        log.error(
                            "usage meter full (%d repository-hours waiting for the store): %d counts DROPPED",
                            len(self._counts),
                            self.dropped,
                        )
                    return
                self._counts[key] = [size, pulls, pushes]
            else:
                counts[0] += size
                counts[1] += pulls
                counts[2] += pushes

    def drain(self) -> list[UsageCounter]:
        """Take every count so far (the meter starts again from zero)."""
        with self._lock:
            counts, self._counts = self._counts, {}
        return [UsageCounter(ref, hour, *values) for (ref, hour), values in counts.items()]

    def restore(self, counters: Iterable[UsageCounter]) -> None:
        """Put back counts that could not be stored, to be flushed with the next ones."""
        with self._lock:
            for counter in counters:
                counts = self._counts.setdefault((counter.ref, counter.hour), [0, 0, 0])
                counts[0] += counter.transfer_bytes
                counts[1] += counter.pulls
                counts[2] += counter.pushes

    def flush(self, store: UsageStore) -> int:
        """Add the counts to the store; on failure they are kept for the next flush. Returns the rows written."""
        counters = self.drain()
        if not counters:
            return 0
        try:
            store.add_usage(counters)
        except BaseException:
            self.restore(counters)
            raise
        return len(counters)


# ------------------------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class Prices:
    """US dollars; the defaults are ECR's public list prices (us-east-1)."""

    storage_per_gb_month: float = 0.10
    transfer_out_per_gb: float = 0.09


@dataclass(frozen=True)
class UsageLine:
    """One repository's usage and cost over the report's range (or the account's total: empty names)."""

    region: str
    repository: str
    stored_bytes: int  # at the latest sample in the range
    sampled_hours: int
    storage_byte_hours: int
    storage_gb_months: float
    transfer_out_bytes: int
    transfer_out_gb: float
    pulls: int
    pushes: int
    storage_cost: float
    transfer_cost: float

    @property
    def cost(self) -> float:
        return self.storage_cost + self.transfer_cost

    def as_dict(self) -> dict[str, Any]:
        fields = {
            "stored_bytes": self.stored_bytes,
            "sampled_hours": self.sampled_hours,
            "storage_byte_hours": self.storage_byte_hours,
            "storage_gb_months": self.storage_gb_months,
            "transfer_out_bytes": self.transfer_out_bytes,
            "transfer_out_gb": self.transfer_out_gb,
            "pulls": self.pulls,
            "pushes": self.pushes,
            "storage_cost": self.storage_cost,
            "transfer_cost": self.transfer_cost,
            "cost": self.cost,
        }
        return {"region": self.region, "repository": self.repository, **fields} if self.repository else fields


@dataclass(frozen=True)
class UsageReport:
    account_id: str
    start: datetime
    end: datetime  # exclusive
    prices: Prices
    repositories: tuple[UsageLine, ...]
    total: UsageLine

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account_id,
            "start": self.start.isoformat().replace("+00:00", "Z"),
            "end": self.end.isoformat().replace("+00:00", "Z"),
            "currency": "USD",
            "prices": {
                "storage_per_gb_month": self.prices.storage_per_gb_month,
                "transfer_out_per_gb": self.prices.transfer_out_per_gb,
            },
            "repositories": [line.as_dict() for line in self.repositories],
            "total": self.total.as_dict(),
        }


def month_range(month: str) -> tuple[datetime, datetime]:
    """`2026-11` -> [2026-11-01T00:00Z, 2026-12-01T00:00Z)."""
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"a month is YYYY-MM, not {month!r}") from None
    return start, _next_month(start)


def _next_month(moment: datetime) -> datetime:
    first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1)


def hours_in_month(moment: datetime) -> int:
    return calendar.monthrange(moment.year, moment.month)[1] * 24


def month_pieces(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at month boundaries."""
    pieces = []
    cursor = start
    while cursor < end:
        piece_end = min(end, _next_month(cursor))
        pieces.append((cursor, piece_end))
        cursor = piece_end
    return pieces


@dataclass
class _Sums:
    byte_hours: int = 0
    gb_months: float = 0.0
    sampled_hours: int = 0
    stored_bytes: int = 0
    transfer_bytes: int = 0
    pulls: int = 0
    pushes: int = 0
    by_month: dict[int, int] = field(default_factory=dict)  # hours in the month -> byte-hours

    def add(self, usage: RepositoryUsage, month_hours: int) -> None:
        self.byte_hours += usage.storage_byte_hours
        self.by_month[month_hours] = self.by_month.get(month_hours, 0) + usage.storage_byte_hours
        self.sampled_hours += usage.sampled_hours
        self.transfer_bytes += usage.transfer_bytes
        self.pulls += usage.pulls
        self.pushes += usage.pushes

    def line(self, region: str, repository: str, prices: Prices) -> UsageLine:
        # One division per month length, of exact integer sums: a constant size over a whole month is exact.
        gb_months = sum((byte_hours / (GIB * hours) for hours, byte_hours in sorted(self.by_month.items())), 0.0)
        transfer_gb = self.transfer_bytes / GIB
        return UsageLine(
            region,
            repository,
            self.stored_bytes,
            self.sampled_hours,
            self.byte_hours,
            gb_months,
            self.transfer_bytes,
            transfer_gb,
            self.pulls,
            self.pushes,
            gb_months * prices.storage_per_gb_month,
            transfer_gb * prices.transfer_out_per_gb,
        )


def price_usage(
    account_id: str,
    start: datetime,
    end: datetime,
    pieces: Sequence[tuple[datetime, Sequence[RepositoryUsage]]],
    prices: Prices,
) -> UsageReport:
    """Price the usage of each month piece (its start, its per-repository sums), in chronological order."""
    sums: dict[tuple[str, str], _Sums] = {}
    total = _Sums()
    for piece_start, rows in pieces:
        month_hours = hours_in_month(piece_start)
        for row in rows:
            repository = sums.setdefault((row.region, row.name), _Sums())
            repository.add(row, month_hours)
            total.add(row, month_hours)
            if row.sampled_hours:
                repository.stored_bytes = row.last_stored_bytes  # later pieces replace earlier ones
    total.stored_bytes = sum(repository.stored_bytes for repository in sums.values())
    lines = tuple(sums[key].line(*key, prices) for key in sorted(sums))
    return UsageReport(account_id, start, end, prices, lines, total.line("", "", prices))


@dataclass(frozen=True)
class Rollup:
    hour: datetime
    repositories: int
    stored_bytes: int


class UsageLedger:
    """Storage roll-ups and cost reports over the metadata store."""

    def __init__(self, store: UsageStore, clock: Clock = utc_now) -> None:
        self.store = store
        self.clock = clock

    def roll_up(self) -> Rollup:
        """Sample what every repository stores, for the current hour (overwriting an earlier sample of it)."""
        hour = hour_of(self.clock())
        samples = self.store.repository_storage()
        self.store.put_storage_samples(hour, samples)
        return Rollup(hour, len(samples), sum(sample.size for sample in samples))

    def report(self, account_id: str, start: datetime, end: datetime, prices: Prices | None = None) -> UsageReport:
        """The account's usage and cost over [start, end), per repository and in total."""
        if end <= start:
            raise ValueError(f"the report's end ({end.isoformat()}) must come after its start ({start.isoformat()})")
        pieces = [(s, self.store.usage_totals(account_id, s, e)) for s, e in month_pieces(start, end)]
        return price_usage(account_id, start, end, pieces, prices or Prices())
