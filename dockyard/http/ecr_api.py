"""The ECR API door: AWS JSON 1.1 on `POST /` (`X-Amz-Target`), SigV4-authenticated.

Parse → verify the signature → validate against botocore's model → authorise `ecr:<Operation>` → call the
domain → serialise through the model's output shape. Handlers only translate between the model's members and
domain values.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from starlette.requests import Request

from dockyard.domain.errors import (
    ImageArchived,
    InvalidParameter,
    LifecyclePolicyPreviewNotFound,
    NameUnknown,
    ScanNotFound,
)
from dockyard.domain.iam import Authenticator, Authorizer, LoginTokens, Principal
from dockyard.domain.image_operations import PART_SIZE, ImageFailure, ImageId, ImageOperations, describe_id
from dockyard.domain.images import Registry
from dockyard.domain.lifecycle import parse_policy
from dockyard.domain.lifecycle_runs import LifecycleRunner
from dockyard.domain.names import PUBLIC_REGION, Digest, RegistryId, RepositoryRef, parse_decimal
from dockyard.domain.policies import Policy, PolicyInvalid
from dockyard.domain.ports import ImageRow, Repository, RepositorySettings, ScanRecord, Template
from dockyard.domain.registries import REPLICATION, SCANNING, Registries
from dockyard.domain.replication import check_configuration as check_replication
from dockyard.domain.replication import check_destination_regions, replication_statuses
from dockyard.domain.repositories import Repositories, check_settings
from dockyard.domain.scanning.service import ImageScanner
from dockyard.domain.templates import settings_of
from dockyard.domain.usage import UsageMeter
from dockyard.http.auth import request_context
from dockyard.http.aws_door import AwsJsonDoor
from dockyard.http.ecr_settings import AUTHORIZED_AS, EcrSettingsOperations
from dockyard.http.errors import log
from dockyard.http.sigv4 import GLOBAL_SIGNING_REGION, Verified, presign_get

ECR_TARGET: Final = "AmazonEC2ContainerRegistry_V20150921"
DEFAULT_PAGE: Final = 100
NEVER_EVALUATED: Final = datetime.fromtimestamp(0, UTC)  # ECR's lastEvaluatedAt before a policy's first run
INVALID_REPOSITORY_POLICY: Final = (
    "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid repository policy provided'"
)


class RepositoryNotFound(NameUnknown):
    """NAME_UNKNOWN's ECR name; raised with ECR's message text."""


@dataclass(frozen=True)
class EcrCall:
    principal: Principal
    region: str
    host: str
    scheme: str
    params: dict[str, Any]
    context: dict[str, str]

    @property
    def account(self) -> str:
        registry_id = self.params.get("registryId")
        return str(registry_id) if registry_id else self.principal.account_id

    def ref(self, name_member: str = "repositoryName") -> RepositoryRef:
        return RepositoryRef(self.account, self.region, self.params[name_member])

    def ref_of(self, name: str) -> RepositoryRef:
        return RepositoryRef(self.account, self.region, name)


Handler = Callable[[EcrCall], dict[str, Any]]


class EcrDoor(EcrSettingsOperations, AwsJsonDoor[EcrCall]):
    """The `ecr` service. `PublicEcrDoor` below reuses every handler whose shapes are the same."""

    SERVICE = "ecr"
    MAX_BODY = 32 * 1024 * 1024  # UploadLayerPart carries up to 20 MiB, base64-encoded

    def __init__(
        self,
        registry: Registry,
        repositories: Repositories,
        authenticator: Authenticator,
        login_tokens: LoginTokens,
        authorizer: Authorizer,
        scanner: ImageScanner,
        meter: UsageMeter | None = None,
    ) -> None:
        self.registry = registry
        self.meter = meter  # PutImage and BatchGetImage count as pushes and pulls, as on the /v2 door
        self.scanner = scanner
        self.repositories = repositories
        self.images = ImageOperations(registry)
        self.registries = Registries(registry.metadata, registry.clock)
        self.lifecycle = LifecycleRunner(registry, clock=registry.clock)
        self.login_tokens = login_tokens
        self.authorizer = authorizer
        super().__init__(authenticator, registry.clock)

    def make_call(self, verified: Verified, request: Request, params: dict[str, Any]) -> EcrCall:
        host = request.headers.get("host", "")
        region = self.repository_region(verified.region)
        return EcrCall(verified.principal, region, host, request.url.scheme, params, request_context(request))

    def repository_region(self, signed_region: str) -> str:
        """Private repositories live in the region the request was signed for."""
        return signed_region

    def run(self, operation: str, handler: Handler, call: EcrCall) -> dict[str, Any]:
        action = f"{self.SERVICE}:{AUTHORIZED_AS.get(operation, operation)}"
        if "repositoryName" in call.params:
            self.authorizer.authorize(call.principal, action, call.ref(), call.context)
        elif "repositoryNames" in call.params:
            for name in call.params["repositoryNames"]:
                self.authorizer.authorize(call.principal, action, call.ref_of(name), call.context)
        elif "resourceArn" in call.params:
            self.authorizer.authorize(call.principal, action, _ref_from_arn(call.params["resourceArn"]), call.context)
        else:
            self.authorizer.authorize_account(call.principal, action, call.account, call.context)
        return handler(call)

    # ------------------------------------------------------------------------------------------ shapes

    def repository_shape(self, repository: Repository, call: EcrCall) -> dict[str, Any]:
        settings = repository.settings
        filters = [{"filterType": "WILDCARD", "filter": f} for f in settings.mutability_exclusions]
        return {
            "repositoryArn": repository.ref.arn,
            "registryId": repository.ref.account_id,
            "repositoryName": repository.ref.name,
            "repositoryUri": f"{call.host}/{repository.ref.name}",
            "createdAt": repository.created_at,
            "imageTagMutability": settings.tag_mutability,
            "imageTagMutabilityExclusionFilters": filters or None,
            "imageScanningConfiguration": {"scanOnPush": settings.scan_on_push},
            "encryptionConfiguration": {"encryptionType": settings.encryption_type, "kmsKey": settings.kms_key},
        }

    def image_details(self, rows: list[ImageRow], ref: RepositoryRef) -> list[dict[str, Any]]:
        """ImageDetail shapes for a page of images, with their scan status (one query for the page)."""
        repository = self.registry.repository(ref)
        scans = self.registry.metadata.get_scans(repository.id, [row.manifest.digest for row in rows])
        details = []
        for row in rows:
            detail = self.image_detail(row, ref)
            scan = scans.get(row.manifest.digest)
            if scan is not None:
                detail["imageScanStatus"] = _scan_status(scan)
                if scan.status == "COMPLETE":
                    counts = json.loads(scan.findings or "{}").get("findingSeverityCounts", {})
                    detail["imageScanFindingsSummary"] = {
                        "imageScanCompletedAt": scan.completed_at,
                        "vulnerabilitySourceUpdatedAt": scan.source_updated_at,
                        "findingSeverityCounts": counts,
                    }
            details.append(detail)
        return details

    def image_detail(self, row: ImageRow, ref: RepositoryRef) -> dict[str, Any]:
        record = row.manifest
        return {
            "registryId": ref.account_id,
            "repositoryName": ref.name,
            "imageDigest": str(record.digest),
            "imageTags": list(row.tags) or None,
            "imageSizeInBytes": record.image_size,
            "imagePushedAt": record.pushed_at,
            "imageManifestMediaType": record.media_type,
            "artifactMediaType": record.config_media_type,
            "lastRecordedPullTime": record.last_pulled_at,
            "subjectManifestDigest": str(record.subject) if record.subject else None,
            "imageStatus": "ARCHIVED" if record.storage_class == "ARCHIVE" else "ACTIVE",
            "lastArchivedAt": record.last_archived_at,
            "lastActivatedAt": record.last_activated_at,
        }

    # ------------------------------------------------------------------------------------------ repositories

    def create_repository(self, call: EcrCall) -> dict[str, Any]:
        p = call.params
        settings = RepositorySettings(
            tag_mutability=p.get("imageTagMutability", "MUTABLE"),
            mutability_exclusions=tuple(f["filter"] for f in p.get("imageTagMutabilityExclusionFilters", [])),
            scan_on_push=p.get("imageScanningConfiguration", {}).get("scanOnPush", False),
            encryption_type=p.get("encryptionConfiguration", {}).get("encryptionType", "AES256"),
            kms_key=p.get("encryptionConfiguration", {}).get("kmsKey"),
        )
        tags = [(t["Key"], t.get("Value", "")) for t in p.get("tags", [])]
        repository = self.repositories.create(call.ref(), settings, tags)
        return {"repository": self.repository_shape(repository, call)}

    def describe_repositories(self, call: EcrCall) -> dict[str, Any]:
        names = call.params.get("repositoryNames")
        if names is not None:
            _no_pagination_with_ids(call, "repositoryNames")
            found = [self._repository(call, name) for name in names]
            return {"repositories": [self.repository_shape(r, call) for r in found]}
        after, limit = _page(call)
        page = self.repositories.list(call.account, call.region, after, limit + 1)
        next_token = _token(page[limit - 1].ref.name) if len(page) > limit else None
        return {"repositories": [self.repository_shape(r, call) for r in page[:limit]], "nextToken": next_token}

    def delete_repository(self, call: EcrCall) -> dict[str, Any]:
        repository = self._guard_repository(
            call, lambda: self.repositories.delete(call.ref(), call.params.get("force", False))
        )
        return {"repository": self.repository_shape(repository, call)}

    def put_image_tag_mutability(self, call: EcrCall) -> dict[str, Any]:
        filters = [f["filter"] for f in call.params.get("imageTagMutabilityExclusionFilters", [])]
        repository = self._guard_repository(
            call, lambda: self.repositories.set_tag_mutability(call.ref(), call.params["imageTagMutability"], filters)
        )
        return {
            "registryId": call.account,
            "repositoryName": repository.ref.name,
            "imageTagMutability": repository.settings.tag_mutability,
            "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": f} for f in filters] or None,
        }

    def put_image_scanning_configuration(self, call: EcrCall) -> dict[str, Any]:
        scan_on_push = call.params["imageScanningConfiguration"].get("scanOnPush", False)
        repository = self._guard_repository(call, lambda: self.repositories.set_scan_on_push(call.ref(), scan_on_push))
        return {
            "registryId": call.account,
            "repositoryName": repository.ref.name,
            "imageScanningConfiguration": {"scanOnPush": repository.settings.scan_on_push},
        }

    def tag_resource(self, call: EcrCall) -> dict[str, Any]:
        ref = _ref_from_arn(call.params["resourceArn"])
        tags = [(t["Key"], t.get("Value", "")) for t in call.params["tags"]]
        self._guard_repository(call, lambda: self.repositories.tag(ref, tags), ref)
        return {}

    def untag_resource(self, call: EcrCall) -> dict[str, Any]:
        ref = _ref_from_arn(call.params["resourceArn"])
        self._guard_repository(call, lambda: self.repositories.untag(ref, call.params["tagKeys"]), ref)
        return {}

    def list_tags_for_resource(self, call: EcrCall) -> dict[str, Any]:
        ref = _ref_from_arn(call.params["resourceArn"])
        tags = self._guard_repository(call, lambda: self.repositories.resource_tags(ref), ref)
        return {"tags": [{"Key": key, "Value": value} for key, value in sorted(tags.items())]}

    def describe_registry(self, call: EcrCall) -> dict[str, Any]:
        replication = self.registries.configuration(call.account, call.region, REPLICATION, {"rules": []})
        return {"registryId": call.account, "replicationConfiguration": replication}

    def get_authorization_token(self, call: EcrCall) -> dict[str, Any]:
        registries = call.params.get("registryIds") or [call.principal.account_id]
        now = self.registry.clock()
        data = []
        for account in registries:
            token = self.login_tokens.issue(call.principal, RegistryId(account, call.region), now)  # this region only
            data.append(
                {
                    "authorizationToken": base64.b64encode(f"AWS:{token.password}".encode()).decode(),
                    "expiresAt": token.expires_at,
                    "proxyEndpoint": f"{call.scheme}://{call.host}",
                }
            )
        return {"authorizationData": data}

    # ------------------------------------------------------------------------------------------ policies

    def _repository_document(self, call: EcrCall, text: str, **extra: Any) -> dict[str, Any]:
        return {"registryId": call.account, "repositoryName": call.params["repositoryName"], **extra}

    def set_repository_policy(self, call: EcrCall) -> dict[str, Any]:
        try:
            text = self._guard_repository(
                call, lambda: self.repositories.set_policy(call.ref(), call.params["policyText"])
            )
        except PolicyInvalid as error:  # ECR names no reason; scripts match its one sentence, the log says why
            log.info("SetRepositoryPolicy on %s refused: %s", call.params["repositoryName"], error.message)
            raise PolicyInvalid(INVALID_REPOSITORY_POLICY) from None
        return self._repository_document(call, text, policyText=text)

    def get_repository_policy(self, call: EcrCall) -> dict[str, Any]:
        document = self._guard_repository(call, lambda: self.repositories.policy(call.ref()))
        return self._repository_document(call, document.text, policyText=document.text)

    def delete_repository_policy(self, call: EcrCall) -> dict[str, Any]:
        document = self._guard_repository(call, lambda: self.repositories.delete_policy(call.ref()))
        return self._repository_document(call, document.text, policyText=document.text)

    def put_lifecycle_policy(self, call: EcrCall) -> dict[str, Any]:
        text = call.params["lifecyclePolicyText"]
        self._guard_repository(call, lambda: self.repositories.set_lifecycle_policy(call.ref(), text))
        return self._repository_document(call, text, lifecyclePolicyText=text)

    def get_lifecycle_policy(self, call: EcrCall) -> dict[str, Any]:
        document = self._guard_repository(call, lambda: self.repositories.lifecycle_policy(call.ref()))
        evaluated = self.lifecycle.last_evaluated(call.ref()) or NEVER_EVALUATED
        return self._repository_document(
            call, document.text, lifecyclePolicyText=document.text, lastEvaluatedAt=evaluated
        )

    def delete_lifecycle_policy(self, call: EcrCall) -> dict[str, Any]:
        evaluated = self._guard_repository(call, lambda: self.lifecycle.last_evaluated(call.ref()))
        document = self.repositories.delete_lifecycle_policy(call.ref())
        return self._repository_document(
            call, document.text, lifecyclePolicyText=document.text, lastEvaluatedAt=evaluated or NEVER_EVALUATED
        )

    def start_lifecycle_policy_preview(self, call: EcrCall) -> dict[str, Any]:
        text = call.params.get("lifecyclePolicyText")
        result = self._guard_repository(call, lambda: self.lifecycle.start_preview(call.ref(), text))
        return self._repository_document(
            call, result["lifecyclePolicyText"], lifecyclePolicyText=result["lifecyclePolicyText"], status="IN_PROGRESS"
        )

    def get_lifecycle_policy_preview(self, call: EcrCall) -> dict[str, Any]:
        stored = self._guard_repository(call, lambda: self.lifecycle.stored_preview(call.ref()))
        if stored is None:
            raise LifecyclePolicyPreviewNotFound(
                f"There is no lifecycle policy preview for the repository '{call.params['repositoryName']}'"
            )
        results = stored["previewResults"]
        wanted = {(i.get("imageDigest"), i.get("imageTag")) for i in call.params.get("imageIds", [])}
        if wanted:
            results = [
                r
                for r in results
                if any(d in (None, r["imageDigest"]) and (t is None or t in r.get("imageTags", [])) for d, t in wanted)
            ]
        status = call.params.get("filter", {}).get("tagStatus")
        if status in ("TAGGED", "UNTAGGED"):
            results = [r for r in results if bool(r.get("imageTags")) == (status == "TAGGED")]
        after, limit = _page(call)
        start = _offset(after)
        page = results[start : start + limit]
        next_token = _token(str(start + limit)) if start + limit < len(results) else None
        return self._repository_document(
            call,
            stored["lifecyclePolicyText"],
            lifecyclePolicyText=stored["lifecyclePolicyText"],
            status=stored["status"],
            previewResults=page,
            summary=stored["summary"],
            nextToken=next_token,
        )

    def start_image_scan(self, call: EcrCall) -> dict[str, Any]:
        ref = call.ref()
        image = call.params["imageId"]
        found = self._guard_repository(call, lambda: self.images.describe(ref, _image_ids([image])))[0]
        if found.manifest.storage_class == "ARCHIVE":
            raise ImageArchived(f"The image {found.manifest.digest} is archived and cannot be scanned")
        repository = self.registry.repository(ref)
        status = self.scanner.start(repository, found.manifest.digest)
        return {
            "registryId": call.account,
            "repositoryName": ref.name,
            "imageId": {"imageDigest": str(found.manifest.digest), "imageTag": image.get("imageTag")},
            "imageScanStatus": _scan_status(status),
        }

    def describe_image_scan_findings(self, call: EcrCall) -> dict[str, Any]:
        ref = call.ref()
        image = call.params["imageId"]
        found = self._guard_repository(call, lambda: self.images.describe(ref, _image_ids([image])))[0]
        repository = self.registry.repository(ref)
        scan = self.registry.metadata.get_scans(repository.id, [found.manifest.digest]).get(found.manifest.digest)
        if scan is None:
            raise ScanNotFound(
                f"Image scan does not exist for the image with '{describe_id(_image_ids([image])[0])}' "
                f"in the repository with name '{ref.name}' in the registry with id '{ref.account_id}'"
            )
        result: dict[str, Any] = {
            "registryId": call.account,
            "repositoryName": ref.name,
            "imageId": {"imageDigest": str(found.manifest.digest), "imageTag": image.get("imageTag")},
            "imageScanStatus": _scan_status(scan),
        }
        if scan.status == "COMPLETE":
            document = json.loads(scan.findings or "{}")
            after, limit = _page(call)
            start = _offset(after)
            findings = document.get("findings", [])
            result["imageScanFindings"] = {
                "imageScanCompletedAt": scan.completed_at,
                "vulnerabilitySourceUpdatedAt": scan.source_updated_at,
                "findingSeverityCounts": document.get("findingSeverityCounts", {}),
                "findings": findings[start : start + limit],
            }
            result["nextToken"] = _token(str(start + limit)) if start + limit < len(findings) else None
        return result

    def update_image_storage_class(self, call: EcrCall) -> dict[str, Any]:
        image = call.params["imageId"]
        target = call.params["targetStorageClass"]
        image_id, status = self._guard_repository(
            call,
            lambda: self.images.set_storage_class(
                call.ref(), ImageId(image.get("imageDigest"), image.get("imageTag")), target
            ),
        )
        return {
            "registryId": call.account,
            "repositoryName": call.params["repositoryName"],
            "imageId": _image_id_shape(image_id),
            "imageStatus": status,
        }

    def put_registry_policy(self, call: EcrCall) -> dict[str, Any]:
        text = self.registries.set_policy(call.account, call.region, call.params["policyText"])
        return {"registryId": call.account, "policyText": text}

    def get_registry_policy(self, call: EcrCall) -> dict[str, Any]:
        return {"registryId": call.account, "policyText": self.registries.policy(call.account, call.region).text}

    def delete_registry_policy(self, call: EcrCall) -> dict[str, Any]:
        document = self.registries.delete_policy(call.account, call.region)
        return {"registryId": call.account, "policyText": document.text}

    # ------------------------------------------------------------------------------------------ registry

    def put_replication_configuration(self, call: EcrCall) -> dict[str, Any]:
        configuration = _jsonable(call.params["replicationConfiguration"])
        check_replication(configuration, call.account, call.region)
        check_destination_regions(configuration, self.authenticator.regions)
        self.registries.set_configuration(call.account, call.region, REPLICATION, configuration)
        return {"replicationConfiguration": configuration}

    def describe_image_replication_status(self, call: EcrCall) -> dict[str, Any]:
        ref = call.ref()
        image = call.params["imageId"]
        found = self._guard_repository(call, lambda: self.images.describe(ref, _image_ids([image])))[0]
        digest = found.manifest.digest
        statuses = replication_statuses(self.registry.metadata, self.registry.repository(ref).id, digest)
        return {
            "repositoryName": ref.name,
            "imageId": {"imageDigest": str(digest), "imageTag": image.get("imageTag")},
            "replicationStatuses": [
                {"region": s.region, "registryId": s.registry_id, "status": s.status, "failureCode": s.failure_code}
                for s in statuses
            ],
        }

    def put_registry_scanning_configuration(self, call: EcrCall) -> dict[str, Any]:
        configuration = {"scanType": call.params.get("scanType", "BASIC"), "rules": call.params.get("rules", [])}
        self.registries.set_configuration(call.account, call.region, SCANNING, _jsonable(configuration))
        return {"registryScanningConfiguration": configuration}

    def get_registry_scanning_configuration(self, call: EcrCall) -> dict[str, Any]:
        default = {"scanType": "BASIC", "rules": []}
        configuration = self.registries.configuration(call.account, call.region, SCANNING, default)
        return {"registryId": call.account, "scanningConfiguration": configuration}

    # ------------------------------------------------------------------------------------------ templates

    def create_repository_creation_template(self, call: EcrCall) -> dict[str, Any]:
        document = self._template_document(call)
        template = self.repositories.templates.create(call.account, call.region, call.params["prefix"], document)
        return {"registryId": call.account, "repositoryCreationTemplate": _template_shape(template)}

    def update_repository_creation_template(self, call: EcrCall) -> dict[str, Any]:
        changes = self._template_document(call)
        template = self.repositories.templates.update(call.account, call.region, call.params["prefix"], changes)
        return {"registryId": call.account, "repositoryCreationTemplate": _template_shape(template)}

    def delete_repository_creation_template(self, call: EcrCall) -> dict[str, Any]:
        template = self.repositories.templates.delete(call.account, call.region, call.params["prefix"])
        return {"registryId": call.account, "repositoryCreationTemplate": _template_shape(template)}

    def describe_repository_creation_templates(self, call: EcrCall) -> dict[str, Any]:
        after, limit = _page(call)
        wanted = call.params.get("prefixes")
        templates = [
            t
            for t in self.repositories.templates.list(call.account, call.region)
            if (wanted is None or t.prefix in wanted) and (after is None or t.prefix > after)
        ]
        next_token = _token(templates[limit - 1].prefix) if len(templates) > limit else None
        return {
            "registryId": call.account,
            "repositoryCreationTemplates": [_template_shape(t) for t in templates[:limit]],
            "nextToken": next_token,
        }

    def _template_document(self, call: EcrCall) -> dict[str, Any]:
        """The template's members as stored, validated as CreateRepository would validate them."""
        document = {k: v for k, v in call.params.items() if k not in ("prefix", "registryId")}
        now = self.registry.clock()
        check_settings(settings_of(Template(call.params["prefix"], document, now, now)))
        if "repositoryPolicy" in document:
            Policy.parse(document["repositoryPolicy"], kind="resource")
        if "lifecyclePolicy" in document:
            parse_policy(document["lifecyclePolicy"])
        stored: dict[str, Any] = _jsonable(document)
        return stored

    # ------------------------------------------------------------------------------------------ images

    def list_images(self, call: EcrCall) -> dict[str, Any]:
        after, limit = _page(call)
        tagged = _tag_status(call)
        start_digest, start_tag = _split_image_token(after)
        # A page may end inside an image's tags: then the next page starts again at that image.
        rows = self._guard_repository(
            call, lambda: self.images.list_images(call.ref(), start_digest, limit + 2, tagged, start_tag is not None)
        )
        ids: list[tuple[dict[str, Any], str]] = []
        wanted = _image_status(call)
        for row in rows:
            digest = str(row.manifest.digest)
            if _status_of(row) not in wanted:
                # Skipped, but still a position the next page resumes after.
                ids.append(({}, f"{digest}|\uffff"))
                continue
            entries = [(tag, f"{digest}|{tag}") for tag in row.tags] if row.tags else [(None, f"{digest}|")]
            ids.extend(({"imageDigest": digest, "imageTag": tag}, key) for tag, key in entries)
        if start_tag is not None:
            ids = [entry for entry in ids if entry[1] > f"{start_digest}|{start_tag}"]
        next_token = _token(ids[limit - 1][1]) if len(ids) > limit else None
        return {"imageIds": [entry for entry, _ in ids[:limit] if entry], "nextToken": next_token}

    def describe_images(self, call: EcrCall) -> dict[str, Any]:
        ref = call.ref()
        ids = call.params.get("imageIds")
        if ids is not None:
            _no_pagination_with_ids(call, "imageIds")
            rows = self._guard_repository(call, lambda: self.images.describe(ref, _image_ids(ids)))
            return {"imageDetails": self.image_details(rows, ref)}
        after, limit = _page(call)
        start = Digest.parse(after) if after else None
        rows = self._guard_repository(call, lambda: self.images.list_images(ref, start, limit + 1, _tag_status(call)))
        next_token = _token(str(rows[limit - 1].manifest.digest)) if len(rows) > limit else None
        wanted = _image_status(call)
        details = self.image_details([row for row in rows[:limit] if _status_of(row) in wanted], ref)
        return {"imageDetails": details, "nextToken": next_token}

    def batch_get_image(self, call: EcrCall) -> dict[str, Any]:
        ref = call.ref()
        accepted = call.params.get("acceptedMediaTypes")
        images, failures = self._guard_repository(
            call, lambda: self.images.batch_get(ref, _image_ids(call.params["imageIds"]), accepted, call.principal.arn)
        )
        if self.meter is not None:
            for _, content in images:
                self.meter.pulled(ref, len(content))
        return {
            "images": [
                {
                    "registryId": ref.account_id,
                    "repositoryName": ref.name,
                    "imageId": _image_id_shape(item.image_id),
                    "imageManifest": content.decode(),
                    "imageManifestMediaType": item.row.manifest.media_type,
                }
                for item, content in images
            ],
            "failures": [_failure_shape(f) for f in failures],
        }

    def batch_delete_image(self, call: EcrCall) -> dict[str, Any]:
        deleted, failures = self._guard_repository(
            call, lambda: self.images.batch_delete(call.ref(), _image_ids(call.params["imageIds"]))
        )
        if deleted:  # the decision line says who may; this one says which digests and tags went
            removed = {"imageIds": [_image_id_shape(i) for i in deleted]}
            self.authorizer.record_result(call.principal, "ecr:BatchDeleteImage", call.ref(), removed, call.context)
        return {"imageIds": [_image_id_shape(i) for i in deleted], "failures": [_failure_shape(f) for f in failures]}

    def put_image(self, call: EcrCall) -> dict[str, Any]:
        p = call.params
        image_id, media_type = self._guard_repository(
            call,
            lambda: self.images.put_image(
                call.ref(), p["imageManifest"], p.get("imageManifestMediaType"), p.get("imageTag"), p.get("imageDigest")
            ),
        )
        if self.meter is not None:
            self.meter.pushed(call.ref())
        return {
            "image": {
                "registryId": call.account,
                "repositoryName": call.params["repositoryName"],
                "imageId": _image_id_shape(image_id),
                "imageManifest": p["imageManifest"],
                "imageManifestMediaType": media_type,
            }
        }

    # ------------------------------------------------------------------------------------------ layers

    def batch_check_layer_availability(self, call: EcrCall) -> dict[str, Any]:
        layers, failures = self._guard_repository(
            call, lambda: self.images.layer_availability(call.ref(), call.params["layerDigests"])
        )
        return {
            "layers": [
                {
                    "layerDigest": layer.digest,
                    "layerAvailability": "AVAILABLE" if layer.size is not None else "UNAVAILABLE",
                    "layerSize": layer.size,
                    "mediaType": layer.media_type,
                }
                for layer in layers
            ],
            "failures": [
                {"layerDigest": f.image_id.digest, "failureCode": f.code, "failureReason": f.reason} for f in failures
            ],
        }

    def initiate_layer_upload(self, call: EcrCall) -> dict[str, Any]:
        self._guard_repository(call, lambda: self.registry.repository(call.ref()))
        return {"uploadId": self.registry.start_upload(call.ref()), "partSize": PART_SIZE}

    def upload_layer_part(self, call: EcrCall) -> dict[str, Any]:
        p = call.params
        last = self._guard_repository(
            call,
            lambda: self.images.upload_part(
                call.ref(), p["uploadId"], p["partFirstByte"], p["partLastByte"], p["layerPartBlob"]
            ),
        )
        return {
            "registryId": call.account,
            "repositoryName": p["repositoryName"],
            "uploadId": p["uploadId"],
            "lastByteReceived": last,
        }

    def complete_layer_upload(self, call: EcrCall) -> dict[str, Any]:
        p = call.params
        digest = self._guard_repository(
            call, lambda: self.images.complete_layer(call.ref(), p["uploadId"], p["layerDigests"])
        )
        return {
            "registryId": call.account,
            "repositoryName": p["repositoryName"],
            "uploadId": p["uploadId"],
            "layerDigest": str(digest),
        }

    def get_download_url_for_layer(self, call: EcrCall) -> dict[str, Any]:
        ref = call.ref()
        digest = self._guard_repository(call, lambda: self.images.download_check(ref, call.params["layerDigest"]))
        url = f"{call.scheme}://{call.host}/v2/{ref.name}/blobs/{digest}"
        found = self.authenticator.secret_of(call.principal.access_key_id or "")
        if found is not None:  # signed with the caller's key: the URL carries the caller's permission, for 1 h
            url = presign_get(url, found[0].access_key_id or "", found[1], "ecr", call.region)
        return {"downloadUrl": url, "layerDigest": str(digest)}

    # ------------------------------------------------------------------------------------------ helpers

    def _repository(self, call: EcrCall, name: str) -> Repository:
        ref = RepositoryRef(call.account, call.region, name)
        repository: Repository = self._guard_repository(call, lambda: self.repositories.get(ref), ref)
        return repository

    def _guard_repository(self, call: EcrCall, action: Callable[[], Any], ref: RepositoryRef | None = None) -> Any:
        """Run `action`, answering an unknown repository with ECR's RepositoryNotFoundException message."""
        try:
            return action()
        except NameUnknown as error:
            target = ref or call.ref()
            if isinstance(error, RepositoryNotFound):
                raise
            raise RepositoryNotFound(
                f"The repository with name '{target.name}' does not exist in the registry with id '{target.account_id}'"
            ) from None


