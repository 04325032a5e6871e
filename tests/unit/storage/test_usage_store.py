"""The usage tables of the metadata store, on every backend: counters added (also concurrently), the roll-up's
one aggregate query, idempotent hourly samples, and the sums a report reads (deleted repositories included)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event

from dockyard.domain.names import Digest, RepositoryRef
from dockyard.domain.ports import ManifestRecord, ManifestReference, Repository, RepositoryUsage, UsageCounter
from dockyard.storage.metadata import SqlMetadataStore, make_engine
from dockyard.storage.migrate import upgrade
from tests.support.databases import postgres_url, sqlite_url

BACKENDS: dict[str, Callable[[Path], str]] = {"sqlite": sqlite_url, "postgresql": postgres_url}
ACCOUNT = "123456789012"
OTHER = "210987654321"
REGION = "us-east-1"
T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
H = timedelta(hours=1)
L1, L2, L3 = (Digest.of(f"usage-layer-{n}".encode()) for n in range(1, 4))


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlMetadataStore]:
    engine = make_engine(BACKENDS[request.param](tmp_path))
    upgrade(engine)
    store = SqlMetadataStore(engine)
    store.ensure_account(ACCOUNT, T0)
    store.ensure_account(OTHER, T0)
    yield store
    engine.dispose()


def repo(store: SqlMetadataStore, name: str, account: str = ACCOUNT) -> Repository:
    repository, _ = store.create_repository(RepositoryRef(account, REGION, name), T0)
    return repository


def manifest(store: SqlMetadataStore, repository: Repository, seed: str, *layers: Digest) -> int:
    """Put a manifest of `seed`'s bytes referencing `layers` (linked already); returns its size."""
    record = ManifestRecord(
        digest=Digest.of(seed.encode()),
        media_type="application/vnd.oci.image.manifest.v1+json",
        size=len(seed),
        artifact_type=None,
        subject=None,
        annotations={},
        pushed_at=T0,
    )
    assert (
        store.put_manifest(repository.id, record, [ManifestReference(d, is_manifest=False) for d in layers], []) == []
    )
    return record.size


def counter(name: str, hour: datetime, sent: int = 0, pulls: int = 0, pushes: int = 0) -> UsageCounter:
    return UsageCounter(RepositoryRef(ACCOUNT, REGION, name), hour, sent, pulls, pushes)


def test_counters_are_added_to_per_repository_and_hour(store: SqlMetadataStore) -> None:
    store.add_usage([counter("app", T0, 100, 1), counter("app", T0, 5, 0, 1), counter("web", T0, 7)])
    store.add_usage([counter("app", T0, 1_000, 2), counter("app", T0 + H, 3, 1)])
    store.add_usage([])
    assert store.usage_totals(ACCOUNT, T0, T0 + H) == [
        RepositoryUsage(REGION, "app", transfer_bytes=1_105, pulls=3, pushes=1),
        RepositoryUsage(REGION, "web", transfer_bytes=7),
    ]
    assert store.usage_totals(ACCOUNT, T0, T0 + 2 * H)[0].transfer_bytes == 1_108
    assert store.usage_totals(OTHER, T0, T0 + 2 * H) == []


def test_concurrent_flushes_lose_no_count(store: SqlMetadataStore) -> None:
    flushes, errors = 20, []

    def flush(offset: int) -> None:
        try:
            for round_ in range(flushes):
                # Keys in different orders in each thread: the store must not deadlock on PostgreSQL.
                names = ["a", "b", "c"] if (offset + round_) % 2 else ["c", "b", "a"]
                store.add_usage([counter(name, T0, 10, 1) for name in names])
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=flush, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [(u.name, u.transfer_bytes, u.pulls) for u in store.usage_totals(ACCOUNT, T0, T0 + H)] == [
        (name, 10 * 4 * flushes, 4 * flushes) for name in ("a", "b", "c")
    ]


def test_repository_storage_is_distinct_linked_blobs_plus_manifests_in_one_query(store: SqlMetadataStore) -> None:
    app, web, empty = repo(store, "app"), repo(store, "web"), repo(store, "empty")
    elsewhere = repo(store, "elsewhere", OTHER)
    for repository, digest, size in ((app, L1, 1_000), (app, L2, 200), (web, L1, 1_000), (elsewhere, L3, 30)):
        store.link_blob(repository.id, digest, size, T0)
    store.link_blob(app.id, L1, 1_000, T0 + H)  # linked again: still once
    app_manifests = manifest(store, app, "manifest one", L1, L2) + manifest(store, app, "manifest two", L1)
    web_manifests = manifest(store, web, "web manifest", L1)

    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    sizes = {(s.ref.account_id, s.ref.name): s.size for s in store.repository_storage()}
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1

    assert sizes == {
        (ACCOUNT, "app"): 1_200 + app_manifests,
        (ACCOUNT, "web"): 1_000 + web_manifests,
        (ACCOUNT, "empty"): 0,
        (OTHER, "elsewhere"): 30,
    }
    store.delete_repository(empty.id)
    assert (ACCOUNT, "empty") not in {(s.ref.account_id, s.ref.name) for s in store.repository_storage()}


def test_a_sample_taken_again_in_the_same_hour_replaces_the_first(store: SqlMetadataStore) -> None:
    app = repo(store, "app")
    store.link_blob(app.id, L1, 1_000, T0)
    store.put_storage_samples(T0, store.repository_storage())
    store.link_blob(app.id, L2, 24, T0)
    store.put_storage_samples(T0, store.repository_storage())
    store.put_storage_samples(T0, [])
    assert store.usage_totals(ACCOUNT, T0, T0 + H) == [
        RepositoryUsage(REGION, "app", storage_byte_hours=1_024, sampled_hours=1, last_stored_bytes=1_024)
    ]


def test_usage_sums_cover_the_range_and_keep_deleted_repositories(store: SqlMetadataStore) -> None:
    app, gone = repo(store, "app"), repo(store, "gone")
    store.link_blob(app.id, L1, 100, T0)
    store.link_blob(gone.id, L2, 40, T0)
    for hour in (T0 - H, T0, T0 + H):
        store.put_storage_samples(hour, store.repository_storage())
    store.add_usage([counter("gone", T0, 400, 2)])
    store.delete_repository(gone.id)
    store.link_blob(app.id, L3, 900, T0)
    store.put_storage_samples(T0 + 2 * H, store.repository_storage())  # app grew; gone is gone
    store.put_storage_samples(T0 + 3 * H, store.repository_storage())  # outside the range asked below

    again = repo(store, "gone")  # the same name again: a new repository id, reported under the same name
    store.link_blob(again.id, L3, 900, T0)
    store.put_storage_samples(T0 + 2 * H, store.repository_storage())

    assert store.usage_totals(ACCOUNT, T0, T0 + 3 * H) == [
        RepositoryUsage(REGION, "app", storage_byte_hours=100 + 100 + 1_000, sampled_hours=3, last_stored_bytes=1_000),
        RepositoryUsage(
            REGION,
            "gone",
            storage_byte_hours=40 + 40 + 900,
            sampled_hours=3,
            last_stored_bytes=900,
            transfer_bytes=400,
            pulls=2,
        ),
    ]
    assert store.usage_totals(OTHER, T0, T0 + 3 * H) == []
