"""Lifecycle policies: ECR's validation messages, the notes' test vectors through ECR's evaluation and through
Dockyard's plan, the safety step, preview shapes checked against botocore's model, and properties."""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import botocore
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dockyard.domain.lifecycle import (
    MAX_RULES,
    POLICY_TEXT_MAX_LENGTH,
    POLICY_TEXT_MIN_LENGTH,
    ActionType,
    CountType,
    ImageFacts,
    LifecyclePolicy,
    LifecyclePolicyInvalid,
    PlannedAction,
    Rule,
    StorageClass,
    TagStatus,
    apply_reference_safety,
    evaluate,
    parse_policy,
    plan,
    preview,
    preview_to_json,
    rule_selects,
)

VECTORS: list[dict[str, Any]] = json.loads(Path(__file__).with_name("lifecycle_vectors.json").read_text())
NOW = datetime(2025, 6, 30, tzinfo=UTC)
FAILURE = "Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: "


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def optional_moment(record: Mapping[str, Any], key: str) -> datetime | None:
    return moment(record[key]) if key in record else None


def vector_image(record: Mapping[str, Any]) -> ImageFacts:
    """An image of the notes' vectors (`children` lists what an index references)."""
    children = tuple(record.get("children", ()))
    return ImageFacts(
        digest=record["digest"],
        tags=tuple(record["tags"]),
        pushed_at=moment(record["pushedAt"]),
        last_pulled_at=optional_moment(record, "lastRecordedPullTime"),
        last_archived_at=optional_moment(record, "lastArchivedAt"),
        last_activated_at=optional_moment(record, "lastActivatedAt"),
        storage_class=StorageClass(record.get("storageClass", "standard").upper()),
        is_index=bool(children),
        child_digests=children,
    )


def split(actions: Sequence[PlannedAction]) -> dict[str, list[str]]:
    return {
        "expire": sorted(action.digest for action in actions if action.action is ActionType.EXPIRE),
        "transition": sorted(action.digest for action in actions if action.action is ActionType.TRANSITION),
    }


def expected(vector: Mapping[str, Any]) -> dict[str, list[str]]:
    return {kind: sorted(digests) for kind, digests in vector["expected"].items()}


def policy_text(document: object) -> str:
    """JSON text, padded with whitespace to the minimum length so that short policies reach the checks."""
    return json.dumps(document).ljust(POLICY_TEXT_MIN_LENGTH)


def parse(document: object) -> LifecyclePolicy:
    return parse_policy(policy_text(document))


# ============================================================================================ test vectors


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["id"] for vector in VECTORS])
def test_vector_through_ecr_evaluation(vector: dict[str, Any]) -> None:
    images = [vector_image(record) for record in vector["images"]]
    actions = evaluate(parse(vector["policy"]), images, moment(vector["now"]))
    assert split(actions) == expected(vector), vector["reason"]


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["id"] for vector in VECTORS])
def test_vector_through_dockyard_plan(vector: dict[str, Any]) -> None:
    # No vector has referrers or expired indexes, so the safety step changes nothing in them.
    images = [vector_image(record) for record in vector["images"]]
    actions = plan(parse(vector["policy"]), images, moment(vector["now"]))
    assert split(actions) == expected(vector), vector["reason"]


def test_vectors_are_the_twenty_of_the_notes() -> None:
    assert len(VECTORS) == 20
    assert len({vector["id"] for vector in VECTORS}) == 20


def test_applied_rule_priority_names_the_acting_rule() -> None:
    vector = next(vector for vector in VECTORS if vector["id"] == "three-rule-combination")
    images = [vector_image(record) for record in vector["images"]]
    actions = evaluate(parse(vector["policy"]), images, NOW)
    assert [(action.digest, action.applied_rule_priority) for action in actions] == [
        ("sha256:a", 1),
        ("sha256:b", 2),
        ("sha256:d", 3),
    ]


# ============================================================================================== validation


def rule(
    priority: int = 1,
    action: Mapping[str, Any] | None = None,
    **selection: Any,
) -> dict[str, Any]:
    """A valid rule unless told otherwise: untagged, keep 1, expire."""
    chosen = {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1, **selection}
    return {
        "rulePriority": priority,
        "selection": {key: value for key, value in chosen.items() if value is not DROP},
        "action": dict(action) if action is not None else {"type": "expire"},
    }


DROP: Any = object()  # a selection field to leave out of `rule`
PREFIX = "Lifecycle policy validation failure: "
ONE_OF = "instance failed to match exactly one schema (matched 0 out of 2)"
TOO_SHORT = "array is too short: must have at least 1 elements but instance has 0 elements"
TAGGED_RULE: dict[str, Any] = {"tagStatus": "tagged", "tagPatternList": ["prod*"]}
ARCHIVE_RULE: dict[str, Any] = {
    "tagStatus": "any",
    "storageClass": "archive",
    "countType": "sinceImageTransitioned",
    "countUnit": "days",
    "countNumber": 365,
}


def rules(*items: dict[str, Any]) -> dict[str, Any]:
    return {"rules": list(items)}


def prefix_rules(count: int) -> dict[str, Any]:
    """`count` valid tagged rules."""
    return rules(*(rule(n, tagStatus="tagged", tagPrefixList=[f"p{n}"]) for n in range(1, count + 1)))


