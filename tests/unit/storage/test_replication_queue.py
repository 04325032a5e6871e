"""The replication queue of the metadata store, on every backend: requests, claims, outcomes, re-requests,
expired claims, and concurrent claimants (each task is taken by exactly one)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dockyard.domain.names import Digest, RepositoryRef
from dockyard.domain.ports import ReplicationTask, Repository
from dockyard.storage.metadata import SqlMetadataStore, make_engine
from dockyard.storage.migrate import upgrade
from tests.support.databases import postgres_url, sqlite_url

BACKENDS: dict[str, Callable[[Path], str]] = {"sqlite": sqlite_url, "postgresql": postgres_url}
ACCOUNT = "123456789012"
OTHER = "210987654321"
REGION = "us-east-1"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CLAIM = timedelta(minutes=15)
D1, D2, D3 = (Digest.of(f"image-{n}".encode()) for n in range(1, 4))
EU = (ACCOUNT, "eu-west-1")
AP = (OTHER, "ap-south-1")


@pytest.fixture(params=sorted(BACKENDS))
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = BACKENDS[request.param](tmp_path)
    engine = make_engine(url)
    upgrade(engine)
    store = SqlMetadataStore(engine)
    store.ensure_account(ACCOUNT, T0)
    store.ensure_account(OTHER, T0)
    engine.dispose()
    return url


@pytest.fixture
def store(url: str) -> Iterator[SqlMetadataStore]:
    engine = make_engine(url)
    yield SqlMetadataStore(engine)
    engine.dispose()


def repo(store: SqlMetadataStore, name: str = "team/app") -> Repository:
    repository, _ = store.create_repository(RepositoryRef(ACCOUNT, REGION, name), T0)
    return repository


def claim(store: SqlMetadataStore, owner: str = "node-a", at: datetime = T0) -> ReplicationTask | None:
    return store.claim_replication(owner, at + CLAIM, at)


def states(store: SqlMetadataStore, repository: Repository, digest: Digest) -> dict[tuple[str, str], str]:
    return {
        (r.destination_account, r.destination_region): r.status for r in store.get_replications(repository.id, digest)
    }


def test_a_request_queues_one_task_per_destination(store: SqlMetadataStore) -> None:
    repository = repo(store)
    store.request_replications(repository.id, D1, [EU, AP, EU], T0)
    records = store.get_replications(repository.id, D1)
    assert [(r.destination_account, r.destination_region, r.status) for r in records] == [
        (*EU, "PENDING"),
        (*AP, "PENDING"),
    ]
    assert all(r.requested_at == T0 and r.completed_at is None and r.failure_code is None for r in records)
    assert store.get_replications(repository.id, D2) == []
    store.request_replications(repository.id, D2, [], T0)  # nothing to queue
    assert store.get_replications(repository.id, D2) == []


def test_a_claim_takes_the_oldest_task_once(store: SqlMetadataStore) -> None:
    repository = repo(store)
    store.request_replications(repository.id, D2, [EU], T0 + timedelta(seconds=1))
    store.request_replications(repository.id, D1, [AP], T0)
    first = claim(store)
    assert first is not None
    assert (first.source, first.digest, first.destination_account, first.destination_region) == (
        repository.ref,
        D1,
        *AP,
    )
    assert (first.repository_id, first.attempts) == (repository.id, 1)
    second = claim(store, "node-b")
    assert second is not None and second.digest == D2
    assert claim(store, "node-c") is None
    assert states(store, repository, D1) == {AP: "IN_PROGRESS"}


def test_finishing_records_the_outcome(store: SqlMetadataStore) -> None:
    repository = repo(store)
    store.request_replications(repository.id, D1, [EU, AP], T0)
    done, refused = claim(store), claim(store)
    assert done is not None and refused is not None
    store.finish_replication(done, "node-a", "COMPLETE", None, None, T0 + timedelta(seconds=2))
    store.finish_replication(refused, "node-a", "FAILED", "AccessDenied", "no registry policy", T0)
    records = {(r.destination_account, r.destination_region): r for r in store.get_replications(repository.id, D1)}
    assert records[EU].status == "COMPLETE" and records[EU].completed_at == T0 + timedelta(seconds=2)
    assert (records[AP].status, records[AP].failure_code, records[AP].failure_reason) == (
        "FAILED",
        "AccessDenied",
        "no registry policy",
    )
    assert claim(store) is None  # finished tasks are not claimed again


def test_pending_puts_a_task_back_in_the_queue(store: SqlMetadataStore) -> None:
    repository = repo(store)
    store.request_replications(repository.id, D1, [EU], T0)
    task = claim(store)
    assert task is not None
    store.finish_replication(task, "node-a", "PENDING", None, None, T0)
    again = claim(store, "node-b")
    assert again is not None and again.id == task.id and again.attempts == 2


def test_an_expired_claim_is_taken_over_and_the_old_claimant_records_nothing(store: SqlMetadataStore) -> None:
    repository = repo(store)
    store.request_replications(repository.id, D1, [EU], T0)
    task = claim(store, "node-a")
    assert task is not None
    assert claim(store, "node-b", T0 + CLAIM - timedelta(seconds=1)) is None  # still held
    taken = claim(store, "node-b", T0 + CLAIM + timedelta(seconds=1))
    assert taken is not None and taken.id == task.id and taken.attempts == 2
    store.finish_replication(task, "node-a", "FAILED", "Late", "node-a lost its claim", T0)  # ignored
    assert states(store, repository, D1) == {EU: "IN_PROGRESS"}
    store.finish_replication(taken, "node-b", "COMPLETE", None, None, T0)
    assert states(store, repository, D1) == {EU: "COMPLETE"}


def test_a_push_during_a_replication_queues_it_again(store: SqlMetadataStore) -> None:
    repository = repo(store)
    store.request_replications(repository.id, D1, [EU], T0)
    task = claim(store)
    assert task is not None
    store.request_replications(repository.id, D1, [EU], T0 + timedelta(seconds=5))  # pushed again (a new tag)
    assert states(store, repository, D1) == {EU: "IN_PROGRESS"}
    assert claim(store, "node-b") is None  # still only the first worker's
    store.finish_replication(task, "node-a", "COMPLETE", None, None, T0)
    assert states(store, repository, D1) == {EU: "PENDING"}  # the newer request is not lost
    again = claim(store, "node-b", T0 + timedelta(seconds=6))
    assert again is not None and again.generation == task.generation + 1
    store.finish_replication(again, "node-b", "COMPLETE", None, None, T0)
    assert states(store, repository, D1) == {EU: "COMPLETE"}


def test_a_finished_replication_requested_again_is_queued_and_its_failure_cleared(store: SqlMetadataStore) -> None:
    repository = repo(store)
    store.request_replications(repository.id, D1, [EU], T0)
    task = claim(store)
    assert task is not None
    store.finish_replication(task, "node-a", "FAILED", "AccessDenied", "no policy", T0)
    store.request_replications(repository.id, D1, [EU], T0 + timedelta(minutes=1))
    (record,) = store.get_replications(repository.id, D1)
    assert (record.status, record.failure_code, record.failure_reason, record.completed_at) == (
        "PENDING",
        None,
        None,
        None,
    )
    assert record.requested_at == T0 + timedelta(minutes=1)


def test_tasks_go_with_their_repository(store: SqlMetadataStore) -> None:
    repository = repo(store)
    store.request_replications(repository.id, D1, [EU], T0)
    store.delete_repository(repository.id)
    assert claim(store) is None


def test_concurrent_claimants_take_each_task_exactly_once(url: str) -> None:
    """Four claimants over two engines (two nodes): every task is replicated once, none twice."""
    engines = [make_engine(url), make_engine(url)]
    stores = [SqlMetadataStore(engine) for engine in engines]
    repository = repo(stores[0])
    digests = [Digest.of(f"concurrent-{n}".encode()) for n in range(30)]
    for digest in digests:
        stores[0].request_replications(repository.id, digest, [EU, AP], T0)
    taken: Counter[int] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(node: SqlMetadataStore, owner: str) -> None:
        try:
            while (task := node.claim_replication(owner, T0 + CLAIM, T0)) is not None:
                with lock:
                    taken[task.id] += 1
                node.finish_replication(task, owner, "COMPLETE", None, None, T0)
        except BaseException as error:  # surfaced below; a thread's exception is otherwise lost
            errors.append(error)

    threads = [threading.Thread(target=work, args=(stores[n % 2], f"node-{n}")) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for engine in engines:
        engine.dispose()
    assert not errors
    assert len(taken) == len(digests) * 2
    assert set(taken.values()) == {1}
    reader = SqlMetadataStore(make_engine(url))
    assert {s for d in digests for s in states(reader, repository, d).values()} == {"COMPLETE"}
    reader.engine.dispose()
