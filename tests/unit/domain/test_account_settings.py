"""AccountSettings over a real (SQLite) metadata store: defaults, validation, and the cached lookups of the
pull path (one store read per registry per TTL, however many pulls)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dockyard.domain.account_settings import AccountSettings
from dockyard.domain.errors import ExclusionAlreadyExists, ExclusionNotFound, InvalidParameter, Validation
from dockyard.storage.metadata import SqlMetadataStore, make_engine
from dockyard.storage.migrate import upgrade
from tests.support.databases import sqlite_url

ACCOUNT, REGION = "123456789012", "us-east-1"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ARN = f"arn:aws:iam::{ACCOUNT}:user/ci"


class CountingStore:
    """The real store, counting the listings AccountSettings makes."""

    def __init__(self, store: SqlMetadataStore) -> None:
        self.store = store
        self.listings = 0

    def list_registry_documents(self, *args: Any) -> list[tuple[str, str]]:
        self.listings += 1
        return self.store.list_registry_documents(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CountingStore]:
    engine = make_engine(sqlite_url(tmp_path))
    upgrade(engine)
    store = SqlMetadataStore(engine)
    store.ensure_account(ACCOUNT, T0)
    yield CountingStore(store)
    engine.dispose()


def settings_of(store: CountingStore) -> AccountSettings:
    return AccountSettings(store, lambda: T0)  # type: ignore[arg-type]  # a DocumentStore by delegation


def test_defaults_and_round_trip(store: CountingStore) -> None:
    settings = settings_of(store)
    assert settings.get(ACCOUNT, REGION, "BASIC_SCAN_TYPE_VERSION") == "AWS_NATIVE"
    assert settings.get(ACCOUNT, REGION, "REGISTRY_POLICY_SCOPE") == "V1"
    assert settings.blob_mounting(ACCOUNT, REGION)
    settings.put(ACCOUNT, REGION, "BLOB_MOUNTING", "DISABLED")
    assert not settings.blob_mounting(ACCOUNT, REGION)  # this process's write is seen at once
    assert not settings_of(store).blob_mounting(ACCOUNT, REGION)  # and by another reader of the store
    assert settings.blob_mounting(ACCOUNT, "eu-west-1")


def test_validation(store: CountingStore) -> None:
    settings = settings_of(store)
    with pytest.raises(Validation):
        settings.get(ACCOUNT, REGION, "NOPE")
    with pytest.raises(InvalidParameter):
        settings.put(ACCOUNT, REGION, "BLOB_MOUNTING", "MAYBE")
    with pytest.raises(InvalidParameter):
        settings.put(ACCOUNT, REGION, "REGISTRY_POLICY_SCOPE", "V2")


def test_the_pull_path_reads_the_store_once_per_ttl(store: CountingStore) -> None:
    settings = settings_of(store)
    settings.register_exclusion(ACCOUNT, REGION, ARN)
    store.listings = 0
    for _ in range(1000):
        assert settings.pull_time_excluded(ACCOUNT, REGION, ARN)
        assert not settings.pull_time_excluded(ACCOUNT, REGION, f"arn:aws:iam::{ACCOUNT}:user/other")
        assert settings.blob_mounting(ACCOUNT, REGION)
    assert store.listings == 2  # one for the exclusions, one for the settings
    assert not settings.pull_time_excluded(ACCOUNT, REGION, None)  # anonymous pulls are always recorded


def test_exclusions_register_once_and_deregister_once(store: CountingStore) -> None:
    settings = settings_of(store)
    assert settings.register_exclusion(ACCOUNT, REGION, ARN).created_at == T0
    with pytest.raises(ExclusionAlreadyExists):
        settings.register_exclusion(ACCOUNT, REGION, ARN)
    assert [e.principal_arn for e in settings.exclusions(ACCOUNT, REGION)] == [ARN]
    assert settings.pull_time_excluded(ACCOUNT, REGION, ARN)
    settings.deregister_exclusion(ACCOUNT, REGION, ARN)
    assert not settings.pull_time_excluded(ACCOUNT, REGION, ARN)  # invalidated at once in this process
    with pytest.raises(ExclusionNotFound):
        settings.deregister_exclusion(ACCOUNT, REGION, ARN)