TRANSITION: dict[str, Any] = {"type": "transition", "targetStorageClass": "archive"}
SINCE_PUSHED: dict[str, Any] = {"countType": "sinceImagePushed", "countUnit": "days"}
RULE_WITHOUT_ACTION: dict[str, Any] = {"rulePriority": 2, "selection": rule()["selection"]}


INVALID: list[tuple[str, str, str]] = [
    # 1: not JSON, or not an object
    # (exactly the minimum length: the length check passes, JSON parsing does not)
    ("not-json", "this is not JSON".ljust(100), "Could not map policyString into LifecyclePolicy."),
    ("json-array", policy_text([rule()]), "Could not map policyString into LifecyclePolicy."),
    ("json-string", policy_text("rules"), "Could not map policyString into LifecyclePolicy."),
    # 2: missing required properties
    ("no-rules", policy_text({}), 'object has missing required properties (["rules"])'),
    (
        "rule-without-priority",
        policy_text(rules({"selection": rule()["selection"], "action": {"type": "expire"}})),
        'object has missing required properties (["rulePriority"])',
    ),
    (
        "rule-without-selection-and-action",
        policy_text(rules({"rulePriority": 1})),
        'object has missing required properties (["action", "selection"])',
    ),
    (
        "selection-without-tag-status",
        policy_text(rules(rule(tagStatus=DROP))),
        'object has missing required properties (["tagStatus"])',
    ),
    (
        "selection-without-count-type",
        policy_text(rules(rule(countType=DROP))),
        'object has missing required properties (["countType"])',
    ),
    (
        "selection-without-count-number",
        policy_text(rules(rule(countNumber=DROP))),
        'object has missing required properties (["countNumber"])',
    ),
    (
        "action-without-type",
        policy_text(rules(rule(action={}))),
        'object has missing required properties (["type"])',
    ),
    # 3: unknown properties, anywhere
    (
        "unknown-in-selection",
        policy_text(rules(rule(foo=1))),
        'object instance has properties which are not allowed by the schema: (["foo"])',
    ),
    (
        "unknown-at-top",
        policy_text({"rules": [rule()], "foo": 1, "bar": 2}),
        'object instance has properties which are not allowed by the schema: (["bar", "foo"])',
    ),
    (
        "unknown-in-rule",
        policy_text(rules({**rule(), "id": "x"})),
        'object instance has properties which are not allowed by the schema: (["id"])',
    ),
    (
        "unknown-in-action",
        policy_text(rules(rule(action={"type": "expire", "when": "now"}))),
        'object instance has properties which are not allowed by the schema: (["when"])',
    ),
    # 4: enums are lower case and exact
    (
        "tag-status-upper-case",
        policy_text(rules(rule(tagStatus="TAGGED", tagPatternList=["a*"]))),
        'instance value (TAGGED) not found in enum :(possible values: ["any", "tagged", "untagged"])',
    ),
    (
        "count-unit-hours",
        policy_text(rules(rule(countType="sinceImagePushed", countUnit="hours"))),
        'instance value (hours) not found in enum :(possible values: ["days"])',
    ),
    (
        "action-type-delete",
        policy_text(rules(rule(action={"type": "delete"}))),
        'instance value (delete) not found in enum :(possible values: ["expire", "transition"])',
    ),
    (
        "storage-class-glacier",
        policy_text(rules(rule(storageClass="glacier"))),
        'instance value (glacier) not found in enum :(possible values: ["archive", "standard"])',
    ),
    (
        "target-storage-class-standard",
        policy_text(rules(rule(action={"type": "transition", "targetStorageClass": "standard"}))),
        'instance value (standard) not found in enum :(possible values: ["archive"])',
    ),
    # 5: minimums
    (
        "count-number-zero",
        policy_text(rules(rule(countNumber=0))),
        "numeric instance is lower than the required minimum (minimum: 1, found: 0)",
    ),
    (
        "count-number-negative",
        policy_text(rules(rule(countNumber=-1))),
        "numeric instance is lower than the required minimum (minimum: 1, found: -1)",
    ),
    (
        "rule-priority-zero",
        policy_text(rules(rule(priority=0))),
        "numeric instance is lower than the required minimum (minimum: 1, found: 0)",
    ),
    # JSON types
    (
        "count-number-string",
        policy_text(rules(rule(countNumber="5"))),
        'instance type (string) does not match any allowed primitive type (allowed: ["integer"])',
    ),
    (
        "count-number-fraction",
        policy_text(rules(rule(countNumber=1.5))),
        'instance type (number) does not match any allowed primitive type (allowed: ["integer"])',
    ),
    (
        "rule-priority-boolean",
        policy_text(rules(rule(priority=True))),
        'instance type (boolean) does not match any allowed primitive type (allowed: ["integer"])',
    ),
    (
        "rules-not-an-array",
        policy_text({"rules": rule()}),
        'instance type (object) does not match any allowed primitive type (allowed: ["array"])',
    ),
    (
        "rule-not-an-object",
        policy_text({"rules": ["expire"]}),
        'instance type (string) does not match any allowed primitive type (allowed: ["object"])',
    ),
    (
        "prefix-list-not-an-array",
        policy_text(rules(rule(tagStatus="tagged", tagPrefixList="prod"))),
        'instance type (string) does not match any allowed primitive type (allowed: ["array"])',
    ),
    (
        "pattern-not-a-string",
        policy_text(rules(rule(tagStatus="tagged", tagPatternList=[1]))),
        'instance type (integer) does not match any allowed primitive type (allowed: ["string"])',
    ),
    (
        "description-not-a-string",
        policy_text(rules({**rule(), "description": 7})),
        'instance type (integer) does not match any allowed primitive type (allowed: ["string"])',
    ),
    # 6: the count-type / action combinations of the schema's oneOf
    ("unit-with-image-count", policy_text(rules(rule(countUnit="days", countNumber=3))), ONE_OF),
    ("since-without-unit", policy_text(rules(rule(countType="sinceImagePushed", countNumber=3))), ONE_OF),
    ("unknown-count-type", policy_text(rules(rule(countType="imageCountLessThan"))), ONE_OF),
    (
        "target-with-expire",
        policy_text(rules(rule(action={"type": "expire", "targetStorageClass": "archive"}))),
        ONE_OF,
    ),
    (
        "null-target-with-expire",
        policy_text(rules(rule(action={"type": "expire", "targetStorageClass": None}))),
        ONE_OF,
    ),
    # 7: tagged needs a list
    (
        "tagged-without-list",
        policy_text(rules(rule(tagStatus="tagged", countNumber=5))),
        "Must specify tagPrefixList or tagPatternList when tagStatus=TAGGED.",
    ),
    # 8: tag lists (Dockyard's wording; ECR's is not known)
    (
        "prefix-list-on-untagged",
        policy_text(rules(rule(tagPrefixList=["x"]))),
        "Cannot specify tagPrefixList when tagStatus=UNTAGGED.",
    ),
    (
        "pattern-list-on-any",
        policy_text(rules(rule(tagStatus="any", tagPatternList=["x*"]))),
        "Cannot specify tagPatternList when tagStatus=ANY.",
    ),
    (
        "both-lists",
        policy_text(rules(rule(tagStatus="tagged", tagPrefixList=["a"], tagPatternList=["b*"]))),
        "Cannot specify both tagPrefixList and tagPatternList in one rule.",
    ),
    ("empty-pattern-list", policy_text(rules(rule(tagStatus="tagged", tagPatternList=[]))), TOO_SHORT),
    ("empty-prefix-list-on-any", policy_text(rules(rule(tagStatus="any", tagPrefixList=[]))), TOO_SHORT),
    (
        "five-wildcards",
        policy_text(rules(rule(tagStatus="tagged", tagPatternList=["a*b*c*d*e*"]))),
        'Tag pattern "a*b*c*d*e*" has more than 4 wildcards (*).',
    ),
    (
        "six-wildcards",
        policy_text(rules(rule(tagStatus="tagged", tagPatternList=["ok*", "test*1*2*3*4*5*6"]))),
        'Tag pattern "test*1*2*3*4*5*6" has more than 4 wildcards (*).',
    ),
    # 9: priorities are unique
    (
        "duplicate-priority",
        policy_text(rules(rule(1, **TAGGED_RULE), rule(1, tagStatus="tagged", tagPatternList=["dev*"]))),
        "Rule priorities must be unique: rulePriority 1 is used by more than one rule.",
    ),
    # 10: one untagged rule per storage class
    (
        "two-untagged-rules",
        policy_text(rules(rule(1), rule(2, **SINCE_PUSHED))),
        "Only one rule can select Untagged images per storage class",
    ),
    # 11: `any` comes last in its storage class
    (
        "any-before-untagged",
        policy_text(rules(rule(1, tagStatus="any"), rule(2))),
        "Rule for tagStatus=ANY must have the lowest priority per storage class",
    ),
    (
        "two-any-rules",
        policy_text(rules(rule(1, tagStatus="any"), rule(2, tagStatus="any", countNumber=5))),
        "Rule for tagStatus=ANY must have the lowest priority per storage class",
    ),
    # 12: a tag prefix set once per storage class (as a set: order and repeats do not matter)
    (
        "same-prefix-set",
        policy_text(
            rules(
                rule(1, tagStatus="tagged", tagPrefixList=["a", "b"]),
                rule(2, tagStatus="tagged", tagPrefixList=["b", "a", "a"], countNumber=3),
            )
        ),
        'The tagPrefixList ["a", "b"] is used by more than one rule of the same storage class.',
    ),
    # 13: count type, storage class and action must fit together (Dockyard's wording)
    (
        "pulled-with-expire",
        policy_text(rules(rule(countType="sinceImagePulled", countUnit="days", countNumber=90))),
        "countType sinceImagePulled can only be used with action type transition.",
    ),
    (
        "transitioned-without-archive",
        policy_text(rules(rule(countType="sinceImageTransitioned", countUnit="days", countNumber=90))),
        "countType sinceImageTransitioned requires storageClass archive.",
    ),
    (
        "transitioned-in-standard",
        policy_text(rules(rule(**{**ARCHIVE_RULE, "storageClass": "standard"}))),
        "countType sinceImageTransitioned requires storageClass archive.",
    ),
    (
        "transitioned-with-transition",
        policy_text(rules(rule(action=TRANSITION, **ARCHIVE_RULE))),
        "countType sinceImageTransitioned can only be used with action type expire.",
    ),
    (
        "archive-with-image-count",
        policy_text(rules(rule(storageClass="archive"))),
        "storageClass archive can only be used with countType sinceImageTransitioned.",
    ),
    (
        "transition-without-target",
        policy_text(rules(rule(action={"type": "transition"}))),
        "targetStorageClass is required when action type is transition.",
    ),
    (
        "archive-expiry-under-90-days",
        policy_text(rules(rule(**{**ARCHIVE_RULE, "countNumber": 89}))),
        "countType sinceImageTransitioned needs countNumber of at least 90: archived images stay that long.",
    ),
    # 14: sizes
    (
        "no-rule-at-all",
        policy_text({"rules": []}),
        TOO_SHORT,
    ),
    (
        "fifty-one-rules",
        policy_text(prefix_rules(MAX_RULES + 1)),
        "array is too long: must have at most 50 elements but instance has 51 elements",
    ),
    # Schema problems in any rule are reported before semantic problems in an earlier one.
    (
        "schema-before-semantics",
        policy_text(rules(rule(1, tagStatus="tagged"), RULE_WITHOUT_ACTION)),
        'object has missing required properties (["action"])',
    ),
]

