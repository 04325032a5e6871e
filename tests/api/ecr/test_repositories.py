"""Repository operations through boto3: CreateRepository, DescribeRepositories, DeleteRepository,
DescribeRegistry, GetAuthorizationToken, PutImageTagMutability, PutImageScanningConfiguration and the
resource-tag operations. Every response is parsed by botocore, every documented error is provoked."""

from __future__ import annotations

import base64
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from tests.api.ecr.helpers import INVALID_PARAMETER_RE, REGION, error_code, put_api_image, repository_arn
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess


def near_now(moment: datetime, slack: timedelta = timedelta(minutes=2)) -> bool:
    return abs(moment - datetime.now(UTC)) < slack


def raises(code: str, call: Any, **params: Any) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call(**params)
    assert error_code(caught.value) == code, caught.value.response
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400, caught.value.response
    return caught.value


# --------------------------------------------------------------------------------------- CreateRepository


def test_create_repository_echoes_every_setting(ecr: Any, repo: str, ecr_server: ServerProcess) -> None:
    kms = boto3.client(
        "kms",
        endpoint_url=ecr_server.url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    key = kms.create_key()["KeyMetadata"]
    alias = f"alias/dockyard-test-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    created = ecr.create_repository(
        repositoryName=repo,
        tags=[{"Key": "team", "Value": "platform"}, {"Key": "cost-centre", "Value": ""}],
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[
            {"filterType": "WILDCARD", "filter": "latest"},
            {"filterType": "WILDCARD", "filter": "dev-*"},
        ],
        imageScanningConfiguration={"scanOnPush": True},
        encryptionConfiguration={"encryptionType": "KMS", "kmsKey": alias},
    )["repository"]

    assert created["repositoryName"] == repo
    assert created["registryId"] == ACCOUNT_ID
    assert created["repositoryArn"] == repository_arn(repo)
    assert created["repositoryUri"] == f"{ecr_server.host}/{repo}"
    assert near_now(created["createdAt"])
    assert created["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert created["imageTagMutabilityExclusionFilters"] == [
        {"filterType": "WILDCARD", "filter": "latest"},
        {"filterType": "WILDCARD", "filter": "dev-*"},
    ]
    assert created["imageScanningConfiguration"] == {"scanOnPush": True}
    assert created["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": key["Arn"]}  # resolved

    described = ecr.describe_repositories(repositoryNames=[repo])["repositories"]
    assert described == [created]
    tags = ecr.list_tags_for_resource(resourceArn=created["repositoryArn"])["tags"]
    assert sorted(tags, key=lambda t: t["Key"]) == [
        {"Key": "cost-centre", "Value": ""},
        {"Key": "team", "Value": "platform"},
    ]


def test_create_repository_defaults(ecr: Any, repo: str) -> None:
    created = ecr.create_repository(repositoryName=repo)["repository"]
    assert created["imageTagMutability"] == "MUTABLE"
    assert "imageTagMutabilityExclusionFilters" not in created
    assert created["imageScanningConfiguration"] == {"scanOnPush": False}
    assert created["encryptionConfiguration"] == {"encryptionType": "AES256"}
    assert ecr.list_tags_for_resource(resourceArn=created["repositoryArn"])["tags"] == []


@pytest.mark.parametrize("encryption", ["KMS", "KMS_DSSE"])
def test_create_repository_kms_without_key(ecr: Any, repo: str, encryption: str) -> None:
    created = ecr.create_repository(repositoryName=repo, encryptionConfiguration={"encryptionType": encryption})
    assert created["repository"]["encryptionConfiguration"]["encryptionType"] == encryption


def test_create_repository_twice_is_refused(ecr: Any, created: str) -> None:
    error = raises("RepositoryAlreadyExistsException", ecr.create_repository, repositoryName=created)
    assert created in error.response["Error"]["Message"]


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(
            {
                "imageTagMutability": "MUTABLE",
                "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "x"}],
            },
            id="filters-without-exclusion-mutability",
        ),
        pytest.param({"imageTagMutability": "IMMUTABLE_WITH_EXCLUSION"}, id="exclusion-mutability-without-filters"),
        pytest.param(
            {
                "imageTagMutability": "MUTABLE_WITH_EXCLUSION",
                "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": f"f{n}"} for n in range(6)],
            },
            id="six-filters",
        ),
        pytest.param(
            {
                "imageTagMutability": "MUTABLE_WITH_EXCLUSION",
                "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "has space"}],
            },
            id="filter-pattern",
        ),
        pytest.param(
            {"encryptionConfiguration": {"encryptionType": "AES256", "kmsKey": "alias/x"}}, id="aes-with-kms-key"
        ),
    ],
)
def test_create_repository_invalid_settings(unvalidated: Any, repo: str, settings: dict[str, Any]) -> None:
    error = raises("InvalidParameterException", unvalidated.create_repository, repositoryName=repo, **settings)
    assert error.response["Error"]["Message"]
    with pytest.raises(ClientError) as caught:
        unvalidated.describe_repositories(repositoryNames=[repo])
    assert error_code(caught.value) == "RepositoryNotFoundException"


