"""Private image replication, as ECR does it: rules, the queue of replications, and replicating one image.

A registry (account, region) keeps one replication configuration: rules, each with destinations (a region and
a registry id) and optional repository filters (`PREFIX_MATCH`: the repository name starts with the filter; a
rule without filters matches every repository). An image pushed to a private repository is replicated to the
destinations of every rule that matches the repository, in the order the rules list them; images pushed
before the configuration was set are not replicated, and neither are images that arrived by replication
(replication does not chain, so two registries replicating to each other do not loop).

The push queues one task per destination in the metadata store, before the push is acknowledged; workers on
any node claim tasks (one worker per task, SKIP LOCKED on PostgreSQL) and replicate: ensure the destination
repository exists (created from the destination registry's REPLICATION creation template when one matches,
else with the source repository's settings), then `Registry.copy_image`. Regions and accounts are columns of
one metadata store over one blob store, so nothing is sent anywhere. Cross-account destinations must allow the
source account `ecr:ReplicateImage` (and `ecr:CreateRepository` when the repository is created) in their
registry policy, evaluated by the IAM engine; otherwise the replication is FAILED with the reason.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Collection, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Final

from dockyard.domain.clock import Clock
from dockyard.domain.errors import Denied, DockyardError, InvalidParameter, RepositoryAlreadyExists
from dockyard.domain.iam import Authorizer, Principal
from dockyard.domain.images import Registry
from dockyard.domain.manifests import ParsedManifest
from dockyard.domain.names import PUBLIC_REGION, Digest, RepositoryRef
from dockyard.domain.ports import ReplicationRecord, ReplicationStore, ReplicationTask, Repository, RepositorySettings
from dockyard.domain.registries import REGISTRY_POLICY, REPLICATION, Registries
from dockyard.domain.templates import REPLICATION as FOR_REPLICATION
from dockyard.domain.templates import settings_of

log = logging.getLogger("dockyard.replication")

MAX_DESTINATIONS: Final = 25  # unique destinations across all rules of a configuration (ECR's limit)
REPLICATION_CLAIM: Final = timedelta(minutes=15)
"""How long a worker holds a task; a task whose worker died (or failed unexpectedly) is retried after it."""
MAX_ATTEMPTS: Final = 5
PENDING: Final = "PENDING"
IN_PROGRESS: Final = "IN_PROGRESS"
COMPLETE: Final = "COMPLETE"
FAILED: Final = "FAILED"
SAME_REGISTRY: Final = (
    "Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: "
    "'Replication destination cannot be the same as the source registry'"
)

# Set while a replication stores its image: that push is not replicated again.
_replicating: ContextVar[bool] = ContextVar("dockyard_replicating", default=False)


# --------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Destination:
    account_id: str
    region: str


@dataclass(frozen=True)
class Rule:
    destinations: tuple[Destination, ...]
    prefixes: tuple[str, ...] = ()  # PREFIX_MATCH filters; none: every repository

    def matches(self, repository_name: str) -> bool:
        return not self.prefixes or any(repository_name.startswith(prefix) for prefix in self.prefixes)


def parse_rules(configuration: Mapping[str, Any]) -> list[Rule]:
    """The rules of a stored (validated) replicationConfiguration document."""
    return [
        Rule(
            tuple(Destination(str(d["registryId"]), str(d["region"])) for d in rule.get("destinations", [])),
            tuple(
                str(f["filter"]) for f in rule.get("repositoryFilters") or [] if f.get("filterType") == "PREFIX_MATCH"
            ),
        )
        for rule in configuration.get("rules", [])
    ]


def destinations_for(rules: Sequence[Rule], source: RepositoryRef) -> list[Destination]:
    """Where an image pushed to `source` goes: the destinations of every matching rule, in rule order, each
    once, never the source registry itself (nor a public registry)."""
    found: dict[Destination, None] = {}
    for rule in rules:
        if rule.matches(source.name):
            for destination in rule.destinations:
                elsewhere = (destination.account_id, destination.region) != (source.account_id, source.region)
                if elsewhere and destination.region != PUBLIC_REGION:
                    found.setdefault(destination)
    return list(found)


def check_configuration(configuration: Mapping[str, Any], account_id: str, region: str) -> None:
    """PutReplicationConfiguration's rules beyond the model's shapes: no destination is the source registry
    (nor a public registry), and at most 25 unique destinations in all."""
    rules = parse_rules(configuration)
    unique = {destination for rule in rules for destination in rule.destinations}
    if Destination(account_id, region) in unique:
        raise InvalidParameter(SAME_REGISTRY)
    if any(destination.region == PUBLIC_REGION for destination in unique):
        raise InvalidParameter(
            "Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: "
            f"'{PUBLIC_REGION!r} is not a region: public registries are not replication destinations'"
        )
    if len(unique) > MAX_DESTINATIONS:
        raise InvalidParameter(
            "Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: "
            f"'A replication configuration can have at most {MAX_DESTINATIONS} unique destinations, "
            f"not {len(unique)}'"
        )


def check_destination_regions(configuration: Mapping[str, Any], served: Collection[str]) -> None:
    """Every destination is in a region this deployment serves: another would be a new, empty registry that
    nothing else can reach."""
    unserved = sorted({d.region for rule in parse_rules(configuration) for d in rule.destinations} - set(served))
    if unserved:
        raise InvalidParameter(
            "Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: "
            f"'{', '.join(unserved)} {'is not a region' if len(unserved) == 1 else 'are not regions'} "
            "this registry serves'"
        )


# --------------------------------------------------------------------------------------------- status


@dataclass(frozen=True)
class ReplicationStatus:
    """One destination's state as DescribeImageReplicationStatus reports it."""

    region: str
    registry_id: str
    status: str  # IN_PROGRESS, COMPLETE or FAILED (a queued replication is IN_PROGRESS)
    failure_code: str | None