INVALID_CASES = [case[1:] for case in INVALID]
INVALID_IDS = [case[0] for case in INVALID]


@pytest.mark.parametrize(("text", "detail"), INVALID_CASES, ids=INVALID_IDS)
def test_invalid_policy_gets_ecr_message(text: str, detail: str) -> None:
    with pytest.raises(LifecyclePolicyInvalid) as raised:
        parse_policy(text)
    error = raised.value
    assert error.message == f"{FAILURE}'{PREFIX}{detail}'"
    assert error.detail == f"{PREFIX}{detail}"
    assert (error.ecr_exception, error.http_status, error.oci_code) == (
        "InvalidParameterException",
        400,
        "DENIED",
    )


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("x" * (POLICY_TEXT_MIN_LENGTH - 1), "Member must have length greater than or equal to 100"),
        (
            policy_text(rules(rule())).ljust(POLICY_TEXT_MAX_LENGTH + 1),
            "Member must have length less than or equal to 30720",
        ),
    ],
    ids=["too-short", "too-long"],
)
def test_text_length_is_a_constraint(text: str, detail: str) -> None:
    with pytest.raises(LifecyclePolicyInvalid) as raised:
        parse_policy(text)
    assert raised.value.message == f"{FAILURE}'{detail}'"
    assert raised.value.ecr_exception == "InvalidParameterException"