def _scan_status(scan: ScanRecord) -> dict[str, Any]:
    """ImageScanStatus as basic scanning reports it: a queued scan is IN_PROGRESS (PENDING is enhanced's),
    and, as ECR, without a description until the scan ends."""
    if scan.status in ("PENDING", "IN_PROGRESS"):
        return {"status": "IN_PROGRESS"}
    return {"status": scan.status, "description": scan.description}


def _page(call: EcrCall) -> tuple[str | None, int]:
    token = call.params.get("nextToken")
    after = None
    if token:
        try:
            after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
        except (ValueError, KeyError, TypeError):
            after = None
        if not isinstance(after, str) or not after:  # tokens are ours, but a client can send anything
            raise InvalidParameter("Invalid parameter at 'nextToken' failed to satisfy constraint: 'invalid token'")
    return after, int(call.params.get("maxResults", DEFAULT_PAGE))


def _offset(after: str | None) -> int:
    """The position a paging token of an in-memory list names."""
    if after is None:
        return 0
    start = parse_decimal(after)
    if start is None:
        raise InvalidParameter("Invalid parameter at 'nextToken' failed to satisfy constraint: 'invalid token'")
    return start


def _token(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()


def _split_image_token(after: str | None) -> tuple[Digest | None, str | None]:
    """ListImages pages by (digest, tag) pairs: the token names the last pair returned."""
    if after is None:
        return None, None
    digest_text, _, tag = after.partition("|")
    return Digest.parse(digest_text), tag or None


def _no_pagination_with_ids(call: EcrCall, member: str) -> None:
    if call.params.get("nextToken") or call.params.get("maxResults"):
        raise InvalidParameter(f"Invalid parameter: {member} cannot be combined with nextToken or maxResults")


def _tag_status(call: EcrCall) -> bool | None:
    status = call.params.get("filter", {}).get("tagStatus", "ANY")
    return {"TAGGED": True, "UNTAGGED": False}.get(status)


def _image_status(call: EcrCall) -> frozenset[str]:
    """The image statuses a listing shows: ACTIVE unless the filter asks for others (as ECR)."""
    status = call.params.get("filter", {}).get("imageStatus", "ACTIVE")
    return frozenset({"ACTIVE", "ARCHIVED", "ACTIVATING"}) if status == "ANY" else frozenset({status})


def _status_of(row: ImageRow) -> str:
    return "ARCHIVED" if row.manifest.storage_class == "ARCHIVE" else "ACTIVE"


def _image_ids(items: list[dict[str, str]]) -> list[ImageId]:
    return [ImageId(item.get("imageDigest"), item.get("imageTag")) for item in items]


def _image_id_shape(image_id: ImageId) -> dict[str, Any]:
    return {"imageDigest": image_id.digest, "imageTag": image_id.tag}


def _failure_shape(failure: ImageFailure) -> dict[str, Any]:
    return {
        "imageId": _image_id_shape(failure.image_id),
        "failureCode": failure.code,
        "failureReason": failure.reason,
    }


def _jsonable(value: Any) -> Any:
    """Validated parameters back to plain JSON (timestamps as epoch seconds) for storage."""
    plain: Any = json.loads(json.dumps(value, default=lambda item: item.timestamp()))
    return plain


def _template_shape(template: Template) -> dict[str, Any]:
    return {
        "prefix": template.prefix,
        **template.document,
        "createdAt": template.created_at,
        "updatedAt": template.updated_at,
    }


def _ref_from_arn(arn: str) -> RepositoryRef:
    parts = arn.split(":", 5)
    valid = len(parts) == 6 and parts[0] == "arn" and parts[2] in ("ecr", "ecr-public")
    if not valid or not parts[5].startswith("repository/"):
        log.info("resourceArn %r is not an ECR repository ARN", arn)
        raise InvalidParameter("Invalid parameter at 'resourceArn' failed to satisfy constraint: 'Invalid ARN'")
    region = PUBLIC_REGION if parts[2] == "ecr-public" else parts[3]
    return RepositoryRef(parts[4], region, parts[5].removeprefix("repository/"))


PUBLIC_TARGET: Final = "SpencerFrontendService"
CATALOG_DATA: Final = "catalog-data"


class PublicEcrDoor(EcrDoor):
    """The `ecr-public` service: public repositories of the caller's public registry (its alias)."""

    SERVICE = "ecr-public"

    def repository_region(self, signed_region: str) -> str:
        return PUBLIC_REGION

    def signing_regions(self) -> frozenset[str]:
        return self.authenticator.regions | GLOBAL_SIGNING_REGION  # its API lives in us-east-1 only

    def _alias(self, account: str) -> str:
        return self.registries.public_alias(account)

    def repository_shape(self, repository: Repository, call: EcrCall) -> dict[str, Any]:
        alias = self._alias(repository.ref.account_id)
        return {
            "repositoryArn": repository.ref.arn,
            "registryId": repository.ref.account_id,
            "repositoryName": repository.ref.name,
            "repositoryUri": f"{call.host}/public/{alias}/{repository.ref.name}",
            "createdAt": repository.created_at,
        }

    def image_detail(self, row: ImageRow, ref: RepositoryRef) -> dict[str, Any]:
        record = row.manifest
        return {
            "registryId": ref.account_id,
            "repositoryName": ref.name,
            "imageDigest": str(record.digest),
            "imageTags": list(row.tags) or None,
            "imageSizeInBytes": record.image_size,
            "imagePushedAt": record.pushed_at,
            "imageManifestMediaType": record.media_type,
            "artifactMediaType": record.config_media_type,
        }

    def create_repository(self, call: EcrCall) -> dict[str, Any]:
        tags = [(t["Key"], t.get("Value", "")) for t in call.params.get("tags", [])]
        repository = self.repositories.create(call.ref(), RepositorySettings(), tags)
        catalog = self._store_catalog(repository, call.params.get("catalogData", {}))
        return {"repository": self.repository_shape(repository, call), "catalogData": catalog}

    def get_authorization_token(self, call: EcrCall) -> dict[str, Any]:
        account = call.principal.account_id
        self.authorizer.authorize_account(call.principal, "sts:GetServiceBearerToken", account, call.context)
        token = self.login_tokens.issue(call.principal, RegistryId(account, PUBLIC_REGION), self.registry.clock())
        encoded = base64.b64encode(f"AWS:{token.password}".encode()).decode()
        return {"authorizationData": {"authorizationToken": encoded, "expiresAt": token.expires_at}}

    def describe_image_tags(self, call: EcrCall) -> dict[str, Any]:
        ref = call.ref()
        after, limit = _page(call)
        rows = self._guard_repository(call, lambda: self.images.list_images(ref, None, 100_000, True))
        pairs = sorted((tag, row) for row in rows for tag in row.tags if after is None or tag > after)
        details = [
            {"imageTag": tag, "createdAt": row.manifest.pushed_at, "imageDetail": self._tag_detail(row)}
            for tag, row in pairs[:limit]
        ]
        return {"imageTagDetails": details, "nextToken": _token(pairs[limit - 1][0]) if len(pairs) > limit else None}

    def _tag_detail(self, row: ImageRow) -> dict[str, Any]:
        record = row.manifest
        return {
            "imageDigest": str(record.digest),
            "imageSizeInBytes": record.image_size,
            "imagePushedAt": record.pushed_at,
            "imageManifestMediaType": record.media_type,
            "artifactMediaType": record.config_media_type,
        }

    def describe_registries(self, call: EcrCall) -> dict[str, Any]:
        account = call.principal.account_id
        alias = self._alias(account)
        registry = {
            "registryId": account,
            "registryArn": f"arn:aws:ecr-public::{account}:registry/{account}",
            "registryUri": f"{call.host}/public/{alias}",
            "verified": False,
            "aliases": [
                {"name": alias, "status": "ACTIVE", "primaryRegistryAlias": True, "defaultRegistryAlias": True}
            ],
        }
        return {"registries": [registry]}

    def get_registry_catalog_data(self, call: EcrCall) -> dict[str, Any]:
        data = self.registries.configuration(call.account, PUBLIC_REGION, CATALOG_DATA, {})
        return {"registryCatalogData": data}

    def put_registry_catalog_data(self, call: EcrCall) -> dict[str, Any]:
        data = {"displayName": call.params["displayName"]} if "displayName" in call.params else {}
        self.registries.set_configuration(call.account, PUBLIC_REGION, CATALOG_DATA, data)
        return {"registryCatalogData": data}

    def get_repository_catalog_data(self, call: EcrCall) -> dict[str, Any]:
        repository = self._guard_repository(call, lambda: self.repositories.get(call.ref()))
        document = self.registry.metadata.get_repository_document(repository.id, CATALOG_DATA)
        return {"catalogData": json.loads(document.text) if document else {}}

    def put_repository_catalog_data(self, call: EcrCall) -> dict[str, Any]:
        repository = self._guard_repository(call, lambda: self.repositories.get(call.ref()))
        return {"catalogData": self._store_catalog(repository, call.params["catalogData"])}

    def _store_catalog(self, repository: Repository, data: dict[str, Any]) -> dict[str, Any]:
        """Catalog data as shown (RepositoryCatalogData); a logo upload is kept as a data URL."""
        shown = {k: v for k, v in data.items() if k != "logoImageBlob"}
        if "logoImageBlob" in data:
            shown["logoUrl"] = "data:image/png;base64," + base64.b64encode(data["logoImageBlob"]).decode()
        shown["marketplaceCertified"] = False
        self.registry.metadata.put_repository_document(
            repository.id, CATALOG_DATA, json.dumps(shown), self.registry.clock()
        )
        return shown
