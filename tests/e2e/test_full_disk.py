"""A full disk under a running `dockyard serve` (issue 12, reliability 7): reads keep working, writes answer the
named storage error (507 INSUFFICIENT_STORAGE on /v2, ServerException "no space left…" on the ECR API) and
never 500/503, the audit lines and usage counts of the calls made while full reach the disk once space
returns, an abandoned upload's file is reclaimed by `dockyard gc`, and pushes work again.

The data directory is a real 64 MiB tmpfs mounted for the test (we run as root), filled by a filler file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from dockyard.domain.clock import utc_now
from tests.api.ecr.helpers import ecr_client
from tests.support.cli import dockyard_ok
from tests.support.disks import small_tmpfs
from tests.support.images import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, sha256
from tests.support.registry_http import manifest_of, push_blob
from tests.support.server import ServerProcess
from tests.support.uploads import MiB, blob_of, patch_chunk, received, start_upload

REPOSITORY = "full/app"
STORAGE_FULL_MESSAGE = "no space left on the registry's storage"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs, unmounted afterwards (its users stop first: fixtures tear down in reverse)."""
    with small_tmpfs(tmp_path / "disk", "64m") as mount_point:
        yield mount_point


@pytest.fixture
def server(small_disk: Path) -> Iterator[ServerProcess]:
    # The data directory is the mount itself; the server's log goes beside it, off the small disk.
    process = ServerProcess(small_disk).start()
    try:
        yield process
    finally:
        process.stop()


def fill(path: Path) -> int:
    """Write `path` until the filesystem refuses another byte; returns the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as file:
        for size in (MiB, 64 * 1024, 4096, 512, 1):
            block = b"\0" * size
            while True:
                try:
                    written += file.write(block) or 0
                except OSError as error:
                    assert error.errno == errno.ENOSPC, error
                    break
    return written


def push_image(http: httpx.Client, tag: str, layer: bytes) -> tuple[str, str]:
    """Config, layer and manifest over /v2; returns (manifest digest, layer digest)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    config_digest = push_blob(http, REPOSITORY, config)
    layer_digest = push_blob(http, REPOSITORY, layer)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": len(layer)}],
        }
    ).encode()
    put = http.put(f"/v2/{REPOSITORY}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert put.status_code == 201, put.text
    return sha256(manifest), layer_digest


def assert_storage_full(response: httpx.Response) -> None:
    assert response.status_code == 507, f"{response.status_code} {response.text}"
    errors = response.json()["errors"]
    assert [error["code"] for error in errors] == ["INSUFFICIENT_STORAGE"], errors
    assert STORAGE_FULL_MESSAGE in errors[0]["message"]


def audit_events(path: Path) -> list[dict[str, Any]]:
    """The complete lines so far (the last may still be being written: a reader of a live log skips it)."""
    *lines, _partial = path.read_bytes().split(b"\n")
    return [json.loads(line) for line in lines]


def wait_until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)  # polling what the server writes in the background, not dodging a race


