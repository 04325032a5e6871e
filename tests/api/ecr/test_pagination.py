"""Pagination at scale: 2,500 repositories and 12,000 images walked with boto3's paginators.

The data directory is seeded in process before the server starts: repositories through the domain layer
(`Repositories.create`), images by bulk rows written through the metadata store's own tables (PutImage over
HTTP would take minutes for 12,000 images). Then a real `dockyard serve` answers every page.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from sqlalchemy import insert

from dockyard.config import Settings
from dockyard.domain.clock import utc_now
from dockyard.domain.iam import bootstrap_root_credentials
from dockyard.domain.manifests import parse_manifest
from dockyard.domain.names import Digest, RepositoryRef
from dockyard.domain.ports import RepositorySettings
from dockyard.server import prepare
from dockyard.storage.metadata.schema import manifest_references, manifests, tags
from tests.api.ecr.helpers import REGION, ecr_client
from tests.support.images import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, sha256
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess

REPOSITORIES = 2_500
IMAGES = 12_000
IMAGE_REPOSITORY = "bulk/images"
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER = b"the one shared layer"

Pair = tuple[str, str | None]


@dataclass(frozen=True)
class Seeded:
    server: ServerProcess
    repositories: frozenset[str]
    images: dict[str, tuple[str, ...]]  # digest -> tags

    @property
    def pairs(self) -> Counter[Pair]:
        """What ListImages must list: one entry per (digest, tag), one digest-only entry per untagged image."""
        counts: Counter[Pair] = Counter()
        for digest, names in self.images.items():
            counts.update([(digest, name) for name in names] or [(digest, None)])
        return counts


def tag_counts(count: int) -> list[int]:
    """Tags per image in digest order. The first stretch makes page 1 (100 ids) end exactly on the last tag of a
    two-tag image, followed by 100+ single-tag images; after that a mix of 0-4 tags splits images across pages."""
    head = [1] * 98 + [2] + [1] * 300
    mix = [0, 1, 3, 1, 2, 0, 4, 1, 2, 1, 3]
    return (head + [mix[n % len(mix)] for n in range(count)])[:count]


def seed(data_dir: Path) -> tuple[frozenset[str], dict[str, tuple[str, ...]]]:
    services = prepare(Settings(data_dir, ACCOUNT_ID))
    now = utc_now()
    bootstrap_root_credentials(services.metadata, services.box, ACCOUNT_ID, now, (ACCESS_KEY_ID, SECRET_ACCESS_KEY))
    names = {f"bulk/repo-{n:05d}" for n in range(REPOSITORIES - 1)} | {IMAGE_REPOSITORY}
    for name in sorted(names):
        services.repositories.create(RepositoryRef(ACCOUNT_ID, REGION, name), RepositorySettings())

    ref = RepositoryRef(ACCOUNT_ID, REGION, IMAGE_REPOSITORY)
    repository = services.registry.repository(ref)
    for blob in (CONFIG, LAYER):  # the shared config and layer go through the real upload path
        upload_id = services.registry.start_upload(ref)
        appender = services.registry.begin_append(ref, upload_id, 0)
        appender.write(blob)
        appender.finish()
        services.registry.complete_upload(ref, upload_id, Digest.parse(sha256(blob)))

    parsed = []
    for n in range(IMAGES):
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(CONFIG), "size": len(CONFIG)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(LAYER), "size": len(LAYER)}],
            "annotations": {"n": str(n)},
        }
        raw = json.dumps(document).encode()
        parsed.append((parse_manifest(raw, None), raw))
    parsed.sort(key=lambda item: str(item[0].digest))

    images: dict[str, tuple[str, ...]] = {}
    manifest_rows, reference_rows, tag_rows = [], [], []
    pushed_at = datetime.now(UTC)
    for position, ((manifest, raw), count) in enumerate(zip(parsed, tag_counts(IMAGES), strict=True)):
        digest = str(manifest.digest)
        services.blobs.default.put_blob(manifest.digest, raw)
        names_of = tuple(f"p{position}-t{k}" for k in range(count))
        images[digest] = names_of
        manifest_rows.append(
            {
                "repository_id": repository.id,
                "digest": digest,
                "media_type": manifest.media_type,
                "size": manifest.size,
                "artifact_type": manifest.artifact_type,
                "subject_digest": None,
                "annotations": json.dumps(manifest.annotations),
                "pushed_at": pushed_at,
                "image_size": len(LAYER),
                "config_media_type": manifest.config_media_type,
                "last_pulled_at": None,
            }
        )
        reference_rows.extend(
            {
                "repository_id": repository.id,
                "parent_digest": digest,
                "child_digest": sha256(blob),
                "is_manifest": False,
            }
            for blob in (CONFIG, LAYER)
        )
        tag_rows.extend(
            {"repository_id": repository.id, "name": name, "digest": digest, "updated_at": pushed_at}
            for name in names_of
        )
    with services.engine.begin() as connection:
        connection.execute(insert(manifests), manifest_rows)
        connection.execute(insert(manifest_references), reference_rows)
        connection.execute(insert(tags), tag_rows)
    services.engine.dispose()
    return frozenset(names), images


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    data_dir = tmp_path_factory.mktemp("pagination") / "data"
    # Seeding writes 12,000 manifest files; their durability is not under test, so skip the per-file fsync.
    with mock.patch.object(os, "fsync", lambda descriptor: None):
        repositories, images = seed(data_dir)
    server = ServerProcess(data_dir).start()
    try:
        yield Seeded(server, repositories, images)
    finally:
        server.stop()


def walk(paginator: Any, key: str, item: Any, **params: Any) -> tuple[list[Any], list[int]]:
    seen: list[Any] = []
    sizes: list[int] = []
    for page in paginator.paginate(**params):
        sizes.append(len(page[key]))
        seen.extend(item(entry) for entry in page[key])
    return seen, sizes


@pytest.mark.parametrize("page_size", [None, 1000, 77])
def test_describe_repositories_walk(seeded: Seeded, page_size: int | None) -> None:
    ecr = ecr_client(seeded.server)
    config = {"PageSize": page_size} if page_size else {}
    seen, sizes = walk(
        ecr.get_paginator("describe_repositories"),
        "repositories",
        lambda r: r["repositoryName"],
        PaginationConfig=config,
    )
    duplicates = [name for name, count in Counter(seen).items() if count > 1]
    assert not duplicates, duplicates[:5]
    assert set(seen) == seeded.repositories
    limit = page_size or 100
    assert all(size == limit for size in sizes[:-1]) and 0 < sizes[-1] <= limit
    assert len(sizes) == -(-REPOSITORIES // limit)


@pytest.mark.parametrize("page_size", [None, 1000])
def test_describe_images_walk(seeded: Seeded, page_size: int | None) -> None:
    ecr = ecr_client(seeded.server)
    config = {"PageSize": page_size} if page_size else {}
    details, sizes = walk(
        ecr.get_paginator("describe_images"),
        "imageDetails",
        lambda d: (d["imageDigest"], tuple(sorted(d.get("imageTags", [])))),
        repositoryName=IMAGE_REPOSITORY,
        PaginationConfig=config,
    )
    digests = Counter(digest for digest, _ in details)
    assert not [d for d, c in digests.items() if c > 1]
    assert dict(details) == {digest: tuple(sorted(names)) for digest, names in seeded.images.items()}
    limit = page_size or 100
    assert all(size == limit for size in sizes[:-1])


@pytest.mark.parametrize("page_size", [None, 1000, 333])
def test_list_images_walk(seeded: Seeded, page_size: int | None) -> None:
    ecr = ecr_client(seeded.server)
    config = {"PageSize": page_size} if page_size else {}
    pairs, sizes = walk(
        ecr.get_paginator("list_images"),
        "imageIds",
        lambda i: (i["imageDigest"], i.get("imageTag")),
        repositoryName=IMAGE_REPOSITORY,
        PaginationConfig=config,
    )
    seen = Counter(pairs)
    assert not [p for p, c in seen.items() if c > 1], "a (digest, tag) pair was listed twice"
    missing = seeded.pairs - seen
    assert not missing, f"{sum(missing.values())} pairs never listed, e.g. {list(missing)[:3]}"
    assert seen == seeded.pairs
    limit = page_size or 100
    assert all(size == limit for size in sizes[:-1])
    split = sum(1 for digest, names in seeded.images.items() if len(names) > 1)
    assert split and len(sizes) > 1  # multi-tag images exist, so some page boundary falls inside one's tags


@pytest.mark.parametrize("status", ["TAGGED", "UNTAGGED"])
def test_filtered_walks(seeded: Seeded, status: str) -> None:
    ecr = ecr_client(seeded.server)
    expected = Counter(
        {pair: count for pair, count in seeded.pairs.items() if (pair[1] is not None) == (status == "TAGGED")}
    )
    pairs, _ = walk(
        ecr.get_paginator("list_images"),
        "imageIds",
        lambda i: (i["imageDigest"], i.get("imageTag")),
        repositoryName=IMAGE_REPOSITORY,
        filter={"tagStatus": status},
        PaginationConfig={"PageSize": 1000},
    )
    assert Counter(pairs) == expected
    details, _ = walk(
        ecr.get_paginator("describe_images"),
        "imageDetails",
        lambda d: d["imageDigest"],
        repositoryName=IMAGE_REPOSITORY,
        filter={"tagStatus": status},
        PaginationConfig={"PageSize": 1000},
    )
    assert Counter(details) == Counter({digest for digest, _ in expected})
