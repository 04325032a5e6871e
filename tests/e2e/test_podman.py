"""podman (as root, private vfs storage under the test's tmp dir) pulls what skopeo pushed."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import single_image_layout
from tests.support.server import ACCESS_KEY_ID, ServerProcess
from tests.support.tools import Skopeo, describe, fresh_seed, require_tool, run


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[list[str]]:
    """The podman command line with storage private to the test (podman wants a runroot of <= 50 chars)."""
    binary = require_tool("podman")
    with tempfile.TemporaryDirectory(prefix="dockyard-podman-", ignore_cleanup_errors=True) as runroot:
        (tmp_path / "podman-root").mkdir()
        (tmp_path / "podman-tmp").mkdir()
        yield [
            binary, "--storage-driver", "vfs", "--root", str(tmp_path / "podman-root"), "--runroot", runroot,
            "--tmpdir", str(tmp_path / "podman-tmp"), "--events-backend", "file", "--log-level", "error",
        ]  # fmt: skip


def test_podman_pulls_the_pushed_image(
    server: ServerProcess, skopeo: Skopeo, podman: list[str], tmp_path: Path
) -> None:
    source = tmp_path / "source"
    digest = single_image_layout(source, tag="v1", layers=2, size=64 * 1024, seed=fresh_seed())
    skopeo.push(server, f"oci:{source}:v1", "team/podman:v1")
    image = f"{server.host}/team/podman:v1"

    pull = [*podman, "pull", "--quiet", "--tls-verify=false"]
    pulled = run([*pull, "--creds", server.creds, f"docker://{image}"])
    assert pulled.returncode == 0, describe(pulled)
    manifest = json.loads((source / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())
    config_digest = manifest["config"]["digest"]
    assert pulled.stdout.strip() == config_digest.split(":")[1], "podman prints the image id (config digest)"

    inspected = run([*podman, "image", "inspect", image])
    assert inspected.returncode == 0, describe(inspected)
    [details] = json.loads(inspected.stdout)
    assert details["Digest"] == digest
    assert f"{server.host}/team/podman@{digest}" in details["RepoDigests"]
    assert details["Architecture"] == "amd64"
    assert len(details["RootFS"]["Layers"]) == 2

    refused = run([*pull, "--creds", f"{ACCESS_KEY_ID}:wrong", f"docker://{image}"])
    assert refused.returncode != 0, describe(refused)
    assert "unauthorized" in refused.stderr.lower(), describe(refused)