VALID: list[tuple[str, str]] = [
    ("untagged-then-any", policy_text(rules(rule(1), rule(2, tagStatus="any", countNumber=5)))),
    (
        "any-standard-then-any-archive",
        policy_text(
            rules(
                rule(
                    1,
                    action=TRANSITION,
                    tagStatus="any",
                    countType="sinceImagePushed",
                    countUnit="days",
                    countNumber=30,
                ),
                rule(2, **ARCHIVE_RULE),
            )
        ),
    ),
    (
        "four-wildcards",
        policy_text(rules(rule(tagStatus="tagged", tagPatternList=["*test*1*2*3", "test*1*2*3*"]))),
    ),
    (
        "fifty-rules",
        policy_text(prefix_rules(MAX_RULES)),
    ),
    ("longest-text", policy_text(rules(rule())).ljust(POLICY_TEXT_MAX_LENGTH)),
    (
        "same-prefix-in-different-sets",
        policy_text(
            rules(
                rule(1, tagStatus="tagged", tagPrefixList=["a"]),
                rule(2, tagStatus="tagged", tagPrefixList=["a", "b"]),
            )
        ),
    ),
    (
        "pulled-with-transition",
        policy_text(
            rules(
                rule(
                    action=TRANSITION,
                    countType="sinceImagePulled",
                    countUnit="days",
                    countNumber=90,
                )
            )
        ),
    ),
]


@pytest.mark.parametrize("text", [case[1] for case in VALID], ids=[case[0] for case in VALID])
def test_valid_policy_parses(text: str) -> None:
    assert parse_policy(text).text == text


def test_parsed_policy_is_in_priority_order_with_every_field() -> None:
    first = {
        **rule(
            10,
            action=TRANSITION,
            tagStatus="tagged",
            tagPatternList=["prod*", "*-lts"],
            countType="sinceImagePulled",
            countUnit="days",
            countNumber=60,
        ),
        "description": "archive unused prod images",
    }
    policy = parse(rules(first, rule(3, tagStatus="tagged", tagPrefixList=["v1"], countNumber=4)))
    assert [each.priority for each in policy.rules] == [3, 10]
    assert policy.rules[1] == Rule(
        priority=10,
        selection=policy.rules[1].selection,
        action=ActionType.TRANSITION,
        target_storage_class=StorageClass.ARCHIVE,
        description="archive unused prod images",
    )
    selection = policy.rules[1].selection
    assert (selection.tag_status, selection.count_type, selection.count_number) == (
        TagStatus.TAGGED,
        CountType.SINCE_IMAGE_PULLED,
        60,
    )
    assert (selection.tag_patterns, selection.tag_prefixes, selection.storage_class) == (
        ("prod*", "*-lts"),
        (),
        StorageClass.STANDARD,
    )
    assert policy.rules[0].selection.tag_prefixes == ("v1",)


# ============================================================================================ evaluation