def test_a_full_disk_keeps_reads_working_and_names_the_cause_of_failed_writes(
    server: ServerProcess, small_disk: Path
) -> None:
    ecr = ecr_client(server)
    ecr.create_repository(repositoryName=REPOSITORY)
    layer, _ = blob_of(2 * MiB, seed=7)
    with server.client() as http:
        manifest_digest, layer_digest = push_image(http, "v1", layer)
        # Two chunked uploads with their first MiB in: one to resume once space returns, one to abandon.
        resumed_data, resumed_digest = blob_of(3 * MiB, seed=8)
        resumed = start_upload(http, REPOSITORY)
        resumed = patch_chunk(http, resumed, resumed_data[:MiB], 0).headers["location"]
        abandoned = start_upload(http, REPOSITORY)
        abandoned = patch_chunk(http, abandoned, blob_of(MiB, seed=9)[0], 0).headers["location"]

        # Every later write must need new space: SQLite reuses a checkpointed WAL's pages without asking for any.
        with contextlib.closing(sqlite3.connect(small_disk / "metadata.db", timeout=30)) as database:
            database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = small_disk / "filler"
        full_since = utc_now()
        assert fill(filler) > 0

        # Reads answer 200.
        catalog = http.get("/v2/_catalog")
        assert catalog.status_code == 200, catalog.text
        assert REPOSITORY in catalog.json()["repositories"]
        tags = http.get(f"/v2/{REPOSITORY}/tags/list")
        assert tags.status_code == 200, tags.text
        assert tags.json()["tags"] == ["v1"]
        manifest = manifest_of(http, REPOSITORY, "v1")  # the first pull: recording its time needs a write
        assert manifest.status_code == 200, manifest.text
        assert manifest.headers["docker-content-digest"] == manifest_digest
        blob = http.get(f"/v2/{REPOSITORY}/blobs/{layer_digest}")
        assert blob.status_code == 200, blob.text
        assert blob.content == layer
        images = ecr.describe_images(repositoryName=REPOSITORY)["imageDetails"]
        assert [image["imageDigest"] for image in images] == [manifest_digest]
        repositories = ecr.describe_repositories(repositoryNames=[REPOSITORY])["repositories"]
        assert [repository["repositoryName"] for repository in repositories] == [REPOSITORY]

        # Writes answer the storage error, and leave each upload where the client was last told it stood.
        assert_storage_full(
            http.post(f"/v2/{REPOSITORY}/blobs/uploads/", params={"digest": sha256(b"x" * MiB)}, content=b"x" * MiB)
        )
        chunk = resumed_data[MiB:]
        failed = http.patch(resumed, content=chunk, headers={"Content-Range": f"{MiB}-{len(resumed_data) - 1}"})
        assert_storage_full(failed)
        status = http.get(resumed)
        assert status.status_code == 204, status.text
        assert received(status) == MiB
        more = blob_of(2 * MiB, seed=11)[0]
        assert_storage_full(http.patch(abandoned, content=more, headers={"Content-Range": f"{MiB}-{3 * MiB - 1}"}))
        with pytest.raises(ClientError) as refused:
            ecr.create_repository(repositoryName="full/new")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 507
        assert refused.value.response["Error"]["Code"] == "ServerException"
        assert STORAGE_FULL_MESSAGE in refused.value.response["Error"]["Message"]

        # Space returns: what was held in memory reaches the disk.
        filler.unlink()
        wanted = {"ListImages", "BatchGetImage", "GetDownloadUrlForLayer", "DescribeImages", "CreateRepository"}

        def audited_while_full() -> bool:
            events = audit_events(small_disk / "audit.log")
            names = {e["eventName"] for e in events if datetime.fromisoformat(e["eventTime"]) >= full_since}
            return wanted <= names

        wait_until(audited_while_full, 30, f"the audit lines of {sorted(wanted)} made while the disk was full")

        def pulls_counted() -> bool:
            with contextlib.closing(sqlite3.connect(small_disk / "metadata.db", timeout=30)) as database:
                query = "SELECT coalesce(sum(pulls), 0) FROM usage_counters WHERE repository = ?"
                (pulls,) = database.execute(query, (REPOSITORY,)).fetchone()
            return bool(pulls >= 1)

        wait_until(pulls_counted, 30, "the usage meter's pull made while the disk was full")

        # The interrupted upload resumes where it stood; pushes and repository creation work again.
        patch_chunk(http, resumed, chunk, MiB)
        done = http.put(resumed, params={"digest": resumed_digest})
        assert done.status_code == 201, done.text
        assert http.get(f"/v2/{REPOSITORY}/blobs/{resumed_digest}").content == resumed_data
        push_image(http, "v2", blob_of(MiB, seed=10)[0])
        ecr.create_repository(repositoryName="full/new")

    # The failed upload its client abandoned is reclaimed by `dockyard gc`.
    abandoned_file = small_disk / "storage" / "uploads" / abandoned.rstrip("/").rsplit("/", 1)[1]
    assert abandoned_file.exists()
    report = json.loads(dockyard_ok("gc", "--grace", "0", "--upload-ttl", "0", "--data-dir", str(small_disk)).stdout)
    assert report["expired_uploads"] >= 1, report
    assert not abandoned_file.exists()
    with server.client() as http:
        assert http.get(f"/v2/{REPOSITORY}/blobs/{layer_digest}").content == layer  # still referenced, kept
