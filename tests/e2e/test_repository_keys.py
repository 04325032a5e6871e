"""Repositories bound to KMS keys, end to end: boto3 `ecr` + `kms` and skopeo against one real server.

What ECR promises and a user checks: a KMS repository shows its key's ARN; its content is encrypted under that
key and deduplicated only with repositories on the same key; disabling the key makes pulls fail with a clear
KMS error while nothing is deleted, and enabling it serves the same bytes again; a layer is never mounted across
keys; nothing pushed lies in plain text anywhere under the data directory.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.api.ecr.helpers import ecr_client
from tests.support.cli import dockyard_ok
from tests.support.images import single_image_layout
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, ServerProcess
from tests.support.tools import Skopeo, describe, fresh_seed, layout_blobs


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("keys") / "data").start()  # default settings: encrypted
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def kms(keyed_server: ServerProcess) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=keyed_server.url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


@pytest.fixture(scope="module")
def ecr(keyed_server: ServerProcess) -> Any:
    return ecr_client(keyed_server)


@pytest.fixture
def skopeo(tmp_path: Path) -> Skopeo:
    return Skopeo.create(tmp_path / "skopeo")


def _name(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def _kms_repository(ecr: Any, kms: Any, key_reference: str | None = None) -> tuple[str, str]:
    """A new repository on a new key (named by `key_reference`: an alias when given); (name, key ARN)."""
    key = kms.create_key(Description="repository key")["KeyMetadata"]
    reference = key["KeyId"]
    if key_reference is not None:
        kms.create_alias(AliasName=key_reference, TargetKeyId=key["KeyId"])
        reference = key_reference
    name = _name("kms")
    created = ecr.create_repository(
        repositoryName=name, encryptionConfiguration={"encryptionType": "KMS", "kmsKey": reference}
    )["repository"]
    assert created["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": key["Arn"]}
    return name, key["Arn"]


def test_kms_repository_shows_the_key_arn_and_round_trips_an_image(
    keyed_server: ServerProcess, ecr: Any, kms: Any, skopeo: Skopeo, tmp_path: Path
) -> None:
    name, arn = _kms_repository(ecr, kms, key_reference=f"alias/team-{uuid.uuid4().hex[:8]}")
    described = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    assert described["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": arn}

    digest = single_image_layout(tmp_path / "src", seed=fresh_seed())
    skopeo.push(keyed_server, f"oci:{tmp_path / 'src'}:latest", f"{name}:v1")
    skopeo.pull(keyed_server, f"{name}:v1", f"oci:{tmp_path / 'dst'}:v1")
    assert layout_blobs(tmp_path / "dst") == layout_blobs(tmp_path / "src")
    assert ecr.describe_images(repositoryName=name)["imageDetails"][0]["imageDigest"] == digest

    key_id = arn.rsplit("/", 1)[1]
    domain = keyed_server.data_dir / "storage" / "domains" / f"kms-{key_id}" / "blobs"
    assert {path.name for path in domain.rglob("*") if path.is_file()} >= {digest.split(":")[1]}


def test_kms_repository_without_a_key_uses_the_managed_ecr_key(ecr: Any, kms: Any) -> None:
    name = _name("managed")
    created = ecr.create_repository(repositoryName=name, encryptionConfiguration={"encryptionType": "KMS"})
    arn = created["repository"]["encryptionConfiguration"]["kmsKey"]
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
    assert arn.startswith("arn:aws:kms:us-east-1:") and arn.rsplit("/", 1)[1] == aliases["alias/aws/ecr"]
    second = ecr.create_repository(repositoryName=_name("managed"), encryptionConfiguration={"encryptionType": "KMS"})
    assert second["repository"]["encryptionConfiguration"]["kmsKey"] == arn  # one managed key per account/region


def test_unknown_or_disabled_keys_are_refused_at_creation(ecr: Any, kms: Any) -> None:
    for reference in ("alias/nothing-here", "0b0e7a55-1111-4222-8333-944455556666"):
        with pytest.raises(ecr.exceptions.KmsException) as caught:
            ecr.create_repository(
                repositoryName=_name("bad"), encryptionConfiguration={"encryptionType": "KMS", "kmsKey": reference}
            )
        assert caught.value.response["kmsError"] == "NotFoundException"
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=key_id)
    with pytest.raises(ecr.exceptions.KmsException) as caught:
        ecr.create_repository(
            repositoryName=_name("bad"), encryptionConfiguration={"encryptionType": "KMS", "kmsKey": key_id}
        )
    assert caught.value.response["kmsError"] == "DisabledException"
    other_region = f"arn:aws:kms:eu-west-1:{'1' * 12}:key/{key_id}"
    with pytest.raises(ecr.exceptions.KmsException, match="Region"):
        ecr.create_repository(
            repositoryName=_name("bad"), encryptionConfiguration={"encryptionType": "KMS", "kmsKey": other_region}
        )


def test_a_disabled_key_makes_the_repository_unreadable_until_enabled(
    keyed_server: ServerProcess, ecr: Any, kms: Any, skopeo: Skopeo, tmp_path: Path
) -> None:
    name, arn = _kms_repository(ecr, kms)
    digest = single_image_layout(tmp_path / "src", seed=fresh_seed())
    skopeo.push(keyed_server, f"oci:{tmp_path / 'src'}:latest", f"{name}:v1")
    layer = json.loads(ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])["images"][0]
                       ["imageManifest"])["layers"][0]["digest"]  # fmt: skip

    kms.disable_key(KeyId=arn)
    refused = skopeo("copy", "--quiet", "--src-tls-verify=false", "--src-creds", keyed_server.creds,
                     f"docker://{keyed_server.host}/{name}:v1", f"oci:{tmp_path / 'refused'}:v1")  # fmt: skip
    assert refused.returncode != 0 and "disabled" in refused.stderr, describe(refused)
    with keyed_server.client() as http:
        blob = http.get(f"/v2/{name}/blobs/{layer}")
        assert blob.status_code == 403 and blob.json()["errors"][0]["code"] == "DENIED"
        assert arn in blob.json()["errors"][0]["message"]
        manifest = http.get(f"/v2/{name}/manifests/{digest}")
        assert manifest.status_code == 403, manifest.text
        upload = http.post(f"/v2/{name}/blobs/uploads/")
        assert upload.status_code == 403, upload.text
    with pytest.raises(ecr.exceptions.KmsException):
        ecr.initiate_layer_upload(repositoryName=name)
    assert ecr.describe_images(repositoryName=name)["imageDetails"][0]["imageDigest"] == digest  # nothing deleted

    kms.enable_key(KeyId=arn)
    skopeo.pull(keyed_server, f"{name}:v1", f"oci:{tmp_path / 'dst'}:v1")
    assert layout_blobs(tmp_path / "dst") == layout_blobs(tmp_path / "src")


def test_content_is_deduplicated_within_a_key_and_never_mounted_across_keys(
    keyed_server: ServerProcess, ecr: Any, kms: Any, skopeo: Skopeo, tmp_path: Path
) -> None:
    plain = _name("aes")
    ecr.create_repository(repositoryName=plain)
    first, arn = _kms_repository(ecr, kms)
    second = _name("kms")
    ecr.create_repository(repositoryName=second, encryptionConfiguration={"encryptionType": "KMS", "kmsKey": arn})
    single_image_layout(tmp_path / "src", seed=fresh_seed())
    skopeo.push(keyed_server, f"oci:{tmp_path / 'src'}:latest", f"{plain}:v1")
    skopeo.push(keyed_server, f"oci:{tmp_path / 'src'}:latest", f"{first}:v1")
    layer = _first_layer(tmp_path / "src")

    with keyed_server.client() as http:
        across = http.post(f"/v2/{second}/blobs/uploads/", params={"mount": layer, "from": plain})
        assert across.status_code == 202, across.text  # another key: upload it again, encrypted under this one
        http.delete(across.headers["Location"])
        within = http.post(f"/v2/{second}/blobs/uploads/", params={"mount": layer, "from": first})
        assert within.status_code == 201, within.text  # the same key: one copy serves both
        assert http.get(f"/v2/{second}/blobs/{layer}").content == layout_blobs(tmp_path / "src")[layer]

        # Without `from` the registry looks for a holder itself, on the target's key only: the AES256 holder
        # (whose name sorts first) is passed over for the one on the same key; on a third key nothing mounts.
        third = _name("kms")
        ecr.create_repository(repositoryName=third, encryptionConfiguration={"encryptionType": "KMS", "kmsKey": arn})
        anonymous = http.post(f"/v2/{third}/blobs/uploads/", params={"mount": layer})
        assert anonymous.status_code == 201, anonymous.text
        assert http.get(f"/v2/{third}/blobs/{layer}").content == layout_blobs(tmp_path / "src")[layer]
        elsewhere, _ = _kms_repository(ecr, kms)
        refused = http.post(f"/v2/{elsewhere}/blobs/uploads/", params={"mount": layer})
        assert refused.status_code == 202, refused.text
        http.delete(refused.headers["Location"])

    key_id = arn.rsplit("/", 1)[1]
    storage = keyed_server.data_dir / "storage"
    hex_digest = layer.split(":")[1]
    assert len([p for p in (storage / "blobs").rglob(hex_digest)]) == 1
    assert len([p for p in (storage / "domains" / f"kms-{key_id}").rglob(hex_digest)]) == 1


def test_nothing_pushed_lies_in_plain_text_under_the_data_directory(
    keyed_server: ServerProcess, ecr: Any, kms: Any, skopeo: Skopeo, tmp_path: Path
) -> None:
    """Default settings encrypt AES256 repositories too: search every file for slices of what was pushed."""
    plain = _name("aes")
    keyed, _ = _kms_repository(ecr, kms)
    single_image_layout(tmp_path / "src", seed=fresh_seed())
    skopeo.push(keyed_server, f"oci:{tmp_path / 'src'}:latest", f"{plain}:v1")
    skopeo.push(keyed_server, f"oci:{tmp_path / 'src'}:latest", f"{keyed}:v1")
    pushed = list(layout_blobs(tmp_path / "src").values())
    needles = [blob[i : i + 32] for blob in pushed for i in range(0, len(blob) - 32, max(len(blob) // 8, 1))]
    for path in keyed_server.data_dir.rglob("*"):
        if path.is_file() and path.suffix not in (".db", ".log", ".key") and "wal" not in path.name:
            content = path.read_bytes()
            assert not any(needle in content for needle in needles), f"plain text found in {path}"


def _first_layer(layout: Path) -> str:
    """The digest of the first layer of the layout's image (a blob, never the manifest or the config)."""
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_bytes())
    digest: str = manifest["layers"][0]["digest"]
    return digest