@pytest.mark.parametrize("name", ["UPPER-case", "a", "trailing-/", "double//slash", "x" * 257])
def test_create_repository_invalid_name(unvalidated: Any, name: str) -> None:
    error = raises("InvalidParameterException", unvalidated.create_repository, repositoryName=name)
    assert re.fullmatch(INVALID_PARAMETER_RE, error.response["Error"]["Message"]), error.response
    assert "'repositoryName'" in error.response["Error"]["Message"]


def test_create_repository_too_many_tags(ecr: Any, repo: str) -> None:
    tags = [{"Key": f"k{n}", "Value": "v"} for n in range(51)]
    raises("TooManyTagsException", ecr.create_repository, repositoryName=repo, tags=tags)
    created = ecr.create_repository(repositoryName=repo, tags=tags[:50])["repository"]
    assert len(ecr.list_tags_for_resource(resourceArn=created["repositoryArn"])["tags"]) == 50


@pytest.mark.parametrize(
    "tag",
    [{"Key": "aws:reserved", "Value": "v"}, {"Key": "k" * 129, "Value": "v"}, {"Key": "k", "Value": "v" * 257}],
    ids=["aws-prefix", "long-key", "long-value"],
)
def test_create_repository_invalid_tag(ecr: Any, repo: str, tag: dict[str, str]) -> None:
    raises("InvalidTagParameterException", ecr.create_repository, repositoryName=repo, tags=[tag])


# --------------------------------------------------------------------------------------- DescribeRepositories


def test_describe_repositories_by_names(ecr: Any) -> None:
    names = [f"ecr-test/{uuid.uuid4().hex[:12]}" for _ in range(3)]
    for name in names:
        ecr.create_repository(repositoryName=name)
    found = ecr.describe_repositories(repositoryNames=names[:2])["repositories"]
    assert sorted(r["repositoryName"] for r in found) == sorted(names[:2])
    assert "nextToken" not in ecr.describe_repositories(repositoryNames=names[:2])


def test_describe_repositories_unknown_name_fails_whole_call(ecr: Any, created: str) -> None:
    error = raises(
        "RepositoryNotFoundException", ecr.describe_repositories, repositoryNames=[created, "ecr-test/never-made"]
    )
    assert error.response["Error"]["Message"] == (
        f"The repository with name 'ecr-test/never-made' does not exist in the registry with id '{ACCOUNT_ID}'"
    )


def test_describe_repositories_names_with_pagination_is_invalid(ecr: Any, created: str) -> None:
    raises("InvalidParameterException", ecr.describe_repositories, repositoryNames=[created], maxResults=5)


def test_describe_repositories_paginated(ecr: Any) -> None:
    mine = {f"ecr-test/page-{uuid.uuid4().hex[:10]}" for _ in range(7)}
    for name in mine:
        ecr.create_repository(repositoryName=name)
    seen: list[str] = []
    pages = 0
    for page in ecr.get_paginator("describe_repositories").paginate(PaginationConfig={"PageSize": 2}):
        assert len(page["repositories"]) <= 2
        seen.extend(r["repositoryName"] for r in page["repositories"])
        pages += 1
    assert len(seen) == len(set(seen)), "a repository was listed twice"
    assert mine <= set(seen)
    assert pages >= len(seen) // 2


def test_describe_repositories_rejects_a_forged_token(ecr: Any) -> None:
    raises("InvalidParameterException", ecr.describe_repositories, nextToken="not-a-token!")


@pytest.mark.parametrize("max_results", [0, 1001])
def test_describe_repositories_max_results_is_validated(unvalidated: Any, max_results: int) -> None:
    error = raises("InvalidParameterException", unvalidated.describe_repositories, maxResults=max_results)
    assert re.fullmatch(INVALID_PARAMETER_RE, error.response["Error"]["Message"]), error.response
    assert "'maxResults'" in error.response["Error"]["Message"]


# --------------------------------------------------------------------------------------- DeleteRepository


