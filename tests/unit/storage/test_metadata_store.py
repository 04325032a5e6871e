"""SqlMetadataStore, run against every metadata backend.

To add a backend (PostgreSQL), add one entry to METADATA_BACKENDS: a name and a factory returning a database
URL for a fresh, empty database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from dockyard.domain.names import Digest, RepositoryRef
from dockyard.domain.ports import (
    KeyDomain,
    ManifestRecord,
    ManifestReference,
    Repository,
    RepositorySettings,
    UploadSession,
    VulnerabilityEntry,
)
from dockyard.storage.metadata import SqlMetadataStore, make_engine
from dockyard.storage.migrate import upgrade
from tests.support.databases import postgres_url, sqlite_url

METADATA_BACKENDS: dict[str, Callable[[Path], str]] = {
    "sqlite": sqlite_url,
    "postgresql": postgres_url,
}

ACCOUNT = "123456789012"
REGION = "us-east-1"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
L1, L2, L3 = (Digest.of(f"layer-{n}".encode()) for n in range(1, 4))


@pytest.fixture(params=sorted(METADATA_BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlMetadataStore]:
    engine = make_engine(METADATA_BACKENDS[request.param](tmp_path))
    upgrade(engine)
    store = SqlMetadataStore(engine)
    store.ensure_account(ACCOUNT, T0)
    store.ensure_account("210987654321", T0)
    yield store
    engine.dispose()


def repo(store: SqlMetadataStore, name: str = "team/app", account: str = ACCOUNT, region: str = REGION) -> Repository:
    repository, _ = store.create_repository(RepositoryRef(account, region, name), T0)
    return repository


def record(
    seed: str, subject: Digest | None = None, artifact_type: str | None = None, minute: int = 0
) -> ManifestRecord:
    return ManifestRecord(
        digest=Digest.of(seed.encode()),
        media_type="application/vnd.oci.image.manifest.v1+json",
        size=len(seed),
        artifact_type=artifact_type,
        subject=subject,
        annotations={"seed": seed},
        pushed_at=T0 + timedelta(minutes=minute),
    )


def blob_refs(*digests: Digest) -> list[ManifestReference]:
    return [ManifestReference(d, is_manifest=False) for d in digests]


def link(store: SqlMetadataStore, repository: Repository, *digests: Digest) -> None:
    for digest in digests:
        store.link_blob(repository.id, digest, 5, T0)


def put(store: SqlMetadataStore, repository: Repository, manifest: ManifestRecord, *tags: str) -> None:
    """Put a manifest whose only reference (L1) is linked first."""
    link(store, repository, L1)
    assert store.put_manifest(repository.id, manifest, blob_refs(L1), tags) == []


# ------------------------------------------------------------------------------------------ repositories


def test_create_repository_is_idempotent(store: SqlMetadataStore) -> None:
    ref = RepositoryRef(ACCOUNT, REGION, "team/app")
    first, created = store.create_repository(ref, T0)
    again, created_again = store.create_repository(ref, T0 + timedelta(days=1))
    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert again.created_at == first.created_at == T0
    assert store.get_repository(ref) == first


def test_repositories_are_keyed_by_account_region_and_name(store: SqlMetadataStore) -> None:
    ids = {
        repo(store).id,
        repo(store, account="210987654321").id,
        repo(store, region="eu-west-1").id,
        repo(store, name="team/other").id,
    }
    assert len(ids) == 4
    assert store.get_repository(RepositoryRef(ACCOUNT, "eu-central-1", "team/app")) is None


def test_repository_names_in_byte_order_with_after_and_limit(store: SqlMetadataStore) -> None:
    for name in ["b", "a/b", "a-b", "a", "a_b", "a.b", "ab"]:
        repo(store, name=name)
    repo(store, name="zz", region="eu-west-1")
    everything = store.list_repository_names(ACCOUNT, REGION, None, 100)
    assert everything == sorted(["b", "a/b", "a-b", "a", "a_b", "a.b", "ab"])
    assert store.list_repository_names(ACCOUNT, REGION, None, 2) == everything[:2]
    assert store.list_repository_names(ACCOUNT, REGION, everything[2], 3) == everything[3:6]
    assert store.list_repository_names(ACCOUNT, REGION, "a0", 100) == [n for n in everything if n > "a0"]
    assert store.list_repository_names(ACCOUNT, REGION, everything[-1], 100) == []


# ------------------------------------------------------------------------------------------ blobs, uploads


def test_blob_links_are_per_repository(store: SqlMetadataStore) -> None:
    first, second = repo(store), repo(store, name="other")
    store.link_blob(first.id, L1, 42, T0)
    store.link_blob(first.id, L1, 42, T0)  # twice is harmless
    assert store.linked_blob_size(first.id, L1) == 42
    assert store.linked_blob_size(second.id, L1) is None
    assert store.unlink_blob(first.id, L1) is True
    assert store.unlink_blob(first.id, L1) is False
    assert store.linked_blob_size(first.id, L1) is None


def test_repositories_linking_a_blob_are_those_of_one_registry_by_name(store: SqlMetadataStore) -> None:
    holders = [repo(store, name) for name in ("b/holder", "a/holder", "c/holder")]
    elsewhere = [repo(store, "a/other-region", region="eu-west-1"), repo(store, "a/other-account", "210987654321")]
    for repository in [*holders, *elsewhere]:
        store.link_blob(repository.id, L1, 42, T0)
    store.link_blob(repo(store, "a/without").id, L2, 42, T0)
    names = [r.ref.name for r in store.repositories_linking_blob(ACCOUNT, REGION, L1, 10)]
    assert names == ["a/holder", "b/holder", "c/holder"]
    assert [r.ref.name for r in store.repositories_linking_blob(ACCOUNT, REGION, L1, 2)] == ["a/holder", "b/holder"]
    store.unlink_blob(holders[0].id, L1)  # b/holder
    assert [r.ref.name for r in store.repositories_linking_blob(ACCOUNT, REGION, L1, 10)] == ["a/holder", "c/holder"]
    assert store.repositories_linking_blob(ACCOUNT, REGION, L3, 10) == []


def test_upload_sessions(store: SqlMetadataStore) -> None:
    session = UploadSession("0f7b2f0e-2a5f-4c39-9c52-3d0c1a0d8a11", repo(store).id, T0)
    store.create_upload(session)
    assert store.get_upload(session.id) == session
    store.delete_upload(session.id)
    assert store.get_upload(session.id) is None


# ------------------------------------------------------------------------------------------ manifests


def test_manifest_round_trips(store: SqlMetadataStore) -> None:
    repository = repo(store)
    manifest = record("m", subject=L3, artifact_type="application/x.sig")
    put(store, repository, manifest, "v1")
    assert store.get_manifest(repository.id, manifest.digest) == manifest
    assert store.resolve_tag(repository.id, "v1") == manifest
    assert store.get_manifest(repository.id, manifest.digest).pushed_at.tzinfo is not None  # type: ignore[union-attr]


def test_put_manifest_returns_missing_references_and_writes_nothing(store: SqlMetadataStore) -> None:
    repository = repo(store)
    link(store, repository, L2)
    child = ManifestReference(Digest.of(b"child"), is_manifest=True)
    manifest = record("m")
    missing = store.put_manifest(repository.id, manifest, [*blob_refs(L3, L2, L1), child], ["v1"])
    assert missing == sorted([L1, L3, child.digest])
    assert store.get_manifest(repository.id, manifest.digest) is None
    assert store.resolve_tag(repository.id, "v1") is None
    assert store.list_tags(repository.id, None, 10) == []


def test_references_are_checked_in_the_same_repository(store: SqlMetadataStore) -> None:
    repository, other = repo(store), repo(store, name="other")
    link(store, other, L1)
    assert store.put_manifest(repository.id, record("m"), blob_refs(L1), []) == [L1]


def test_child_manifest_must_be_a_manifest_not_a_blob(store: SqlMetadataStore) -> None:
    repository = repo(store)
    child = record("child")
    link(store, repository, child.digest)  # same digest linked as a blob only
    as_child = [ManifestReference(child.digest, is_manifest=True)]
    assert store.put_manifest(repository.id, record("index"), as_child, []) == [child.digest]
    put(store, repository, child)
    assert store.put_manifest(repository.id, record("index"), as_child, []) == []


def test_blob_reference_is_not_satisfied_by_a_manifest(store: SqlMetadataStore) -> None:
    repository = repo(store)
    manifest = record("m")
    put(store, repository, manifest)
    assert store.put_manifest(repository.id, record("n"), blob_refs(manifest.digest), []) == [manifest.digest]


def test_duplicate_references_are_accepted(store: SqlMetadataStore) -> None:
    repository = repo(store)
    link(store, repository, L1)
    assert store.put_manifest(repository.id, record("m"), blob_refs(L1, L1), ["v1"]) == []


def test_put_identical_manifest_twice(store: SqlMetadataStore) -> None:
    repository = repo(store)
    put(store, repository, record("m"), "v1")
    put(store, repository, record("m"), "v1", "v2")
    assert store.list_tags(repository.id, None, 10) == ["v1", "v2"]


def test_tags_last_writer_wins(store: SqlMetadataStore) -> None:
    repository = repo(store)
    first, second = record("first"), record("second", minute=1)
    put(store, repository, first, "latest", "v1")
    put(store, repository, second, "latest")
    assert store.resolve_tag(repository.id, "latest") == second
    assert store.resolve_tag(repository.id, "v1") == first
    assert store.list_tags(repository.id, None, 10) == ["latest", "v1"]


def test_tags_are_per_repository(store: SqlMetadataStore) -> None:
    repository, other = repo(store), repo(store, name="other")
    put(store, repository, record("m"), "v1")
    assert store.resolve_tag(other.id, "v1") is None


def test_delete_tag_keeps_the_manifest(store: SqlMetadataStore) -> None:
    repository = repo(store)
    manifest = record("m")
    put(store, repository, manifest, "v1")
    assert store.delete_tag(repository.id, "v1") is True
    assert store.delete_tag(repository.id, "v1") is False
    assert store.resolve_tag(repository.id, "v1") is None
    assert store.get_manifest(repository.id, manifest.digest) == manifest


def test_delete_manifest_removes_its_tags(store: SqlMetadataStore) -> None:
    repository = repo(store)
    doomed, kept = record("doomed"), record("kept")
    put(store, repository, doomed, "a", "b")
    put(store, repository, kept, "c")
    assert store.delete_manifest(repository.id, doomed.digest) is True
    assert store.get_manifest(repository.id, doomed.digest) is None
    assert store.list_tags(repository.id, None, 10) == ["c"]
    assert store.delete_manifest(repository.id, doomed.digest) is False


def test_manifest_parents(store: SqlMetadataStore) -> None:
    repository = repo(store)
    child, index = record("child"), record("index")
    put(store, repository, child)
    store.put_manifest(repository.id, index, [ManifestReference(child.digest, is_manifest=True)], [])
    assert store.manifest_parents(repository.id, child.digest) == [index.digest]
    assert store.manifest_parents(repository.id, L1) == []  # a blob edge is not a parent
    store.delete_manifest(repository.id, index.digest)
    assert store.manifest_parents(repository.id, child.digest) == []


def test_tags_in_byte_order_with_after_and_limit(store: SqlMetadataStore) -> None:
    repository = repo(store)
    names = ["b", "B", "a", "A1", "_x", "a.b", "a-b", "a_b", "10", "9"]
    put(store, repository, record("m"), *names)
    expected = sorted(names)
    assert store.list_tags(repository.id, None, 100) == expected
    assert store.list_tags(repository.id, None, 3) == expected[:3]
    assert store.list_tags(repository.id, expected[2], 3) == expected[3:6]
    assert store.list_tags(repository.id, "Z", 100) == [n for n in expected if n > "Z"]
    assert store.list_tags(repository.id, expected[-1], 100) == []


# ------------------------------------------------------------------------------------------ referrers


def test_referrers_filter_by_subject_and_artifact_type(store: SqlMetadataStore) -> None:
    repository, other = repo(store), repo(store, name="other")
    subject = record("subject")
    signature = record("sig", subject=subject.digest, artifact_type="application/x.sig", minute=1)
    sbom = record("sbom", subject=subject.digest, artifact_type="application/x.sbom", minute=2)
    unrelated = record("unrelated", subject=L3, artifact_type="application/x.sig", minute=3)
    for manifest in (subject, signature, sbom, unrelated):
        put(store, repository, manifest)
    put(store, other, record("elsewhere", subject=subject.digest, artifact_type="application/x.sig"))
    assert store.list_referrers(repository.id, subject.digest, None) == [signature, sbom]
    assert store.list_referrers(repository.id, subject.digest, "application/x.sig") == [signature]
    assert store.list_referrers(repository.id, subject.digest, "application/x.none") == []
    assert store.list_referrers(repository.id, L2, None) == []


def test_deleted_referrer_is_no_longer_listed(store: SqlMetadataStore) -> None:
    repository = repo(store)
    signature = record("sig", subject=L3)
    put(store, repository, signature)
    store.delete_manifest(repository.id, signature.digest)
    assert store.list_referrers(repository.id, L3, None) == []


# ------------------------------------------------------------------------------------------ key domains


def test_referenced_digests_counts_only_the_key_domains_own_repositories(store: SqlMetadataStore) -> None:
    """A blob linked by an AES256 repository does not keep the copy under a KMS key alive, and vice versa."""
    arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0b0e7a55-1111-4222-8333-944455556666"
    plain = repo(store, "plain/app")
    keyed, _ = store.create_repository(
        RepositoryRef(ACCOUNT, REGION, "keyed/app"), T0, RepositorySettings(encryption_type="KMS", kms_key=arn)
    )
    link(store, plain, L1)
    link(store, keyed, L2)
    manifest = record("kms-manifest")
    link(store, keyed, L1)
    assert store.put_manifest(keyed.id, manifest, blob_refs(L1), ["v1"]) == []
    store.unlink_blob(keyed.id, L1)  # still referenced by the manifest, so still needed in the KMS domain

    wanted = [L1, L2, L3, manifest.digest]
    assert store.referenced_digests(wanted) == {L1, L2, manifest.digest}  # any domain
    assert store.referenced_digests(wanted, domain=KeyDomain()) == {L1}
    assert store.referenced_digests(wanted, domain=KeyDomain(arn)) == {L2, manifest.digest}
    other = KeyDomain(arn.replace("0b0e7a55", "1c1f8b66"))
    assert store.referenced_digests(wanted, domain=other) == set()
    # A dry run (links older than the cutoff that no manifest lists would go) sees the same per domain.
    later = T0 + timedelta(hours=1)
    assert store.referenced_digests(wanted, later, KeyDomain(arn)) == {manifest.digest}
    assert store.referenced_digests(wanted, later, KeyDomain()) == set()


def test_has_vulnerabilities_for_an_ecosystem_and_its_releases(store: SqlMetadataStore) -> None:
    """`Debian` covers `Debian:12`; neither a longer name (`DebianX`) nor a prefix (`Deb`) counts, and the
    comparison is by bytes (`npm` is not `NPM`), on every backend's collation."""
    assert not store.has_vulnerabilities_for("Debian")
    packages = (("Debian:12", "openssl"), ("DebianX", "a"), ("Alpine:v3.20", "musl"), ("npm", "lodash"))
    store.store_vulnerabilities([VulnerabilityEntry("CVE-1", "2024-01-01T00:00:00Z", "{}", packages)])
    assert store.has_vulnerabilities_for("Debian")
    assert store.has_vulnerabilities_for("Alpine")
    assert store.has_vulnerabilities_for("npm")
    assert store.has_vulnerabilities_for("DebianX")
    for absent in ("Deb", "Debian:", "NPM", "Alpine:v3", "Ubuntu", "PyPI"):
        assert not store.has_vulnerabilities_for(absent), absent
    if store.engine.dialect.name == "postgresql":
        # A database created with a linguistic collation (ICU skips punctuation: `Debian:12` sorts after
        # `Debian;`) must give the same answers.
        with store.engine.begin() as connection:
            connection.execute(
                text('ALTER TABLE vulnerability_packages ALTER COLUMN ecosystem TYPE varchar(128) COLLATE "und-x-icu"')
            )
        assert store.has_vulnerabilities_for("Debian")
        assert not store.has_vulnerabilities_for("Debian:")


def test_create_registry_document_inserts_only_when_absent(store: SqlMetadataStore) -> None:
    assert store.create_registry_document(ACCOUNT, REGION, "pull-time-exclusion/a", "first", T0)
    assert not store.create_registry_document(ACCOUNT, REGION, "pull-time-exclusion/a", "second", T0)
    document = store.get_registry_document(ACCOUNT, REGION, "pull-time-exclusion/a")
    assert document is not None and document.text == "first"
    # Keyed by registry: the same kind in another region or account is a document of its own.
    assert store.create_registry_document(ACCOUNT, "eu-west-1", "pull-time-exclusion/a", "other region", T0)
    assert store.create_registry_document("210987654321", REGION, "pull-time-exclusion/a", "other account", T0)
    assert store.delete_registry_document(ACCOUNT, REGION, "pull-time-exclusion/a")
    assert store.create_registry_document(ACCOUNT, REGION, "pull-time-exclusion/a", "again", T0)
