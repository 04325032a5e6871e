"""Private image replication through the ECR API of a real `dockyard serve`: PutReplicationConfiguration's
rules, images replicated by the server's background worker to another region and another account (with and
without the destination's registry policy), DescribeImageReplicationStatus, and pulls from the destination.

Replication configurations are per registry (account and region), so each test pushes from a source region
of its own: the tests share one server without seeing each other's rules.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from dockyard.config import AWS_REGIONS, Settings
from dockyard.domain.accounts import Accounts
from dockyard.server import prepare
from tests.api.ecr.helpers import ApiImage, ecr_client, error_code, put_api_image
from tests.support.iam import Keys, add_root_key
from tests.support.images import OCI_MANIFEST
from tests.support.server import ACCOUNT_ID, ServerProcess

OTHER_ACCOUNT = "210987654321"
DEADLINE = 60.0  # seconds a replication may take on a loaded machine before the test gives up


@pytest.fixture(scope="module")
def other_keys_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Keys, Any]:
    data_dir = tmp_path_factory.mktemp("replication-api") / "data"
    services = prepare(Settings(data_dir, ACCOUNT_ID, background_jobs=False))
    keys = add_root_key(Accounts(services.metadata, services.box), OTHER_ACCOUNT)
    services.audit.close()
    services.events.close()
    services.engine.dispose()
    return keys, data_dir


@pytest.fixture(scope="module")
def ecr_server(other_keys_and_data: tuple[Keys, Any]) -> Iterator[ServerProcess]:
    """The module's server (overrides the ECR conftest's): its data directory also has a second account."""
    process = ServerProcess(other_keys_and_data[1]).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def other_keys(other_keys_and_data: tuple[Keys, Any]) -> Keys:
    return other_keys_and_data[0]


@pytest.fixture
def name() -> str:
    return f"replicated/{uuid.uuid4().hex[:12]}"


def client(server: ServerProcess, region: str, keys: Keys | None = None) -> Any:
    if keys is None:
        return ecr_client(server, region=region)
    return ecr_client(server, region=region, key=keys.access_key_id, secret=keys.secret)


def to(region: str, account: str = ACCOUNT_ID) -> dict[str, str]:
    return {"region": region, "registryId": account}


def statuses(ecr: Any, name: str, digest: str) -> list[dict[str, Any]]:
    answer = ecr.describe_image_replication_status(repositoryName=name, imageId={"imageDigest": digest})
    assert answer["repositoryName"] == name
    assert answer["imageId"]["imageDigest"] == digest
    found: list[dict[str, Any]] = answer["replicationStatuses"]
    return found


def settled(ecr: Any, name: str, digest: str) -> list[dict[str, Any]]:
    """Poll DescribeImageReplicationStatus until no destination is IN_PROGRESS (or the deadline passes)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        found = statuses(ecr, name, digest)
        if found and all(s["status"] != "IN_PROGRESS" for s in found):
            return found
        assert time.monotonic() < deadline, f"replication of {name}@{digest} still unfinished: {found}"
        time.sleep(0.1)  # polling interval, not a wait for something to happen


def raises(code: str, call: Any, **params: Any) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call(**params)
    assert error_code(caught.value) == code, caught.value.response
    return caught.value