def test_delete_empty_repository(ecr: Any, created: str) -> None:
    deleted = ecr.delete_repository(repositoryName=created)["repository"]
    assert deleted["repositoryName"] == created
    assert deleted["repositoryArn"] == repository_arn(created)
    raises("RepositoryNotFoundException", ecr.describe_repositories, repositoryNames=[created])


def test_delete_repository_with_images_needs_force(ecr: Any, created: str) -> None:
    put_api_image(ecr, created, seed=101, tag="v1")
    error = raises("RepositoryNotEmptyException", ecr.delete_repository, repositoryName=created)
    assert created in error.response["Error"]["Message"]
    assert ecr.describe_images(repositoryName=created)["imageDetails"]

    deleted = ecr.delete_repository(repositoryName=created, force=True)["repository"]
    assert deleted["repositoryName"] == created
    raises("RepositoryNotFoundException", ecr.describe_images, repositoryName=created)
    ecr.create_repository(repositoryName=created)  # the name is free again, and the images are gone
    assert ecr.list_images(repositoryName=created)["imageIds"] == []


def test_delete_unknown_repository(ecr: Any, repo: str) -> None:
    raises("RepositoryNotFoundException", ecr.delete_repository, repositoryName=repo, force=True)


# --------------------------------------------------------------------------------------- registry and login


def test_describe_registry(ecr: Any) -> None:
    answer = ecr.describe_registry()
    assert answer["registryId"] == ACCOUNT_ID
    assert answer["replicationConfiguration"] == {"rules": []}


def test_get_authorization_token(ecr: Any, ecr_server: ServerProcess, created: str) -> None:
    data = ecr.get_authorization_token()["authorizationData"]
    assert len(data) == 1
    token = data[0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    assert user == "AWS"
    assert password and ":" not in password  # `aws ecr get-login-password` splits on ':'
    assert abs(data[0]["expiresAt"] - (datetime.now(UTC) + timedelta(hours=12))) < timedelta(minutes=2)
    assert data[0]["proxyEndpoint"] == ecr_server.url
    assert not data[0]["proxyEndpoint"].endswith("/")

    # The registry door takes the token as Basic credentials for user AWS.
    authorization = {"Authorization": f"Basic {token}"}
    assert httpx.get(f"{ecr_server.url}/v2/", headers=authorization, timeout=10).status_code == 200
    tags = httpx.get(f"{ecr_server.url}/v2/{created}/tags/list", headers=authorization, timeout=10)
    assert tags.status_code == 200, tags.text
    forged = base64.b64encode(f"AWS:{password[:-2]}xx".encode()).decode()
    assert httpx.get(f"{ecr_server.url}/v2/", headers={"Authorization": f"Basic {forged}"}).status_code == 401


def test_get_authorization_token_per_registry(ecr: Any) -> None:
    data = ecr.get_authorization_token(registryIds=[ACCOUNT_ID])["authorizationData"]
    assert len(data) == 1
    assert base64.b64decode(data[0]["authorizationToken"]).startswith(b"AWS:")


# --------------------------------------------------------------------------------------- mutability, scanning


def test_put_image_tag_mutability(ecr: Any, created: str) -> None:
    answer = ecr.put_image_tag_mutability(repositoryName=created, imageTagMutability="IMMUTABLE")
    assert answer["repositoryName"] == created
    assert answer["registryId"] == ACCOUNT_ID
    assert answer["imageTagMutability"] == "IMMUTABLE"
    assert ecr.describe_repositories(repositoryNames=[created])["repositories"][0]["imageTagMutability"] == "IMMUTABLE"

    filters = [{"filterType": "WILDCARD", "filter": "release-*"}]
    answer = ecr.put_image_tag_mutability(
        repositoryName=created, imageTagMutability="MUTABLE_WITH_EXCLUSION", imageTagMutabilityExclusionFilters=filters
    )
    assert answer["imageTagMutabilityExclusionFilters"] == filters
    described = ecr.describe_repositories(repositoryNames=[created])["repositories"][0]
    assert described["imageTagMutability"] == "MUTABLE_WITH_EXCLUSION"
    assert described["imageTagMutabilityExclusionFilters"] == filters

    answer = ecr.put_image_tag_mutability(repositoryName=created, imageTagMutability="MUTABLE")
    assert "imageTagMutabilityExclusionFilters" not in answer
    assert (
        "imageTagMutabilityExclusionFilters"
        not in ecr.describe_repositories(repositoryNames=[created])["repositories"][0]
    )


def test_put_image_tag_mutability_errors(ecr: Any, unvalidated: Any, created: str, repo: str) -> None:
    raises(
        "InvalidParameterException",
        ecr.put_image_tag_mutability,
        repositoryName=created,
        imageTagMutability="IMMUTABLE",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "x"}],
    )
    error = raises(
        "InvalidParameterException",
        unvalidated.put_image_tag_mutability,
        repositoryName=created,
        imageTagMutability="SOMETIMES",
    )
    assert "'imageTagMutability'" in error.response["Error"]["Message"]
    raises(
        "RepositoryNotFoundException",
        ecr.put_image_tag_mutability,
        repositoryName=created + "-missing",
        imageTagMutability="IMMUTABLE",
    )


