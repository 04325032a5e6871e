"""Lifecycle policies: ECR's policy language (parse and validate), its evaluation, and the preview shapes.

The module is built in layers so that each can be tested on its own:

* `parse_policy` turns `lifecyclePolicyText` into a `LifecyclePolicy`, or raises `LifecyclePolicyInvalid`
  carrying the message ECR gives for the same text (schema checks for every rule first, then per-rule
  semantics, then checks across rules).
* `evaluate` is ECR's evaluation and nothing else: the reference algorithm of the lifecycle notes, run over
  every image it is given. Its result is what ECR would do, so it is tested against the notes' vectors alone.
* `apply_reference_safety` is Dockyard's safety extension, a separate step over `evaluate`'s result: an
  expired index takes its untagged children with it, a kept index keeps its own, referrers follow their
  subject.

* `plan` chains the two (and keeps referrers out of the counting); `preview` renders a plan in
  GetLifecyclePolicyPreview's shapes and `preview_to_json` turns those into the AWS JSON protocol's values.

Everything here is pure: the clock is a parameter, images arrive as `ImageFacts` values, nothing is stored.
Datetimes must be timezone-aware.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from operator import attrgetter
from typing import ClassVar, Final, NotRequired, TypeAlias, TypedDict, TypeVar

from dockyard.domain.errors import DockyardError, ErrorKind

# botocore's `LifecyclePolicyText` shape bounds the text; the rule count is ECR's documented quota.
POLICY_TEXT_MIN_LENGTH: Final = 100
POLICY_TEXT_MAX_LENGTH: Final = 30_720
MAX_RULES: Final = 50
# "Archived images must stay archived at least 90 days": a rule deleting them sooner is refused.
MIN_ARCHIVE_DAYS: Final = 90
MAX_WILDCARDS_PER_PATTERN: Final = 4


# ------------------------------------------------------------------------------------------------ errors

_CONSTRAINT_FAILURE: Final = "Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: "
LIFECYCLE_POLICY_INVALID: Final = ErrorKind(
    oci_code="DENIED",
    http_status=400,
    ecr_exception="InvalidParameterException",
    default_message="Lifecycle policy validation failure",
)


class LifecyclePolicyInvalid(DockyardError):
    """The policy text breaks a rule of the language; `message` is ECR's full text, `detail` its last part."""

    kind: ClassVar[ErrorKind] = LIFECYCLE_POLICY_INVALID
    detail: str

    @classmethod
    def failure(cls, detail: str) -> LifecyclePolicyInvalid:
        """A schema or semantic check failed: ECR says "Lifecycle policy validation failure: <detail>"."""
        return cls.constraint(f"Lifecycle policy validation failure: {detail}")

    @classmethod
    def constraint(cls, detail: str) -> LifecyclePolicyInvalid:
        return cls(f"{_CONSTRAINT_FAILURE}'{detail}'", detail)


# ---------------------------------------------------------------------------------------------- policies


class TagStatus(StrEnum):
    TAGGED = "tagged"
    UNTAGGED = "untagged"
    ANY = "any"


class CountType(StrEnum):
    IMAGE_COUNT_MORE_THAN = "imageCountMoreThan"
    SINCE_IMAGE_PUSHED = "sinceImagePushed"
    SINCE_IMAGE_PULLED = "sinceImagePulled"
    SINCE_IMAGE_TRANSITIONED = "sinceImageTransitioned"


class StorageClass(StrEnum):
    """Values as the ECR API spells them; the policy language spells them in lower case."""

    STANDARD = "STANDARD"
    ARCHIVE = "ARCHIVE"


class ActionType(StrEnum):
    """Values as the ECR API spells them; the policy language spells them in lower case."""

    EXPIRE = "EXPIRE"
    TRANSITION = "TRANSITION"


@dataclass(frozen=True)
class Selection:
    tag_status: TagStatus
    count_type: CountType
    count_number: int
    tag_prefixes: tuple[str, ...] = ()
    tag_patterns: tuple[str, ...] = ()
    storage_class: StorageClass = StorageClass.STANDARD


@dataclass(frozen=True)
class Rule:
    priority: int
    selection: Selection
    action: ActionType
    target_storage_class: StorageClass | None = None
    description: str | None = None


@dataclass(frozen=True)
class LifecyclePolicy:
    """A validated policy; `rules` are in evaluation order (ascending `rulePriority`)."""

    text: str
    rules: tuple[Rule, ...]


