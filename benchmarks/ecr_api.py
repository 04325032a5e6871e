"""ECR API latency over a large repository: DescribeImages and ListImages pages, BatchCheckLayerAvailability.

    python benchmarks/ecr_api.py [--images 100000] [--repeat 30]

Seeds one repository with N image manifests straight into a fresh SQLite metadata store (pushing 100,000
images over HTTP would take most of an hour and measures something else), starts `dockyard serve` on it, and
times each call with boto3 against the running server: median and p95 of `--repeat` calls, in milliseconds.
Targets: DescribeImages of one page and ListImages under 50 ms; BatchCheckLayerAvailability of 100 digests
under 20 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
from sqlalchemy import insert

from dockyard.config import Settings
from dockyard.domain.clock import utc_now
from dockyard.domain.iam import bootstrap_root_credentials
from dockyard.domain.names import RepositoryRef
from dockyard.domain.ports import RepositorySettings
from dockyard.server import prepare
from dockyard.storage.metadata.schema import blobs, manifests, repository_blobs, tags

ACCOUNT, REGION, REPOSITORY = "123456789012", "us-east-1", "bench/images"
KEY_ID, SECRET = "AKIABENCHECRAPI00001", "benchmark-secret-0000000000000000000000"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def seed(data_dir: Path, images: int) -> list[str]:
    """N manifests (a third of them tagged) and 100 linked layers; returns the layer digests."""
    services = prepare(Settings(data_dir, ACCOUNT))
    bootstrap_root_credentials(services.metadata, services.box, ACCOUNT, utc_now(), (KEY_ID, SECRET))
    repository = services.repositories.create(RepositoryRef(ACCOUNT, REGION, REPOSITORY), RepositorySettings())
    now = datetime.now(UTC)
    layers = [digest_of(f"layer-{n}") for n in range(100)]
    manifest_rows, tag_rows = [], []
    for n in range(images):
        digest = digest_of(f"manifest-{n}")
        manifest_rows.append(
            {
                "repository_id": repository.id,
                "digest": digest,
                "media_type": OCI_MANIFEST,
                "size": 500,
                "artifact_type": "application/vnd.oci.image.config.v1+json",
                "subject_digest": None,
                "annotations": None,
                "pushed_at": now,
                "image_size": 1000 + n,
                "config_media_type": "application/vnd.oci.image.config.v1+json",
            }
        )
        if n % 3 == 0:
            tag_rows.append({"repository_id": repository.id, "name": f"v{n}", "digest": digest, "updated_at": now})
    with services.engine.begin() as connection:
        connection.execute(insert(blobs), [{"digest": d, "size": 1024, "created_at": now} for d in layers])
        links = [{"repository_id": repository.id, "digest": d, "linked_at": now} for d in layers]
        connection.execute(insert(repository_blobs), links)
        for start in range(0, len(manifest_rows), 20_000):
            connection.execute(insert(manifests), manifest_rows[start : start + 20_000])
        connection.execute(insert(tags), tag_rows)
    services.engine.dispose()
    return layers


def timed(call: Any, repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dockyard-ecr-bench-") as work:
        data_dir = Path(work) / "data"
        started = time.perf_counter()
        layers = seed(data_dir, args.images)
        print(f"seeded {args.images} images in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        port = 5000 + os.getpid() % 1000
        env = {**os.environ, "DOCKYARD_ROOT_ACCESS_KEY_ID": KEY_ID, "DOCKYARD_ROOT_SECRET_ACCESS_KEY": SECRET}
        command = [sys.executable, "-m", "dockyard", "serve", "--port", str(port), "--data-dir", str(data_dir)]
        server = subprocess.Popen([*command, "--default-account", ACCOUNT], env=env, stderr=subprocess.DEVNULL)
        try:
            run(f"http://127.0.0.1:{port}", layers, args.repeat)
        finally:
            server.terminate()
            server.wait(timeout=30)


def run(url: str, layers: list[str], repeat: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)  # polling until the server listens
    ecr = boto3.client(
        "ecr", endpoint_url=url, region_name=REGION, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
    )
    middle = ecr.describe_images(repositoryName=REPOSITORY, maxResults=1000)["nextToken"]
    calls = {
        "DescribeImages, first page (100)": lambda: ecr.describe_images(repositoryName=REPOSITORY),
        "DescribeImages, a later page (100)": lambda: ecr.describe_images(repositoryName=REPOSITORY, nextToken=middle),
        "ListImages, first page (100)": lambda: ecr.list_images(repositoryName=REPOSITORY),
        "ListImages, tagged only (100)": lambda: ecr.list_images(
            repositoryName=REPOSITORY, filter={"tagStatus": "TAGGED"}
        ),
        "BatchCheckLayerAvailability (100 digests)": lambda: ecr.batch_check_layer_availability(
            repositoryName=REPOSITORY, layerDigests=layers
        ),
    }
    print("| call | median ms | p95 ms |\n|---|--:|--:|")
    results = {}
    for name, call in calls.items():
        call()  # warm
        median, p95 = timed(call, repeat)
        results[name] = {"median_ms": median, "p95_ms": p95}
        print(f"| {name} | {median:.1f} | {p95:.1f} |")
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