def image(
    digest: str,
    *tags: str,
    days: float = 0,
    **facts: Any,
) -> ImageFacts:
    """An image pushed `days` before NOW."""
    return ImageFacts(f"sha256:{digest}", tags, NOW - timedelta(days=days), **facts)


def one_rule(**selection: Any) -> LifecyclePolicy:
    action = selection.pop("action", None)
    return parse(rules(rule(1, action=action, **selection)))


def digests(actions: Sequence[PlannedAction]) -> list[str]:
    return [action.digest.removeprefix("sha256:") for action in actions]


def test_equal_push_times_are_ordered_by_digest() -> None:
    images = [image(name, days=3) for name in ("c", "a", "b")]
    assert digests(evaluate(one_rule(countNumber=1), images, NOW)) == ["a", "b"]


def test_actions_come_in_priority_then_count_order() -> None:
    policy = parse(rules(rule(1, **TAGGED_RULE), rule(2, tagStatus="any", **SINCE_PUSHED)))
    images = [
        image("p1", "prod-1", days=9),
        image("p2", "prod-2", days=1),
        image("x", days=5),
        image("y", days=7),
    ]
    acted = [(action.applied_rule_priority, action.digest[7:]) for action in evaluate(policy, images, NOW)]
    assert acted == [
        (1, "p1"),
        (2, "y"),
        (2, "x"),
    ]


def test_archived_image_without_archive_time_is_never_old_enough() -> None:
    policy = parse(rules(rule(**ARCHIVE_RULE)))
    archived = StorageClass.ARCHIVE
    images = [
        image("known", days=900, storage_class=archived, last_archived_at=NOW - timedelta(days=400)),
        image("unknown", days=900, storage_class=archived),
    ]
    assert digests(evaluate(policy, images, NOW)) == ["known"]


def test_enormous_ages_select_nothing() -> None:
    policy = one_rule(countType="sinceImagePushed", countUnit="days", countNumber=10**12)
    assert evaluate(policy, [image("a", days=10_000)], NOW) == []


def test_pattern_characters_other_than_star_are_literal() -> None:
    policy = one_rule(tagStatus="tagged", tagPatternList=["1.0*"], **SINCE_PUSHED)
    images = [image("dot", "1.0.3", days=2), image("other", "1x0", days=2), image("plus", "1.0+b", days=2)]
    assert sorted(digests(evaluate(policy, images, NOW))) == ["dot", "plus"]


def test_rule_selects_checks_pool_and_every_list_entry() -> None:
    (both,) = parse(rules(rule(tagStatus="tagged", tagPatternList=["alpha*", "*beta"]))).rules
    assert rule_selects(both, image("a", "alpha-1", "x-beta"))
    assert rule_selects(both, image("b", "alpha-beta"))  # one tag may satisfy every entry
    assert not rule_selects(both, image("c", "alpha-1"))
    assert not rule_selects(both, image("d", "alpha-1", "x-beta", storage_class=StorageClass.ARCHIVE))
    assert not rule_selects(both, image("e"))


def test_inputs_must_be_well_formed() -> None:
    policy = one_rule()
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(policy, [], datetime(2025, 6, 30))
    with pytest.raises(ValueError, match="timezone-aware"):
        ImageFacts("sha256:a", (), datetime(2025, 6, 30))
    with pytest.raises(ValueError, match="newline"):
        ImageFacts("sha256:a", ("a\nb",), NOW)
    with pytest.raises(ValueError, match="unique"):
        evaluate(policy, [image("a"), image("a")], NOW)


# ====================================================================================== the safety step