# ------------------------------------------------------------------------------------------------ images


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What evaluation needs to know about one image (one manifest, addressed by digest).

    `last_activated_at` is set when the image was restored from the archive; `last_archived_at` when it was
    (last) moved there. `child_digests` are the manifests an index lists (evaluation reads references from
    them alone; `is_index` only describes the image); `subject_digest` makes the image a referrer
    (signature, SBOM, attestation) of that subject.
    """

    digest: str
    tags: tuple[str, ...]
    pushed_at: datetime
    last_pulled_at: datetime | None = None
    last_archived_at: datetime | None = None
    last_activated_at: datetime | None = None
    storage_class: StorageClass = StorageClass.STANDARD
    subject_digest: str | None = None
    is_index: bool = False
    child_digests: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Naive datetimes would compare wrongly (or raise) against `now`; refuse them at the door.
        for value in (self.pushed_at, self.last_pulled_at, self.last_archived_at, self.last_activated_at):
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"image {self.digest}: timestamps must be timezone-aware")
        # Tag selection joins tags with newlines; the tag grammar allows neither those nor empty tags.
        if any(not tag or "\n" in tag for tag in self.tags):
            raise ValueError(f"image {self.digest}: tags must be non-empty and contain no newline")


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """One image the policy acts on. `follows` names the index or subject whose fate this image shares
    (set only by `apply_reference_safety`); `applied_rule_priority` is then that image's rule."""

    image: ImageFacts
    action: ActionType
    target_storage_class: StorageClass | None
    applied_rule_priority: int
    follows: str | None = None

    # The image's own facts, as GetLifecyclePolicyPreview reports them.
    @property
    def digest(self) -> str:
        return self.image.digest

    @property
    def tags(self) -> tuple[str, ...]:
        return self.image.tags

    @property
    def pushed_at(self) -> datetime:
        return self.image.pushed_at

    @property
    def storage_class(self) -> StorageClass:
        return self.image.storage_class


# ======================================================================================= parse + validate

_invalid: Final = LifecyclePolicyInvalid.failure

# ECR's texts: its JSON-schema validator's (as users report them and moto mirrors them; name lists print
# sorted, as JSON) and its semantic checks' where known.
_NOT_AN_OBJECT: Final = "Could not map policyString into LifecyclePolicy."
_MISSING: Final = "object has missing required properties ({})"
_NOT_ALLOWED: Final = "object instance has properties which are not allowed by the schema: ({})"
_WRONG_TYPE: Final = 'instance type ({}) does not match any allowed primitive type (allowed: ["{}"])'
_TOO_SMALL: Final = "numeric instance is lower than the required minimum (minimum: 1, found: {})"
_NOT_IN_ENUM: Final = "instance value ({}) not found in enum :(possible values: {})"
_TOO_FEW: Final = "array is too short: must have at least 1 elements but instance has 0 elements"
_TOO_MANY: Final = "array is too long: must have at most {} elements but instance has {} elements"
_ONE_OF: Final = "instance failed to match exactly one schema (matched 0 out of 2)"
_NO_TAG_LIST: Final = "Must specify tagPrefixList or tagPatternList when tagStatus=TAGGED."
_UNTAGGED_TWICE: Final = "Only one rule can select Untagged images per storage class"
_ANY_NOT_LAST: Final = "Rule for tagStatus=ANY must have the lowest priority per storage class"
# Dockyard's wording where ECR's is not known, in the same style.
_TAG_LIST_FORBIDDEN: Final = "Cannot specify {} when tagStatus={}."
_BOTH_TAG_LISTS: Final = "Cannot specify both tagPrefixList and tagPatternList in one rule."
_TOO_MANY_WILDCARDS: Final = "Tag pattern {} has more than {} wildcards (*)."
_ARCHIVE_POOL_MISUSED: Final = "storageClass archive can only be used with countType sinceImageTransitioned."
_TRANSITIONED_NEEDS_ARCHIVE: Final = "countType sinceImageTransitioned requires storageClass archive."
_ARCHIVE_TOO_SOON: Final = (
    "countType sinceImageTransitioned needs countNumber of at least {}: archived images stay that long."
)
_NO_TARGET: Final = "targetStorageClass is required when action type is transition."
_PULLED_EXPIRES: Final = "countType sinceImagePulled can only be used with action type transition."
_TRANSITIONED_MOVES: Final = "countType sinceImageTransitioned can only be used with action type expire."
_DUPLICATE_PRIORITY: Final = "Rule priorities must be unique: rulePriority {} is used by more than one rule."
_DUPLICATE_PREFIXES: Final = "The tagPrefixList {} is used by more than one rule of the same storage class."

