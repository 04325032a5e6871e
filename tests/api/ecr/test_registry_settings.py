"""Registry settings through boto3 on a real `dockyard serve`: BatchGetRepositoryScanningConfiguration,
Get/PutAccountSetting (BLOB_MOUNTING really stops /v2 mounts), ListImageReferrers and the pull-time update
exclusions (honoured by /v2 manifest GETs and BatchGetImage), each with its modelled errors provoked.

Account settings and exclusions belong to the whole registry of the module's server: the tests that change
them put them back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.api.ecr.helpers import ABSENT, error_code, put_api_image, upload_layer
from tests.support.clients import boto_client
from tests.support.iam import Keys, policy, statement
from tests.support.images import OCI_MANIFEST, sha256
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess

ROOT = Keys(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
EMPTY_JSON = "application/vnd.oci.empty.v1+json"
SBOM = "application/vnd.example.sbom"
SIGNATURE = "application/vnd.example.signature"


def raises(code: str, call: Any, **params: Any) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call(**params)
    assert error_code(caught.value) == code, caught.value.response
    return caught.value


def seed() -> int:
    return uuid.uuid4().int % 2**62


def user_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT_ID}:user/{name}"


# ------------------------------------------------------------------------------ BatchGetRepositoryScanningConfiguration


@pytest.fixture
def scanning_rules(ecr: Any) -> Iterator[str]:
    """Registry rules: continuous scanning of `<prefix>cont*`, scan on push of `<prefix>*`; removed afterwards."""
    prefix = f"scanrule-{uuid.uuid4().hex[:8]}/"
    ecr.put_registry_scanning_configuration(
        scanType="BASIC",
        rules=[
            {
                "scanFrequency": "SCAN_ON_PUSH",
                "repositoryFilters": [{"filter": f"{prefix}*", "filterType": "WILDCARD"}],
            },
            {
                "scanFrequency": "CONTINUOUS_SCAN",
                "repositoryFilters": [
                    {"filter": f"{prefix}cont*", "filterType": "WILDCARD"},
                    {"filter": "never-matches-*", "filterType": "WILDCARD"},
                ],
            },
        ],
    )
    try:
        yield prefix
    finally:
        ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[])


def test_scanning_configuration_of_each_repository(ecr: Any, scanning_rules: str) -> None:
    plain, flagged = f"plain-{uuid.uuid4().hex[:8]}", f"flagged-{uuid.uuid4().hex[:8]}"
    on_push, continuous = f"{scanning_rules}app", f"{scanning_rules}continuous"
    for name in (plain, on_push, continuous):
        ecr.create_repository(repositoryName=name)
    ecr.create_repository(repositoryName=flagged, imageScanningConfiguration={"scanOnPush": True})
    missing = f"missing-{uuid.uuid4().hex[:8]}"

    answer = ecr.batch_get_repository_scanning_configuration(
        repositoryNames=[plain, flagged, on_push, continuous, missing, plain]
    )

    by_name = {c["repositoryName"]: c for c in answer["scanningConfigurations"]}
    assert list(by_name) == [plain, flagged, on_push, continuous]  # in the order asked, a repeated name once
    assert by_name[plain] == {
        "repositoryArn": f"arn:aws:ecr:us-east-1:{ACCOUNT_ID}:repository/{plain}",
        "repositoryName": plain,
        "scanOnPush": False,
        "scanFrequency": "MANUAL",
        "appliedScanFilters": [],
    }
    assert (by_name[flagged]["scanOnPush"], by_name[flagged]["scanFrequency"]) == (True, "SCAN_ON_PUSH")
    assert by_name[flagged]["appliedScanFilters"] == []
    assert by_name[on_push]["scanFrequency"] == "SCAN_ON_PUSH"
    assert by_name[on_push]["appliedScanFilters"] == [{"filter": f"{scanning_rules}*", "filterType": "WILDCARD"}]
    # Both rules match: continuous scanning wins, with only the filters of that rule that match.
    assert (by_name[continuous]["scanOnPush"], by_name[continuous]["scanFrequency"]) == (True, "CONTINUOUS_SCAN")
    assert by_name[continuous]["appliedScanFilters"] == [{"filter": f"{scanning_rules}cont*", "filterType": "WILDCARD"}]
    assert answer["failures"] == [
        {
            "repositoryName": missing,
            "failureCode": "REPOSITORY_NOT_FOUND",
            "failureReason": f"The repository with name '{missing}' does not exist in the registry with id "
            f"'{ACCOUNT_ID}'",
        }
    ]


def test_scanning_configuration_takes_1_to_25_names(unvalidated: Any) -> None:
    names = [f"many-{n}" for n in range(26)]
    raises("InvalidParameterException", unvalidated.batch_get_repository_scanning_configuration, repositoryNames=names)
    raises("InvalidParameterException", unvalidated.batch_get_repository_scanning_configuration, repositoryNames=[])
    raises(
        "InvalidParameterException",
        unvalidated.batch_get_repository_scanning_configuration,
        repositoryNames=["Not A Name"],
    )


# ------------------------------------------------------------------------------ Get/PutAccountSetting


@pytest.mark.parametrize(
    ("name", "default", "other"),
    [("BASIC_SCAN_TYPE_VERSION", "AWS_NATIVE", "CLAIR"), ("BLOB_MOUNTING", "ENABLED", "DISABLED")],
)
def test_account_setting_round_trip(ecr: Any, ecr_server: ServerProcess, name: str, default: str, other: str) -> None:
    assert _plain(ecr.get_account_setting(name=name)) == {"name": name, "value": default}
    try:
        assert _plain(ecr.put_account_setting(name=name, value=other)) == {"name": name, "value": other}
        assert _plain(ecr.get_account_setting(name=name)) == {"name": name, "value": other}
        # Settings are per registry: the same account's registry in another region keeps its default.
        other_region = boto_client(ecr_server, "ecr", ROOT, "eu-west-1")
        assert _plain(other_region.get_account_setting(name=name)) == {"name": name, "value": default}
    finally:
        ecr.put_account_setting(name=name, value=default)
    assert _plain(ecr.get_account_setting(name=name)) == {"name": name, "value": default}


def test_registry_policy_scope_is_v1(ecr: Any) -> None:
    """Dockyard enforces the V1 scope (registry policies grant replication and repository creation only)."""
    assert _plain(ecr.get_account_setting(name="REGISTRY_POLICY_SCOPE")) == {
        "name": "REGISTRY_POLICY_SCOPE",
        "value": "V1",
    }
    assert _plain(ecr.put_account_setting(name="REGISTRY_POLICY_SCOPE", value="V1"))["value"] == "V1"
    error = raises("InvalidParameterException", ecr.put_account_setting, name="REGISTRY_POLICY_SCOPE", value="V2")
    assert "V1 registry policy scope" in error.response["Error"]["Message"]
    assert ecr.get_account_setting(name="REGISTRY_POLICY_SCOPE")["value"] == "V1"


def test_account_setting_errors(ecr: Any, unvalidated: Any) -> None:
    error = raises("ValidationException", ecr.get_account_setting, name="NO_SUCH_SETTING")
    assert "BASIC_SCAN_TYPE_VERSION, BLOB_MOUNTING, REGISTRY_POLICY_SCOPE" in error.response["Error"]["Message"]
    raises("ValidationException", ecr.put_account_setting, name="NO_SUCH_SETTING", value="ENABLED")
    error = raises("InvalidParameterException", ecr.put_account_setting, name="BLOB_MOUNTING", value="enabled")
    assert "ENABLED, DISABLED" in error.response["Error"]["Message"]
    raises("InvalidParameterException", ecr.put_account_setting, name="BASIC_SCAN_TYPE_VERSION", value="TRIVY")
    raises("InvalidParameterException", unvalidated.get_account_setting, name="X" * 65)
    raises("InvalidParameterException", unvalidated.put_account_setting, name="BLOB_MOUNTING")
    assert ecr.get_account_setting(name="BLOB_MOUNTING")["value"] == "ENABLED"


def _plain(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "ResponseMetadata"}


# ------------------------------------------------------------------------------ BLOB_MOUNTING on /v2


@pytest.fixture
def mounting_disabled(ecr: Any) -> Iterator[None]:
    ecr.put_account_setting(name="BLOB_MOUNTING", value="DISABLED")
    try:
        yield
    finally:
        ecr.put_account_setting(name="BLOB_MOUNTING", value="ENABLED")


def test_blob_mounting_disabled_answers_mounts_with_an_upload(
    ecr: Any, ecr_server: ServerProcess, created: str, mounting_disabled: None
) -> None:
    layer = upload_layer(ecr, created, f"mountable {uuid.uuid4()}".encode())
    target = f"mount-target/{uuid.uuid4().hex[:8]}"
    with ecr_server.client() as http:
        for params in ({"mount": layer, "from": created}, {"mount": layer}):
            answer = http.post(f"/v2/{target}/blobs/uploads/", params=params)
            assert answer.status_code == 202, answer.text  # an upload session, as the spec allows
            assert answer.headers["location"].startswith(f"/v2/{target}/blobs/uploads/")
            assert http.head(f"/v2/{target}/blobs/{layer}").status_code == 404  # not linked
            assert http.delete(answer.headers["location"]).status_code == 204
        # A malformed digest is still refused.
        bad = http.post(f"/v2/{target}/blobs/uploads/", params={"mount": "sha256:zz", "from": created})
        assert bad.status_code == 400, bad.text

        ecr.put_account_setting(name="BLOB_MOUNTING", value="ENABLED")
        mounted = http.post(f"/v2/{target}/blobs/uploads/", params={"mount": layer, "from": created})
        assert mounted.status_code == 201, mounted.text
        assert http.head(f"/v2/{target}/blobs/{layer}").status_code == 200


# ------------------------------------------------------------------------------ ListImageReferrers


def put_referrer(ecr: Any, repo: str, subject: str, artifact_type: str, note: str) -> str:
    """PutImage an artifact manifest whose subject is `subject`; returns its digest."""
    if not ecr.batch_check_layer_availability(repositoryName=repo, layerDigests=[sha256(b"{}")])["layers"][0].get(
        "layerSize"
    ):
        upload_layer(ecr, repo, b"{}")
    config = {"mediaType": EMPTY_JSON, "digest": sha256(b"{}"), "size": 2}
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config,
        "layers": [config],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 100},
        "annotations": {"org.example.note": note},
    }
    text = json.dumps(document)
    ecr.put_image(repositoryName=repo, imageManifest=text)
    return sha256(text.encode())


def test_list_image_referrers_filters_and_pages(ecr: Any, created: str) -> None:
    subject = put_api_image(ecr, created, seed()).digest
    sboms = [put_referrer(ecr, created, subject, SBOM, f"sbom {n}") for n in range(3)]
    signature = put_referrer(ecr, created, subject, SIGNATURE, "signed")
    put_referrer(ecr, created, ABSENT, SBOM, "of another subject")

    everything = ecr.list_image_referrers(repositoryName=created, subjectId={"imageDigest": subject})
    assert "nextToken" not in everything
    assert {r["digest"] for r in everything["referrers"]} == {*sboms, signature}
    first = next(r for r in everything["referrers"] if r["digest"] == signature)
    assert first["mediaType"] == OCI_MANIFEST
    assert first["artifactType"] == SIGNATURE
    assert first["annotations"] == {"org.example.note": "signed"}
    assert first["artifactStatus"] == "ACTIVE"
    assert first["size"] > 0

    only_sboms = ecr.list_image_referrers(
        repositoryName=created, subjectId={"imageDigest": subject}, filter={"artifactTypes": [SBOM]}
    )
    assert sorted(r["digest"] for r in only_sboms["referrers"]) == sorted(sboms)

    pages, token = [], None
    while True:
        extra = {"nextToken": token} if token else {}
        page = ecr.list_image_referrers(
            repositoryName=created, subjectId={"imageDigest": subject}, maxResults=3, **extra
        )
        pages.append([r["digest"] for r in page["referrers"]])
        token = page.get("nextToken")
        if token is None:
            break
    assert [len(p) for p in pages] == [3, 1]
    assert sorted(digest for page in pages for digest in page) == sorted([*sboms, signature])

    # An archived referrer is listed only when the filter asks for it.
    ecr.update_image_storage_class(
        repositoryName=created, imageId={"imageDigest": signature}, targetStorageClass="ARCHIVE"
    )
    active = ecr.list_image_referrers(repositoryName=created, subjectId={"imageDigest": subject})
    assert signature not in {r["digest"] for r in active["referrers"]}
    archived = ecr.list_image_referrers(
        repositoryName=created, subjectId={"imageDigest": subject}, filter={"artifactStatus": "ARCHIVED"}
    )
    assert [(r["digest"], r["artifactStatus"]) for r in archived["referrers"]] == [(signature, "ARCHIVED")]
    any_status = ecr.list_image_referrers(
        repositoryName=created, subjectId={"imageDigest": subject}, filter={"artifactStatus": "ANY"}
    )
    assert len(any_status["referrers"]) == 4

    nothing = ecr.list_image_referrers(repositoryName=created, subjectId={"imageDigest": "sha256:" + "1" * 64})
    assert nothing["referrers"] == []


def test_list_image_referrers_errors(ecr: Any, unvalidated: Any, created: str) -> None:
    subject = {"imageDigest": ABSENT}
    error = raises(
        "RepositoryNotFoundException", ecr.list_image_referrers, repositoryName="absent/repo", subjectId=subject
    )
    assert "absent/repo" in error.response["Error"]["Message"]
    six = [f"application/vnd.example.t{n}" for n in range(6)]
    raises(
        "InvalidParameterException",
        unvalidated.list_image_referrers,
        repositoryName=created,
        subjectId=subject,
        filter={"artifactTypes": six},
    )
    five = ecr.list_image_referrers(repositoryName=created, subjectId=subject, filter={"artifactTypes": six[:5]})
    assert five["referrers"] == []
    raises(
        "InvalidParameterException",
        unvalidated.list_image_referrers,
        repositoryName=created,
        subjectId=subject,
        maxResults=51,
    )
    raises("InvalidParameterException", unvalidated.list_image_referrers, repositoryName=created, subjectId={})
    raises(
        "InvalidParameterException",
        ecr.list_image_referrers,
        repositoryName=created,
        subjectId={"imageDigest": "not-a-digest"},
    )
    raises(
        "InvalidParameterException", ecr.list_image_referrers, repositoryName=created, subjectId=subject, nextToken="zz"
    )


# ------------------------------------------------------------------------------ pull-time update exclusions


def test_pull_time_update_exclusions_round_trip(ecr: Any) -> None:
    names = sorted(f"excluded-{uuid.uuid4().hex[:8]}" for _ in range(3))
    before = datetime.now(UTC) - timedelta(seconds=5)
    try:
        for name in names:
            answer = ecr.register_pull_time_update_exclusion(principalArn=user_arn(name))
            assert answer["principalArn"] == user_arn(name)
            assert before <= answer["createdAt"] <= datetime.now(UTC) + timedelta(seconds=5)
        error = raises(
            "ExclusionAlreadyExistsException", ecr.register_pull_time_update_exclusion, principalArn=user_arn(names[0])
        )
        assert user_arn(names[0]) in error.response["Error"]["Message"]

        listed = ecr.list_pull_time_update_exclusions()["pullTimeUpdateExclusions"]
        assert [arn for arn in listed if arn in map(user_arn, names)] == [user_arn(n) for n in names]
        pages, token = [], None
        while True:
            page = ecr.list_pull_time_update_exclusions(maxResults=2, **({"nextToken": token} if token else {}))
            pages.extend(page["pullTimeUpdateExclusions"])
            token = page.get("nextToken")
            if token is None:
                break
        assert pages == listed
    finally:
        for name in names:
            gone = ecr.deregister_pull_time_update_exclusion(principalArn=user_arn(name))
            assert gone["principalArn"] == user_arn(name)
    remaining = ecr.list_pull_time_update_exclusions()["pullTimeUpdateExclusions"]
    assert not set(remaining) & set(map(user_arn, names))
    error = raises(
        "ExclusionNotFoundException", ecr.deregister_pull_time_update_exclusion, principalArn=user_arn(names[0])
    )
    assert user_arn(names[0]) in error.response["Error"]["Message"]


def test_pull_time_update_exclusion_errors(ecr: Any, unvalidated: Any) -> None:
    for arn in (f"arn:aws:iam::{ACCOUNT_ID}:root", "not-an-arn", f"arn:aws:iam::{ACCOUNT_ID}:group/ops"):
        raises("InvalidParameterException", unvalidated.register_pull_time_update_exclusion, principalArn=arn)
    raises("InvalidParameterException", unvalidated.list_pull_time_update_exclusions, maxResults=1001)
    raises("InvalidParameterException", ecr.list_pull_time_update_exclusions, nextToken="garbage")


def test_at_most_100_pull_time_update_exclusions(ecr: Any) -> None:
    arns = [user_arn(f"limit-{n:03}-{uuid.uuid4().hex[:6]}") for n in range(100)]
    # No other test of the module leaves one behind.
    assert ecr.list_pull_time_update_exclusions(maxResults=1000)["pullTimeUpdateExclusions"] == []
    try:
        for arn in arns:
            ecr.register_pull_time_update_exclusion(principalArn=arn)
        error = raises(
            "LimitExceededException", ecr.register_pull_time_update_exclusion, principalArn=user_arn("one-more")
        )
        assert "100" in error.response["Error"]["Message"]
        assert len(ecr.list_pull_time_update_exclusions(maxResults=1000)["pullTimeUpdateExclusions"]) == 100
    finally:
        for arn in arns:
            try:
                ecr.deregister_pull_time_update_exclusion(principalArn=arn)
            except ClientError as error:
                assert error_code(error) == "ExclusionNotFoundException"


def test_an_excluded_principals_pulls_leave_the_pull_time_alone(
    ecr: Any, ecr_server: ServerProcess, created: str
) -> None:
    name = f"puller-{uuid.uuid4().hex[:8]}"
    iam = boto_client(ecr_server, "iam", ROOT)
    iam.create_user(UserName=name)
    iam.put_user_policy(
        UserName=name,
        PolicyName="pull",
        PolicyDocument=policy(statement("Allow", ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"])),
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    puller = Keys(key["AccessKeyId"], key["SecretAccessKey"])
    image = put_api_image(ecr, created, seed(), tag="v1")

    def pull_time() -> datetime | None:
        detail = ecr.describe_images(repositoryName=created, imageIds=[{"imageDigest": image.digest}])
        found: datetime | None = detail["imageDetails"][0].get("lastRecordedPullTime")
        return found

    ecr.register_pull_time_update_exclusion(principalArn=user_arn(name))
    try:
        response = httpx.get(
            f"{ecr_server.url}/v2/{created}/manifests/v1",
            headers={**puller.basic, "Accept": OCI_MANIFEST},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        boto_client(ecr_server, "ecr", puller).batch_get_image(repositoryName=created, imageIds=[{"imageTag": "v1"}])
        assert pull_time() is None
    finally:
        ecr.deregister_pull_time_update_exclusion(principalArn=user_arn(name))

    # Once the exclusion is gone the same principal's pull is recorded.
    response = httpx.get(
        f"{ecr_server.url}/v2/{created}/manifests/v1", headers={**puller.basic, "Accept": OCI_MANIFEST}, timeout=30
    )
    assert response.status_code == 200, response.text
    recorded = pull_time()
    assert recorded is not None
    assert abs(recorded - datetime.now(UTC)) < timedelta(minutes=1)
