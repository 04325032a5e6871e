"""`dockyard admin rotate-master-key`: every secret and key re-sealed, no blob touched, everything still serves."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3

from tests.api.ecr.helpers import ecr_client
from tests.support.cli import dockyard, dockyard_ok
from tests.support.images import single_image_layout
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess, free_port
from tests.support.tools import Skopeo, describe, fresh_seed, layout_blobs


def _storage_snapshot(data_dir: Path) -> dict[str, tuple[str, int]]:
    """Every stored file (blobs and manifests of every key domain): content hash and modification time."""
    return {
        str(path.relative_to(data_dir)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in (data_dir / "storage").rglob("*")
        if path.is_file()
    }


def _kms(server: ServerProcess) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


def test_rotation_reseals_everything_and_rewrites_no_blob(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    skopeo = Skopeo.create(tmp_path / "skopeo")
    single_image_layout(tmp_path / "src", seed=fresh_seed())
    server = ServerProcess(data_dir).start()
    try:
        key = _kms(server).create_key()["KeyMetadata"]
        keyed = f"kms/{uuid.uuid4().hex[:8]}"
        ecr_client(server).create_repository(
            repositoryName=keyed, encryptionConfiguration={"encryptionType": "KMS", "kmsKey": key["Arn"]}
        )
        skopeo.push(server, f"oci:{tmp_path / 'src'}:latest", "plain/app:v1")
        skopeo.push(server, f"oci:{tmp_path / 'src'}:latest", f"{keyed}:v1")
        made = dockyard_ok("admin", "key", "create", "--account", ACCOUNT_ID, "--data-dir", str(data_dir))
        access_key = json.loads(made.stdout)
    finally:
        server.stop()
    old_key = (data_dir / "master.key").read_bytes()
    before = _storage_snapshot(data_dir)

    rotated = dockyard_ok("admin", "rotate-master-key", "--data-dir", str(data_dir))
    assert "re-sealed" in rotated.stdout, describe(rotated)
    new_key = (data_dir / "master.key").read_bytes()
    assert new_key != old_key and len(base64.b64decode(new_key.strip())) == 32
    assert stat.S_IMODE((data_dir / "master.key").stat().st_mode) == 0o600
    assert not (data_dir / "master.key.next").exists()
    assert _storage_snapshot(data_dir) == before  # no blob or manifest read back and rewritten

    server = ServerProcess(data_dir, port=server.port).start()
    try:
        skopeo.pull(server, "plain/app:v1", f"oci:{tmp_path / 'plain'}:v1")
        skopeo.pull(server, f"{keyed}:v1", f"oci:{tmp_path / 'keyed'}:v1")
        assert layout_blobs(tmp_path / "plain") == layout_blobs(tmp_path / "src") == layout_blobs(tmp_path / "keyed")
        made_before = boto3.client(
            "ecr",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id=access_key["AccessKeyId"],
            aws_secret_access_key=access_key["SecretAccessKey"],
        )
        names = {r["repositoryName"] for r in made_before.describe_repositories()["repositories"]}
        assert {"plain/app", keyed} <= names  # a secret sealed before the rotation still authenticates
        assert _kms(server).describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"
    finally:
        server.stop()

    # The old key opens nothing any more: a node started with it refuses to serve.
    env = dict(os.environ, DOCKYARD_MASTER_KEY=old_key.decode().strip())
    env.update({"DOCKYARD_ROOT_ACCESS_KEY_ID": ACCESS_KEY_ID, "DOCKYARD_ROOT_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY})
    refused = subprocess.run(
        [sys.executable, "-m", "dockyard", "serve", "--data-dir", str(data_dir), "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "master key" in (refused.stdout + refused.stderr)


def test_a_rotation_interrupted_after_resealing_is_finished_by_running_it_again(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ServerProcess(data_dir).start().stop()  # bootstraps a sealed root secret
    old_key = (data_dir / "master.key").read_bytes()
    new_key = base64.b64encode(os.urandom(32)) + b"\n"
    key_file = tmp_path / "new.key"
    key_file.write_bytes(new_key)
    # First run re-seals and replaces the key file; simulate a crash before the swap by restoring the old file
    # and leaving the pending key where the command leaves it until the swap.
    dockyard_ok("admin", "rotate-master-key", "--data-dir", str(data_dir), "--new-key-file", str(key_file))
    assert (data_dir / "master.key").read_bytes() == new_key
    (data_dir / "master.key.next").write_bytes(new_key)
    (data_dir / "master.key").write_bytes(old_key)

    finished = dockyard_ok("admin", "rotate-master-key", "--data-dir", str(data_dir))
    assert "already sealed with the new key" in finished.stdout
    assert (data_dir / "master.key").read_bytes() == new_key
    ServerProcess(data_dir).start().stop()  # serves with the new key

    wrong = tmp_path / "short.key"
    wrong.write_bytes(base64.b64encode(b"too short"))
    refused = dockyard("admin", "rotate-master-key", "--data-dir", str(data_dir), "--new-key-file", str(wrong))
    assert refused.returncode == 1 and "32 bytes" in refused.stdout