_JSON_TYPE_NAMES: Final[Mapping[type, str]] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
    type(None): "null",
}
_RULE_REQUIRED: Final = frozenset({"rulePriority", "selection", "action"})
_RULE_OPTIONAL: Final = frozenset({"description"})
_SELECTION_REQUIRED: Final = frozenset({"tagStatus", "countType", "countNumber"})
_SELECTION_OPTIONAL: Final = frozenset({"tagPrefixList", "tagPatternList", "storageClass", "countUnit"})
_ACTION_REQUIRED: Final = frozenset({"type"})
_ACTION_OPTIONAL: Final = frozenset({"targetStorageClass"})
_STORAGE_CLASS_WORDS: Final = ("standard", "archive")
_ACTION_WORDS: Final = ("expire", "transition")


def parse_policy(text: str) -> LifecyclePolicy:
    """Validate `lifecyclePolicyText` as ECR does and return the policy, rules sorted by priority.

    Raises `LifecyclePolicyInvalid` with ECR's message. Checks run in ECR's order as far as it is known: the
    text's length, JSON, the schema of every rule, then each rule's semantics, then the rules together.
    """
    _check_length(text)
    raw_rules = _rules_array(_load_json(text))
    rules = [_parse_rule(raw) for raw in raw_rules]
    for rule in rules:
        _check_rule_semantics(rule)
    _check_rule_set(rules)
    return LifecyclePolicy(text, tuple(sorted(rules, key=lambda rule: rule.priority)))


def _check_length(text: str) -> None:
    if len(text) < POLICY_TEXT_MIN_LENGTH:
        raise LifecyclePolicyInvalid.constraint(
            f"Member must have length greater than or equal to {POLICY_TEXT_MIN_LENGTH}"
        )
    if len(text) > POLICY_TEXT_MAX_LENGTH:
        raise LifecyclePolicyInvalid.constraint(
            f"Member must have length less than or equal to {POLICY_TEXT_MAX_LENGTH}"
        )


def _load_json(text: str) -> dict[str, object]:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        raise _invalid(_NOT_AN_OBJECT)
    return document


def _rules_array(document: dict[str, object]) -> list[object]:
    _check_object(document, frozenset({"rules"}), frozenset())
    rules = _check_type(document["rules"], list)
    if not rules:
        raise _invalid(_TOO_FEW)
    if len(rules) > MAX_RULES:
        raise _invalid(_TOO_MANY.format(MAX_RULES, len(rules)))
    return rules


# ----------------------------------------------------------------------------------- schema, per rule


def _parse_rule(raw: object) -> Rule:
    rule = _check_object(raw, _RULE_REQUIRED, _RULE_OPTIONAL)
    priority = _check_integer(rule["rulePriority"])
    description = _check_type(rule["description"], str) if "description" in rule else None
    selection = _parse_selection(rule["selection"])
    action, target = _parse_action(rule["action"])
    return Rule(priority, selection, action, target, description)


def _parse_selection(raw: object) -> Selection:
    selection = _check_object(raw, _SELECTION_REQUIRED, _SELECTION_OPTIONAL)
    tag_status = TagStatus(_check_enum(selection["tagStatus"], tuple(TagStatus)))
    prefixes = _optional_string_list(selection, "tagPrefixList")
    patterns = _optional_string_list(selection, "tagPatternList")
    storage_class = _check_enum(selection.get("storageClass", "standard"), _STORAGE_CLASS_WORDS)
    if "countUnit" in selection:
        _check_enum(selection["countUnit"], ("days",))
    count_number = _check_integer(selection["countNumber"])
    count_type = _check_count_variant(selection)
    storage = StorageClass(storage_class.upper())
    return Selection(tag_status, count_type, count_number, prefixes, patterns, storage)


def _check_count_variant(selection: dict[str, object]) -> CountType:
    """The schema's `oneOf`: `imageCountMoreThan` without `countUnit`, or a `since*` type with it."""
    count_type = selection["countType"]
    if isinstance(count_type, str) and count_type in tuple(CountType):
        counts = count_type == CountType.IMAGE_COUNT_MORE_THAN
        if counts != ("countUnit" in selection):
            return CountType(count_type)
    raise _one_of_failure()


def _parse_action(raw: object) -> tuple[ActionType, StorageClass | None]:
    action = _check_object(raw, _ACTION_REQUIRED, _ACTION_OPTIONAL)
    action_type = ActionType(_check_enum(action["type"], _ACTION_WORDS).upper())
    if "targetStorageClass" not in action:
        return action_type, None
    if action_type is ActionType.EXPIRE:
        # The expire branch of the schema's oneOf forbids the property altogether, even as null.
        raise _one_of_failure()
    return action_type, StorageClass(_check_enum(action["targetStorageClass"], ("archive",)).upper())


