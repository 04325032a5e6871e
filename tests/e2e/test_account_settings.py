"""Account settings and pull-time exclusions seen by skopeo against a real `dockyard serve`.

- BLOB_MOUNTING=DISABLED: skopeo's cross-repository mount requests are answered with an upload session (202),
  so it uploads the layers again; nothing is linked by a mount.
- A pull-time update exclusion: skopeo pulls by the excluded IAM user leave `lastRecordedPullTime` alone
  (DescribeImages); once the exclusion is removed the user's pull is recorded.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support.clients import boto_client
from tests.support.iam import Keys, policy, statement
from tests.support.images import single_image_layout
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess
from tests.support.tools import Skopeo, count, fresh_seed, request_counts, requests_between, uploads

ROOT = Keys(ACCESS_KEY_ID, SECRET_ACCESS_KEY)


def test_skopeo_uploads_instead_of_mounting_when_blob_mounting_is_disabled(
    server: ServerProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    ecr = boto_client(server, "ecr", ROOT)
    source = tmp_path / "source"
    single_image_layout(source, tag="v1", layers=3, seed=fresh_seed())
    skopeo.push(server, f"oci:{source}:v1", "team/app:v1")
    ecr.put_account_setting(name="BLOB_MOUNTING", value="DISABLED")

    before = request_counts(server)
    skopeo.push(server, f"oci:{source}:v1", "team/copy:v1")
    during = requests_between(before, request_counts(server))

    # containers/image asks to mount each of the 3 layers from team/app (it remembers they live there): each
    # mount is answered 202 with an upload session, which it drops (DELETE) before uploading the layer itself.
    # With mounting enabled the same push mounts the 3 layers (below, and test_skopeo).
    assert uploads(during)["mount"] == 0, during
    assert count(during, "start_upload", "202") == 3 + 4, during
    assert count(during, "cancel_upload", "204") == 3, during
    assert count(during, "finish_upload", "201") == 4, during

    ecr.put_account_setting(name="BLOB_MOUNTING", value="ENABLED")
    before = request_counts(server)
    skopeo.push(server, f"oci:{source}:v1", "team/third:v1")
    assert uploads(requests_between(before, request_counts(server)))["mount"] == 3


def test_skopeo_pulls_by_an_excluded_user_leave_the_pull_time_alone(
    server: ServerProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    iam, ecr = boto_client(server, "iam", ROOT), boto_client(server, "ecr", ROOT)
    user = f"ci-puller-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    pull = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    iam.put_user_policy(UserName=user, PolicyName="pull", PolicyDocument=policy(statement("Allow", pull)))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    creds = f"{key['AccessKeyId']}:{key['SecretAccessKey']}"
    source = tmp_path / "source"
    digest = single_image_layout(source, tag="v1", layers=2, seed=fresh_seed())
    skopeo.push(server, f"oci:{source}:v1", "team/pulled:v1")

    def pull_as_user(n: int) -> None:
        skopeo.ok(
            "copy", "--quiet", "--src-tls-verify=false", "--src-creds", creds,
            f"docker://{server.host}/team/pulled:v1", f"oci:{tmp_path / f'pulled-{n}'}:v1",
        )  # fmt: skip

    def pull_time() -> datetime | None:
        images = ecr.describe_images(repositoryName="team/pulled", imageIds=[{"imageDigest": digest}])
        found: datetime | None = images["imageDetails"][0].get("lastRecordedPullTime")
        return found

    arn = f"arn:aws:iam::{ACCOUNT_ID}:user/{user}"
    assert ecr.register_pull_time_update_exclusion(principalArn=arn)["principalArn"] == arn
    pull_as_user(1)
    pull_as_user(2)
    assert pull_time() is None

    ecr.deregister_pull_time_update_exclusion(principalArn=arn)
    pull_as_user(3)
    recorded = pull_time()
    assert recorded is not None
    assert abs(datetime.now(UTC) - recorded) < timedelta(minutes=1)