OLD_UNTAGGED: dict[str, Any] = {"countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7}


def index(digest: str, *children: str, tags: tuple[str, ...] = (), days: float = 30) -> ImageFacts:
    listed = tuple(f"sha256:{child}" for child in children)
    return image(digest, *tags, days=days, is_index=True, child_digests=listed)


def referrer(digest: str, subject: str, *tags: str, days: float = 30, **facts: Any) -> ImageFacts:
    return image(digest, *tags, days=days, subject_digest=f"sha256:{subject}", **facts)


def fates(actions: Sequence[PlannedAction]) -> dict[str, tuple[str, int, str | None]]:
    return {
        action.digest[7:]: (
            action.action.value,
            action.applied_rule_priority,
            action.follows and action.follows[7:],
        )
        for action in actions
    }


def test_expired_index_takes_its_untagged_children_along() -> None:
    images = [index("idx", "c1", "c2"), image("c1", days=30), image("c2", "pinned", days=30)]
    actions = plan(one_rule(**OLD_UNTAGGED), images, NOW)
    # ECR itself would skip c1 while the index exists; the tagged c2 is an image in its own right.
    assert digests(evaluate(one_rule(**OLD_UNTAGGED), images, NOW)) == ["idx"]
    assert fates(actions) == {"idx": ("EXPIRE", 1, None), "c1": ("EXPIRE", 1, "idx")}


def test_manifest_shared_with_a_kept_index_stays() -> None:
    images = [index("gone", "shared"), index("kept", "shared", tags=("v1",)), image("shared", days=30)]
    assert fates(plan(one_rule(**OLD_UNTAGGED), images, NOW)) == {"gone": ("EXPIRE", 1, None)}


def test_children_of_a_transitioning_index_are_neither_expired_nor_moved() -> None:
    policy = one_rule(action=TRANSITION, tagStatus="any", **OLD_UNTAGGED)
    images = [index("idx", "c1", tags=("v1",)), image("c1", days=30)]
    assert fates(plan(policy, images, NOW)) == {"idx": ("TRANSITION", 1, None)}


def test_nested_indexes_cascade() -> None:
    images = [index("top", "mid"), index("mid", "leaf"), image("leaf", days=30)]
    assert fates(plan(one_rule(**OLD_UNTAGGED), images, NOW)) == {
        "top": ("EXPIRE", 1, None),
        "mid": ("EXPIRE", 1, "top"),
        "leaf": ("EXPIRE", 1, "mid"),
    }


def test_referrers_follow_their_subject_only() -> None:
    images = [
        image("old", days=30),
        image("new", days=1),
        referrer("sig-old", "old"),
        referrer("sig-new", "new"),  # old itself, but its subject is kept
        referrer("sbom-sig", "sig-old"),  # a referrer of a referrer
        referrer("orphan", "missing"),  # subject absent: kept
    ]
    policy = one_rule(**OLD_UNTAGGED)
    assert sorted(digests(evaluate(policy, images, NOW))) == [
        "old",
        "orphan",
        "sbom-sig",
        "sig-new",
        "sig-old",
    ]
    assert fates(plan(policy, images, NOW)) == {
        "old": ("EXPIRE", 1, None),
        "sig-old": ("EXPIRE", 1, "old"),
        "sbom-sig": ("EXPIRE", 1, "sig-old"),
    }


def test_referrers_follow_a_transition_unless_already_archived() -> None:
    policy = one_rule(action=TRANSITION, tagStatus="any", **OLD_UNTAGGED)
    images = [
        image("subject", "v1", days=30),
        referrer("sig", "subject", days=1),
        referrer("archived-sig", "subject", storage_class=StorageClass.ARCHIVE),
    ]
    assert fates(plan(policy, images, NOW)) == {
        "subject": ("TRANSITION", 1, None),
        "sig": ("TRANSITION", 1, "subject"),
    }


def test_referrers_are_not_counted_by_image_count() -> None:
    images = [
        image("a", days=3),
        image("b", days=2),
        referrer("sig-a", "a", days=1),
        referrer("sig-b", "b", days=1),
    ]
    policy = one_rule(tagStatus="any", countNumber=2)
    assert sorted(digests(evaluate(policy, images, NOW))) == ["a", "b"]
    assert plan(policy, images, NOW) == []


def test_reference_cycles_are_kept() -> None:
    images = [index("x", "y"), index("y", "x")]
    acted = [PlannedAction(each, ActionType.EXPIRE, None, 1) for each in images]
    assert apply_reference_safety(acted, images) == []


# ================================================================================================= preview

MODEL_PATH = Path(botocore.__file__).parent / "data" / "ecr" / "2015-09-21" / "service-2.json.gz"
SHAPES: dict[str, Any] = json.loads(gzip.decompress(MODEL_PATH.read_bytes()))["shapes"]


def assert_matches_shape(value: object, shape_name: str) -> None:
    """`value` is what the AWS JSON protocol would carry for botocore's shape: names, nesting, value types."""
    shape = SHAPES[shape_name]
    kind = shape["type"]
    if kind == "structure":
        assert isinstance(value, dict)
        assert set(value) <= set(shape["members"]), (shape_name, set(value) - set(shape["members"]))
        for key, item in value.items():
            assert_matches_shape(item, shape["members"][key]["shape"])
    elif kind == "list":
        assert isinstance(value, list)
        for item in value:
            assert_matches_shape(item, shape["member"]["shape"])
    elif kind == "string":
        assert isinstance(value, str)
        assert value in shape.get("enum", [value]), (shape_name, value)
    elif kind == "integer":
        assert type(value) is int
    elif kind == "timestamp":
        assert isinstance(value, int | float) and not isinstance(value, bool)


def test_preview_lists_affected_images_with_ecr_shapes() -> None:
    vector = next(vector for vector in VECTORS if vector["id"] == "archive-then-expire")
    images = [vector_image(record) for record in vector["images"]]
    result = preview(parse(vector["policy"]), images, NOW)
    assert result["status"] == "COMPLETE"
    assert result["previewResults"] == [
        {
            "imageTags": ["a"],
            "imageDigest": "sha256:s1",
            "imagePushedAt": moment("2025-05-21T00:00:00Z"),
            "action": {"type": "TRANSITION", "targetStorageClass": "ARCHIVE"},
            "appliedRulePriority": 1,
            "storageClass": "STANDARD",
        },
        {
            "imageTags": ["c"],
            "imageDigest": "sha256:r1",
            "imagePushedAt": moment("2023-04-22T00:00:00Z"),
            "action": {"type": "EXPIRE"},
            "appliedRulePriority": 2,
            "storageClass": "ARCHIVE",
        },
    ]
    assert result["summary"] == {
        "expiringImageTotalCount": 1,
        "transitioningImageTotalCounts": [{"targetStorageClass": "ARCHIVE", "imageTotalCount": 1}],
    }
    assert_matches_shape(preview_to_json(result), "GetLifecyclePolicyPreviewResponse")


def test_preview_summary_omits_transitions_when_none() -> None:
    vector = VECTORS[0]
    result = preview(parse(vector["policy"]), [vector_image(record) for record in vector["images"]], NOW)
    assert result["summary"] == {"expiringImageTotalCount": 1}
    assert result["lifecyclePolicyText"] == policy_text(vector["policy"])


def test_preview_json_uses_epoch_seconds() -> None:
    pushed = datetime(2025, 6, 20, 12, 0, 0, 250_000, tzinfo=UTC)
    result = preview(one_rule(countNumber=1), [image("a", days=1), ImageFacts("sha256:b", (), pushed)], NOW)
    document = preview_to_json(result)
    assert document["previewResults"] == [
        {
            "imageTags": [],
            "imageDigest": "sha256:b",
            "imagePushedAt": 1750420800.25,
            "action": {"type": "EXPIRE"},
            "appliedRulePriority": 1,
            "storageClass": "STANDARD",
        }
    ]
    assert json.loads(json.dumps(document)) == document
    whole = preview_to_json({"at": datetime(2025, 6, 20, tzinfo=UTC)})
    assert whole == {"at": 1750377600} and type(whole["at"]) is int


# ============================================================================================== properties
# Images and policies drawn from small alphabets so that rules overlap, tags collide and counts bite.

TAGS = ("prod", "prod-1", "prod-2", "production", "dev-1", "dev-2", "v1.0", "v10", "xv1", "beta-1", "alpha-1")
PATTERN_ENTRIES = ("prod*", "dev*", "*-1", "prod", "v1*", "*", "*o*", "beta*")
PREFIX_ENTRIES = ("prod", "dev", "v1", "x", "alpha")
TAG_LISTS = [("tagPatternList", PATTERN_ENTRIES), ("tagPrefixList", PREFIX_ENTRIES)]


def matches(rule: Rule, facts: ImageFacts) -> bool:
    """An independent oracle for `selects`: fnmatch is a correct `*`-only glob for these alphabets."""
    selection = rule.selection
    if facts.storage_class is not selection.storage_class:
        return False
    if selection.tag_status is TagStatus.ANY:
        return True
    if selection.tag_status is TagStatus.UNTAGGED:
        return not facts.tags
    prefixes_ok = all(any(tag.startswith(p) for tag in facts.tags) for p in selection.tag_prefixes)
    patterns_ok = all(any(fnmatchcase(tag, p) for tag in facts.tags) for p in selection.tag_patterns)
    return bool(facts.tags) and prefixes_ok and patterns_ok


@st.composite
def image_sets(draw: st.DrawFn, references: bool = False, max_size: int = 14) -> list[ImageFacts]:
    count = draw(st.integers(0, max_size))
    names = [f"sha256:{n:02d}" for n in range(count)]
    return [draw(one_image(name, names if references else [])) for name in names]


@st.composite
def one_image(draw: st.DrawFn, digest: str, others: Sequence[str]) -> ImageFacts:
    hours = st.integers(0, 24 * 60)
    pushed = NOW - timedelta(hours=draw(hours))
    archived = draw(st.integers(0, 5)) == 0
    children: tuple[str, ...] = ()
    subject: str | None = None
    if others:  # references may point anywhere, the image itself included, and may form cycles
        children = tuple(draw(st.lists(st.sampled_from(others), max_size=3)))
        subject = draw(st.none() | st.none() | st.none() | st.sampled_from(others))
    return ImageFacts(
        digest=digest,
        tags=tuple(draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True))),
        pushed_at=pushed,
        last_pulled_at=draw(st.none() | hours.map(lambda h: NOW - timedelta(hours=h))),
        last_archived_at=NOW - timedelta(days=draw(st.integers(0, 400))) if archived else None,
        storage_class=StorageClass.ARCHIVE if archived else StorageClass.STANDARD,
        subject_digest=subject,
        is_index=bool(children),
        child_digests=children,
    )