def _one_of_failure() -> LifecyclePolicyInvalid:
    return _invalid(_ONE_OF)


def _names(names: Iterable[str]) -> str:
    return json.dumps(sorted(names))


def _check_object(value: object, required: frozenset[str], optional: frozenset[str]) -> dict[str, object]:
    document = _check_type(value, dict)
    missing = required - document.keys()
    if missing:
        raise _invalid(_MISSING.format(_names(missing)))
    unknown = document.keys() - required - optional
    if unknown:
        raise _invalid(_NOT_ALLOWED.format(_names(unknown)))
    return document


_T = TypeVar("_T")


def _check_type(value: object, expected: type[_T]) -> _T:
    # `type(...) is`, not isinstance: JSON booleans are not integers.
    if type(value) is not expected:
        actual, allowed = _JSON_TYPE_NAMES.get(type(value), "unknown"), _JSON_TYPE_NAMES[expected]
        raise _invalid(_WRONG_TYPE.format(actual, allowed))
    return value


def _check_integer(value: object) -> int:
    number = _check_type(value, int)
    if number < 1:
        raise _invalid(_TOO_SMALL.format(number))
    return number


def _check_enum(value: object, allowed: Sequence[str]) -> str:
    word = _check_type(value, str)
    if word not in allowed:
        raise _invalid(_NOT_IN_ENUM.format(word, _names(allowed)))
    return word


def _optional_string_list(selection: dict[str, object], key: str) -> tuple[str, ...]:
    if key not in selection:
        return ()
    entries = _check_type(selection[key], list)
    if not entries:
        raise _invalid(_TOO_FEW)
    return tuple(_check_type(entry, str) for entry in entries)


# -------------------------------------------------------------------------------------- semantics, per rule


def _check_rule_semantics(rule: Rule) -> None:
    _check_tag_lists(rule.selection)
    _check_storage_class(rule.selection)
    _check_action_fits(rule)


def _check_tag_lists(selection: Selection) -> None:
    prefixes, patterns = selection.tag_prefixes, selection.tag_patterns
    if selection.tag_status is TagStatus.TAGGED and not (prefixes or patterns):
        raise _invalid(_NO_TAG_LIST)
    if selection.tag_status is not TagStatus.TAGGED and (prefixes or patterns):
        listed = "tagPrefixList" if prefixes else "tagPatternList"
        status = selection.tag_status.upper()
        raise _invalid(_TAG_LIST_FORBIDDEN.format(listed, status))
    if prefixes and patterns:
        raise _invalid(_BOTH_TAG_LISTS)
    for pattern in patterns:
        if pattern.count("*") > MAX_WILDCARDS_PER_PATTERN:
            raise _invalid(_TOO_MANY_WILDCARDS.format(json.dumps(pattern), MAX_WILDCARDS_PER_PATTERN))


def _check_storage_class(selection: Selection) -> None:
    transitioned = selection.count_type is CountType.SINCE_IMAGE_TRANSITIONED
    archive = selection.storage_class is StorageClass.ARCHIVE
    if archive and not transitioned:
        raise _invalid(_ARCHIVE_POOL_MISUSED)
    if transitioned and not archive:
        raise _invalid(_TRANSITIONED_NEEDS_ARCHIVE)
    if transitioned and selection.count_number < MIN_ARCHIVE_DAYS:
        raise _invalid(_ARCHIVE_TOO_SOON.format(MIN_ARCHIVE_DAYS))


def _check_action_fits(rule: Rule) -> None:
    count_type = rule.selection.count_type
    if rule.action is ActionType.TRANSITION and rule.target_storage_class is None:
        raise _invalid(_NO_TARGET)
    if count_type is CountType.SINCE_IMAGE_PULLED and rule.action is not ActionType.TRANSITION:
        raise _invalid(_PULLED_EXPIRES)
    if count_type is CountType.SINCE_IMAGE_TRANSITIONED and rule.action is not ActionType.EXPIRE:
        raise _invalid(_TRANSITIONED_MOVES)


# ----------------------------------------------------------------------------------------- across rules


def _check_rule_set(rules: Sequence[Rule]) -> None:
    _check_unique_priorities(rules)
    by_class: defaultdict[StorageClass, list[Rule]] = defaultdict(list)
    for rule in rules:
        by_class[rule.selection.storage_class].append(rule)
    for class_rules in by_class.values():
        _check_class_rules(class_rules)


def _check_unique_priorities(rules: Sequence[Rule]) -> None:
    counts = Counter(rule.priority for rule in rules)
    repeated = sorted(priority for priority, count in counts.items() if count > 1)
    if repeated:
        raise _invalid(_DUPLICATE_PRIORITY.format(repeated[0]))


