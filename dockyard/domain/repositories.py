"""Repository lifecycle and settings: create, describe, delete, tag mutability, scanning, resource tags."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from dockyard.domain.clock import Clock, utc_now
from dockyard.domain.encryption import RepositoryKeys
from dockyard.domain.errors import (
    ImageTagAlreadyExists,
    InvalidParameter,
    InvalidTagParameter,
    LifecyclePolicyNotFound,
    NameUnknown,
    RepositoryAlreadyExists,
    RepositoryNotEmpty,
    RepositoryPolicyNotFound,
    TooManyTags,
)
from dockyard.domain.iam import REPOSITORY_POLICY_KIND as REPOSITORY_POLICY
from dockyard.domain.lifecycle import parse_policy
from dockyard.domain.names import Digest, RepositoryRef, check_private_repository_name, check_repository_name
from dockyard.domain.policies import Policy
from dockyard.domain.ports import Document, MetadataStore, Repository, RepositorySettings, TagGuard
from dockyard.domain.quotas import Quotas
from dockyard.domain.templates import Templates, settings_of

MUTABILITIES: Final = frozenset({"MUTABLE", "IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION"})
_WITH_EXCLUSION: Final = frozenset({"IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION"})
ENCRYPTION_TYPES: Final = frozenset({"AES256", "KMS", "KMS_DSSE"})
MAX_RESOURCE_TAGS: Final = 50
MAX_EXCLUSION_FILTERS: Final = 5
_FILTER_RE: Final = re.compile(r"[0-9a-zA-Z._*-]{1,128}")


def wildcard_matches(pattern: str, value: str) -> bool:
    """ECR's tag filters: `*` matches any run of characters; everything else is literal."""
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), value) is not None


def tag_is_immutable(settings: RepositorySettings, tag: str) -> bool:
    excluded = any(wildcard_matches(pattern, tag) for pattern in settings.mutability_exclusions)
    if settings.tag_mutability == "IMMUTABLE":
        return True
    if settings.tag_mutability == "IMMUTABLE_WITH_EXCLUSION":
        return not excluded
    if settings.tag_mutability == "MUTABLE_WITH_EXCLUSION":
        return excluded
    return False


def immutability_guard(repository: Repository) -> TagGuard:
    """Refuses to move, or re-push onto, an immutable tag (ECR refuses even identical bytes)."""

    def guard(tag: str, current: Digest | None) -> None:
        if current is not None and tag_is_immutable(repository.settings, tag):
            raise ImageTagAlreadyExists(
                f"The image tag '{tag}' already exists in the '{repository.ref.name}' repository and cannot be "
                "overwritten because the repository is immutable.",
                detail={"tag": tag},
            )

    return guard


def check_settings(settings: RepositorySettings) -> RepositorySettings:
    if settings.tag_mutability not in MUTABILITIES:
        raise InvalidParameter(f"Invalid parameter at 'imageTagMutability': {settings.tag_mutability!r}")
    filters = settings.mutability_exclusions
    if settings.tag_mutability in _WITH_EXCLUSION and not filters:
        raise InvalidParameter(f"imageTagMutabilityExclusionFilters are required with {settings.tag_mutability}")
    if settings.tag_mutability not in _WITH_EXCLUSION and filters:
        raise InvalidParameter(
            f"imageTagMutabilityExclusionFilters can only be used with IMMUTABLE_WITH_EXCLUSION or "
            f"MUTABLE_WITH_EXCLUSION, not {settings.tag_mutability}"
        )
    if len(filters) > MAX_EXCLUSION_FILTERS or not all(_FILTER_RE.fullmatch(f) for f in filters):
        raise InvalidParameter("imageTagMutabilityExclusionFilters: 1-5 filters matching [0-9a-zA-Z._*-]{1,128}")
    if settings.encryption_type not in ENCRYPTION_TYPES:
        raise InvalidParameter(f"Invalid parameter at 'encryptionType': {settings.encryption_type!r}")
    if settings.encryption_type == "AES256" and settings.kms_key:
        raise InvalidParameter("kmsKey can only be specified with the KMS or KMS_DSSE encryption types")
    return settings


def check_resource_tags(tags: Sequence[tuple[str, str]], existing: int = 0) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in tags:
        if not key or len(key) > 128 or len(value) > 256 or key.lower().startswith("aws:"):
            raise InvalidTagParameter(f"Invalid tag: key {key!r}, value {value!r}")
        result[key] = value
    if existing + len(result) > MAX_RESOURCE_TAGS:
        raise TooManyTags(f"A repository can have at most {MAX_RESOURCE_TAGS} tags")
    return result


LIFECYCLE_POLICY: Final = "lifecycle-policy"