@st.composite
def selections(draw: st.DrawFn, status: str) -> dict[str, Any]:
    chosen: dict[str, Any] = {"tagStatus": status}
    if status == "tagged":
        key, entries = draw(st.sampled_from(TAG_LISTS))
        chosen[key] = draw(st.lists(st.sampled_from(entries), min_size=1, max_size=2, unique=True))
    count_type = draw(st.sampled_from(["imageCountMoreThan", "sinceImagePushed", "sinceImagePulled"]))
    chosen["countType"] = count_type
    if count_type == "imageCountMoreThan":
        chosen["countNumber"] = draw(st.integers(1, 5))
    else:
        chosen.update(countUnit="days", countNumber=draw(st.integers(1, 40)))
    return chosen


@st.composite
def rule_documents(draw: st.DrawFn, status: str) -> dict[str, Any]:
    chosen = draw(selections(status))
    transition = chosen["countType"] == "sinceImagePulled" or draw(st.booleans())
    action = TRANSITION if transition else {"type": "expire"}
    return {"rulePriority": 0, "selection": chosen, "action": action}


@st.composite
def policy_documents(draw: st.DrawFn, max_tagged: int = 4) -> list[dict[str, Any]]:
    """Rules in evaluation order, priorities not yet assigned: tagged rules and at most one untagged rule in
    any order, at most one `any` rule last, maybe an archive rule."""
    middle = draw(st.lists(rule_documents("tagged"), max_size=max_tagged))
    if draw(st.booleans()):
        middle.insert(draw(st.integers(0, len(middle))), draw(rule_documents("untagged")))
    if draw(st.booleans()):
        middle.append(draw(rule_documents("any")))
    if draw(st.booleans()):
        days = draw(st.integers(90, 400))
        archive = {**ARCHIVE_RULE, "countNumber": days}
        middle.insert(
            draw(st.integers(0, len(middle))),
            {"rulePriority": 0, "selection": archive, "action": {"type": "expire"}},
        )
    return middle


