"""Which operations of the pinned botocore's `ecr` and `ecr-public` models Dockyard does not serve yet.

The doors read their operation lists from the installed botocore, so a botocore bump adds operations under
users. The lists below are the operations without a handler, checked in: building one (or bumping botocore)
fails this test until the list is brought up to date, and issue 18 is done when both are empty.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import botocore

from dockyard.http import aws_json
from dockyard.http.aws_door import snake_case
from dockyard.http.ecr_api import EcrDoor, PublicEcrDoor

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"

NOT_BUILT_ECR = {
    "CreatePullThroughCacheRule",
    "DeletePullThroughCacheRule",
    "DeleteSigningConfiguration",
    "DescribeImageSigningStatus",
    "DescribePullThroughCacheRules",
    "DescribeReplicationBackfillResults",
    "GetSigningConfiguration",
    "ListReplicationBackfills",
    "PutSigningConfiguration",
    "StartReplicationBackfill",
    "StopReplicationBackfill",
    "UpdatePullThroughCacheRule",
    "ValidatePullThroughCacheRule",
}

NOT_BUILT_ECR_PUBLIC = {
    "AssociateRepositories",
    "CreatePremiumRepository",
    "DeletePremiumRepository",
    "DeletePremiumRepositoryPolicy",
    "DescribeEntitledImageTags",
    "DescribeEntitledImages",
    "DescribeEntitledRepositories",
    "DescribePremiumRepositories",
    "DisassociateRepositories",
    "GetDownloadUrlForPublisherReport",
    "GetPremiumRepositoryCatalogData",
    "GetPremiumRepositoryPolicy",
    "ListPublisherReports",
    "PutPremiumRepositoryCatalogData",
    "PutPremiumRepositoryProducts",
    "SetImageStatus",
    "SetPremiumRepositoryPolicy",
    "SetRepositoryState",
}


def not_built(door: type[EcrDoor]) -> set[str]:
    """The model's operations the door has no handler for (the door finds handlers by the same rule)."""
    model = aws_json.service_model(door.SERVICE)
    return {name for name in model.operation_names if not callable(getattr(door, snake_case(name), None))}


def test_botocore_is_the_pinned_version() -> None:
    """The lists below describe the pinned models: another botocore would make them meaningless."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pinned = [d.removeprefix("botocore==") for d in dependencies if d.startswith("botocore")]
    assert pinned == [botocore.__version__], (pinned, botocore.__version__)


def test_ecr_operations_not_built_yet() -> None:
    assert not_built(EcrDoor) == NOT_BUILT_ECR


def test_ecr_public_operations_not_built_yet() -> None:
    assert not_built(PublicEcrDoor) == NOT_BUILT_ECR_PUBLIC
