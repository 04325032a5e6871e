"""The Replicator over a real metadata store and blob store: what a push queues, and what replicating does
(destination repositories, content, tags, permissions, failures, retries, two workers on one database)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from dockyard.config import Settings
from dockyard.domain.clock import utc_now
from dockyard.domain.names import Digest, RepositoryRef
from dockyard.domain.ports import ReplicationTask, Repository, RepositorySettings
from dockyard.domain.registries import REPLICATION, Registries
from dockyard.domain.replication import MAX_ATTEMPTS, REPLICATION_CLAIM, Replicator
from dockyard.domain.repositories import REPOSITORY_POLICY
from dockyard.server import Services
from tests.support.seeding import Seeder
from tests.support.server import ACCOUNT_ID

OTHER = "210987654321"
SOURCE_REGION = "us-east-1"
EU = "eu-west-1"


@pytest.fixture
def seeder(tmp_path: Path) -> Iterator[Seeder]:
    with Seeder(tmp_path / "data") as seeder:
        seeder.metadata.ensure_account(OTHER, utc_now())
        yield seeder


@pytest.fixture
def replicator(seeder: Seeder) -> Replicator:
    return Replicator(seeder.registry, seeder.services.authorizer, owner="node-a")


def configure(
    seeder: Seeder, *rules: dict[str, object], account: str = ACCOUNT_ID, region: str = SOURCE_REGION
) -> None:
    Registries(seeder.metadata).set_configuration(account, region, REPLICATION, {"rules": list(rules)})


def to(region: str, account: str = ACCOUNT_ID) -> dict[str, str]:
    return {"region": region, "registryId": account}


def drain(replicator: Replicator) -> int:
    done = 0
    while replicator.work_once():
        done += 1
    return done


def create(
    seeder: Seeder, name: str, settings: RepositorySettings | None = None, region: str = SOURCE_REGION
) -> RepositoryRef:
    ref = RepositoryRef(ACCOUNT_ID, region, name)
    seeder.registry.repositories.create(ref, settings or RepositorySettings())
    return ref


def push(seeder: Seeder, ref: RepositoryRef, label: str, *tags: str) -> Digest:
    return Digest.parse(seeder.put_image(ref, label, list(tags), seeder.clock()))


def statuses(seeder: Seeder, ref: RepositoryRef, digest: Digest) -> dict[tuple[str, str], tuple[str, str | None]]:
    repository = seeder.registry.repository(ref)
    return {
        (r.destination_account, r.destination_region): (r.status, r.failure_code)
        for r in seeder.metadata.get_replications(repository.id, digest)
    }


def tags_in(seeder: Seeder, ref: RepositoryRef, digest: Digest) -> list[str]:
    return sorted(seeder.metadata.tags_of(seeder.registry.repository(ref).id, digest))


def registry_policy(actions: list[str], source: str = ACCOUNT_ID, account: str = OTHER, region: str = EU) -> str:
    statement = {
        "Sid": "ReplicationAccessCrossAccount",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{source}:root"},
        "Action": actions,
        "Resource": f"arn:aws:ecr:{region}:{account}:repository/*",
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


# --------------------------------------------------------------------------------------------- same account


def test_an_image_is_replicated_to_another_region_with_its_tags_and_the_source_settings(
    seeder: Seeder, replicator: Replicator
) -> None:
    configure(seeder, {"destinations": [to(EU)]})
    source = create(seeder, "team/app", RepositorySettings("IMMUTABLE", (), True))
    digest = push(seeder, source, "one", "v1", "latest")
    assert statuses(seeder, source, digest) == {(ACCOUNT_ID, EU): ("PENDING", None)}  # queued by the push

    assert drain(replicator) == 1
    assert statuses(seeder, source, digest) == {(ACCOUNT_ID, EU): ("COMPLETE", None)}
    target = RepositoryRef(ACCOUNT_ID, EU, "team/app")
    destination = seeder.registry.repository(target)
    assert destination.settings == RepositorySettings("IMMUTABLE", (), True)
    assert tags_in(seeder, target, digest) == ["latest", "v1"]
    record = seeder.registry.manifest(target, "v1")
    assert record.digest == digest
    original = seeder.registry.repository(source)
    assert seeder.registry.manifest_content(destination, record) == seeder.registry.manifest_content(
        original, seeder.registry.manifest(source, "v1")
    )
    document = json.loads(seeder.registry.manifest_content(destination, record))
    for blob in [document["config"], *document["layers"]]:
        assert seeder.metadata.linked_blob_size(destination.id, Digest.parse(blob["digest"])) == blob["size"]
    assert drain(replicator) == 0


def test_only_images_pushed_after_the_configuration_are_replicated(seeder: Seeder, replicator: Replicator) -> None:
    source = create(seeder, "team/early")
    early = push(seeder, source, "early", "v1")
    configure(seeder, {"destinations": [to(EU)]})
    assert drain(replicator) == 0
    assert seeder.metadata.get_repository(RepositoryRef(ACCOUNT_ID, EU, "team/early")) is None

    late = push(seeder, source, "late", "v2")
    assert drain(replicator) == 1
    target = RepositoryRef(ACCOUNT_ID, EU, "team/early")
    assert seeder.registry.manifest(target, "v2").digest == late
    assert seeder.metadata.get_manifest(seeder.registry.repository(target).id, early) is None


def test_an_index_is_replicated_with_its_child_manifests(seeder: Seeder, replicator: Replicator) -> None:
    source = create(seeder, "team/multi")
    children = [push(seeder, source, f"arch-{n}") for n in range(2)]
    configure(seeder, {"destinations": [to(EU)]})  # the children were pushed before: only the index is queued
    index = Digest.parse(seeder.put_index(source, [str(c) for c in children], ["multi"], seeder.clock()))
    assert drain(replicator) == 1
    target = RepositoryRef(ACCOUNT_ID, EU, "team/multi")
    assert seeder.registry.manifest(target, "multi").digest == index
    destination = seeder.registry.repository(target)
    assert all(seeder.metadata.get_manifest(destination.id, child) is not None for child in children)


def test_filters_that_do_not_match_replicate_nothing(seeder: Seeder, replicator: Replicator) -> None:
    configure(
        seeder, {"destinations": [to(EU)], "repositoryFilters": [{"filter": "prod", "filterType": "PREFIX_MATCH"}]}
    )
    source = create(seeder, "team/app")
    digest = push(seeder, source, "unmatched", "v1")
    assert statuses(seeder, source, digest) == {}
    assert drain(replicator) == 0
    prod = create(seeder, "prod/app")
    assert statuses(seeder, prod, push(seeder, prod, "matched", "v1")) == {(ACCOUNT_ID, EU): ("PENDING", None)}


def test_replicated_images_are_not_replicated_again(seeder: Seeder, replicator: Replicator) -> None:
    configure(seeder, {"destinations": [to(EU)]})
    configure(seeder, {"destinations": [to(SOURCE_REGION)]}, region=EU)  # and back: no loop
    source = create(seeder, "team/app")
    digest = push(seeder, source, "once", "v1")
    assert drain(replicator) == 1
    assert statuses(seeder, RepositoryRef(ACCOUNT_ID, EU, "team/app"), digest) == {}


def test_a_replication_template_of_the_destination_registry_sets_up_the_repository(
    seeder: Seeder, replicator: Replicator
) -> None:
    templates = seeder.registry.repositories.templates
    policy = json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "ecr:BatchGetImage"}]}
    )
    templates.create(
        ACCOUNT_ID,
        EU,
        "team",
        {
            "appliedFor": ["REPLICATION"],
            "imageTagMutability": "MUTABLE_WITH_EXCLUSION",
            "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "release-*"}],
            "resourceTags": [{"Key": "origin", "Value": "replication"}],
            "repositoryPolicy": policy,
        },
    )
    templates.create(ACCOUNT_ID, EU, "ops", {"appliedFor": ["CREATE_ON_PUSH"], "imageTagMutability": "IMMUTABLE"})
    configure(seeder, {"destinations": [to(EU)]})
    push(seeder, create(seeder, "team/app", RepositorySettings(scan_on_push=True)), "templated", "v1")
    push(seeder, create(seeder, "ops/app", RepositorySettings(scan_on_push=True)), "copied", "v1")
    assert drain(replicator) == 2

    templated = seeder.registry.repository(RepositoryRef(ACCOUNT_ID, EU, "team/app"))
    assert templated.settings == RepositorySettings("MUTABLE_WITH_EXCLUSION", ("release-*",), False)
    assert seeder.metadata.get_resource_tags(templated.id) == {"origin": "replication"}
    document = seeder.metadata.get_repository_document(templated.id, REPOSITORY_POLICY)
    assert document is not None and document.text == policy
    copied = seeder.registry.repository(RepositoryRef(ACCOUNT_ID, EU, "ops/app"))
    assert copied.settings == RepositorySettings(scan_on_push=True)  # a CREATE_ON_PUSH template does not apply


# --------------------------------------------------------------------------------------------- cross account


def test_cross_account_without_a_registry_policy_fails(seeder: Seeder, replicator: Replicator) -> None:
    configure(seeder, {"destinations": [to(EU, OTHER)]})
    source = create(seeder, "team/app")
    digest = push(seeder, source, "refused", "v1")
    assert drain(replicator) == 1
    assert statuses(seeder, source, digest) == {(OTHER, EU): ("FAILED", "AccessDenied")}
    (record,) = seeder.metadata.get_replications(seeder.registry.repository(source).id, digest)
    assert record.failure_reason is not None and "no registry policy" in record.failure_reason
    assert seeder.metadata.get_repository(RepositoryRef(OTHER, EU, "team/app")) is None


def test_cross_account_with_a_registry_policy_replicates(seeder: Seeder, replicator: Replicator) -> None:
    Registries(seeder.metadata).set_policy(OTHER, EU, registry_policy(["ecr:CreateRepository", "ecr:ReplicateImage"]))
    configure(seeder, {"destinations": [to(EU, OTHER)]})
    source = create(seeder, "team/app")
    digest = push(seeder, source, "allowed", "v1")
    assert drain(replicator) == 1
    assert statuses(seeder, source, digest) == {(OTHER, EU): ("COMPLETE", None)}
    assert seeder.registry.manifest(RepositoryRef(OTHER, EU, "team/app"), "v1").digest == digest


def test_creating_the_destination_needs_ecr_create_repository_too(seeder: Seeder, replicator: Replicator) -> None:
    Registries(seeder.metadata).set_policy(OTHER, EU, registry_policy(["ecr:ReplicateImage"]))
    configure(seeder, {"destinations": [to(EU, OTHER)]})
    source = create(seeder, "team/app")
    first = push(seeder, source, "first", "v1")
    assert drain(replicator) == 1
    (record,) = seeder.metadata.get_replications(seeder.registry.repository(source).id, first)
    assert record.status == "FAILED" and "ecr:CreateRepository" in (record.failure_reason or "")

    seeder.registry.repositories.create(RepositoryRef(OTHER, EU, "team/app"), RepositorySettings())
    second = push(seeder, source, "second", "v2")
    assert drain(replicator) == 1
    assert statuses(seeder, source, second) == {(OTHER, EU): ("COMPLETE", None)}


def test_a_registry_policy_for_another_account_does_not_allow(seeder: Seeder, replicator: Replicator) -> None:
    Registries(seeder.metadata).set_policy(
        OTHER, EU, registry_policy(["ecr:CreateRepository", "ecr:ReplicateImage"], source="999999999999")
    )
    configure(seeder, {"destinations": [to(EU, OTHER)]})
    source = create(seeder, "team/app")
    digest = push(seeder, source, "stranger", "v1")
    assert drain(replicator) == 1
    assert statuses(seeder, source, digest) == {(OTHER, EU): ("FAILED", "AccessDenied")}


# --------------------------------------------------------------------------------------------- failures, retries


def test_an_image_deleted_before_its_replication_fails_it(seeder: Seeder, replicator: Replicator) -> None:
    configure(seeder, {"destinations": [to(EU)]})
    source = create(seeder, "team/app")
    digest = push(seeder, source, "gone", "v1")
    seeder.registry.delete_manifest(source, str(digest))
    assert drain(replicator) == 1
    assert statuses(seeder, source, digest) == {(ACCOUNT_ID, EU): ("FAILED", "ImageNotFound")}


def test_an_immutable_destination_tag_fails_the_replication_but_a_repeat_is_harmless(
    seeder: Seeder, replicator: Replicator
) -> None:
    configure(seeder, {"destinations": [to(EU)]})
    create(seeder, "team/app", RepositorySettings("IMMUTABLE"), region=EU)
    source = create(seeder, "team/app")
    first = push(seeder, source, "first", "v1")
    assert drain(replicator) == 1
    assert statuses(seeder, source, first) == {(ACCOUNT_ID, EU): ("COMPLETE", None)}
    seeder.registry.repositories.set_tag_mutability(source, "MUTABLE", [])
    seeder.metadata.request_replications(seeder.registry.repository(source).id, first, [(ACCOUNT_ID, EU)], utc_now())
    assert drain(replicator) == 1  # the same image again: nothing to change, even in an immutable repository
    assert statuses(seeder, source, first) == {(ACCOUNT_ID, EU): ("COMPLETE", None)}

    moved = push(seeder, source, "second", "v1")  # v1 moves at the source; the destination's v1 is immutable
    assert drain(replicator) == 1
    assert statuses(seeder, source, moved) == {(ACCOUNT_ID, EU): ("FAILED", "ImageTagAlreadyExists")}


def test_an_unexpected_error_is_retried_after_the_claim_expires_then_fails(
    seeder: Seeder, replicator: Replicator, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(seeder, {"destinations": [to(EU)]})
    source = create(seeder, "team/app")
    digest = push(seeder, source, "flaky", "v1")
    calls: list[int] = []

    def broken(task: ReplicationTask) -> Repository:
        calls.append(task.attempts)
        raise RuntimeError("the database went away")

    monkeypatch.setattr(replicator, "replicate", broken)
    assert drain(replicator) == 1
    assert statuses(seeder, source, digest) == {(ACCOUNT_ID, EU): ("IN_PROGRESS", None)}
    for _ in range(MAX_ATTEMPTS):
        seeder.clock.now += REPLICATION_CLAIM + timedelta(seconds=1)
        assert drain(replicator) == 1
    assert calls == list(range(1, MAX_ATTEMPTS + 1))
    assert statuses(seeder, source, digest) == {(ACCOUNT_ID, EU): ("FAILED", "InternalError")}


# --------------------------------------------------------------------------------------------- two nodes


def test_two_workers_on_one_database_replicate_each_task_once(seeder: Seeder, tmp_path: Path) -> None:
    Replicator(seeder.registry, seeder.services.authorizer)  # queues on the seeder's pushes
    configure(seeder, {"destinations": [to(EU), to("ap-south-1")]})
    source = create(seeder, "team/app")
    digests = [push(seeder, source, f"image-{n}", f"v{n}") for n in range(12)]
    nodes = [Services(Settings(tmp_path / "data", ACCOUNT_ID, background_jobs=False)) for _ in range(2)]
    done: Counter[tuple[int, int]] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(node: Services) -> None:
        replicate = node.replicator.replicate

        def counted(task: ReplicationTask) -> Repository:
            with lock:
                done[(task.id, task.generation)] += 1
            return replicate(task)

        node.replicator.replicate = counted  # type: ignore[method-assign]
        try:
            while node.replicator.work_once():
                pass
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for node in nodes:
        node.engine.dispose()
    assert not errors
    assert len(done) == len(digests) * 2 and set(done.values()) == {1}
    for n, digest in enumerate(digests):
        assert set(statuses(seeder, source, digest).values()) == {("COMPLETE", None)}
        for region in (EU, "ap-south-1"):
            assert seeder.registry.manifest(RepositoryRef(ACCOUNT_ID, region, "team/app"), f"v{n}").digest == digest
