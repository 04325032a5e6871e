"""Two `dockyard serve` processes over one SQLite database and one blob store (two nodes on one machine, each
with its own data directory, as the data-directory lock requires): what one changes, the other honours at once,
although it had the old answer cached (on SQLite every process hears of the write through the database's shared
generation; across PostgreSQL nodes the bound is the cache's TTL: docs/architecture.md)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.helpers import push_blob, push_image
from tests.support.images import sha256
from tests.support.server import ServerProcess


def _node(tmp_path: Path, name: str, database: str, master_key: str) -> ServerProcess:
    """A node whose blob store is the shared one (its data directory's `storage` links to it)."""
    data_dir = tmp_path / name
    data_dir.mkdir(mode=0o700)
    (data_dir / "storage").symlink_to(tmp_path / "shared-storage", target_is_directory=True)
    return ServerProcess(data_dir, extra_args=["--database", database], environment={"DOCKYARD_MASTER_KEY": master_key})


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    (tmp_path / "shared-storage").mkdir(mode=0o700)
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    master_key = base64.b64encode(secrets.token_bytes(32)).decode()
    first = _node(tmp_path, "node-1", database, master_key).start()
    try:
        second = _node(tmp_path, "node-2", database, master_key).start()
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def test_a_delete_and_a_tag_move_through_one_process_are_honoured_by_the_other_at_once(
    two_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    writer, reader = two_nodes
    with writer.client() as a, reader.client() as b:
        old = push_image(a, "team/app", "v1", seed="1")
        new = push_image(a, "team/app", "v2", seed="2")
        blob = push_blob(a, "team/app", b"a blob the other node has cached")
        for _ in range(2):  # the second answer comes from the reading node's cache
            assert b.get("/v2/team/app/manifests/v1").headers["docker-content-digest"] == old
            assert b.get(f"/v2/team/app/manifests/{new}").status_code == 200
            assert b.head(f"/v2/team/app/blobs/{blob}").status_code == 200

        moved = a.put(
            "/v2/team/app/manifests/v1",
            content=a.get(f"/v2/team/app/manifests/{new}").content,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert moved.status_code == 201, moved.text
        assert a.delete(f"/v2/team/app/manifests/{old}").status_code == 202
        assert a.delete(f"/v2/team/app/blobs/{blob}").status_code == 202
        assert b.get("/v2/team/app/manifests/v1").headers["docker-content-digest"] == new
        assert b.get(f"/v2/team/app/manifests/{old}").status_code == 404
        assert b.head(f"/v2/team/app/manifests/{old}").status_code == 404
        assert b.head(f"/v2/team/app/blobs/{blob}").status_code == 404

        # Deleting the image the tag now names: gone from the other node by tag and digest too.
        assert a.delete(f"/v2/team/app/manifests/{new}").status_code == 202
        for reference in ("v1", "v2", new):
            assert b.get(f"/v2/team/app/manifests/{reference}").status_code == 404, reference


def test_content_pushed_through_one_node_is_found_by_the_other_at_once(
    two_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    """Absent answers are never cached: a blob HEAD that said 404 says 200 as soon as another node has it."""
    writer, reader = two_nodes
    with writer.client() as a, reader.client() as b:
        data = b"pushed through the other node"
        push_blob(a, "team/app", b"the repository exists")  # (a repository's absence is cached like the rest)
        assert b.head(f"/v2/team/app/blobs/{sha256(data)}").status_code == 404
        assert b.get("/v2/team/app/manifests/v1").status_code == 404
        blob = push_blob(a, "team/app", data)
        digest = push_image(a, "team/app", "v1")
        assert b.head(f"/v2/team/app/blobs/{blob}").status_code == 200
        assert b.get("/v2/team/app/manifests/v1").headers["docker-content-digest"] == digest