def _check_class_rules(rules: Sequence[Rule]) -> None:
    """The constraints ECR states per storage class."""
    statuses = [rule.selection.tag_status for rule in rules]
    if statuses.count(TagStatus.UNTAGGED) > 1:
        raise _invalid(_UNTAGGED_TWICE)
    last = max(rule.priority for rule in rules)
    if any(rule.selection.tag_status is TagStatus.ANY and rule.priority != last for rule in rules):
        raise _invalid(_ANY_NOT_LAST)
    prefix_sets = [frozenset(rule.selection.tag_prefixes) for rule in rules if rule.selection.tag_prefixes]
    repeated = [prefixes for prefixes, count in Counter(prefix_sets).items() if count > 1]
    if repeated:
        listed = _names(repeated[0])
        raise _invalid(_DUPLICATE_PREFIXES.format(listed))


# ============================================================================================ evaluation
# Speed: one sort of each pool (oldest first) serves every rule, since filtering keeps order; tag selection
# runs compiled regexes over each image's tags joined by newlines (tags cannot contain one), one C-level call
# per image and list entry. Evaluating 10 rules over 100,000 images stays well under a second.

TagSearch: TypeAlias = Callable[[str], object]
_PRIORITY: Final = attrgetter("applied_rule_priority")
_TAG_SEPARATOR: Final = "\n"


def effective_push_time(image: ImageFacts) -> datetime:
    """ECR's "push time": `imagePushedAt`, or `lastActivatedAt` once the image was restored from archive."""
    activated = image.last_activated_at
    return image.pushed_at if activated is None else max(image.pushed_at, activated)


def last_use_time(image: ImageFacts) -> datetime:
    """`sinceImagePulled`'s reference: the latest of push, recorded pull and restoration."""
    times = (image.pushed_at, image.last_pulled_at, image.last_activated_at)
    return max(time for time in times if time is not None)


def rule_selects(rule: Rule, image: ImageFacts) -> bool:
    """Whether `image` is in `rule`'s pool and passes its tag selection (the "matched" set of the notes)."""
    selection = rule.selection
    if image.storage_class is not selection.storage_class:
        return False
    if selection.tag_status is TagStatus.ANY:
        return True
    if selection.tag_status is TagStatus.UNTAGGED:
        return not image.tags
    if not image.tags:
        return False

    joined = _TAG_SEPARATOR.join(image.tags)
    return all(search(joined) for search in _tag_searches(selection))


def _tag_searches(selection: Selection) -> list[TagSearch]:
    """One search per list entry over newline-joined tags; an image is selected when all of them match
    (AND across the list; each entry may be satisfied by any tag, the same tag may satisfy several)."""
    searches = [_prefix_search(prefix) for prefix in selection.tag_prefixes]
    return searches + [_pattern_search(pattern) for pattern in selection.tag_patterns]


def _prefix_search(prefix: str) -> TagSearch:
    if _TAG_SEPARATOR in prefix:
        return _never  # no tag contains a newline
    return re.compile("^" + re.escape(prefix), re.MULTILINE).search


def _pattern_search(pattern: str) -> TagSearch:
    if _TAG_SEPARATOR in pattern:
        return _never
    # `*` is the only wildcard and matches any run of characters within one tag; the rest is literal.
    body = "[^\n]*".join(re.escape(part) for part in pattern.split("*"))
    return re.compile(f"^{body}$", re.MULTILINE).search


def _never(tags: str) -> None:
    return None


@dataclass(frozen=True)
class _Repository:
    """The images by position; each storage class's pool sorted once, oldest first (effective push time,
    then digest), so that every rule's matched list comes out already in count order."""

    images: Sequence[ImageFacts]
    pushed: Sequence[datetime]
    joined_tags: Sequence[str]
    pools: Mapping[StorageClass, Sequence[int]]
    untagged: Mapping[StorageClass, Sequence[int]]
    tagged: Mapping[StorageClass, Sequence[int]]
    referenced: frozenset[int]


def _index_repository(images: Sequence[ImageFacts]) -> _Repository:
    _require_unique_digests(images)
    pushed = [effective_push_time(image) for image in images]
    order = _oldest_first(images, pushed)
    classes = [image.storage_class for image in images]
    joined = [_TAG_SEPARATOR.join(image.tags) for image in images]
    pools = {kind: [p for p in order if classes[p] is kind] for kind in StorageClass}
    untagged = {kind: [p for p in pool if not joined[p]] for kind, pool in pools.items()}
    tagged = {kind: [p for p in pool if joined[p]] for kind, pool in pools.items()}
    return _Repository(images, pushed, joined, pools, untagged, tagged, _referenced_positions(images))