def test_garbage_collection_sweeps_each_key_domain_on_its_own(
    keyed_server: ServerProcess, ecr: Any, kms: Any, skopeo: Skopeo, tmp_path: Path
) -> None:
    """Deleting the KMS repository frees its copies; the AES256 copy of the same layer stays and still pulls."""
    plain = _name("aes")
    keyed, arn = _kms_repository(ecr, kms)
    single_image_layout(tmp_path / "src", seed=fresh_seed())
    skopeo.push(keyed_server, f"oci:{tmp_path / 'src'}:latest", f"{plain}:v1")
    skopeo.push(keyed_server, f"oci:{tmp_path / 'src'}:latest", f"{keyed}:v1")
    domain = keyed_server.data_dir / "storage" / "domains" / f"kms-{arn.rsplit('/', 1)[1]}" / "blobs"
    pushed = {digest.split(":")[1] for digest in layout_blobs(tmp_path / "src")}
    assert {path.name for path in domain.rglob("*") if path.is_file()} == pushed

    ecr.delete_repository(repositoryName=keyed, force=True)
    report = json.loads(dockyard_ok("gc", "--grace", "0", "--data-dir", str(keyed_server.data_dir)).stdout)
    assert report["deleted_blobs"] >= len(pushed)
    assert not [path for path in domain.rglob("*") if path.is_file()]
    skopeo.pull(keyed_server, f"{plain}:v1", f"oci:{tmp_path / 'dst'}:v1")
    assert layout_blobs(tmp_path / "dst") == layout_blobs(tmp_path / "src")


