"""IAM policy grammar, matching, conditions and evaluation, checked against AWS's documented behaviour."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.domain.errors import DockyardError
from dockyard.domain.policies import (
    Decision,
    Effect,
    Outcome,
    Policy,
    PolicyInvalid,
    RequestContext,
    SetOperator,
    evaluate,
    wildcard_match,
)

ACCOUNT = "111111111111"
OTHER = "222222222222"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
CAROL = f"arn:aws:iam::{ACCOUNT}:user/team/carol"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
BOB = f"arn:aws:iam::{OTHER}:user/bob"
OTHER_ROOT = f"arn:aws:iam::{OTHER}:root"
REPO = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/app"
TEAM_REPO = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/team/api"

Document = dict[str, Any]
Context = dict[str, str | list[str]]
ECR_PREFIX = "Invalid parameter at 'PolicyText' failed to satisfy constraint: '"


def request(
    principal: str = ALICE,
    action: str = "ecr:BatchGetImage",
    resource: str = REPO,
    resource_account: str = ACCOUNT,
) -> RequestContext:
    return RequestContext(principal.split(":")[4], principal, action, resource, resource_account)


def with_context(context: Context, principal: str = ALICE) -> RequestContext:
    return RequestContext(principal.split(":")[4], principal, "ecr:BatchGetImage", REPO, ACCOUNT, context)


def document(*statements: Document, version: str = "2012-10-17") -> Document:
    return {"Version": version, "Statement": list(statements)}


def identity(*statements: Document, version: str = "2012-10-17") -> Policy:
    return Policy.parse(json.dumps(document(*statements, version=version)), kind="identity")


def resource_policy(*statements: Document) -> Policy:
    return Policy.parse(document(*statements), kind="resource")


def allow(**element: Any) -> Document:
    return {"Effect": "Allow", "Action": "*", "Resource": "*", **element}


def deny(**element: Any) -> Document:
    return {"Effect": "Deny", "Action": "*", "Resource": "*", **element}


def grant(principal: Any = "*", **element: Any) -> Document:
    """A resource-policy Allow of everything to `principal`."""
    return {"Effect": "Allow", "Action": "*", "Principal": principal, **element}


# --- parsing ------------------------------------------------------------------------------------------------


def test_parses_a_single_statement_object_and_keeps_its_parts() -> None:
    policy = Policy.parse(
        '{"Version": "2012-10-17", "Id": "p1", "Statement": {"Sid": "Pull", "Effect": "Allow",'
        ' "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], "Resource": "*"}}'
    )
    assert (policy.version, policy.id, policy.kind) == ("2012-10-17", "p1", "identity")
    (statement,) = policy.statements
    assert statement.sid == "Pull"
    assert statement.effect is Effect.ALLOW
    assert statement.actions == ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")
    assert (statement.resources, statement.not_action, statement.principal) == (("*",), False, None)


def test_a_missing_version_means_the_2008_language() -> None:
    policy = Policy.parse({"Statement": [allow()]})
    assert policy.version == "2008-10-17"


def test_resource_policies_may_omit_resource_and_use_free_text_sids() -> None:
    text = {"Sid": "allow pull (team)", "Effect": "Allow", "Principal": "*", "Action": "ecr:*"}
    policy = resource_policy(text)
    (statement,) = policy.statements
    assert statement.resources is None
    assert statement.principal is not None and statement.principal.everyone


@pytest.mark.parametrize(
    ("principal", "everyone", "aws", "others"),
    [
        ("*", True, set(), set()),
        ({"AWS": "*"}, True, set(), set()),
        ({"AWS": ACCOUNT}, False, {ROOT}, set()),
        ({"AWS": ROOT}, False, {ROOT}, set()),
        ({"AWS": [ALICE, OTHER]}, False, {ALICE, OTHER_ROOT}, set()),
        (
            {"AWS": f"arn:aws:iam::{ACCOUNT}:role/deployer"},
            False,
            {f"arn:aws:iam::{ACCOUNT}:role/deployer"},
            set(),
        ),
        ({"Service": "ecr.amazonaws.com"}, False, set(), {"Service:ecr.amazonaws.com"}),
        ({"AWS": BOB, "Service": ["a.amazonaws.com"]}, False, {BOB}, {"Service:a.amazonaws.com"}),
    ],
    ids=["star", "aws-star", "account-id", "account-arn", "list", "role", "service", "mixed"],
)
def test_principal_forms(principal: Any, everyone: bool, aws: set[str], others: set[str]) -> None:
    (statement,) = resource_policy(grant(principal)).statements
    assert statement.principal is not None
    found = statement.principal
    assert (found.everyone, found.aws, found.others) == (everyone, frozenset(aws), frozenset(others))


INVALID = [
    ("not-json", "{", "identity", "not valid JSON"),
    ("huge-number", '{"Version": ' + "9" * 5000 + "}", "identity", "not valid JSON"),  # int() refuses > 4300 digits
    ("deep-nesting", "[" * 100_000, "identity", "not valid JSON"),
    ("array", "[]", "identity", "must be a JSON object"),
    ("duplicate-key", '{"Statement": [], "Statement": []}', "identity", "duplicate key(s) Statement"),
    ("nan", '{"Version": NaN}', "identity", "NaN is not a valid JSON value"),
    ("unknown-top", {"Statement": [allow()], "Extra": 1}, "identity", "unknown top-level element(s) Extra"),
    ("bad-version", {"Version": "2020-01-01", "Statement": [allow()]}, "identity", "Version: must be one of"),
    ("numeric-version", {"Version": 2012, "Statement": [allow()]}, "identity", "Version: must be one of"),
    ("bad-id", {"Id": 7, "Statement": [allow()]}, "identity", "Id: must be a string"),
    ("no-statement", {"Version": "2012-10-17"}, "identity", "a policy needs a Statement"),
    ("empty-statements", {"Statement": []}, "identity", "a policy needs a Statement"),
    ("statement-string", {"Statement": "x"}, "identity", "a policy needs a Statement"),
    ("statement-not-object", {"Statement": ["x"]}, "identity", "Statement[0]: a statement must be an object"),
    ("unknown-element", document(allow(Actions="x")), "identity", "unknown statement element(s) Actions"),
    (
        "effect-case",
        document(allow(Effect="allow")),
        "identity",
        "Statement[0].Effect: must be 'Allow' or 'Deny'",
    ),
    ("effect-missing", document({"Action": "*", "Resource": "*"}), "identity", "Effect: must be"),
    ("action-and-not", document(allow(NotAction="ecr:*")), "identity", "both Action and NotAction"),
    ("no-action", document({"Effect": "Allow", "Resource": "*"}), "identity", "needs Action or NotAction"),
    ("action-no-service", document(allow(Action="ecr")), "identity", "action 'ecr' must be"),
    (
        "action-space",
        document(allow(Action="ecr:Get Image")),
        "identity",
        "must be '*' or 'service:ActionName'",
    ),
    ("action-empty-list", document(allow(Action=[])), "identity", "Statement[0].Action: must be a non-empty"),
    ("action-number", document(allow(Action=[1])), "identity", "Statement[0].Action: must be a non-empty"),
    ("identity-no-resource", document({"Effect": "Allow", "Action": "*"}), "identity", "needs Resource or"),
    ("resource-and-not", document(allow(NotResource="*")), "identity", "both Resource and NotResource"),
    ("resource-not-arn", document(allow(Resource="my-bucket")), "identity", "resource 'my-bucket' must be"),
    ("resource-short-arn", document(allow(Resource="arn:aws:ecr:*")), "identity", "must be '*' or an ARN"),
    ("identity-principal", document(allow(Principal="*")), "identity", "cannot name a Principal"),
    ("identity-sid-space", document(allow(Sid="my sid")), "identity", "Sid: 'my sid' may contain only"),
    ("sid-not-string", document(allow(Sid=3)), "identity", "Sid: must be a string"),
    ("duplicate-sid", document(allow(Sid="A"), allow(Sid="A")), "identity", "Sid 'A' is used twice"),
    (
        "no-principal",
        document({"Effect": "Allow", "Action": "*"}),
        "resource",
        "needs Principal or NotPrincipal",
    ),
    ("both-principals", document(grant(NotPrincipal="*")), "resource", "both Principal and NotPrincipal"),
    ("principal-text", document(grant("everyone")), "resource", 'Principal: must be "*" or an object'),
    ("principal-empty", document(grant({})), "resource", "Principal: must be"),
    ("principal-type", document(grant({"Group": "x"})), "resource", "unknown principal type 'Group'"),
    (
        "principal-partial-star",
        document(grant({"AWS": "arn:aws:iam::*:root"})),
        "resource",
        "without wildcards",
    ),
    ("principal-short-account", document(grant({"AWS": "12345"})), "resource", "AWS principal '12345'"),
    ("principal-empty-list", document(grant({"AWS": []})), "resource", "Principal.AWS: must be a non-empty"),
    ("condition-not-object", document(allow(Condition=[])), "identity", "Condition must be an object"),
    (
        "operator-unknown",
        document(allow(Condition={"StringEqualz": {"aws:username": "a"}})),
        "identity",
        "unknown",
    ),
    (
        "set-operator-unknown",
        document(allow(Condition={"ForSomeValues:StringEquals": {"aws:TagKeys": "a"}})),
        "identity",
        "unknown set operator 'ForSomeValues'",
    ),
    (
        "null-if-exists",
        document(allow(Condition={"NullIfExists": {"aws:username": "true"}})),
        "identity",
        "Null operator takes no IfExists",
    ),
    (
        "null-set-operator",
        document(allow(Condition={"ForAnyValue:Null": {"aws:TagKeys": "true"}})),
        "identity",
        "Null operator takes no IfExists suffix and no set operator",
    ),
    (
        "operator-block-not-object",
        document(allow(Condition={"StringEquals": "x"})),
        "identity",
        "must map condition keys to values",
    ),
    (
        "key-without-prefix",
        document(allow(Condition={"StringEquals": {"username": "a"}})),
        "identity",
        "condition key 'username' must look like",
    ),
    (
        "value-object",
        document(allow(Condition={"StringEquals": {"aws:username": {"a": 1}}})),
        "identity",
        "condition values must be strings, numbers or booleans",
    ),
    (
        "value-null",
        document(allow(Condition={"StringEquals": {"aws:username": None}})),
        "identity",
        "got null",
    ),
    (
        "values-empty",
        document(allow(Condition={"StringEquals": {"aws:username": []}})),
        "identity",
        "needs at least one value",
    ),
    (
        "numeric-text",
        document(allow(Condition={"NumericLessThan": {"ecr:ResourceTag/size": "ten"}})),
        "identity",
        "NumericLessThan needs a number, got 'ten'",
    ),
    (
        "date-text",
        document(allow(Condition={"DateLessThan": {"aws:CurrentTime": "tomorrow"}})),
        "identity",
        "needs an ISO 8601 date",
    ),
    (
        "ip-text",
        document(allow(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.300/8"}})),
        "identity",
        "needs an IP address or CIDR",
    ),
    (
        "bool-text",
        document(allow(Condition={"Bool": {"aws:SecureTransport": "yes"}})),
        "identity",
        "Bool needs true or false",
    ),
    (
        "null-text",
        document(allow(Condition={"Null": {"aws:username": "maybe"}})),
        "identity",
        "Null needs true or false",
    ),
    (
        "malformed-variable",
        document(allow(Resource="arn:aws:ecr:*:*:repository/${not a key}")),
        "identity",
        "malformed policy variable '${not a key}'",
    ),
]


@pytest.mark.parametrize(
    ("source", "kind", "fragment"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_documents_are_rejected_naming_the_problem(source: Any, kind: Any, fragment: str) -> None:
    text = source if isinstance(source, str) else json.dumps(source)
    with pytest.raises(PolicyInvalid) as caught:
        Policy.parse(text, kind=kind)
    assert fragment in caught.value.message
    assert caught.value.message.startswith(ECR_PREFIX)


def test_policy_invalid_is_an_ecr_invalid_parameter_error() -> None:
    error = PolicyInvalid()
    assert isinstance(error, DockyardError)
    assert (error.http_status, error.ecr_exception, error.oci_code) == (
        400,
        "InvalidParameterException",
        "DENIED",
    )
    assert error.message.endswith("'Invalid repository policy provided'")


def test_a_decoded_mapping_is_accepted_like_text() -> None:
    as_text = Policy.parse(json.dumps(document(allow(Sid="A"))))
    assert Policy.parse(document(allow(Sid="A"))) == as_text


def test_condition_values_given_as_json_booleans_and_numbers_become_strings() -> None:
    condition = {"Bool": {"aws:SecureTransport": True}, "NumericEquals": {"n:x": [5, 2.5]}}
    policy = identity(allow(Condition=condition))
    bool_condition, numeric_condition = policy.statements[0].conditions
    assert bool_condition.values == ("true",)
    assert numeric_condition.values == ("5", "2.5")


def test_set_operator_and_if_exists_are_split_from_the_operator_name() -> None:
    policy = identity(allow(Condition={"ForAllValues:StringLikeIfExists": {"AWS:TagKeys": "team-*"}}))
    (condition,) = policy.statements[0].conditions
    assert (condition.base, condition.set_operator, condition.if_exists) == (
        "StringLike",
        SetOperator.FOR_ALL_VALUES,
        True,
    )
    assert condition.key == "aws:tagkeys"


def test_mentioned_actions_lists_action_and_not_action_patterns_once_in_order() -> None:
    policy = resource_policy(
        grant(Action=["ecr:ReplicateImage", "ecr:CreateRepository"]),
        {"Effect": "Deny", "Principal": "*", "NotAction": ["ecr:ReplicateImage", "ecr:*"]},
    )
    assert policy.mentioned_actions() == ("ecr:ReplicateImage", "ecr:CreateRepository", "ecr:*")


@pytest.mark.parametrize(
    ("actions", "covered"),
    [
        (["ecr:ReplicateImage"], {"ecr:ReplicateImage"}),
        (["ecr:*"], {"ecr:ReplicateImage", "ecr:CreateRepository", "ecr:PutImage"}),
        (["ecr:*Repository"], {"ecr:CreateRepository"}),
        (["s3:*"], set()),
    ],
)
def test_covered_actions_expands_wildcards(actions: list[str], covered: set[str]) -> None:
    known = ["ecr:ReplicateImage", "ecr:CreateRepository", "ecr:PutImage"]
    assert resource_policy(grant(Action=actions)).covered_actions(known) == covered


def test_covered_actions_expands_not_action() -> None:
    policy = resource_policy({"Effect": "Allow", "Principal": "*", "NotAction": "ecr:PutImage"})
    assert policy.covered_actions(["ecr:PutImage", "ecr:ReplicateImage"]) == {"ecr:ReplicateImage"}


# --- matching -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("*", "", True),
        ("*", "anything:at/all", True),
        ("", "", True),
        ("", "a", False),
        ("a*", "a", True),
        ("a*b*c", "aXXbYc", True),
        ("a*b*c", "aXXbYcZ", False),
        ("a*b", "a", False),
        ("*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaa", False),
        ("?", "", False),
        ("?", "x", True),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("repo[1]", "repo[1]", True),
        ("repo[1]", "repo1", False),
        ("repo[!1]", "repo[!1]", True),
        ("x.y", "xzy", False),
        ("a+b", "a+b", True),
        ("arn:aws:ecr:*:1:repository/*", "arn:aws:ecr:us-east-1:1:repository/x/y", True),
        ("Repo", "repo", False),
    ],
)
def test_wildcard_match(pattern: str, text: str, expected: bool) -> None:
    assert wildcard_match(pattern, text) is expected


def test_wildcard_match_can_ignore_case() -> None:
    assert wildcard_match("ECR:Batch*", "ecr:batchgetimage", ignore_case=True)
    assert not wildcard_match("ECR:Batch*", "ecr:batchgetimage")


@pytest.mark.parametrize(
    ("pattern", "action", "expected"),
    [
        ("*", "s3:GetObject", True),
        ("ecr:*", "ecr:PutImage", True),
        ("ecr:*", "ecr-public:PutImage", False),
        ("ECR:putimage", "ecr:PutImage", True),
        ("ecr:Batch*", "ecr:BatchGetImage", True),
        ("ecr:batch*", "ECR:BATCHCHECKLAYERAVAILABILITY", True),
        ("ecr:Batch*", "ecr:PutImage", False),
        ("ecr:?utImage", "ecr:PutImage", True),
        ("ecr:?utImage", "ecr:PPutImage", False),
        ("ecr:PutImage", "ecr:PutImages", False),
    ],
)
def test_action_matching_ignores_case(pattern: str, action: str, expected: bool) -> None:
    (statement,) = identity(allow(Action=pattern)).statements
    assert statement.covers_action(action) is expected
    negated = identity({"Effect": "Allow", "NotAction": pattern, "Resource": "*"}).statements[0]
    assert negated.covers_action(action) is not expected


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("*", True),
        (REPO, True),
        (f"arn:aws:ecr:*:{ACCOUNT}:repository/*", True),
        (f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/ap?", True),
        (f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/App", False),
        (f"arn:aws:ecr:us-east-1:{ACCOUNT}:Repository/*", False),
        (f"arn:aws:ecr:us-east-1:{OTHER}:repository/*", False),
        ("arn:aws:ecr:*:*:repository/team/*", False),
        (["arn:aws:ecr:*:*:repository/team/*", "arn:aws:ecr:*:*:repository/app"], True),
    ],
)
def test_resource_matching_is_case_sensitive_with_wildcards(resource: Any, expected: bool) -> None:
    assert evaluate(request(), [identity(allow(Resource=resource))], None).allowed is expected
    not_resource = identity({"Effect": "Allow", "Action": "*", "NotResource": resource})
    assert evaluate(request(), [not_resource], None).allowed is not expected


# --- principals in resource policies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        ("*", True),
        ({"AWS": "*"}, True),
        ({"AWS": OTHER}, True),
        ({"AWS": OTHER_ROOT}, True),
        ({"AWS": BOB}, True),
        ({"AWS": [ALICE, BOB]}, True),
        ({"AWS": f"arn:aws:iam::{OTHER}:user/carol"}, False),
        ({"AWS": ACCOUNT}, False),
        ({"Service": "ecr.amazonaws.com"}, False),
        ({"Service": "*"}, False),
        ({"Federated": "cognito-identity.amazonaws.com"}, False),
    ],
)
def test_cross_account_grant_depends_on_the_principal_named(principal: Any, expected: bool) -> None:
    bob = request(BOB)
    assert evaluate(bob, [identity(allow())], resource_policy(grant(principal))).allowed is expected


@pytest.mark.parametrize(
    ("not_principal", "caller", "denied"),
    [
        ({"AWS": ALICE}, ALICE, True),  # Alice's account is not listed, so the Deny still reaches her
        ({"AWS": [ALICE, ACCOUNT]}, ALICE, False),
        ({"AWS": [ALICE, ACCOUNT]}, CAROL, True),
        ({"AWS": ACCOUNT}, ROOT, False),
        ({"AWS": ACCOUNT}, CAROL, True),
        ({"AWS": "*"}, CAROL, False),
    ],
)
def test_not_principal_deny_exempts_only_callers_listed_with_their_account(
    not_principal: Any, caller: str, denied: bool
) -> None:
    policy = resource_policy(grant(), {"Effect": "Deny", "Action": "*", "NotPrincipal": not_principal})
    outcome = evaluate(request(caller), [], policy, is_root=caller == ROOT).outcome
    assert (outcome is Outcome.EXPLICIT_DENY) is denied


def test_not_principal_allow_grants_everyone_else() -> None:
    policy = resource_policy({"Effect": "Allow", "Action": "*", "NotPrincipal": {"AWS": BOB}})
    assert evaluate(request(CAROL), [], policy).allowed
    # Bob's own ARN is excluded; only his account identity remains, which needs his own identity policy too.
    assert not evaluate(request(BOB), [], policy).allowed
    assert evaluate(request(BOB), [identity(allow())], policy).allowed


def test_deny_naming_an_account_reaches_all_its_users() -> None:
    policy = resource_policy(grant(), deny(Principal={"AWS": ACCOUNT}))
    assert evaluate(request(CAROL), [identity(allow())], policy).outcome is Outcome.EXPLICIT_DENY


# --- conditions ---------------------------------------------------------------------------------------------


def holds(condition: Document, context: Context, principal: str = ALICE) -> bool:
    """Whether an identity Allow guarded by `condition` lets the request through."""
    policy = identity(allow(Condition=condition))
    return evaluate(with_context(context, principal), [policy], None).allowed


NOW = "2025-06-01T12:00:00Z"
CONDITIONS: list[tuple[str, Document, Context, bool]] = [
    # String operators
    ("equals", {"StringEquals": {"ecr:ResourceTag/team": "web"}}, {"ecr:ResourceTag/team": "web"}, True),
    (
        "equals-case",
        {"StringEquals": {"ecr:ResourceTag/team": "web"}},
        {"ecr:ResourceTag/team": "Web"},
        False,
    ),
    (
        "equals-or",
        {"StringEquals": {"ecr:ResourceTag/team": ["api", "web"]}},
        {"ecr:ResourceTag/team": "web"},
        True,
    ),
    ("equals-missing", {"StringEquals": {"ecr:ResourceTag/team": "web"}}, {}, False),
    ("not-equals", {"StringNotEquals": {"aws:RequestTag/env": "prod"}}, {"aws:RequestTag/env": "dev"}, True),
    (
        "not-equals-hit",
        {"StringNotEquals": {"aws:RequestTag/env": "prod"}},
        {"aws:RequestTag/env": "prod"},
        False,
    ),
    (
        "not-equals-nor",
        {"StringNotEquals": {"aws:RequestTag/env": ["a", "b"]}},
        {"aws:RequestTag/env": "b"},
        False,
    ),
    (
        "not-equals-none",
        {"StringNotEquals": {"aws:RequestTag/env": ["a", "b"]}},
        {"aws:RequestTag/env": "c"},
        True,
    ),
    ("not-equals-missing", {"StringNotEquals": {"aws:RequestTag/env": "prod"}}, {}, True),
    (
        "ignore-case",
        {"StringEqualsIgnoreCase": {"ecr:ResourceTag/t": "WEB"}},
        {"ecr:ResourceTag/t": "web"},
        True,
    ),
    (
        "ignore-case-miss",
        {"StringEqualsIgnoreCase": {"ecr:ResourceTag/t": "WEB"}},
        {"ecr:ResourceTag/t": "api"},
        False,
    ),
    (
        "not-ignore-case",
        {"StringNotEqualsIgnoreCase": {"ecr:ResourceTag/t": "WEB"}},
        {"ecr:ResourceTag/t": "web"},
        False,
    ),
    ("like", {"StringLike": {"ecr:ResourceTag/t": "team-*"}}, {"ecr:ResourceTag/t": "team-a"}, True),
    ("like-case", {"StringLike": {"ecr:ResourceTag/t": "team-*"}}, {"ecr:ResourceTag/t": "Team-a"}, False),
    ("like-one", {"StringLike": {"ecr:ResourceTag/t": "v?"}}, {"ecr:ResourceTag/t": "v10"}, False),
    ("like-bracket", {"StringLike": {"ecr:ResourceTag/t": "[ab]"}}, {"ecr:ResourceTag/t": "a"}, False),
    ("like-missing", {"StringLike": {"ecr:ResourceTag/t": "*"}}, {}, False),
    ("not-like", {"StringNotLike": {"ecr:ResourceTag/t": "team-*"}}, {"ecr:ResourceTag/t": "ops"}, True),
    (
        "not-like-hit",
        {"StringNotLike": {"ecr:ResourceTag/t": "team-*"}},
        {"ecr:ResourceTag/t": "team-a"},
        False,
    ),
    ("not-like-missing", {"StringNotLike": {"ecr:ResourceTag/t": "team-*"}}, {}, True),
    # ARN operators (aws:PrincipalArn is derived from the caller)
    ("arn-equals", {"ArnEquals": {"aws:PrincipalArn": ALICE}}, {}, True),
    ("arn-like", {"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:user/*"}}, {}, True),
    ("arn-like-account-star", {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/alice"}}, {}, True),
    ("arn-like-resource-star", {"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:*"}}, {}, True),
    ("arn-like-too-few-segments", {"ArnLike": {"aws:PrincipalArn": "arn:aws:*"}}, {}, False),
    ("arn-like-other", {"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{OTHER}:user/*"}}, {}, False),
    ("arn-not-like", {"ArnNotLike": {"aws:PrincipalArn": f"arn:aws:iam::{OTHER}:*"}}, {}, True),
    ("arn-not-equals", {"ArnNotEquals": {"aws:PrincipalArn": ALICE}}, {}, False),
    (
        "arn-not-arn",
        {"ArnLike": {"ecr:ResourceTag/t": "arn:aws:*:*:*:*"}},
        {"ecr:ResourceTag/t": "plain"},
        False,
    ),
    ("arn-missing", {"ArnLike": {"aws:SourceArn": "arn:aws:*:*:*:*"}}, {}, False),
    ("arn-not-missing", {"ArnNotLike": {"aws:SourceArn": "arn:aws:*:*:*:*"}}, {}, True),
    # IP addresses
    ("ip-cidr", {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "10.1.2.3"}, True),
    ("ip-outside", {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "192.168.0.1"}, False),
    ("ip-single", {"IpAddress": {"aws:SourceIp": "203.0.113.5"}}, {"aws:SourceIp": "203.0.113.5"}, True),
    (
        "ip-or",
        {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "2001:db8::/32"]}},
        {"aws:SourceIp": "2001:db8::1"},
        True,
    ),
    ("ip-v4-in-v6", {"IpAddress": {"aws:SourceIp": "::/0"}}, {"aws:SourceIp": "10.0.0.1"}, False),
    ("ip-garbage", {"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}, {"aws:SourceIp": "nowhere"}, False),
    ("ip-missing", {"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}, {}, False),
    ("not-ip", {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "192.168.0.1"}, True),
    ("not-ip-inside", {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "10.0.0.1"}, False),
    ("not-ip-missing", {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {}, True),
    # Bool
    ("bool", {"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": "true"}, True),
    ("bool-case", {"Bool": {"aws:SecureTransport": "TRUE"}}, {"aws:SecureTransport": "True"}, True),
    ("bool-false", {"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": "false"}, False),
    ("bool-garbage", {"Bool": {"aws:SecureTransport": "false"}}, {"aws:SecureTransport": "no"}, False),
    ("bool-missing", {"Bool": {"aws:SecureTransport": "false"}}, {}, False),
    ("bool-if-exists", {"BoolIfExists": {"aws:SecureTransport": "true"}}, {}, True),
    # Numbers
    ("num-equals", {"NumericEquals": {"n:x": "10"}}, {"n:x": "10.0"}, True),
    ("num-not-equals", {"NumericNotEquals": {"n:x": "10"}}, {"n:x": "10"}, False),
    ("num-lt", {"NumericLessThan": {"n:x": "10"}}, {"n:x": "9"}, True),
    ("num-lt-equal", {"NumericLessThan": {"n:x": "10"}}, {"n:x": "10"}, False),
    ("num-le", {"NumericLessThanEquals": {"n:x": "10"}}, {"n:x": "10"}, True),
    ("num-gt", {"NumericGreaterThan": {"n:x": "10"}}, {"n:x": "10.5"}, True),
    ("num-gt-less", {"NumericGreaterThan": {"n:x": "10"}}, {"n:x": "-1"}, False),
    ("num-ge", {"NumericGreaterThanEquals": {"n:x": "10"}}, {"n:x": "10"}, True),
    ("num-garbage", {"NumericLessThan": {"n:x": "10"}}, {"n:x": "ten"}, False),
    ("num-missing", {"NumericLessThan": {"n:x": "10"}}, {}, False),
    ("num-not-missing", {"NumericNotEquals": {"n:x": "10"}}, {}, True),
    # Dates
    (
        "date-lt",
        {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}},
        {"aws:CurrentTime": NOW},
        True,
    ),
    (
        "date-lt-past",
        {"DateLessThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}},
        {"aws:CurrentTime": NOW},
        False,
    ),
    ("date-gt", {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01"}}, {"aws:CurrentTime": NOW}, True),
    ("date-epoch", {"DateGreaterThan": {"aws:CurrentTime": "1577836800"}}, {"aws:CurrentTime": NOW}, True),
    (
        "date-zone",
        {"DateEquals": {"aws:CurrentTime": "2025-06-01T14:00:00+02:00"}},
        {"aws:CurrentTime": NOW},
        True,
    ),
    ("date-not-equals", {"DateNotEquals": {"aws:CurrentTime": NOW}}, {"aws:CurrentTime": NOW}, False),
    ("date-le", {"DateLessThanEquals": {"aws:CurrentTime": NOW}}, {"aws:CurrentTime": NOW}, True),
    ("date-ge", {"DateGreaterThanEquals": {"aws:CurrentTime": NOW}}, {"aws:CurrentTime": NOW}, True),
    ("date-garbage", {"DateLessThan": {"aws:CurrentTime": NOW}}, {"aws:CurrentTime": "soon"}, False),
    ("date-missing", {"DateLessThan": {"aws:CurrentTime": NOW}}, {}, False),
    # Null checks presence
    ("null-absent", {"Null": {"aws:RequestTag/env": "true"}}, {}, True),
    ("null-present", {"Null": {"aws:RequestTag/env": "true"}}, {"aws:RequestTag/env": "x"}, False),
    ("not-null-present", {"Null": {"aws:RequestTag/env": "false"}}, {"aws:RequestTag/env": "x"}, True),
    ("not-null-absent", {"Null": {"aws:RequestTag/env": "false"}}, {}, False),
    ("null-empty-list", {"Null": {"aws:TagKeys": "true"}}, {"aws:TagKeys": []}, True),
    # ...IfExists
    ("if-exists-absent", {"StringEqualsIfExists": {"aws:RequestTag/env": "prod"}}, {}, True),
    (
        "if-exists-present",
        {"StringEqualsIfExists": {"aws:RequestTag/env": "prod"}},
        {"aws:RequestTag/env": "x"},
        False,
    ),
    (
        "if-exists-ip",
        {"IpAddressIfExists": {"aws:SourceIp": "10.0.0.0/8"}},
        {"aws:SourceIp": "10.9.9.9"},
        True,
    ),
    # Set operators on multivalued keys
    (
        "any-value",
        {"ForAnyValue:StringEquals": {"aws:TagKeys": ["a", "b"]}},
        {"aws:TagKeys": ["b", "c"]},
        True,
    ),
    (
        "any-value-none",
        {"ForAnyValue:StringEquals": {"aws:TagKeys": ["a", "b"]}},
        {"aws:TagKeys": ["c"]},
        False,
    ),
    ("any-value-missing", {"ForAnyValue:StringEquals": {"aws:TagKeys": "a"}}, {}, False),
    ("any-value-empty", {"ForAnyValue:StringEquals": {"aws:TagKeys": "a"}}, {"aws:TagKeys": []}, False),
    ("any-value-if-exists", {"ForAnyValue:StringEqualsIfExists": {"aws:TagKeys": "a"}}, {}, True),
    ("all-values", {"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}}, {"aws:TagKeys": ["a"]}, True),
    (
        "all-values-extra",
        {"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}},
        {"aws:TagKeys": ["a", "c"]},
        False,
    ),
    ("all-values-missing", {"ForAllValues:StringEquals": {"aws:TagKeys": "a"}}, {}, True),
    ("all-values-empty", {"ForAllValues:StringEquals": {"aws:TagKeys": "a"}}, {"aws:TagKeys": []}, True),
    (
        "all-values-like",
        {"ForAllValues:StringLike": {"aws:TagKeys": "team-*"}},
        {"aws:TagKeys": ["team-a"]},
        True,
    ),
    (
        "all-values-not",
        {"ForAllValues:StringNotEquals": {"aws:TagKeys": "x"}},
        {"aws:TagKeys": ["a", "b"]},
        True,
    ),
    ("any-value-not", {"ForAnyValue:StringNotEquals": {"aws:TagKeys": "a"}}, {"aws:TagKeys": ["a"]}, False),
    ("any-value-not-missing", {"ForAnyValue:StringNotEquals": {"aws:TagKeys": "a"}}, {}, False),
    ("set-on-single-value", {"ForAnyValue:StringEquals": {"aws:username": "alice"}}, {}, True),
    ("multivalued-needs-set", {"StringEquals": {"aws:TagKeys": "a"}}, {"aws:TagKeys": ["a"]}, False),
    ("multivalued-negated", {"StringNotEquals": {"aws:TagKeys": "x"}}, {"aws:TagKeys": ["a"]}, False),
    # Several keys in one operator, and several operators, all must hold
    (
        "keys-and",
        {"StringEquals": {"aws:username": "alice", "aws:PrincipalAccount": ACCOUNT}},
        {},
        True,
    ),
    (
        "keys-and-one-fails",
        {"StringEquals": {"aws:username": "alice", "aws:PrincipalAccount": OTHER}},
        {},
        False,
    ),
    (
        "operators-and",
        {"Bool": {"aws:SecureTransport": "true"}, "IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
        {"aws:SecureTransport": "true", "aws:SourceIp": "11.0.0.1"},
        False,
    ),
    # Condition key names are case-insensitive on both sides
    ("key-case-policy", {"StringEquals": {"AWS:USERNAME": "alice"}}, {}, True),
    (
        "key-case-context",
        {"StringEquals": {"ecr:resourcetag/Team": "web"}},
        {"ECR:ResourceTag/team": "web"},
        True,
    ),
    (
        "context-overrides-derived",
        {"StringEquals": {"aws:username": "alice"}},
        {"aws:userName": "mallory"},
        False,
    ),
]


@pytest.mark.parametrize(
    ("condition", "context", "expected"),
    [case[1:] for case in CONDITIONS],
    ids=[case[0] for case in CONDITIONS],
)
def test_condition_operators(condition: Document, context: Context, expected: bool) -> None:
    assert holds(condition, context) is expected


def test_username_is_derived_only_for_iam_users() -> None:
    assert with_context({}, CAROL).value("aws:username") == "carol"
    assert with_context({}, ROOT).value("aws:username") is None
    assert with_context({}, ROOT).value("aws:PrincipalAccount") == ACCOUNT
    assert with_context({"aws:TagKeys": ["a", "b"]}).value("AWS:TAGKEYS") == ("a", "b")


# --- policy variables ---------------------------------------------------------------------------------------

HOME = "arn:aws:ecr:*:*:repository/${aws:username}/*"


@pytest.mark.parametrize(
    ("resource", "caller", "repository", "expected"),
    [
        (HOME, ALICE, "alice/app", True),
        (HOME, ALICE, "bob/app", False),
        (HOME, ROOT, "alice/app", False),  # no aws:username for root: the pattern matches nothing
        ("arn:aws:ecr:*:*:repository/${aws:username, 'shared'}/*", ROOT, "shared/app", True),
        ("arn:aws:ecr:*:*:repository/${aws:username,'it''s'}", ROOT, "it's", True),
        ("arn:aws:ecr:*:*:repository/a${*}", ALICE, "a*", True),
        ("arn:aws:ecr:*:*:repository/a${*}", ALICE, "ab", False),
        ("arn:aws:ecr:*:*:repository/a${?}", ALICE, "a?", True),
        ("arn:aws:ecr:*:*:repository/${$}x", ALICE, "$x", True),
        ("arn:aws:ecr:*:*:repository/${ecr:ResourceTag/owner}", ALICE, "star", False),
    ],
)
def test_policy_variables_in_resources(resource: str, caller: str, repository: str, expected: bool) -> None:
    target = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{repository}"
    policy = identity(allow(Resource=resource))
    call = request(caller, resource=target)
    assert evaluate(call, [policy], None).allowed is expected


def test_substituted_values_are_literal_not_wildcards() -> None:
    policy = identity(allow(Resource="arn:aws:ecr:*:*:repository/${ecr:ResourceTag/owner}"))
    tags = {"ecr:ResourceTag/owner": "*"}
    call = RequestContext(ACCOUNT, ALICE, "ecr:PutImage", REPO, ACCOUNT, tags)
    assert not evaluate(call, [policy], None).allowed
    literal = RequestContext(ACCOUNT, ALICE, "ecr:PutImage", REPO.replace("/app", "/*"), ACCOUNT, tags)
    assert evaluate(literal, [policy], None).allowed


def test_variables_are_plain_text_in_2008_policies() -> None:
    policy = identity(allow(Resource=HOME), version="2008-10-17")
    literal = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/${{aws:username}}/app"
    assert evaluate(request(resource=literal), [policy], None).allowed
    assert not evaluate(
        request(resource=f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/alice/app"), [policy], None
    ).allowed


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"StringLike": {"ecr:ResourceTag/owner": "${aws:username}*"}}, True),
        ({"StringEquals": {"ecr:ResourceTag/owner": "${aws:username}"}}, False),
        ({"StringNotEquals": {"ecr:ResourceTag/owner": "${aws:username}"}}, True),
        ({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::${aws:PrincipalAccount}:user/*"}}, True),
        ({"StringEquals": {"ecr:ResourceTag/owner": "${aws:SourceIdentity}"}}, False),
    ],
)
def test_policy_variables_in_conditions(condition: Document, expected: bool) -> None:
    assert holds(condition, {"ecr:ResourceTag/owner": "alice-team"}) is expected


# --- evaluation ---------------------------------------------------------------------------------------------

EVALUATIONS: list[tuple[str, str, list[Document], list[Document] | None, Decision]] = [
    # Same account, IAM user
    ("nothing", ALICE, [], None, Decision(Outcome.IMPLICIT_DENY)),
    ("identity-allow", ALICE, [allow(Sid="I")], None, Decision(Outcome.ALLOW, "I", "identity")),
    ("identity-other-action", ALICE, [allow(Action="ecr:PutImage")], None, Decision(Outcome.IMPLICIT_DENY)),
    (
        "resource-names-user",
        ALICE,
        [],
        [grant({"AWS": ALICE}, Sid="R")],
        Decision(Outcome.ALLOW, "R", "resource"),
    ),
    ("resource-star", ALICE, [], [grant("*", Sid="R")], Decision(Outcome.ALLOW, "R", "resource")),
    ("resource-names-account-only", ALICE, [], [grant({"AWS": ACCOUNT})], Decision(Outcome.IMPLICIT_DENY)),
    (
        "resource-account-plus-identity",
        ALICE,
        [allow(Sid="I")],
        [grant({"AWS": ACCOUNT}, Sid="R")],
        Decision(Outcome.ALLOW, "I", "identity"),
    ),
    (
        "identity-deny",
        ALICE,
        [allow(), deny(Sid="D")],
        None,
        Decision(Outcome.EXPLICIT_DENY, "D", "identity"),
    ),
    (
        "resource-deny",
        ALICE,
        [allow()],
        [grant(), deny(Principal="*", Sid="D")],
        Decision(Outcome.EXPLICIT_DENY, "D", "resource"),
    ),
    (
        "deny-other-user",
        ALICE,
        [allow()],
        [deny(Principal={"AWS": CAROL})],
        Decision(Outcome.ALLOW, None, "identity"),
    ),
    # Same account, root user
    ("root-nothing", ROOT, [], None, Decision(Outcome.ALLOW, None, "root")),
    ("root-ignores-identity-deny", ROOT, [deny()], None, Decision(Outcome.ALLOW, None, "root")),
    (
        "root-resource-deny",
        ROOT,
        [],
        [deny(Principal="*", Sid="D")],
        Decision(Outcome.EXPLICIT_DENY, "D", "resource"),
    ),
    (
        "root-account-deny",
        ROOT,
        [],
        [deny(Principal={"AWS": ACCOUNT}, Sid="D")],
        Decision(Outcome.EXPLICIT_DENY, "D", "resource"),
    ),
    ("root-deny-other", ROOT, [], [deny(Principal={"AWS": ALICE})], Decision(Outcome.ALLOW, None, "root")),
    # Cross account, IAM user
    ("cross-nothing", BOB, [allow()], None, Decision(Outcome.IMPLICIT_DENY)),
    ("cross-resource-only", BOB, [], [grant({"AWS": BOB})], Decision(Outcome.IMPLICIT_DENY)),
    (
        "cross-both",
        BOB,
        [allow(Sid="I")],
        [grant({"AWS": BOB}, Sid="R")],
        Decision(Outcome.ALLOW, "R", "resource"),
    ),
    (
        "cross-account",
        BOB,
        [allow()],
        [grant({"AWS": OTHER}, Sid="R")],
        Decision(Outcome.ALLOW, "R", "resource"),
    ),
    ("cross-star", BOB, [allow()], [grant("*", Sid="R")], Decision(Outcome.ALLOW, "R", "resource")),
    ("cross-wrong-account", BOB, [allow()], [grant({"AWS": ACCOUNT})], Decision(Outcome.IMPLICIT_DENY)),
    (
        "cross-identity-deny",
        BOB,
        [allow(), deny(Sid="D")],
        [grant("*")],
        Decision(Outcome.EXPLICIT_DENY, "D", "identity"),
    ),
    # Cross account, the other account's root
    (
        "cross-root",
        OTHER_ROOT,
        [],
        [grant({"AWS": OTHER}, Sid="R")],
        Decision(Outcome.ALLOW, "R", "resource"),
    ),
    ("cross-root-no-policy", OTHER_ROOT, [], None, Decision(Outcome.IMPLICIT_DENY)),
    (
        "cross-root-by-arn",
        OTHER_ROOT,
        [],
        [grant({"AWS": OTHER_ROOT})],
        Decision(Outcome.ALLOW, None, "resource"),
    ),
]


@pytest.mark.parametrize(
    ("principal", "identity_statements", "resource_statements", "expected"),
    [case[1:] for case in EVALUATIONS],
    ids=[case[0] for case in EVALUATIONS],
)
def test_evaluation_rules(
    principal: str,
    identity_statements: list[Document],
    resource_statements: list[Document] | None,
    expected: Decision,
) -> None:
    identities = [identity(*identity_statements)] if identity_statements else []
    resource = resource_policy(*resource_statements) if resource_statements is not None else None
    is_root = principal.endswith(":root")
    assert evaluate(request(principal), identities, resource, is_root=is_root) == expected


def test_registry_level_actions_use_star_resources() -> None:
    policy = identity(allow(Action="ecr:GetAuthorizationToken", Resource="*"))
    token = request(action="ecr:GetAuthorizationToken", resource="*")
    assert evaluate(token, [policy], None).allowed
    scoped = identity(allow(Action="ecr:GetAuthorizationToken", Resource=REPO))
    assert not evaluate(token, [scoped], None).allowed


def test_the_reported_sid_does_not_depend_on_statement_order() -> None:
    statements = [deny(Sid="B"), deny(Sid="A"), deny()]
    forward = evaluate(request(), [identity(*statements)], None)
    backward = evaluate(request(), [identity(*reversed(statements))], None)
    assert forward == backward == Decision(Outcome.EXPLICIT_DENY, "A", "identity")


def test_policies_of_the_wrong_kind_are_refused() -> None:
    with pytest.raises(ValueError, match="identity_policies"):
        evaluate(request(), [resource_policy(grant())], None)
    with pytest.raises(ValueError, match="resource_policy"):
        evaluate(request(), [], identity(allow()))


def test_statements_match_each_action_independently() -> None:
    pull = identity(allow(Action=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], Resource=REPO))
    assert evaluate(request(action="ecr:GetDownloadUrlForLayer"), [pull], None).allowed
    assert not evaluate(request(action="ecr:PutImage"), [pull], None).allowed


# --- properties ---------------------------------------------------------------------------------------------

PRINCIPALS = [ALICE, CAROL, ROOT, BOB, OTHER_ROOT]
ACTIONS = ["ecr:BatchGetImage", "ecr:PutImage", "ecr:ListImages"]
ACTION_PATTERNS = ["*", "ecr:*", "ecr:Batch*", "ecr:PutImage", "ECR:listimages", "ecr:?utImage"]
RESOURCES = [REPO, TEAM_REPO, f"arn:aws:ecr:us-east-1:{OTHER}:repository/app"]
RESOURCE_PATTERNS = [
    "*",
    f"arn:aws:ecr:*:{ACCOUNT}:repository/*",
    REPO,
    f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/team/*",
    "arn:aws:ecr:*:*:repository/${aws:username}*",
]
PRINCIPAL_ELEMENTS: list[Any] = [
    "*",
    {"AWS": ACCOUNT},
    {"AWS": OTHER},
    {"AWS": BOB},
    {"AWS": [ALICE, BOB]},
    {"Service": "ecr.amazonaws.com"},
]
CONDITION_BLOCKS: list[Document] = [
    {"Bool": {"aws:SecureTransport": "true"}},
    {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
    {"StringNotEquals": {"aws:username": "carol"}},
    {"ForAnyValue:StringEquals": {"aws:TagKeys": ["team"]}},
    {"Null": {"aws:username": "true"}},
]


def one_or_list(options: list[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(options), st.lists(st.sampled_from(options), min_size=1, max_size=3))


@st.composite
def statements(draw: st.DrawFn, kind: str, effect: str | None = None) -> Document:
    statement: Document = {"Effect": effect or draw(st.sampled_from(["Allow", "Deny"]))}
    statement["NotAction" if draw(st.booleans()) and draw(st.booleans()) else "Action"] = draw(
        one_or_list(ACTION_PATTERNS)
    )
    if kind == "identity" or draw(st.booleans()):
        element = "NotResource" if draw(st.integers(0, 4)) == 0 else "Resource"
        statement[element] = draw(one_or_list(RESOURCE_PATTERNS))
    if kind == "resource":
        statement["NotPrincipal" if draw(st.integers(0, 4)) == 0 else "Principal"] = draw(
            st.sampled_from(PRINCIPAL_ELEMENTS)
        )
    if draw(st.booleans()):
        statement["Condition"] = draw(st.sampled_from(CONDITION_BLOCKS))
    return statement


def named(statements: list[Document], prefix: str) -> list[Document]:
    """Give some statements Sids, unique per policy, so the reported Sid is exercised too."""
    return [{**s, "Sid": f"{prefix}{i}"} if i % 2 == 0 else s for i, s in enumerate(statements)]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[RequestContext, list[list[Document]], list[Document] | None, bool]:
    principal = draw(st.sampled_from(PRINCIPALS))
    resource = draw(st.sampled_from(RESOURCES))
    context: Context = {}
    if draw(st.booleans()):
        context["aws:SecureTransport"] = draw(st.sampled_from(["true", "false"]))
    if draw(st.booleans()):
        context["aws:SourceIp"] = draw(st.sampled_from(["10.1.1.1", "192.0.2.1"]))
    if draw(st.booleans()):
        context["aws:TagKeys"] = draw(st.lists(st.sampled_from(["team", "env"]), max_size=2))
    call = RequestContext(
        principal.split(":")[4],
        principal,
        draw(st.sampled_from(ACTIONS)),
        resource,
        resource.split(":")[4],
        context,
    )
    is_root = principal.endswith(":root")
    identities = draw(st.lists(st.lists(statements("identity"), min_size=1, max_size=3), max_size=2))
    resource_statements = draw(st.none() | st.lists(statements("resource"), min_size=1, max_size=3))
    return call, identities, resource_statements, is_root


def decide(
    call: RequestContext, identities: list[list[Document]], resource: list[Document] | None, is_root: bool
) -> Decision:
    identity_policies = [identity(*named(policy, "I")) for policy in identities]
    resource_parsed = resource_policy(*named(resource, "R")) if resource is not None else None
    return evaluate(call, identity_policies, resource_parsed, is_root=is_root)


@given(scenarios(), st.data())
def test_property_a_matching_deny_always_wins(
    scenario: tuple[RequestContext, list[list[Document]], list[Document] | None, bool], data: st.DataObject
) -> None:
    call, identities, resource, is_root = scenario
    matching = {"Sid": "Veto", "Effect": "Deny", "Action": call.action, "Resource": call.resource}
    # The root user has no identity policies to be denied by, so its Deny must sit in the resource policy.
    if is_root or data.draw(st.booleans()):
        resource = [*(resource or []), {**matching, "Principal": "*"}]
    else:
        identities = [*identities, [matching]]
    decision = decide(call, identities, resource, is_root)
    assert decision.outcome is Outcome.EXPLICIT_DENY


@given(scenarios(), st.data())
def test_property_adding_an_allow_never_removes_access(
    scenario: tuple[RequestContext, list[list[Document]], list[Document] | None, bool], data: st.DataObject
) -> None:
    call, identities, resource, is_root = scenario
    before = decide(call, identities, resource, is_root)
    if data.draw(st.booleans()):
        resource = [*(resource or []), data.draw(statements("resource", effect="Allow"))]
    else:
        identities = [*identities, [data.draw(statements("identity", effect="Allow"))]]
    after = decide(call, identities, resource, is_root)
    assert after.allowed or not before.allowed
    assert (after.outcome is Outcome.EXPLICIT_DENY) is (before.outcome is Outcome.EXPLICIT_DENY)


@given(scenarios(), st.data())
def test_property_statement_order_does_not_change_the_decision(
    scenario: tuple[RequestContext, list[list[Document]], list[Document] | None, bool], data: st.DataObject
) -> None:
    call, identities, resource, is_root = scenario
    identity_policies = [identity(*named(policy, "I")) for policy in identities]
    resource_parsed = resource_policy(*named(resource, "R")) if resource is not None else None
    expected = evaluate(call, identity_policies, resource_parsed, is_root=is_root)
    shuffled_identities = []
    for policy in data.draw(st.permutations(identities)):
        shuffled_identities.append(identity(*data.draw(st.permutations(named(policy, "I")))))
    shuffled_resource = None
    if resource is not None:
        shuffled_resource = resource_policy(*data.draw(st.permutations(named(resource, "R"))))
    assert evaluate(call, shuffled_identities, shuffled_resource, is_root=is_root) == expected


def reference_match(pattern: str, text: str) -> bool:
    """The obvious recursive definition of `*`/`?` globbing, memoised so long star runs stay cheap."""

    @functools.cache
    def match(p: int, t: int) -> bool:
        if p == len(pattern):
            return t == len(text)
        if pattern[p] == "*":
            return match(p + 1, t) or (t < len(text) and match(p, t + 1))
        return t < len(text) and pattern[p] in ("?", text[t]) and match(p + 1, t + 1)

    return match(0, 0)


GLOB_ALPHABET = "ab*?:/["


@given(st.text(GLOB_ALPHABET, max_size=10), st.text(GLOB_ALPHABET, max_size=12))
def test_property_wildcard_matcher_agrees_with_a_reference(pattern: str, text: str) -> None:
    assert wildcard_match(pattern, text) is reference_match(pattern, text)


@given(st.text("aAbB*?[", max_size=8), st.text("aAbB[", max_size=10))
def test_property_case_insensitive_matching_agrees_with_a_reference(pattern: str, text: str) -> None:
    assert wildcard_match(pattern, text, ignore_case=True) is reference_match(pattern.lower(), text.lower())


@given(st.text("ab*", max_size=6).map(lambda prefix: prefix + "*"), st.text("ab", max_size=12))
def test_property_a_pattern_ending_in_star_matches_every_extension(pattern: str, text: str) -> None:
    if wildcard_match(pattern, text):
        assert wildcard_match(pattern, text + "ab")