def _oldest_first(images: Sequence[ImageFacts], pushed: Sequence[datetime]) -> list[int]:
    """Positions by push time, equal times by digest (ECR leaves ties unspecified; any fixed order does)."""
    stamps = [moment.timestamp() for moment in pushed]  # float keys sort several times faster than datetimes
    order = list(range(len(images)))
    if len(set(stamps)) < len(stamps):  # ties: order by digest first, the stable sort below keeps it
        digests = [image.digest for image in images]
        order.sort(key=digests.__getitem__)
    order.sort(key=stamps.__getitem__)
    return order


def _require_unique_digests(images: Sequence[ImageFacts]) -> None:
    if len({image.digest for image in images}) != len(images):
        raise ValueError("image digests must be unique")


def _referenced_positions(images: Sequence[ImageFacts]) -> frozenset[int]:
    children = {child for image in images for child in image.child_digests}
    return frozenset(position for position, image in enumerate(images) if image.digest in children)


def evaluate(policy: LifecyclePolicy, images: Sequence[ImageFacts], now: datetime) -> list[PlannedAction]:
    """ECR's evaluation, exactly: the notes' reference algorithm, O(n log n) in the number of images.

    Rules run in ascending priority. A rule's matched set is its storage-class pool filtered by its tag
    selection; its candidates are computed over *all* of that set (images already acted on or protected by
    earlier rules still count; `imageCountMoreThan` keeps the newest N by push time, ties broken by digest).
    A candidate is acted on unless an earlier rule matched it (acted on or not: matching protects) or an
    index among `images` lists it. Every image counts here, referrers included; `plan` is what Dockyard runs.
    Returns one action per image acted on, by rule priority, then in the rule's count order (oldest first).
    """
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    repository = _index_repository(images)
    claimed: set[int] = set()
    actions: list[PlannedAction] = []
    for rule in policy.rules:
        matched = _matched(rule, repository)
        for position in _candidates(rule, matched, repository, now):
            if position not in claimed and position not in repository.referenced:
                actions.append(_planned(images[position], rule))
        claimed.update(matched)
    return actions


def _matched(rule: Rule, repository: _Repository) -> Sequence[int]:
    storage_class, status = rule.selection.storage_class, rule.selection.tag_status
    if status is TagStatus.ANY:
        return repository.pools[storage_class]
    if status is TagStatus.UNTAGGED:
        return repository.untagged[storage_class]
    matched = repository.tagged[storage_class]
    joined = repository.joined_tags
    for search in _tag_searches(rule.selection):  # each entry narrows the list further
        matched = [position for position in matched if search(joined[position])]
    return matched


def _candidates(rule: Rule, matched: Sequence[int], repository: _Repository, now: datetime) -> Sequence[int]:
    count_type, number = rule.selection.count_type, rule.selection.count_number
    if count_type is CountType.IMAGE_COUNT_MORE_THAN:
        # `matched` is oldest first: everything but the newest `number` images.
        return matched[: max(0, len(matched) - number)]
    try:
        threshold = now - timedelta(days=number)
    except OverflowError:
        return []  # older than any representable time: nothing qualifies
    # Strictly older than N days: `now - t > N days`, i.e. `t < now - N days`.
    if count_type is CountType.SINCE_IMAGE_PUSHED:
        pushed = repository.pushed
        return [position for position in matched if pushed[position] < threshold]
    reference = last_use_time if count_type is CountType.SINCE_IMAGE_PULLED else _archived_time
    images = repository.images
    return [position for position in matched if _older(reference(images[position]), threshold)]


def _archived_time(image: ImageFacts) -> datetime | None:
    # Without `lastArchivedAt` the time in the archive cannot be shown to exceed N days: never a candidate.
    return image.last_archived_at


def _older(time: datetime | None, threshold: datetime) -> bool:
    return time is not None and time < threshold


def _planned(image: ImageFacts, rule: Rule) -> PlannedAction:
    return PlannedAction(image, rule.action, rule.target_storage_class, rule.priority)


# ========================================================================= Dockyard's safety extension


@dataclass(frozen=True)
class _References:
    """The images whose fate depends on others' (children of indexes, referrers) and what they depend on.
    Everything else keeps the fate evaluation gave it, so only these few are looked at."""

    dependent: Mapping[str, ImageFacts]
    parents: Mapping[str, Sequence[str]]
    present: frozenset[str]