def test_an_external_kms_holds_the_keys_of_kms_repositories(tmp_path: Path, skopeo: Skopeo) -> None:
    """`--kms-endpoint-url`: a second Dockyard plays AWS KMS (same API, boto3 on both sides). The registry
    binds the repository to the external key, wraps data keys with its Encrypt/Decrypt under the server's
    AWS credentials, and stops serving when the key is disabled there."""
    kms_server = ServerProcess(tmp_path / "kms-data").start()
    registry = ServerProcess(
        tmp_path / "registry-data",
        extra_args=["--kms-endpoint-url", kms_server.url],
        environment={
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        },
    )
    try:
        registry.start()
        external = boto3.client(
            "kms",
            endpoint_url=kms_server.url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )
        key = external.create_key(Description="held elsewhere")["KeyMetadata"]
        external.create_alias(AliasName="alias/elsewhere", TargetKeyId=key["KeyId"])
        ecr = ecr_client(registry)
        created = ecr.create_repository(
            repositoryName="ext/app", encryptionConfiguration={"encryptionType": "KMS", "kmsKey": "alias/elsewhere"}
        )["repository"]
        assert created["encryptionConfiguration"]["kmsKey"] == key["Arn"]
        with pytest.raises(ecr.exceptions.KmsException) as caught:  # no aws/ecr key in the external KMS
            ecr.create_repository(repositoryName="ext/none", encryptionConfiguration={"encryptionType": "KMS"})
        assert "kmsKey" in caught.value.response["Error"]["Message"]

        single_image_layout(tmp_path / "src", seed=fresh_seed())
        skopeo.push(registry, f"oci:{tmp_path / 'src'}:latest", "ext/app:v1")
        skopeo.pull(registry, "ext/app:v1", f"oci:{tmp_path / 'dst'}:v1")
        assert layout_blobs(tmp_path / "dst") == layout_blobs(tmp_path / "src")
        local = boto3.client(
            "kms",
            endpoint_url=registry.url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )
        assert key["KeyId"] not in {k["KeyId"] for k in local.list_keys()["Keys"]}  # never copied in

        external.disable_key(KeyId=key["KeyId"])
        deadline = time.monotonic() + 10  # the registry trusts a key state it read for one second
        with registry.client() as http:
            while (answer := http.get("/v2/ext/app/manifests/v1")).status_code == 200:
                assert time.monotonic() < deadline, "a disabled external key kept serving"
                time.sleep(0.1)  # polling interval
            assert answer.status_code == 403 and key["Arn"] in answer.json()["errors"][0]["message"]
        external.enable_key(KeyId=key["KeyId"])
        deadline = time.monotonic() + 10
        while skopeo("copy", "--quiet", "--src-tls-verify=false", "--src-creds", registry.creds,
                     f"docker://{registry.host}/ext/app:v1", f"oci:{tmp_path / 'again'}:v1").returncode:  # fmt: skip
            assert time.monotonic() < deadline, "an enabled external key did not serve again"
            time.sleep(0.1)  # polling interval
        assert layout_blobs(tmp_path / "again") == layout_blobs(tmp_path / "src")
    finally:
        registry.stop()
        kms_server.stop()
