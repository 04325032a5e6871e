"""Running lifecycle policies against stored repositories: facts in, `lifecycle.plan` decides, actions out.

Every caller (the scheduled sweep, `dockyard lifecycle run`, the ECR preview API) goes through `plan`, the one
pure evaluation; this module only gathers image facts and carries out what the plan says.
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from dockyard.domain.clock import Clock, utc_now
from dockyard.domain.errors import DockyardError, ErrorKind
from dockyard.domain.iam import AuditSink
from dockyard.domain.images import Registry
from dockyard.domain.lifecycle import (
    ActionType,
    ImageFacts,
    LifecyclePolicyPreview,
    PlannedAction,
    StorageClass,
    parse_policy,
    plan,
    preview,
    preview_to_json,
)
from dockyard.domain.names import Digest, RepositoryRef
from dockyard.domain.ports import Repository
from dockyard.domain.repositories import LIFECYCLE_POLICY

log = logging.getLogger("dockyard.lifecycle")
PREVIEW: Final = "lifecycle-preview"
LEASE_SECONDS: Final = 600


class LifecycleBusy(DockyardError):
    kind = ErrorKind(
        "TOOMANYREQUESTS", 409, "LifecyclePolicyPreviewInProgressException", "a lifecycle run is in progress"
    )


@dataclass(frozen=True)
class RunResult:
    repository: RepositoryRef
    actions: list[PlannedAction]
    dry_run: bool


def _job_name(repository: Repository) -> str:
    return f"lifecycle:{repository.id}"


class LifecycleRunner:
    def __init__(
        self,
        registry: Registry,
        sinks: Sequence[AuditSink] = (),
        clock: Clock = utc_now,
        owner: str | None = None,
    ) -> None:
        self.registry = registry
        self.metadata = registry.metadata
        self.sinks = sinks  # every expiry and transition goes to each: the audit log and the event stream
        self.clock = clock
        self.owner = owner or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"

    # ------------------------------------------------------------------------------------ facts

    def facts(self, repository: Repository) -> list[ImageFacts]:
        children = {
            str(parent): tuple(map(str, kids))
            for parent, kids in self.metadata.manifest_children(repository.id).items()
        }
        return [
            ImageFacts(
                digest=row.digest,
                tags=row.tags,
                pushed_at=row.pushed_at,
                last_pulled_at=row.last_pulled_at,
                last_archived_at=row.last_archived_at,
                last_activated_at=row.last_activated_at,
                storage_class=StorageClass(row.storage_class),
                subject_digest=row.subject,
                is_index=row.digest in children,
                child_digests=children.get(row.digest, ()),
            )
            for row in self.metadata.lifecycle_rows(repository.id)
        ]

    # ------------------------------------------------------------------------------------ preview

    def start_preview(self, ref: RepositoryRef, policy_text: str | None) -> LifecyclePolicyPreview:
        """Compute the preview now (it is fast) and keep it for GetLifecyclePolicyPreview."""
        repository = self.registry.repository(ref)
        text = policy_text or self.registry.repositories.lifecycle_policy(ref).text
        result = preview(parse_policy(text), self.facts(repository), self.clock())
        stored = json.dumps(preview_to_json(result))
        self.metadata.put_repository_document(repository.id, PREVIEW, stored, self.clock())
        return result

    def stored_preview(self, ref: RepositoryRef) -> dict[str, Any] | None:
        document = self.metadata.get_repository_document(self.registry.repository(ref).id, PREVIEW)
        return None if document is None else dict(json.loads(document.text))

    def last_evaluated(self, ref: RepositoryRef) -> datetime | None:
        return self.metadata.job_last_run(_job_name(self.registry.repository(ref)))

    # ------------------------------------------------------------------------------------ runs

    def run(self, ref: RepositoryRef, dry_run: bool = False) -> RunResult:
        """One repository now; under its lease, so a scheduled sweep elsewhere never works on it meanwhile."""
        repository = self.registry.repository(ref)
        if dry_run:
            return self._run(repository, dry_run)
        name, now = _job_name(repository), self.clock()
        if not self.metadata.try_lease(name, self.owner, now + timedelta(seconds=LEASE_SECONDS), now):
            raise LifecycleBusy(f"a lifecycle run of {ref.name} is in progress on another node; try again later")
        try:
            return self._run(repository, dry_run, lease=name)
        except BaseException:
            self.metadata.release_lease(name, self.owner)
            raise

    def run_all(self, dry_run: bool = False) -> list[RunResult]:
        """Every repository with a policy, each under a lease so one node at a time works on it."""
        results = []
        for repository in self.metadata.repositories_with_document(LIFECYCLE_POLICY):
            name = _job_name(repository)
            now = self.clock()
            lease_until = now + timedelta(seconds=LEASE_SECONDS)
            if not dry_run and not self.metadata.try_lease(name, self.owner, lease_until, now):
                continue
            try:
                results.append(self._run(repository, dry_run, lease=None if dry_run else name))
            except DockyardError as error:
                log.warning("lifecycle run of %s failed: %s", repository.ref.name, error.message)
                if not dry_run:
                    self.metadata.release_lease(name, self.owner)
        return results

    def due(self, interval: timedelta) -> list[Repository]:
        now = self.clock()
        return [
            r
            for r in self.metadata.repositories_with_document(LIFECYCLE_POLICY)
            if (last := self.metadata.job_last_run(_job_name(r))) is None or now - last >= interval
        ]

    def _run(self, repository: Repository, dry_run: bool, lease: str | None = None) -> RunResult:
        document = self.metadata.get_repository_document(repository.id, LIFECYCLE_POLICY)
        if document is None:
            return RunResult(repository.ref, [], dry_run)
        actions = plan(parse_policy(document.text), self.facts(repository), self.clock())
        if not dry_run:
            self._apply(repository, actions)
            if lease is not None:
                self.metadata.finish_leased_job(_job_name(repository), lease, self.owner, self.clock())
            else:
                self.metadata.set_job_last_run(_job_name(repository), self.clock())
        return RunResult(repository.ref, actions, dry_run)

    def _apply(self, repository: Repository, actions: Sequence[PlannedAction]) -> None:
        """Expire in one transaction (the plan never expires a manifest a kept index lists), then archive."""
        expired = [a for a in actions if a.action == ActionType.EXPIRE]
        if expired:
            self.metadata.delete_manifests(repository.id, [Digest.parse(a.digest) for a in expired])
            for action in expired:
                self._emit(repository, action, "EXPIRE")
        for action in actions:
            if action.action != ActionType.EXPIRE:
                self.metadata.set_storage_class(repository.id, Digest.parse(action.digest), "ARCHIVE", self.clock())
                self._emit(repository, action, "ARCHIVE")

    def _emit(self, repository: Repository, action: PlannedAction, what: str) -> None:
        event = {
            "eventTime": self.clock().isoformat(),
            "source": "aws.ecr",
            "detail-type": "ECR Image Action",
            "account": repository.ref.account_id,
            "region": repository.ref.region,
            "resources": [repository.ref.arn],
            "detail": {
                "action-type": what,
                "result": "SUCCESS",
                "repository-name": repository.ref.name,
                "image-digest": action.digest,
                "image-tags": list(action.tags),
                "applied-rule-priority": action.applied_rule_priority,
                "initiator": "lifecycle-policy",
            },
        }
        for sink in self.sinks:
            sink.record(event)
