"""Repository creation templates: the settings of repositories Dockyard creates by itself (create on push).

A template applies to repository names under its `prefix` (`ROOT` applies to every name); the longest
matching prefix wins, as in ECR.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from dockyard.domain.clock import Clock, utc_now
from dockyard.domain.errors import InvalidParameter, TemplateAlreadyExists, TemplateNotFound
from dockyard.domain.ports import RepositorySettings, Template, TemplateStore

ROOT: Final = "ROOT"
CREATE_ON_PUSH: Final = "CREATE_ON_PUSH"
REPLICATION: Final = "REPLICATION"
_PREFIX_RE: Final = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*/?")


class Templates:
    def __init__(self, store: TemplateStore, clock: Clock = utc_now) -> None:
        self.store = store
        self.clock = clock

    def create(self, account_id: str, region: str, prefix: str, document: Mapping[str, Any]) -> Template:
        _check_prefix(prefix)
        now = self.clock()
        template = Template(prefix, dict(document), now, now)
        if not self.store.put_template(account_id, region, template, create=True):
            raise TemplateAlreadyExists(f"A repository creation template with prefix '{prefix}' already exists")
        return template

    def update(self, account_id: str, region: str, prefix: str, changes: Mapping[str, Any]) -> Template:
        current = self.get(account_id, region, prefix)
        template = Template(prefix, {**current.document, **changes}, current.created_at, self.clock())
        self.store.put_template(account_id, region, template, create=False)
        return template

    def delete(self, account_id: str, region: str, prefix: str) -> Template:
        template = self.get(account_id, region, prefix)
        self.store.delete_template(account_id, region, prefix)
        return template

    def get(self, account_id: str, region: str, prefix: str) -> Template:
        for template in self.store.list_templates(account_id, region):
            if template.prefix == prefix:
                return template
        raise TemplateNotFound(f"The repository creation template with prefix '{prefix}' does not exist")

    def list(self, account_id: str, region: str) -> list[Template]:
        return self.store.list_templates(account_id, region)

    def for_push(self, account_id: str, region: str, name: str) -> Template | None:
        """The template that governs creating `name` on push, if one allows it."""
        return self.applied_for(CREATE_ON_PUSH, account_id, region, name)

    def applied_for(self, use: str, account_id: str, region: str, name: str) -> Template | None:
        """The template that governs creating `name` for `use` (CREATE_ON_PUSH, REPLICATION), if any."""
        candidates = [
            t
            for t in self.store.list_templates(account_id, region)
            if use in t.document.get("appliedFor", []) and _covers(t.prefix, name)
        ]
        return max(candidates, key=lambda t: -1 if t.prefix == ROOT else len(t.prefix), default=None)


def settings_of(template: Template) -> RepositorySettings:
    document = template.document
    encryption = document.get("encryptionConfiguration", {})
    return RepositorySettings(
        tag_mutability=document.get("imageTagMutability", "MUTABLE"),
        mutability_exclusions=tuple(f["filter"] for f in document.get("imageTagMutabilityExclusionFilters", [])),
        encryption_type=encryption.get("encryptionType", "AES256"),
        kms_key=encryption.get("kmsKey"),
    )


def _covers(prefix: str, name: str) -> bool:
    if prefix == ROOT:
        return True
    return name == prefix.rstrip("/") or name.startswith(prefix.rstrip("/") + "/")


def _check_prefix(prefix: str) -> None:
    if prefix != ROOT and not _PREFIX_RE.fullmatch(prefix):
        raise InvalidParameter(f"Invalid parameter at 'prefix' failed to satisfy constraint: '{prefix}'")