def pull(server: ServerProcess, region_client: Any, name: str, image: ApiImage, reference: str) -> None:
    """Pull the image over /v2 with an ECR login token for `region_client`'s registry (account and region)."""
    token = region_client.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    headers = {"Authorization": f"Basic {token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        manifest = http.get(f"/v2/{name}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
        assert manifest.status_code == 200, manifest.text
        assert manifest.headers["docker-content-digest"] == image.digest
        assert manifest.content == image.manifest.encode()
        for digest, content in image.blobs.items():
            blob = http.get(f"/v2/{name}/blobs/{digest}", follow_redirects=True)
            assert blob.status_code == 200, blob.text
            assert blob.content == content


# --------------------------------------------------------------------------------------- configuration


def test_put_replication_configuration_refuses_the_source_registry_as_destination(ecr_server: ServerProcess) -> None:
    ecr = client(ecr_server, "ap-northeast-1")
    error = raises(
        "InvalidParameterException",
        ecr.put_replication_configuration,
        replicationConfiguration={"rules": [{"destinations": [to("eu-west-3"), to("ap-northeast-1")]}]},
    )
    assert error.response["Error"]["Message"] == (
        "Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: "
        "'Replication destination cannot be the same as the source registry'"
    )
    assert ecr.describe_registry()["replicationConfiguration"] == {"rules": []}  # nothing stored


def test_put_replication_configuration_refuses_regions_not_served(ecr_server: ServerProcess) -> None:
    ecr = client(ecr_server, "eu-north-1")
    error = raises(
        "InvalidParameterException",
        ecr.put_replication_configuration,
        replicationConfiguration={"rules": [{"destinations": [to("eu-west-3"), to("eu-west-9"), to("xx-test-1")]}]},
    )
    assert error.response["Error"]["Message"] == (
        "Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: "
        "'eu-west-9, xx-test-1 are not regions this registry serves'"
    )
    assert ecr.describe_registry()["replicationConfiguration"] == {"rules": []}  # nothing stored


def test_put_replication_configuration_allows_25_unique_destinations(ecr_server: ServerProcess) -> None:
    ecr = client(ecr_server, "ap-northeast-2")
    regions = sorted(set(AWS_REGIONS) - {"ap-northeast-2"})[:25]
    rules = [{"destinations": [to(r) for r in regions[:10]]}, {"destinations": [to(r) for r in regions[5:]]}]
    answer = ecr.put_replication_configuration(replicationConfiguration={"rules": rules})
    assert answer["replicationConfiguration"] == {"rules": rules}
    assert ecr.describe_registry()["replicationConfiguration"] == {"rules": rules}
    rules.append({"destinations": [to(regions[0], OTHER_ACCOUNT)]})
    error = raises(
        "InvalidParameterException", ecr.put_replication_configuration, replicationConfiguration={"rules": rules}
    )
    assert "at most 25 unique destinations" in error.response["Error"]["Message"]
    ecr.put_replication_configuration(replicationConfiguration={"rules": []})


def test_describe_image_replication_status_errors_and_unreplicated_images(ecr_server: ServerProcess, name: str) -> None:
    ecr = client(ecr_server, "ap-northeast-3")
    raises(
        "RepositoryNotFoundException",
        ecr.describe_image_replication_status,
        repositoryName=name,
        imageId={"imageTag": "v1"},
    )
    ecr.create_repository(repositoryName=name)
    raises(
        "ImageNotFoundException", ecr.describe_image_replication_status, repositoryName=name, imageId={"imageTag": "v1"}
    )
    image = put_api_image(ecr, name, seed=7001, tag="v1")
    answer = ecr.describe_image_replication_status(repositoryName=name, imageId={"imageTag": "v1"})
    assert answer["imageId"] == {"imageDigest": image.digest, "imageTag": "v1"}
    assert answer["replicationStatuses"] == []


# --------------------------------------------------------------------------------------- cross-region


def test_an_image_is_replicated_to_another_region_and_pulls_from_there(ecr_server: ServerProcess, name: str) -> None:
    source, destination = client(ecr_server, "us-west-2"), client(ecr_server, "eu-west-1")
    source.put_replication_configuration(replicationConfiguration={"rules": [{"destinations": [to("eu-west-1")]}]})
    source.create_repository(
        repositoryName=name, imageTagMutability="IMMUTABLE", imageScanningConfiguration={"scanOnPush": False}
    )
    image = put_api_image(source, name, seed=7002, tag="v1")
    source.put_image(repositoryName=name, imageManifest=image.manifest, imageTag="stable")

    assert settled(source, name, image.digest) == [
        {"region": "eu-west-1", "registryId": ACCOUNT_ID, "status": "COMPLETE"}
    ]
    (detail,) = destination.describe_images(repositoryName=name)["imageDetails"]
    assert detail["imageDigest"] == image.digest
    assert sorted(detail["imageTags"]) == ["stable", "v1"]
    assert detail["imageSizeInBytes"] == image.size
    (repository,) = destination.describe_repositories(repositoryNames=[name])["repositories"]
    assert repository["imageTagMutability"] == "IMMUTABLE"  # the source's settings
    assert repository["repositoryArn"] == f"arn:aws:ecr:eu-west-1:{ACCOUNT_ID}:repository/{name}"
    pull(ecr_server, destination, name, image, "stable")
    pull(ecr_server, destination, name, image, image.digest)
    # The source region's registry is another registry: no replication configuration there (none in eu-west-1).
    assert destination.describe_registry()["replicationConfiguration"] == {"rules": []}


def test_an_index_is_replicated_with_its_images(ecr_server: ServerProcess, name: str) -> None:
    source, destination = client(ecr_server, "ca-central-1"), client(ecr_server, "eu-central-1")
    source.create_repository(repositoryName=name)
    children = [put_api_image(source, name, seed=7100 + n, tag=None) for n in range(2)]
    source.put_replication_configuration(replicationConfiguration={"rules": [{"destinations": [to("eu-central-1")]}]})
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": c.media_type, "digest": c.digest, "size": len(c.manifest.encode())} for c in children
            ],
        }
    )
    digest = source.put_image(repositoryName=name, imageManifest=index, imageTag="multi")["image"]["imageId"][
        "imageDigest"
    ]
    assert [s["status"] for s in settled(source, name, digest)] == ["COMPLETE"]
    found = {
        d["imageDigest"]: d.get("imageTags", [])
        for d in destination.describe_images(repositoryName=name)["imageDetails"]
    }
    assert found == {digest: ["multi"], children[0].digest: [], children[1].digest: []}
    pull(ecr_server, destination, name, children[0], children[0].digest)


