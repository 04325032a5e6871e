"""Replication rules (pure): which destinations an image pushed to a repository goes to, and what
PutReplicationConfiguration refuses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.domain.errors import InvalidParameter
from dockyard.domain.names import RepositoryRef
from dockyard.domain.ports import ReplicationRecord, RepositorySettings
from dockyard.domain.replication import (
    MAX_DESTINATIONS,
    SAME_REGISTRY,
    Destination,
    Rule,
    _settings_for,
    _status,
    check_configuration,
    destinations_for,
    parse_rules,
)

ACCOUNT = "123456789012"
OTHER = "210987654321"
REGION = "us-east-1"
T0 = datetime(2026, 1, 2, tzinfo=UTC)


def destination(region: str, account: str = ACCOUNT) -> dict[str, str]:
    return {"region": region, "registryId": account}


def prefix(value: str) -> dict[str, str]:
    return {"filter": value, "filterType": "PREFIX_MATCH"}


def source(name: str, account: str = ACCOUNT, region: str = REGION) -> RepositoryRef:
    return RepositoryRef(account, region, name)


def where(rules: list[dict[str, Any]], name: str) -> list[tuple[str, str]]:
    found = destinations_for(parse_rules({"rules": rules}), source(name))
    return [(d.account_id, d.region) for d in found]


# --------------------------------------------------------------------------------------------- matching


def test_a_rule_without_filters_replicates_every_repository() -> None:
    rules = [{"destinations": [destination("eu-west-1"), destination("us-west-2", OTHER)]}]
    assert where(rules, "team/app") == [(ACCOUNT, "eu-west-1"), (OTHER, "us-west-2")]
    assert where(rules, "x") == [(ACCOUNT, "eu-west-1"), (OTHER, "us-west-2")]


def test_prefix_filters_match_the_start_of_the_repository_name() -> None:
    rules = [{"destinations": [destination("eu-west-1")], "repositoryFilters": [prefix("prod"), prefix("ops/")]}]
    assert where(rules, "prod") == [(ACCOUNT, "eu-west-1")]
    assert where(rules, "production/api") == [(ACCOUNT, "eu-west-1")]  # a prefix, not a path component
    assert where(rules, "ops/tools") == [(ACCOUNT, "eu-west-1")]
    assert where(rules, "team/prod") == []
    assert where(rules, "ops") == []
    assert where(rules, "pro") == []


def test_every_matching_rule_contributes_in_rule_order_each_destination_once() -> None:
    rules = [
        {"destinations": [destination("eu-west-1")], "repositoryFilters": [prefix("prod")]},
        {"destinations": [destination("ap-south-1"), destination("eu-west-1")]},
        {"destinations": [destination("us-west-2", OTHER)], "repositoryFilters": [prefix("dev")]},
    ]
    assert where(rules, "prod/api") == [(ACCOUNT, "eu-west-1"), (ACCOUNT, "ap-south-1")]
    assert where(rules, "dev/api") == [(ACCOUNT, "ap-south-1"), (ACCOUNT, "eu-west-1"), (OTHER, "us-west-2")]


def test_no_rules_no_destinations() -> None:
    assert where([], "team/app") == []
    assert where([{"destinations": []}], "team/app") == []


def test_the_source_registry_itself_is_never_a_destination() -> None:
    rules = [{"destinations": [destination(REGION), destination(REGION, OTHER)]}]
    assert where(rules, "team/app") == [(OTHER, REGION)]


names = st.from_regex(r"[a-z0-9]{1,6}(?:[._/-][a-z0-9]{1,6}){0,3}", fullmatch=True)


@given(name=names, filters=st.lists(names, min_size=1, max_size=4))
def test_a_filtered_rule_matches_exactly_the_names_a_filter_prefixes(name: str, filters: list[str]) -> None:
    rule = Rule((Destination(ACCOUNT, "eu-west-1"),), tuple(filters))
    assert rule.matches(name) == any(name[: len(f)] == f for f in filters)
    rules = [{"destinations": [destination("eu-west-1")], "repositoryFilters": [prefix(f) for f in filters]}]
    assert where(rules, name) == ([(ACCOUNT, "eu-west-1")] if rule.matches(name) else [])


@given(name=names, filter_=names)
def test_a_name_always_matches_its_own_prefixes(name: str, filter_: str) -> None:
    for end in range(1, len(name) + 1):
        assert Rule((), (name[:end],)).matches(name)
    assert Rule((), (filter_,)).matches(filter_ + name)


# --------------------------------------------------------------------------------------------- validation


def test_a_destination_equal_to_the_source_registry_is_refused_with_ecrs_message() -> None:
    configuration = {"rules": [{"destinations": [destination("eu-west-1"), destination(REGION)]}]}
    with pytest.raises(InvalidParameter) as raised:
        check_configuration(configuration, ACCOUNT, REGION)
    assert raised.value.message == SAME_REGISTRY
    check_configuration(configuration, OTHER, REGION)  # for another account the same document is fine
    check_configuration(configuration, ACCOUNT, "ap-south-1")


def test_at_most_25_unique_destinations_across_all_rules() -> None:
    regions = [f"xx-test-{n}" for n in range(MAX_DESTINATIONS)]
    half = len(regions) // 2
    configuration = {
        "rules": [
            {"destinations": [destination(r) for r in regions[:half]]},
            {"destinations": [destination(r) for r in regions], "repositoryFilters": [prefix("a")]},  # repeats
        ]
    }
    check_configuration(configuration, ACCOUNT, REGION)
    configuration["rules"].append({"destinations": [destination("yy-test-1", OTHER)]})
    with pytest.raises(InvalidParameter, match="at most 25 unique destinations"):
        check_configuration(configuration, ACCOUNT, REGION)


def test_public_registries_are_not_destinations() -> None:
    configuration = {"rules": [{"destinations": [destination("public")]}]}
    with pytest.raises(InvalidParameter, match="not a region"):
        check_configuration(configuration, ACCOUNT, REGION)
    assert where(configuration["rules"], "team/app") == []


def test_an_empty_configuration_is_valid() -> None:
    check_configuration({"rules": []}, ACCOUNT, REGION)


# --------------------------------------------------------------------------------------------- details


def test_repositories_created_by_replication_keep_the_source_settings_but_not_a_foreign_kms_key() -> None:
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    settings = RepositorySettings("IMMUTABLE", (), True, "KMS", key)
    assert _settings_for(settings, RepositoryRef(ACCOUNT, "eu-west-1", "a")) == RepositorySettings(
        "IMMUTABLE", (), True, "KMS", None
    )
    assert _settings_for(settings, RepositoryRef(OTHER, REGION, "a")).kms_key is None
    assert _settings_for(settings, RepositoryRef(ACCOUNT, REGION, "a")) == settings
    plain = RepositorySettings("MUTABLE_WITH_EXCLUSION", ("dev-*",), False)
    assert _settings_for(plain, RepositoryRef(ACCOUNT, "eu-west-1", "a")) == plain


@pytest.mark.parametrize(
    ("stored", "shown", "failure"),
    [
        ("PENDING", "IN_PROGRESS", None),
        ("IN_PROGRESS", "IN_PROGRESS", None),
        ("COMPLETE", "COMPLETE", None),
        ("FAILED", "FAILED", "AccessDenied: no registry policy"),
    ],
)
def test_statuses_as_describe_image_replication_status_shows_them(stored: str, shown: str, failure: str | None) -> None:
    code, reason = ("AccessDenied", "no registry policy") if stored == "FAILED" else (None, None)
    status = _status(ReplicationRecord(OTHER, "eu-west-1", stored, code, reason, T0, None))
    assert (status.region, status.registry_id, status.status, status.failure_code) == (
        "eu-west-1",
        OTHER,
        shown,
        failure,
    )