def _reference_graph(images: Sequence[ImageFacts]) -> _References:
    indexes = [image for image in images if image.child_digests]
    children = {child for index in indexes for child in index.child_digests}
    dependent: dict[str, ImageFacts] = {}
    for image in images:
        if image.subject_digest is not None or image.digest in children:
            dependent[image.digest] = image
    parents: defaultdict[str, list[str]] = defaultdict(list)
    for index in indexes:
        for child in dict.fromkeys(index.child_digests):  # an index may list a manifest twice
            if child in dependent and child != index.digest:
                parents[child].append(index.digest)
    return _References(dependent, parents, frozenset([image.digest for image in images]))


def _leaders(graph: _References, image: ImageFacts) -> list[str]:
    """The images whose fate `image` waits for: the indexes listing it and its subject."""
    leaders = list(graph.parents.get(image.digest, ()))
    subject = image.subject_digest
    if subject is not None and subject in graph.present and subject != image.digest:
        leaders.append(subject)
    return leaders


def _settling_order(graph: _References) -> list[str]:
    """Dependent images, each after every dependent image it waits for (Kahn's algorithm).

    Images on a reference cycle (impossible with content addressing, possible in hand-written input) and
    everything waiting for them never become ready and are left out, i.e. kept.
    """
    waiting: dict[str, int] = {}
    followers: defaultdict[str, list[str]] = defaultdict(list)
    for digest, image in graph.dependent.items():
        leaders = [leader for leader in _leaders(graph, image) if leader in graph.dependent]
        waiting[digest] = len(leaders)
        for leader in leaders:
            followers[leader].append(digest)
    ready = deque(digest for digest, count in waiting.items() if count == 0)
    order: list[str] = []
    while ready:
        digest = ready.popleft()
        order.append(digest)
        for follower in followers.get(digest, ()):
            waiting[follower] -= 1
            if waiting[follower] == 0:
                ready.append(follower)
    return order


def apply_reference_safety(
    actions: Sequence[PlannedAction],
    images: Sequence[ImageFacts],
) -> list[PlannedAction]:
    """Dockyard's safety step over an evaluation result (not ECR behaviour; ECR users ask for it).

    Each image's final fate is settled after those of the indexes listing it and of its subject:

    * a referrer (an image with `subject_digest`) shares its subject's fate: expired with it, transitioned
      with it (if the referrer is in the standard class), kept otherwise, whatever rules said about it. A
      referrer whose subject is absent is kept;
    * an untagged manifest whose indexes are all expired is expired with them (ECR would only do so in a
      later run, once the indexes are gone). A tagged one is an image in its own right: it is left to the
      rules, which skipped it this time because an index listed it;
    * a manifest listed by an index that is kept is never acted on, and one listed by an index being
      transitioned is never expired: no kept image loses a manifest it references.

    Followers' actions name their leader in `follows` and carry its `applied_rule_priority`.
    """
    graph = _reference_graph(images)
    own = {action.digest: action for action in actions}
    fates: dict[str, PlannedAction | None] = dict(own)
    for digest in graph.dependent:
        fates[digest] = None  # kept unless settled below: images on a cycle, or following themselves, stay
    for digest in _settling_order(graph):
        fates[digest] = _settle(graph, graph.dependent[digest], own.get(digest), fates)
    # Input order, then followers in image order; a stable sort groups them by rule priority.
    return sorted((action for action in fates.values() if action is not None), key=_PRIORITY)


def _settle(
    graph: _References,
    image: ImageFacts,
    own: PlannedAction | None,
    fates: Mapping[str, PlannedAction | None],
) -> PlannedAction | None:
    fate = own
    if image.subject_digest is not None:
        fate = _follow(image, fates.get(image.subject_digest))
    parent_fates = [fates.get(parent) for parent in graph.parents.get(image.digest, ())]
    if not parent_fates:
        return fate
    expiring = [parent for parent in parent_fates if parent is not None and _expires(parent)]
    if image.subject_digest is None and not image.tags and len(expiring) == len(parent_fates):
        # Every index listing it goes: the manifest goes with the highest-priority one.
        fate = _follow(image, min(expiring, key=lambda parent: (parent.applied_rule_priority, parent.digest)))
    return _within_parents(fate, parent_fates)


def _expires(action: PlannedAction | None) -> bool:
    return action is not None and action.action is ActionType.EXPIRE


def _follow(image: ImageFacts, leader: PlannedAction | None) -> PlannedAction | None:
    if leader is None:
        return None
    if leader.action is ActionType.TRANSITION and image.storage_class is not StorageClass.STANDARD:
        return None  # already archived: nothing to move
    target, priority = leader.target_storage_class, leader.applied_rule_priority
    return PlannedAction(image, leader.action, target, priority, follows=leader.digest)


