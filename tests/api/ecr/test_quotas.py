"""LimitExceededException: service quotas set on the account before the server starts."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from dockyard.config import Settings
from dockyard.domain.clock import utc_now
from dockyard.domain.iam import bootstrap_root_credentials
from dockyard.server import prepare
from tests.api.ecr.helpers import build_image, ecr_client, error_code, put_api_image, upload_blobs
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess

REPOSITORY_QUOTA = 3
IMAGE_QUOTA = 2


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data_dir = tmp_path_factory.mktemp("quotas") / "data"
    services = prepare(Settings(data_dir, ACCOUNT_ID))
    bootstrap_root_credentials(
        services.metadata, services.box, ACCOUNT_ID, utc_now(), (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    )
    services.repositories.quotas.set(ACCOUNT_ID, "repositories-per-region", REPOSITORY_QUOTA)
    services.repositories.quotas.set(ACCOUNT_ID, "images-per-repository", IMAGE_QUOTA)
    services.engine.dispose()
    server = ServerProcess(data_dir).start()
    try:
        yield ecr_client(server)
    finally:
        server.stop()


def test_repository_quota(limited: Any) -> None:
    for n in range(REPOSITORY_QUOTA):
        limited.create_repository(repositoryName=f"quota/repo-{n}")
    with pytest.raises(ClientError) as caught:
        limited.create_repository(repositoryName="quota/one-too-many")
    assert error_code(caught.value) == "LimitExceededException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    names = [r["repositoryName"] for r in limited.describe_repositories()["repositories"]]
    assert "quota/one-too-many" not in names


def test_image_quota(limited: Any) -> None:
    repo = "quota/repo-0"
    images = [put_api_image(limited, repo, secrets.randbelow(2**62), tag=f"v{n}") for n in range(IMAGE_QUOTA)]
    limited.put_image(repositoryName=repo, imageManifest=images[0].manifest, imageTag="retag")  # not a new image
    extra = build_image(secrets.randbelow(2**62))
    upload_blobs(limited, repo, extra)
    with pytest.raises(ClientError) as caught:
        limited.put_image(repositoryName=repo, imageManifest=extra.manifest, imageTag="extra")
    assert error_code(caught.value) == "LimitExceededException"
    assert len(limited.describe_images(repositoryName=repo)["imageDetails"]) == IMAGE_QUOTA