def with_priorities(documents: Sequence[dict[str, Any]], gaps: Sequence[int]) -> dict[str, Any]:
    priority, numbered = 0, []
    for document, gap in zip(documents, gaps, strict=False):
        priority += gap
        numbered.append({**document, "rulePriority": priority})
    return {"rules": numbered}


def valid_policy(document: object) -> LifecyclePolicy:
    try:
        return parse(document)
    except LifecyclePolicyInvalid:
        assume(False)  # e.g. two rules drew the same prefix set
        raise


GAPS = st.lists(st.integers(1, 3), min_size=8, max_size=8)
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(policy_documents(), GAPS, image_sets(references=True))
def test_no_image_is_acted_on_twice(
    documents: list[dict[str, Any]],
    gaps: list[int],
    images: list[ImageFacts],
) -> None:
    assume(documents)
    policy = valid_policy(with_priorities(documents, gaps))
    for actions in (evaluate(policy, images, NOW), plan(policy, images, NOW)):
        assert len({action.digest for action in actions}) == len(actions)


@PROPERTY_SETTINGS
@given(policy_documents(), GAPS, image_sets(references=True))
def test_matching_a_higher_rule_protects(
    documents: list[dict[str, Any]], gaps: list[int], images: list[ImageFacts]
) -> None:
    assume(documents)
    policy = valid_policy(with_priorities(documents, gaps))
    by_digest = {facts.digest: facts for facts in images}
    followers_exempt = [action for action in plan(policy, images, NOW) if action.follows is None]
    for actions in (evaluate(policy, images, NOW), followers_exempt):
        for action in actions:
            higher = [each for each in policy.rules if each.priority < action.applied_rule_priority]
            assert not any(matches(each, by_digest[action.digest]) for each in higher)
            acting = next(each for each in policy.rules if each.priority == action.applied_rule_priority)
            assert matches(acting, by_digest[action.digest])


@PROPERTY_SETTINGS
@given(selections("tagged") | selections("untagged") | selections("any"), st.integers(1, 6), image_sets())
def test_image_count_keeps_the_newest_n_of_its_pool(
    selection: dict[str, Any], number: int, images: list[ImageFacts]
) -> None:
    selection = {**selection, "countType": "imageCountMoreThan", "countNumber": number}
    selection.pop("countUnit", None)
    policy = parse(rules(rule(1, **selection)))
    (only,) = policy.rules
    matched = [facts for facts in images if matches(only, facts)]
    acted = {action.digest for action in evaluate(policy, images, NOW)}
    kept = [facts for facts in matched if facts.digest not in acted]
    assert len(kept) == min(number, len(matched))
    assert acted <= {facts.digest for facts in matched}
    newest_first = sorted(matched, key=lambda facts: (facts.pushed_at, facts.digest), reverse=True)
    assert {facts.digest for facts in kept} == {facts.digest for facts in newest_first[:number]}


@PROPERTY_SETTINGS
@given(
    policy_documents(max_tagged=3),
    rule_documents("tagged") | rule_documents("any") | rule_documents("untagged"),
    GAPS,
    image_sets(references=True),
)
def test_a_lower_rule_never_saves_an_image(
    documents: list[dict[str, Any]], extra: dict[str, Any], gaps: list[int], images: list[ImageFacts]
) -> None:
    assume(documents)
    base = valid_policy(with_priorities(documents, gaps))
    extended = valid_policy(with_priorities([*documents, extra], gaps))
    for run in (evaluate, plan):
        before = {action.digest: action for action in run(base, images, NOW)}
        after = {action.digest: action for action in run(extended, images, NOW)}
        expired = {digest for digest, action in before.items() if action.action is ActionType.EXPIRE}
        assert all(after[digest].action is ActionType.EXPIRE for digest in expired)
        if run is evaluate:  # ECR's decisions for the old rules do not change at all
            assert all(after[digest] == action for digest, action in before.items())


@PROPERTY_SETTINGS
@given(policy_documents(), GAPS, image_sets(references=True, max_size=18))
def test_safety_never_expires_what_a_kept_index_references(
    documents: list[dict[str, Any]], gaps: list[int], images: list[ImageFacts]
) -> None:
    assume(documents)
    policy = valid_policy(with_priorities(documents, gaps))
    final = {action.digest: action for action in plan(policy, images, NOW)}
    for facts in images:
        fate = final.get(facts.digest)
        if fate is None or fate.action is not ActionType.EXPIRE:
            for child in facts.child_digests:
                assert child not in final or final[child].action is not ActionType.EXPIRE
        if fate is None:  # a kept index keeps its manifests as they are
            assert not any(child in final for child in facts.child_digests)
    present = {facts.digest for facts in images}
    for facts in images:
        if facts.subject_digest is not None and facts.digest in final:
            assert facts.subject_digest in present
            assert final[facts.digest].action is final[facts.subject_digest].action
        if facts.subject_digest is not None and final.get(facts.subject_digest) is None:
            assert facts.digest not in final