def test_a_filter_that_does_not_match_replicates_nothing(ecr_server: ServerProcess, name: str) -> None:
    source, destination = client(ecr_server, "sa-east-1"), client(ecr_server, "us-east-2")
    rule = {"destinations": [to("us-east-2")], "repositoryFilters": [{"filter": "prod", "filterType": "PREFIX_MATCH"}]}
    source.put_replication_configuration(replicationConfiguration={"rules": [rule]})
    source.create_repository(repositoryName=name)
    image = put_api_image(source, name, seed=7003, tag="v1")
    assert statuses(source, name, image.digest) == []  # nothing was queued by the push
    matched = f"prod/{name}"
    source.create_repository(repositoryName=matched)
    other = put_api_image(source, matched, seed=7004, tag="v1")
    assert [s["status"] for s in settled(source, matched, other.digest)] == ["COMPLETE"]
    raises("RepositoryNotFoundException", destination.describe_repositories, repositoryNames=[name])
    assert destination.describe_images(repositoryName=matched)["imageDetails"][0]["imageDigest"] == other.digest


# --------------------------------------------------------------------------------------- cross-account


def test_cross_account_replication_needs_the_destination_registry_policy(
    ecr_server: ServerProcess, other_keys: Keys, name: str
) -> None:
    source = client(ecr_server, "af-south-1")
    other = client(ecr_server, "me-south-1", other_keys)
    source.put_replication_configuration(
        replicationConfiguration={"rules": [{"destinations": [to("me-south-1", OTHER_ACCOUNT)]}]}
    )
    source.create_repository(repositoryName=name)
    refused = put_api_image(source, name, seed=7005, tag="v1")
    (status,) = settled(source, name, refused.digest)
    assert (status["region"], status["registryId"], status["status"]) == ("me-south-1", OTHER_ACCOUNT, "FAILED")
    assert status["failureCode"].startswith("AccessDenied")
    raises("RepositoryNotFoundException", other.describe_repositories, repositoryNames=[name])

    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReplicationAccessCrossAccount",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
                "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
                "Resource": f"arn:aws:ecr:me-south-1:{OTHER_ACCOUNT}:repository/*",
            }
        ],
    }
    other.put_registry_policy(policyText=json.dumps(policy))
    allowed = put_api_image(source, name, seed=7006, tag="v2")
    assert settled(source, name, allowed.digest) == [
        {"region": "me-south-1", "registryId": OTHER_ACCOUNT, "status": "COMPLETE"}
    ]
    (detail,) = other.describe_images(repositoryName=name)["imageDetails"]
    assert (detail["registryId"], detail["imageDigest"], detail["imageTags"]) == (OTHER_ACCOUNT, allowed.digest, ["v2"])
    pull(ecr_server, other, name, allowed, "v2")


def test_a_kms_repository_replicates_into_the_destination_regions_own_key(ecr_server: ServerProcess, name: str) -> None:
    """Another region cannot use the source's key: the copy is re-encrypted under the destination's aws/ecr
    key (content never crosses key domains by link) and pulls byte for byte."""
    source, destination = client(ecr_server, "sa-east-1"), client(ecr_server, "me-south-1")
    source.put_replication_configuration(replicationConfiguration={"rules": [{"destinations": [to("me-south-1")]}]})
    created = source.create_repository(repositoryName=name, encryptionConfiguration={"encryptionType": "KMS"})
    source_key = created["repository"]["encryptionConfiguration"]["kmsKey"]
    image = put_api_image(source, name, seed=7010, tag="v1")

    assert settled(source, name, image.digest) == [
        {"region": "me-south-1", "registryId": ACCOUNT_ID, "status": "COMPLETE"}
    ]
    (repository,) = destination.describe_repositories(repositoryNames=[name])["repositories"]
    encryption = repository["encryptionConfiguration"]
    assert encryption["encryptionType"] == "KMS"
    assert encryption["kmsKey"].startswith("arn:aws:kms:me-south-1:") and encryption["kmsKey"] != source_key
    pull(ecr_server, destination, name, image, "v1")