def replication_statuses(store: ReplicationStore, repository_id: int, digest: Digest) -> list[ReplicationStatus]:
    return [_status(record) for record in store.get_replications(repository_id, digest)]


def _status(record: ReplicationRecord) -> ReplicationStatus:
    failure = None
    if record.status == FAILED:
        failure = f"{record.failure_code}: {record.failure_reason}" if record.failure_reason else record.failure_code
    status = IN_PROGRESS if record.status == PENDING else record.status
    return ReplicationStatus(record.destination_region, record.destination_account, status, failure)


# --------------------------------------------------------------------------------------------- replicating


class ReplicationRefused(Exception):
    """The replication cannot be done (a permanent failure): recorded as FAILED with `code` and `reason`."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Replicator:
    """Queues replications when images are pushed, and replicates queued images (`work_once`, any node)."""

    def __init__(
        self, registry: Registry, authorizer: Authorizer, clock: Clock | None = None, owner: str | None = None
    ) -> None:
        self.registry = registry
        self.metadata = registry.metadata
        self.repositories = registry.repositories
        self.authorizer = authorizer
        self.clock = clock or registry.clock
        self.owner = owner or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.registries = Registries(registry.metadata, self.clock)
        registry.push_listeners.append(self.on_push)

    # ------------------------------------------------------------------------------------ queueing

    def on_push(self, repository: Repository, manifest: ParsedManifest) -> None:
        """Queue the pushed image for every destination the registry's rules give its repository."""
        ref = repository.ref
        if ref.is_public or _replicating.get():
            return
        configuration = self.registries.configuration(ref.account_id, ref.region, REPLICATION, {"rules": []})
        destinations = destinations_for(parse_rules(configuration), ref)
        if destinations:
            targets = [(d.account_id, d.region) for d in destinations]
            self.metadata.request_replications(repository.id, manifest.digest, targets, self.clock())

    # ------------------------------------------------------------------------------------ working

    def work_once(self) -> bool:
        """Claim and run one queued replication; False when there is none."""
        now = self.clock()
        task = self.metadata.claim_replication(self.owner, now + REPLICATION_CLAIM, now)
        if task is None:
            return False
        outcome = self._run(task)
        if outcome is not None:
            status, code, reason = outcome
            self.metadata.finish_replication(task, self.owner, status, code, reason, self.clock())
        return True

    def _run(self, task: ReplicationTask) -> tuple[str, str | None, str | None] | None:
        """(status, failure code, reason); None leaves the task claimed, to be retried when the claim expires."""
        if task.attempts > MAX_ATTEMPTS:
            return FAILED, "InternalError", f"The replication failed {MAX_ATTEMPTS} times; push the image again"
        try:
            self.replicate(task)
        except ReplicationRefused as refused:
            return FAILED, refused.code, refused.reason
        except DockyardError as error:
            return FAILED, error.ecr_exception.removesuffix("Exception"), error.message
        except Exception:  # a bug or a passing outage (the database): retried after the claim expires
            log.exception("replication %s of %s to %s/%s failed", task.id, task.digest, *_where(task))
            return None
        return COMPLETE, None, None

    def replicate(self, task: ReplicationTask) -> Repository:
        """Replicate the task's image to its destination; returns the destination repository."""
        source = self.metadata.get_repository(task.source)
        if source is None or source.id != task.repository_id:
            raise ReplicationRefused("RepositoryNotFound", f"The source repository {task.source.name} was deleted")
        if self.metadata.get_manifest(source.id, task.digest) is None:
            raise ReplicationRefused("ImageNotFound", f"The image {task.digest} was deleted before it was replicated")
        target = RepositoryRef(task.destination_account, task.destination_region, source.ref.name)
        destination = self.metadata.get_repository(target)
        if target.account_id != source.ref.account_id:
            self._check_allowed(source.ref.account_id, target, creating=destination is None)
        if destination is None:
            destination = self._create_destination(source, target)
        tags = self.metadata.tags_of(source.id, task.digest)
        marker = _replicating.set(True)
        try:
            self.registry.copy_image(source, task.digest, tags, destination)
        finally:
            _replicating.reset(marker)
        return destination

    def _check_allowed(self, source_account: str, target: RepositoryRef, creating: bool) -> None:
        """The destination registry's policy must let the source account replicate (and create) there."""
        policy = self.metadata.get_registry_document(target.account_id, target.region, REGISTRY_POLICY)
        if policy is None:
            raise ReplicationRefused(
                "AccessDenied",
                f"The registry {target.account_id} in {target.region} has no registry policy allowing account "
                f"{source_account} to replicate to it (ecr:ReplicateImage)",
            )
        actions = ["ecr:ReplicateImage", *(["ecr:CreateRepository"] if creating else [])]
        for action in actions:
            try:
                self.authorizer.authorize_resource(
                    Principal(source_account), action, target.arn, target.account_id, policy.text
                )
            except Denied:
                raise ReplicationRefused(
                    "AccessDenied",
                    f"The registry policy of registry {target.account_id} in {target.region} does not allow "
                    f"account {source_account} to perform {action} on {target.arn}",
                ) from None

    def _create_destination(self, source: Repository, target: RepositoryRef) -> Repository:
        """Create the destination repository as ECR does: from the destination registry's creation template
        that applies to REPLICATION, else with the source repository's settings."""
        template = self.repositories.templates.applied_for(
            FOR_REPLICATION, target.account_id, target.region, target.name
        )
        if template is None:
            settings, tags = _settings_for(source.settings, target), []
        else:
            settings = settings_of(template)
            tags = [(t["Key"], t.get("Value", "")) for t in template.document.get("resourceTags", [])]
        try:
            repository = self.repositories.create(target, settings, tags)
        except RepositoryAlreadyExists:
            return self.repositories.get(target)  # created meanwhile (a push, another replication)
        if template is not None:
            if isinstance(template.document.get("repositoryPolicy"), str):
                self.repositories.set_policy(target, template.document["repositoryPolicy"])
            if isinstance(template.document.get("lifecyclePolicy"), str):
                self.repositories.set_lifecycle_policy(target, template.document["lifecyclePolicy"])
        return repository


def _settings_for(source: RepositorySettings, target: RepositoryRef) -> RepositorySettings:
    """The source repository's settings for a repository created by replication. A KMS key lives in one
    account and region: elsewhere the destination uses its own registry's AWS-managed key (`aws/ecr`)."""
    key = source.kms_key
    if key is not None and not key.startswith(f"arn:aws:kms:{target.region}:{target.account_id}:"):
        return replace(source, kms_key=None)
    return source


def _where(task: ReplicationTask) -> tuple[str, str]:
    return task.destination_account, task.destination_region