def test_put_image_scanning_configuration(ecr: Any, created: str) -> None:
    answer = ecr.put_image_scanning_configuration(
        repositoryName=created, imageScanningConfiguration={"scanOnPush": True}
    )
    assert answer["imageScanningConfiguration"] == {"scanOnPush": True}
    assert answer["repositoryName"] == created
    assert answer["registryId"] == ACCOUNT_ID
    described = ecr.describe_repositories(repositoryNames=[created])["repositories"][0]
    assert described["imageScanningConfiguration"] == {"scanOnPush": True}
    ecr.put_image_scanning_configuration(repositoryName=created, imageScanningConfiguration={"scanOnPush": False})
    described = ecr.describe_repositories(repositoryNames=[created])["repositories"][0]
    assert described["imageScanningConfiguration"] == {"scanOnPush": False}
    raises(
        "RepositoryNotFoundException",
        ecr.put_image_scanning_configuration,
        repositoryName=created + "-missing",
        imageScanningConfiguration={"scanOnPush": True},
    )


# --------------------------------------------------------------------------------------- resource tags


def test_tag_untag_list(ecr: Any, created: str) -> None:
    arn = repository_arn(created)
    answer = ecr.tag_resource(resourceArn=arn, tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])
    assert set(answer) == {"ResponseMetadata"}  # TagResource answers `{}`
    ecr.tag_resource(resourceArn=arn, tags=[{"Key": "a", "Value": "overwritten"}])
    tags = ecr.list_tags_for_resource(resourceArn=arn)["tags"]
    assert sorted(tags, key=lambda t: t["Key"]) == [{"Key": "a", "Value": "overwritten"}, {"Key": "b", "Value": "2"}]
    ecr.untag_resource(resourceArn=arn, tagKeys=["a", "not-there"])
    assert ecr.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "b", "Value": "2"}]


def test_tag_resource_limit_is_fifty(ecr: Any, created: str) -> None:
    arn = repository_arn(created)
    ecr.tag_resource(resourceArn=arn, tags=[{"Key": f"k{n}", "Value": "v"} for n in range(50)])
    ecr.tag_resource(resourceArn=arn, tags=[{"Key": "k0", "Value": "overwrite-is-not-a-new-tag"}])
    raises("TooManyTagsException", ecr.tag_resource, resourceArn=arn, tags=[{"Key": "k50", "Value": "v"}])
    assert len(ecr.list_tags_for_resource(resourceArn=arn)["tags"]) == 50


@pytest.mark.parametrize(
    "tag",
    [{"Key": "aws:reserved", "Value": "v"}, {"Key": "", "Value": "v"}, {"Key": "k" * 129, "Value": "v"}],
    ids=["aws-prefix", "empty-key", "long-key"],
)
def test_tag_resource_invalid_tag(unvalidated: Any, created: str, tag: dict[str, str]) -> None:
    raises("InvalidTagParameterException", unvalidated.tag_resource, resourceArn=repository_arn(created), tags=[tag])


def test_tag_operations_on_unknown_repository(ecr: Any, repo: str) -> None:
    arn = repository_arn(repo)
    raises("RepositoryNotFoundException", ecr.tag_resource, resourceArn=arn, tags=[{"Key": "a", "Value": "b"}])
    raises("RepositoryNotFoundException", ecr.untag_resource, resourceArn=arn, tagKeys=["a"])
    raises("RepositoryNotFoundException", ecr.list_tags_for_resource, resourceArn=arn)


@pytest.mark.parametrize(
    "arn",
    ["not-an-arn", f"arn:aws:s3:{REGION}:{ACCOUNT_ID}:bucket/x", f"arn:aws:ecr:{REGION}:{ACCOUNT_ID}:cluster/x"],
)
def test_tag_operations_on_malformed_arn(ecr: Any, arn: str) -> None:
    raises("InvalidParameterException", ecr.list_tags_for_resource, resourceArn=arn)
