"""Replication end to end: skopeo pushes to one region, the server's background worker replicates, skopeo
pulls the same bytes from the other region's registry with an ECR login token for that region."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from tests.api.ecr.helpers import ecr_client
from tests.support.images import single_image_layout
from tests.support.server import ACCOUNT_ID, ServerProcess
from tests.support.tools import Skopeo, fresh_seed, layout_blobs, layout_manifest_digest

DEADLINE = 60.0


def test_skopeo_pushes_in_one_region_and_pulls_the_replica_from_another(
    server: ServerProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    source = ecr_client(server)  # us-east-1: the region of pushes with the root access key (the default)
    destination = ecr_client(server, region="eu-west-1")
    source.put_replication_configuration(
        replicationConfiguration={
            "rules": [
                {
                    "destinations": [{"region": "eu-west-1", "registryId": ACCOUNT_ID}],
                    "repositoryFilters": [{"filter": "team/", "filterType": "PREFIX_MATCH"}],
                }
            ]
        }
    )
    layout = tmp_path / "layout"
    digest = single_image_layout(layout, tag="v1", layers=3, seed=fresh_seed())
    skopeo.push(server, f"oci:{layout}:v1", "team/app:v1")

    deadline = time.monotonic() + DEADLINE
    while True:
        answer = source.describe_image_replication_status(repositoryName="team/app", imageId={"imageTag": "v1"})
        states = [status["status"] for status in answer["replicationStatuses"]]
        if states and "IN_PROGRESS" not in states:
            break
        assert time.monotonic() < deadline, answer
        time.sleep(0.1)  # polling interval
    assert answer["replicationStatuses"] == [{"region": "eu-west-1", "registryId": ACCOUNT_ID, "status": "COMPLETE"}]

    token = destination.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    creds = base64.b64decode(token).decode()  # AWS:<password>, naming account and eu-west-1
    pulled = tmp_path / "pulled"
    skopeo.ok(
        "copy", "--quiet", "--src-tls-verify=false", "--src-creds", creds,
        f"docker://{server.host}/team/app:v1", f"oci:{pulled}:v1",
    )  # fmt: skip
    assert layout_manifest_digest(pulled, "v1") == digest
    assert layout_blobs(pulled) == layout_blobs(layout)
    (detail,) = destination.describe_images(repositoryName="team/app")["imageDetails"]
    assert (detail["imageDigest"], detail["imageTags"]) == (digest, ["v1"])
