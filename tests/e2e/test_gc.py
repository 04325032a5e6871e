"""Online garbage collection against a running `dockyard serve`: `dockyard gc` reclaims the blobs of deleted
images (files gone from <data-dir>/storage/blobs) and keeps what live or archived images share; content
younger than the grace period is never collected; pulls and pushes during a collection succeed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.config import Settings
from dockyard.domain.clock import utc_now
from dockyard.domain.gc import GarbageCollector
from dockyard.server import prepare
from tests.api.ecr.helpers import ecr_client
from tests.support.cli import dockyard_ok
from tests.support.images import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Layout, random_layers, sha256
from tests.support.registry_http import manifest_of, push_blob
from tests.support.server import ACCOUNT_ID, ServerProcess
from tests.support.tools import COMMAND_TIMEOUT, Skopeo, describe, fresh_seed
from tests.support.uploads import patch_chunk, start_upload


@pytest.fixture(scope="module")
def gc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("gc-e2e") / "data").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def ecr(gc_server: ServerProcess) -> Any:
    return ecr_client(gc_server)


@pytest.fixture
def http(gc_server: ServerProcess) -> Iterator[httpx.Client]:
    with gc_server.client() as client:
        yield client


def blob_file(server: ServerProcess, digest: str) -> Path:
    algorithm, hex_digest = digest.split(":", 1)
    return server.data_dir / "storage" / "blobs" / algorithm / hex_digest[:2] / hex_digest


def gc(server: ServerProcess, *args: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(dockyard_ok("gc", *args, "--data-dir", str(server.data_dir)).stdout)
    return report


def image_blobs(root: Path, descriptor: dict[str, Any]) -> set[str]:
    """The manifest, config and layer digests of one image of an OCI layout."""
    manifest = json.loads((root / "blobs" / "sha256" / descriptor["digest"].split(":")[1]).read_bytes())
    return {descriptor["digest"], manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}


def test_gc_reclaims_deleted_images_and_keeps_what_others_share(
    gc_server: ServerProcess, ecr: Any, skopeo: Skopeo, tmp_path: Path
) -> None:
    root = tmp_path / "layout"
    layout = Layout(root)
    seed = fresh_seed()
    shared = random_layers(1, 64 * 1024, seed)[0]  # the base layer every image has
    images = {}
    for number, name in enumerate(("gone-1", "gone-2", "kept", "elsewhere", "archived")):
        descriptor = layout.add_image([shared, *random_layers(1, 32 * 1024, seed + 1 + number)], label=f"{seed}{name}")
        layout.tag(descriptor, name)
        images[name] = descriptor
    repository, other = "gc/app", "gc/other"
    for name in ("gone-1", "gone-2", "kept", "archived"):
        skopeo.push(gc_server, f"oci:{root}:{name}", f"{repository}:{name}")
    skopeo.push(gc_server, f"oci:{root}:elsewhere", f"{other}:elsewhere")
    ecr.update_image_storage_class(
        repositoryName=repository, imageId={"imageTag": "archived"}, targetStorageClass="ARCHIVE"
    )
    deleted = ecr.batch_delete_image(
        repositoryName=repository, imageIds=[{"imageTag": "gone-1"}, {"imageTag": "gone-2"}]
    )
    assert not deleted["failures"], deleted

    blobs = {name: image_blobs(root, descriptor) for name, descriptor in images.items()}
    live = blobs["kept"] | blobs["elsewhere"] | blobs["archived"]
    garbage = (blobs["gone-1"] | blobs["gone-2"]) - live
    assert sha256(shared) in live and len(garbage) == 6  # two manifests, two configs, two own layers
    assert all(blob_file(gc_server, digest).is_file() for digest in garbage | live)

    dry = gc(gc_server, "--grace", "0", "--dry-run")
    assert dry["dryRun"], dry
    assert all(blob_file(gc_server, digest).is_file() for digest in garbage | live), "--dry-run deleted files"

    report = gc(gc_server, "--grace", "0")
    assert report["deleted_blobs"] >= len(garbage), report
    assert not [d for d in garbage if blob_file(gc_server, d).exists()], "garbage left on disk"
    assert not [d for d in live if not blob_file(gc_server, d).is_file()], "a live blob was collected"

    # What is left pulls whole (skopeo checks every digest), in both repositories; the archived image too
    # once restored.
    skopeo.pull(gc_server, f"{repository}:kept", f"oci:{tmp_path / 'pulled'}:kept")
    skopeo.pull(gc_server, f"{other}:elsewhere", f"oci:{tmp_path / 'pulled'}:elsewhere")
    ecr.update_image_storage_class(
        repositoryName=repository, imageId={"imageTag": "archived"}, targetStorageClass="STANDARD"
    )
    skopeo.pull(gc_server, f"{repository}:archived", f"oci:{tmp_path / 'pulled'}:archived")
    # A second collection finds nothing more of these.
    assert gc(gc_server, "--grace", "0")["deleted_blobs"] == 0


def test_dry_run_reports_what_a_run_deletes(gc_server: ServerProcess, ecr: Any, skopeo: Skopeo, tmp_path: Path) -> None:
    """`dockyard gc --dry-run` ("report what would be deleted") counts what the real run then deletes: the
    deleted image's manifest, config and layers, not only the manifest. (Runs after the test above, which
    left no garbage behind.)"""
    root = tmp_path / "layout"
    layout = Layout(root)
    descriptor = layout.add_image(random_layers(2, 8 * 1024, fresh_seed()), label="dry-run")
    layout.tag(descriptor, "v1")
    skopeo.push(gc_server, f"oci:{root}:v1", "gc/dry-run:v1")
    ecr.batch_delete_image(repositoryName="gc/dry-run", imageIds=[{"imageTag": "v1"}])
    garbage = image_blobs(root, descriptor)
    dry = gc(gc_server, "--grace", "0", "--dry-run")
    assert all(blob_file(gc_server, digest).is_file() for digest in garbage)
    real = gc(gc_server, "--grace", "0")
    assert not [d for d in garbage if blob_file(gc_server, d).exists()]
    assert real["deleted_blobs"] == len(garbage), real
    assert dry["deleted_blobs"] == real["deleted_blobs"], (dry, real)


def test_content_younger_than_the_grace_period_survives(
    gc_server: ServerProcess, http: httpx.Client, skopeo: Skopeo, tmp_path: Path
) -> None:
    """A push in progress: one blob uploaded (not yet referenced by any manifest), one upload half done.
    `dockyard gc` with its default grace collects neither, and with --grace 0 the half-done upload (kept
    until its session expires) still completes; then the manifest goes in and the image pulls."""
    repository = "gc/in-flight"
    seed = fresh_seed()
    layer_a, layer_b = random_layers(2, 96 * 1024, seed)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}, "seed": seed}).encode()
    push_blob(http, repository, config)
    push_blob(http, repository, layer_a)
    location = start_upload(http, repository)
    half = len(layer_b) // 2
    patch_chunk(http, location, layer_b[:half], 0)
    uploads = gc_server.data_dir / "storage" / "uploads"
    assert len(list(uploads.iterdir())) >= 1

    gc(gc_server)  # the default grace: an hour
    assert blob_file(gc_server, sha256(layer_a)).is_file() and blob_file(gc_server, sha256(config)).is_file()
    head = http.head(f"/v2/{repository}/blobs/{sha256(layer_a)}")
    assert head.status_code == 200, "the uploaded blob lost its link"

    # --grace 0 may take the unreferenced blobs (the client then finds them missing and sends them again),
    # never an upload in progress: sessions live until they expire.
    gc(gc_server, "--grace", "0")
    location = patch_chunk(http, location, layer_b[half:], half).headers["location"]
    finished = http.put(location, params={"digest": sha256(layer_b)})
    assert finished.status_code == 201, finished.text
    for blob in (config, layer_a):
        if http.head(f"/v2/{repository}/blobs/{sha256(blob)}").status_code == 404:
            push_blob(http, repository, blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(b), "size": len(b)} for b in (layer_a, layer_b)],
    }
    put = http.put(
        f"/v2/{repository}/manifests/v1", content=json.dumps(manifest), headers={"Content-Type": OCI_MANIFEST}
    )
    assert put.status_code == 201, put.text
    skopeo.pull(gc_server, f"{repository}:v1", f"oci:{tmp_path / 'pulled'}:v1")


def test_a_blob_uploaded_again_is_young_content(gc_server: ServerProcess, ecr: Any, http: httpx.Client) -> None:
    """An image is deleted; a client then pushes an image with the same layer and uploads it again. The
    collector runs (one grace period after the first push) between that upload and the manifest: the blob
    was written moments ago, so the manifest must find it.

    The collector runs in process on the server's data directory with its clock pinned to one grace period
    after the midpoint M between the first upload and the second: the first link is older than the grace,
    the second upload younger. (On a real clock the same happens when the second push comes more than an
    hour after the first, which a test cannot wait for.)"""
    repository = "gc/reupload"
    seed = fresh_seed()
    layer = random_layers(1, 8 * 1024, seed)[0]
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()

    def put_manifest(tag: str) -> httpx.Response:
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(layer), "size": len(layer)}],
        }
        raw = json.dumps(document, sort_keys=tag == "second").encode()
        return http.put(f"/v2/{repository}/manifests/{tag}", content=raw, headers={"Content-Type": OCI_MANIFEST})

    push_blob(http, repository, config)
    push_blob(http, repository, layer)
    assert put_manifest("first").status_code == 201
    ecr.batch_delete_image(repositoryName=repository, imageIds=[{"imageTag": "first"}])
    first_done = utc_now()
    _wait_for_clock_to_pass(first_done)
    second_started = utc_now()
    push_blob(http, repository, config)
    push_blob(http, repository, layer)
    middle = first_done + (second_started - first_done) / 2

    grace = timedelta(hours=1)
    services = prepare(Settings(gc_server.data_dir, ACCOUNT_ID, background_jobs=False))
    try:
        GarbageCollector(services.metadata, services.blobs, clock=lambda: middle + grace, grace=grace).run()
    finally:
        services.audit.close()
        services.events.close()
        services.engine.dispose()

    answer = put_manifest("second")
    assert answer.status_code == 201, f"the blob uploaded moments ago was collected: {answer.text}"
    assert manifest_of(http, repository, "second").status_code == 200


def _wait_for_clock_to_pass(moment: Any) -> None:
    """Until the wall clock reads later than `moment` (a few milliseconds at most)."""
    deadline = time.monotonic() + 1
    while utc_now() <= moment + timedelta(milliseconds=5):
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_pulls_and_pushes_succeed_while_gc_runs(gc_server: ServerProcess, skopeo: Skopeo, tmp_path: Path) -> None:
    """No read-only window: while `dockyard gc` sweeps thousands of leftover blobs, skopeo keeps pulling
    images and pushing new ones, and every copy succeeds."""
    repository = "gc/busy"
    root = tmp_path / "layout"
    layout = Layout(root)
    seed = fresh_seed()
    names = [f"img-{n}" for n in range(12)]
    for number, name in enumerate(names):
        layout.tag(layout.add_image(random_layers(2, 16 * 1024, seed + 10 * number), label=f"{seed}-{name}"), name)
    for name in names[:2]:
        skopeo.push(gc_server, f"oci:{root}:{name}", f"{repository}:{name}")

    # Leftovers of crashed uploads: blob files no metadata knows, older than the grace period.
    blobs_dir = gc_server.data_dir / "storage" / "blobs" / "sha256"
    old = time.time() - 7200
    leftovers = []
    for number in range(8000):
        hex_digest = hashlib.sha256(f"{seed}-leftover-{number}".encode()).hexdigest()
        path = blobs_dir / hex_digest[:2] / hex_digest
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"leftover")
        os.utime(path, (old, old))
        leftovers.append(path)

    command = [sys.executable, "-m", "dockyard", "gc", "--grace", "600", "--data-dir", str(gc_server.data_dir)]
    collector = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pushed, pulls, during = 2, 0, 0
    deadline = time.monotonic() + COMMAND_TIMEOUT
    try:
        while collector.poll() is None or pushed < 4 or pulls < 4:
            assert time.monotonic() < deadline, "gc did not finish in time"
            skopeo.pull(gc_server, f"{repository}:{names[pulls % pushed]}", f"oci:{tmp_path / 'pulled'}:p{pulls}")
            pulls += 1
            if pushed < len(names):
                skopeo.push(gc_server, f"oci:{root}:{names[pushed]}", f"{repository}:{names[pushed]}")
                pushed += 1
            during += collector.poll() is None
        out, err = collector.communicate(timeout=COMMAND_TIMEOUT)
    finally:
        if collector.poll() is None:
            collector.kill()
            collector.communicate()
    assert collector.returncode == 0, describe(subprocess.CompletedProcess(command, collector.returncode, out, err))
    assert during >= 1, "no pull or push overlapped the collection"
    assert json.loads(out)["deleted_blobs"] >= len(leftovers)
    assert not [p for p in leftovers if p.exists()]
    for name in names[:pushed]:
        skopeo.pull(gc_server, f"{repository}:{name}", f"oci:{tmp_path / 'after'}:{name}")
