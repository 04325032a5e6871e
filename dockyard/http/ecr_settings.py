"""ECR operations on a registry's settings and on referrers, mixed into `EcrDoor` (ecr_api.py).

BatchGetRepositoryScanningConfiguration, Get/PutAccountSetting, ListImageReferrers and
Register/Deregister/ListPullTimeUpdateExclusions. Like every handler they only translate between the model's
members and domain values; `EcrDoor.run` has authorised the call before they run.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any, Final

from dockyard.domain.errors import InvalidParameter, NameUnknown
from dockyard.domain.image_operations import ImageOperations
from dockyard.domain.images import Registry
from dockyard.domain.names import RepositoryRef, parse_decimal
from dockyard.domain.ports import ManifestRecord
from dockyard.domain.scanning.service import ImageScanner

if TYPE_CHECKING:
    from dockyard.http.ecr_api import EcrCall

# The IAM action an operation is authorised as, where it is not `ecr:<Operation>` (ECR's API reference: "the IAM
# principal invoking this operation must have the ecr:BatchGetImage permission").
AUTHORIZED_AS: Final = {"ListImageReferrers": "BatchGetImage"}
REFERRERS_PAGE: Final = 20  # ListImageReferrers' default page (API reference)
EXCLUSIONS_PAGE: Final = 100  # ListPullTimeUpdateExclusions' default page
_BAD_PAGING: Final = "Invalid parameter at 'nextToken' failed to satisfy constraint: 'invalid token'"


class EcrSettingsOperations:
    """Handlers for `EcrDoor`; the door provides the attributes below."""

    registry: Registry
    images: ImageOperations
    scanner: ImageScanner

    # ------------------------------------------------------------------------------------------ scanning

    def batch_get_repository_scanning_configuration(self, call: EcrCall) -> dict[str, Any]:
        configurations, failures = [], []
        for name in dict.fromkeys(call.params["repositoryNames"]):  # a name asked twice is answered once
            repository = self.registry.metadata.get_repository(call.ref_of(name))
            if repository is None:
                failures.append(
                    {
                        "repositoryName": name,
                        "failureCode": "REPOSITORY_NOT_FOUND",
                        "failureReason": f"The repository with name '{name}' does not exist in the registry with "
                        f"id '{call.account}'",
                    }
                )
                continue
            applied = self.scanner.applied_configuration(repository)
            configurations.append(
                {
                    "repositoryArn": repository.ref.arn,
                    "repositoryName": name,
                    "scanOnPush": applied.scan_on_push,
                    "scanFrequency": applied.frequency,
                    "appliedScanFilters": [{"filter": f, "filterType": "WILDCARD"} for f in applied.filters],
                }
            )
        return {"scanningConfigurations": configurations, "failures": failures}

    # ------------------------------------------------------------------------------------------ account settings

    def get_account_setting(self, call: EcrCall) -> dict[str, Any]:
        name = call.params["name"]
        return {"name": name, "value": self.registry.account_settings.get(call.account, call.region, name)}

    def put_account_setting(self, call: EcrCall) -> dict[str, Any]:
        name, value = call.params["name"], call.params["value"]
        return {"name": name, "value": self.registry.account_settings.put(call.account, call.region, name, value)}

    # ------------------------------------------------------------------------------------------ referrers

    def list_image_referrers(self, call: EcrCall) -> dict[str, Any]:
        ref = call.ref()
        filters = call.params.get("filter", {})
        status = filters.get("artifactStatus", "ACTIVE")
        statuses = frozenset({"ACTIVE", "ARCHIVED"}) if status == "ANY" else frozenset({status})
        start = _offset(call.params.get("nextToken"))
        limit = int(call.params.get("maxResults", REFERRERS_PAGE))
        try:
            records = self.images.referrers(
                ref, call.params["subjectId"]["imageDigest"], filters.get("artifactTypes", []), statuses
            )
        except NameUnknown:
            raise _repository_not_found(ref) from None
        page = records[start : start + limit]
        return {
            "referrers": [_referrer_shape(record) for record in page],
            "nextToken": _token(str(start + limit)) if start + limit < len(records) else None,
        }

    # ------------------------------------------------------------------------------------------ pull times

    def register_pull_time_update_exclusion(self, call: EcrCall) -> dict[str, Any]:
        settings = self.registry.account_settings
        exclusion = settings.register_exclusion(call.account, call.region, call.params["principalArn"])
        return {"principalArn": exclusion.principal_arn, "createdAt": exclusion.created_at}

    def deregister_pull_time_update_exclusion(self, call: EcrCall) -> dict[str, Any]:
        self.registry.account_settings.deregister_exclusion(call.account, call.region, call.params["principalArn"])
        return {"principalArn": call.params["principalArn"]}

    def list_pull_time_update_exclusions(self, call: EcrCall) -> dict[str, Any]:
        arns = [e.principal_arn for e in self.registry.account_settings.exclusions(call.account, call.region)]
        start = _offset(call.params.get("nextToken"))
        limit = int(call.params.get("maxResults", EXCLUSIONS_PAGE))
        return {
            "pullTimeUpdateExclusions": arns[start : start + limit],
            "nextToken": _token(str(start + limit)) if start + limit < len(arns) else None,
        }


def _referrer_shape(record: ManifestRecord) -> dict[str, Any]:
    return {
        "digest": str(record.digest),
        "mediaType": record.media_type,
        "artifactType": record.artifact_type,
        "size": record.size,
        "annotations": record.annotations or None,
        "artifactStatus": "ARCHIVED" if record.storage_class == "ARCHIVE" else "ACTIVE",
    }


def _repository_not_found(ref: RepositoryRef) -> NameUnknown:
    return NameUnknown(
        f"The repository with name '{ref.name}' does not exist in the registry with id '{ref.account_id}'"
    )


def _offset(token: str | None) -> int:
    """The position a paging token names (the door's token format: base64 JSON `{"after": ...}`)."""
    if not token:
        return 0
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidParameter(_BAD_PAGING) from None
    start = parse_decimal(after) if isinstance(after, str) else None
    if start is None:
        raise InvalidParameter(_BAD_PAGING)
    return start


def _token(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()
