"""A daily lifecycle sweep over many repositories with the embedded store (SQLite).

    python benchmarks/lifecycle_sweep.py [--repositories 10000] [--images 100]

Seeds the repositories (each with `--images` tagged images and a two-rule policy) straight into a fresh
metadata store, then times `LifecycleRunner.run_all`, the sweep the scheduler runs: per repository a lease,
the image facts, the pure evaluation, the expiries (5 per repository here) and the run record. Target: 10,000
repositories of 100 images in under a minute.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select

from dockyard.config import Settings
from dockyard.domain.repositories import LIFECYCLE_POLICY
from dockyard.server import prepare
from dockyard.storage.metadata.schema import manifests, repositories, repository_documents, tags

ACCOUNT, REGION = "123456789012", "us-east-1"
POLICY = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "description": "keep the newest 95 release images",
                "selection": {
                    "tagStatus": "tagged",
                    "tagPrefixList": ["v"],
                    "countType": "imageCountMoreThan",
                    "countNumber": 95,
                },
                "action": {"type": "expire"},
            },
            {
                "rulePriority": 2,
                "description": "untagged images older than two weeks",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": 14,
                },
                "action": {"type": "expire"},
            },
        ]
    }
)


def seed(data_dir: Path, repository_count: int, images: int) -> None:
    services = prepare(Settings(data_dir, ACCOUNT, background_jobs=False))
    services.metadata.ensure_account(ACCOUNT, datetime.now(UTC))
    base = datetime.now(UTC) - timedelta(days=60)
    with services.engine.begin() as connection:
        connection.execute(
            insert(repositories),
            [
                {"account_id": ACCOUNT, "region": REGION, "name": f"sweep/repo-{n:05d}", "created_at": base}
                for n in range(repository_count)
            ],
        )
        ids = list(connection.execute(select(repositories.c.id)).scalars())
        for repository_id in ids:
            connection.execute(
                insert(repository_documents),
                [{"repository_id": repository_id, "kind": LIFECYCLE_POLICY, "text": POLICY, "updated_at": base}],
            )
            rows, tag_rows = [], []
            for n in range(images):
                digest = "sha256:" + hashlib.sha256(f"{repository_id}-{n}".encode()).hexdigest()
                pushed = base + timedelta(minutes=n)
                rows.append(
                    {
                        "repository_id": repository_id,
                        "digest": digest,
                        "media_type": "application/vnd.oci.image.manifest.v1+json",
                        "size": 500,
                        "pushed_at": pushed,
                        "image_size": 1000,
                    }
                )
                tag_rows.append(
                    {"repository_id": repository_id, "name": f"v{n}", "digest": digest, "updated_at": pushed}
                )
            connection.execute(insert(manifests), rows)
            connection.execute(insert(tags), tag_rows)
    services.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repositories", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dockyard-sweep-bench-") as work:
        data_dir = Path(work) / "data"
        started = time.perf_counter()
        seed(data_dir, args.repositories, args.images)
        print(
            f"seeded {args.repositories} x {args.images} images in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        services = prepare(Settings(data_dir, ACCOUNT, background_jobs=False))
        started = time.perf_counter()
        results = services.lifecycle.run_all()
        elapsed = time.perf_counter() - started
        expired = sum(len(r.actions) for r in results)
        print(f"| sweep of {len(results)} repositories x {args.images} images | {elapsed:.1f} s | {expired} expired |")


if __name__ == "__main__":
    main()