def _within_parents(
    fate: PlannedAction | None,
    parent_fates: Sequence[PlannedAction | None],
) -> PlannedAction | None:
    if fate is None or any(parent is None for parent in parent_fates):
        return None  # a kept index keeps every manifest it lists, as they are
    if fate.action is ActionType.EXPIRE and not all(_expires(parent) for parent in parent_fates):
        return None  # an index moving to the archive still needs its manifests
    return fate


def plan(policy: LifecyclePolicy, images: Sequence[ImageFacts], now: datetime) -> list[PlannedAction]:
    """What Dockyard does: ECR's evaluation with referrers left out of it, then `apply_reference_safety`.

    Referrers are not images of their own for lifecycle purposes: `imageCountMoreThan` does not count them
    and no rule selects them; they follow their subject.
    """
    counted = [image for image in images if image.subject_digest is None]
    return apply_reference_safety(evaluate(policy, counted, now), images)


# ================================================================================================ preview


class RuleAction(TypedDict):
    """botocore `LifecyclePolicyRuleAction`."""

    type: str
    targetStorageClass: NotRequired[str]


class PreviewResult(TypedDict):
    """botocore `LifecyclePolicyPreviewResult`."""

    imageTags: list[str]
    imageDigest: str
    imagePushedAt: datetime
    action: RuleAction
    appliedRulePriority: int
    storageClass: str


class TransitioningImageTotalCount(TypedDict):
    targetStorageClass: str
    imageTotalCount: int


class PreviewSummary(TypedDict):
    """botocore `LifecyclePolicyPreviewSummary`; the transition counts appear only when something moves."""

    expiringImageTotalCount: int
    transitioningImageTotalCounts: NotRequired[list[TransitioningImageTotalCount]]


class LifecyclePolicyPreview(TypedDict):
    """The evaluation members of botocore `GetLifecyclePolicyPreviewResponse` (the door adds the rest)."""

    lifecyclePolicyText: str
    status: str
    previewResults: list[PreviewResult]
    summary: PreviewSummary


def preview(policy: LifecyclePolicy, images: Sequence[ImageFacts], now: datetime) -> LifecyclePolicyPreview:
    """GetLifecyclePolicyPreview's answer for `plan(policy, images, now)`: only affected images are listed."""
    actions = plan(policy, images, now)
    return {
        "lifecyclePolicyText": policy.text,
        "status": "COMPLETE",
        "previewResults": [_preview_result(action) for action in actions],
        "summary": _preview_summary(actions),
    }


def _preview_result(action: PlannedAction) -> PreviewResult:
    # StrEnum members are the API's strings already (and `.value` is a slow descriptor on Python 3.11).
    rule_action: RuleAction = {"type": action.action}
    if action.target_storage_class is not None:
        rule_action["targetStorageClass"] = action.target_storage_class
    image = action.image  # once, not through the properties: previews can list 100,000 images
    return {
        "imageTags": list(image.tags),
        "imageDigest": image.digest,
        "imagePushedAt": image.pushed_at,
        "action": rule_action,
        "appliedRulePriority": action.applied_rule_priority,
        "storageClass": image.storage_class,
    }


def _preview_summary(actions: Sequence[PlannedAction]) -> PreviewSummary:
    expiring = sum(action.action is ActionType.EXPIRE for action in actions)
    summary: PreviewSummary = {"expiringImageTotalCount": expiring}
    targets = [each.target_storage_class for each in actions if each.action is ActionType.TRANSITION]
    moving = Counter(target for target in targets if target is not None)
    if moving:
        counts = sorted(moving.items())
        summary["transitioningImageTotalCounts"] = [
            {"targetStorageClass": target, "imageTotalCount": count} for target, count in counts
        ]
    return summary


JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None


def preview_to_json(value: Mapping[str, object]) -> dict[str, JsonValue]:
    """A preview (or any part of it) as JSON values, timestamps in epoch seconds as the AWS JSON protocol."""
    return {key: _to_json(item) for key, item in value.items()}


def epoch_seconds(moment: datetime) -> int | float:
    seconds = moment.timestamp()
    return int(seconds) if seconds.is_integer() else round(seconds, 3)


def _to_json(value: object) -> JsonValue:
    if isinstance(value, str):
        return str(value)  # plain text, not the StrEnum members the shapes hold
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime):
        return epoch_seconds(value)
    if isinstance(value, Mapping):
        return {str(key): _to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(item) for item in value]
    raise TypeError(f"not a JSON value: {value!r}")