class Repositories:
    """Repository lifecycle, shared by the ECR API and the registry door's create-on-push."""

    def __init__(
        self,
        metadata: MetadataStore,
        clock: Clock = utc_now,
        create_on_push: bool = True,
        keys: RepositoryKeys | None = None,
    ) -> None:
        self.metadata = metadata
        self.keys = keys  # binds KMS repositories to their key; None: no key service (KMS settings kept as given)
        self.clock = clock
        self.quotas = Quotas(metadata)
        self.templates = Templates(metadata, clock)
        self.create_on_push = create_on_push

    def get(self, ref: RepositoryRef) -> Repository:
        repository = self.metadata.get_repository(ref)
        if repository is None:
            raise NameUnknown(
                f"The repository with name '{ref.name}' does not exist in the registry with id '{ref.account_id}'",
                detail={"name": ref.name},
            )
        return repository

    def create(
        self, ref: RepositoryRef, settings: RepositorySettings, tags: Sequence[tuple[str, str]] = ()
    ) -> Repository:
        check_repository_name(ref.name) if ref.is_public else check_private_repository_name(ref.name)
        check_settings(settings)
        resource_tags = check_resource_tags(tags)
        if self.keys is not None:
            settings = self.keys.bind(ref, settings)
        count = self.metadata.count_repositories(ref.account_id, ref.region)
        self.quotas.check(ref.account_id, "repositories-per-region", count)
        repository, created = self.metadata.create_repository(ref, self.clock(), settings)
        if not created:
            raise RepositoryAlreadyExists(
                f"The repository with name '{ref.name}' already exists in the registry with id '{ref.account_id}'"
            )
        if resource_tags:
            self.metadata.set_resource_tags(repository.id, resource_tags, ())
        return repository

    def for_push(self, ref: RepositoryRef) -> Repository:
        """The repository a push goes to, created on first push when a creation template (or the server's
        create-on-push setting) allows it; a template's settings, tags and policies are applied."""
        repository = self.metadata.get_repository(ref)
        if repository is not None:
            return repository
        template = self.templates.for_push(ref.account_id, ref.region, ref.name)
        if template is None and not self.create_on_push:
            return self.get(ref)  # raises NameUnknown
        settings = settings_of(template) if template else RepositorySettings()
        tags = [(t["Key"], t.get("Value", "")) for t in template.document.get("resourceTags", [])] if template else []
        try:
            repository = self.create(ref, settings, tags)
        except RepositoryAlreadyExists:
            return self.get(ref)  # a concurrent push created it first
        if template is not None:
            self._apply_template_documents(repository, template.document)
        return repository

    def _apply_template_documents(self, repository: Repository, document: dict[str, object]) -> None:
        if isinstance(document.get("repositoryPolicy"), str):
            self.set_policy(repository.ref, str(document["repositoryPolicy"]))
        if isinstance(document.get("lifecyclePolicy"), str):
            self.set_lifecycle_policy(repository.ref, str(document["lifecyclePolicy"]))

    def list(self, account_id: str, region: str, after: str | None, limit: int) -> list[Repository]:
        return self.metadata.list_repositories(account_id, region, after, limit)

    def delete(self, ref: RepositoryRef, force: bool) -> Repository:
        repository = self.get(ref)
        if not force and self.metadata.count_manifests(repository.id):
            raise RepositoryNotEmpty(
                f"The repository with name '{ref.name}' in registry with id '{ref.account_id}' cannot be deleted "
                "because it still contains images"
            )
        self.metadata.delete_repository(repository.id)
        return repository

    def set_tag_mutability(self, ref: RepositoryRef, mutability: str, exclusions: Sequence[str]) -> Repository:
        repository = self.get(ref)
        settings = replace(repository.settings, tag_mutability=mutability, mutability_exclusions=tuple(exclusions))
        self.metadata.update_settings(repository.id, check_settings(settings))
        return replace(repository, settings=settings)

    def set_scan_on_push(self, ref: RepositoryRef, scan_on_push: bool) -> Repository:
        repository = self.get(ref)
        settings = replace(repository.settings, scan_on_push=scan_on_push)
        self.metadata.update_settings(repository.id, settings)
        return replace(repository, settings=settings)

    def resource_tags(self, ref: RepositoryRef) -> dict[str, str]:
        return self.metadata.get_resource_tags(self.get(ref).id)

    def tag(self, ref: RepositoryRef, tags: Sequence[tuple[str, str]]) -> None:
        repository = self.get(ref)
        existing = self.metadata.get_resource_tags(repository.id)
        new = check_resource_tags(tags)
        if len(existing.keys() | new.keys()) > MAX_RESOURCE_TAGS:
            raise TooManyTags(f"A repository can have at most {MAX_RESOURCE_TAGS} tags")
        self.metadata.set_resource_tags(repository.id, new, ())

    def untag(self, ref: RepositoryRef, keys: Sequence[str]) -> None:
        self.metadata.set_resource_tags(self.get(ref).id, {}, keys)

    # ------------------------------------------------------------------------------------ documents

    def set_policy(self, ref: RepositoryRef, text: str) -> str:
        Policy.parse(text, kind="resource")
        self.metadata.put_repository_document(self.get(ref).id, REPOSITORY_POLICY, text, self.clock())
        return text

    def policy(self, ref: RepositoryRef) -> Document:
        document = self.metadata.get_repository_document(self.get(ref).id, REPOSITORY_POLICY)
        if document is None:
            raise RepositoryPolicyNotFound(_no_policy("Repository policy", ref))
        return document

    def delete_policy(self, ref: RepositoryRef) -> Document:
        document = self.policy(ref)
        self.metadata.delete_repository_document(self.get(ref).id, REPOSITORY_POLICY)
        return document

    def set_lifecycle_policy(self, ref: RepositoryRef, text: str) -> str:
        parse_policy(text)
        self.metadata.put_repository_document(self.get(ref).id, LIFECYCLE_POLICY, text, self.clock())
        return text

    def lifecycle_policy(self, ref: RepositoryRef) -> Document:
        document = self.metadata.get_repository_document(self.get(ref).id, LIFECYCLE_POLICY)
        if document is None:
            raise LifecyclePolicyNotFound(_no_policy("Lifecycle policy", ref))
        return document

    def delete_lifecycle_policy(self, ref: RepositoryRef) -> Document:
        document = self.lifecycle_policy(ref)
        self.metadata.delete_repository_document(self.get(ref).id, LIFECYCLE_POLICY)
        return document


def _no_policy(what: str, ref: RepositoryRef) -> str:
    return f"{what} does not exist for the repository with name '{ref.name}' in the registry with id '{ref.account_id}'"
