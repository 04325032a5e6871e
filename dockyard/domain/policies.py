"""IAM policy documents: parse, validate and evaluate them the way AWS does.

A policy is parsed once (`Policy.parse`) into frozen value objects with every pattern precompiled, then
`evaluate` decides one request against the caller's identity policies and the resource's policy.

Rules implemented, with AWS's documented behaviour as the reference:

* An explicit `Deny` in any applicable policy wins over every `Allow`.
* The root user has no identity policies (any passed are ignored); it may do everything in its own account
  unless the resource policy denies it.
* Same account: allowed when an identity policy allows, or when the resource policy allows the caller by
  its own ARN (or `*`). A resource policy that names only the *account* (`"123456789012"` or
  `arn:aws:iam::123456789012:root`) delegates to the account, so an identity policy must still allow.
* Cross account: allowed only when the resource policy allows the caller (by ARN, account or `*`) *and* the
  caller's own identity policies allow it; the other account's root counts as allowed by its own identity.
* The caller is matched against `Principal`/`NotPrincipal` as two identities, its own ARN and its account's
  root ARN (a root caller is just the latter). `Principal` matches when either identity is listed;
  `NotPrincipal` matches when either is *not* listed. This reproduces AWS's documented advice that a
  `Deny` + `NotPrincipal` must list both the user and its account to exempt the user.

Conditions: every operator in a `Condition` block must hold (AND), every key within one operator must hold
(AND), and the values given for one key are alternatives (OR). Negated operators (`StringNotEquals`,
`NotIpAddress`, `ArnNotLike`, ...) hold when the context value matches *none* of the values (NOR). When a
key is absent from the request a condition is false, except that: negated operators are true (AWS:
"if the key is not present ... the condition is true" for `StringNotLike`, `ArnNotLike` and the others);
`...IfExists` is true; `ForAllValues:` is true; `ForAnyValue:` is false; `Null` tests presence itself.
A list-valued (multivalued) context key can only be tested through `ForAnyValue:`/`ForAllValues:`; AWS
requires a set operator for such keys, and a plain operator on one is treated as not satisfied here.

Policy variables (`${aws:username}`, `${key, 'default'}`, `${*}`, `${?}`, `${$}`) are resolved in
`Resource`/`NotResource` and in string, ARN and Bool condition values when the version is 2012-10-17; in
2008-10-17 policies `${...}` is plain text, as in AWS. A variable whose key is absent or multivalued and
that has no default makes that one pattern or value match nothing. Substituted values are literal text:
a tag value of `*` is not a wildcard.
"""

from __future__ import annotations

import ipaddress
import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Final, Literal, NoReturn, TypeAlias, TypeVar

from dockyard.domain.errors import DockyardError, ErrorKind

PolicyKind: TypeAlias = Literal["identity", "resource"]
Source: TypeAlias = Literal["identity", "resource", "root"]
ContextValue: TypeAlias = str | tuple[str, ...]

VERSIONS: Final = ("2012-10-17", "2008-10-17")
# AWS treats a policy without a Version as the original 2008 language (no policy variables).
DEFAULT_VERSION: Final = "2008-10-17"
_VARIABLES_VERSION: Final = "2012-10-17"

_POLICY_KEYS: Final = frozenset({"Version", "Id", "Statement"})
_STATEMENT_KEYS: Final = frozenset(
    {
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    }
)
_PRINCIPAL_TYPES: Final = frozenset({"AWS", "Service", "Federated", "CanonicalUser"})

_ACTION_RE: Final = re.compile(r"\*|[A-Za-z0-9*?-]+:[A-Za-z0-9*?]+")
_IDENTITY_SID_RE: Final = re.compile(r"[A-Za-z0-9]*")
_ACCOUNT_RE: Final = re.compile(r"[0-9]{12}")
_PRINCIPAL_ARN_RE: Final = re.compile(
    r"arn:aws[a-z-]*:(?:iam::[0-9]{12}:(?:root|(?:user|role)/[\w+=,.@/-]+)"
    r"|sts::[0-9]{12}:(?:assumed-role|federated-user)/[\w+=,.@/-]+)"
)
_CONDITION_KEY_RE: Final = re.compile(r"[A-Za-z0-9.-]+:.+")
_VARIABLE_RE: Final = re.compile(r"\$\{([^}]*)\}")
_VARIABLE_BODY_RE: Final = re.compile(r"\s*([A-Za-z0-9.-]+:[^\s,']+)\s*(?:,\s*'((?:[^']|'')*)'\s*)?")
_ARN_SEGMENTS: Final = 6
# ECR's wording for a rejected policy text, followed by what is wrong and where.
_CONSTRAINT: Final = "Invalid parameter at 'PolicyText' failed to satisfy constraint"
_DEFAULT_PROBLEM: Final = f"{_CONSTRAINT}: 'Invalid repository policy provided'"

_Raw: TypeAlias = Mapping[str, object]  # a decoded JSON object of the policy document


class PolicyInvalid(DockyardError):
    """A policy document that is not valid JSON or breaks the IAM policy grammar."""

    kind = ErrorKind("DENIED", 400, "InvalidParameterException", _DEFAULT_PROBLEM)


def _show(value: object) -> str:
    """A value as the policy author wrote it (JSON), whatever a decoded document smuggled in."""
    return json.dumps(value, default=repr)


def _invalid(path: str, problem: str) -> NoReturn:
    where = f"{path}: " if path else ""
    raise PolicyInvalid(
        f"{_CONSTRAINT}: '{where}{problem}'",
        detail={"path": path, "problem": problem},
    )


# --- wildcard matching --------------------------------------------------------------------------------------
# Written by hand rather than with fnmatch: fnmatch gives `[...]` a meaning (character classes) that IAM does
# not have, and it follows the platform's case rules, whereas IAM is case-sensitive for ARNs and strings and
# case-insensitive for actions. Here only `*` and `?` are special; every other character is literal.


class _Wild(Enum):
    ANY = "*"  # any run of characters, including none
    ONE = "?"  # exactly one character


_Unit: TypeAlias = str | _Wild  # one literal character, or a wildcard
_Pattern: TypeAlias = tuple[_Unit, ...]


def _compile(text: str) -> _Pattern:
    return tuple(_Wild.ANY if char == "*" else _Wild.ONE if char == "?" else char for char in text)


def _literal(text: str) -> _Pattern:
    return tuple(text)


def _match_units(pattern: _Pattern, text: str) -> bool:
    """Greedy scan in O(len(pattern) * len(text)) worst case, with no recursion.

    On a mismatch we go back to the most recent `*` and let it swallow one more character; earlier stars never
    need revisiting because the later star can absorb anything they could.
    """
    p = t = 0
    star, resume = -1, 0
    while t < len(text):
        unit = pattern[p] if p < len(pattern) else None
        if unit is _Wild.ANY:
            star, resume = p, t
            p += 1
        elif unit is not None and (unit is _Wild.ONE or unit == text[t]):
            p, t = p + 1, t + 1
        elif star >= 0:
            resume += 1
            p, t = star + 1, resume
        else:
            return False
    return all(unit is _Wild.ANY for unit in pattern[p:])


def wildcard_match(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    """Whether `text` matches an IAM pattern where `*` is any run of characters and `?` exactly one."""
    if ignore_case:
        pattern, text = pattern.casefold(), text.casefold()
    return _match_units(_compile(pattern), text)


# --- requests and decisions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestContext:
    """One request to authorise. `context` holds condition keys (case-insensitive names).

    `aws:PrincipalAccount`, `aws:PrincipalArn` and (for IAM users) `aws:username` are derived from the
    principal unless `context` gives them; everything else (`aws:SourceIp`, `aws:SecureTransport`,
    `aws:CurrentTime`, tags) is the caller's to supply. A list value is a multivalued key such as
    `aws:TagKeys`.
    """

    principal_account: str
    principal_arn: str
    action: str
    resource: str
    resource_account: str
    context: Mapping[str, str | Sequence[str]] = field(default_factory=dict, hash=False)
    _values: dict[str, ContextValue] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        values = self._derived()
        for key, value in self.context.items():
            values[key.lower()] = value if isinstance(value, str) else tuple(value)
        # Frozen dataclass: the normalised lookup is computed once, here.
        object.__setattr__(self, "_values", values)

    def _derived(self) -> dict[str, ContextValue]:
        values: dict[str, ContextValue] = {
            "aws:principalaccount": self.principal_account,
            "aws:principalarn": self.principal_arn,
        }
        _, marker, user_path = self.principal_arn.partition(":user/")
        if marker:
            values["aws:username"] = user_path.rsplit("/", 1)[-1]
        return values

    def value(self, key: str) -> ContextValue | None:
        """The value of a condition key, or None when the request does not carry it."""
        return self._values.get(key.lower())

    @property
    def account_arn(self) -> str:
        return f"arn:aws:iam::{self.principal_account}:root"


class Effect(Enum):
    ALLOW = "Allow"
    DENY = "Deny"


class Outcome(Enum):
    ALLOW = "allow"
    EXPLICIT_DENY = "explicit-deny"
    IMPLICIT_DENY = "implicit-deny"


@dataclass(frozen=True)
class Decision:
    """The outcome, and for audit which statement decided it (`source` None: nothing matched)."""

    outcome: Outcome
    sid: str | None = None
    source: Source | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW


# --- policy variables -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Escaped:
    """`${*}`, `${?}` or `${$}`: the character itself, never a wildcard."""

    char: str


@dataclass(frozen=True)
class _Variable:
    key: str
    default: str | None


_Part: TypeAlias = str | _Escaped | _Variable  # a plain str part is policy text, its wildcards live


@dataclass(frozen=True)
class _Template:
    """A policy string, split into text and policy variables to resolve per request."""

    source: str
    parts: tuple[_Part, ...]

    def _resolve(self, part: _Part, request: RequestContext) -> str | None:
        if isinstance(part, _Escaped):
            return part.char
        if isinstance(part, _Variable):
            value = request.value(part.key)
            return value if isinstance(value, str) else part.default
        return part

    def text(self, request: RequestContext) -> str | None:
        """The string with variables substituted, wildcards as plain characters; None if unresolvable."""
        pieces = [self._resolve(part, request) for part in self.parts]
        return None if any(piece is None for piece in pieces) else "".join(filter(None, pieces))

    def pattern(self, request: RequestContext) -> _Pattern | None:
        """The wildcard pattern; only the policy's own text carries wildcards, substituted values do not."""
        units: list[_Unit] = []
        for part in self.parts:
            resolved = self._resolve(part, request)
            if resolved is None:
                return None
            units.extend(_compile(part) if isinstance(part, str) else _literal(resolved))
        return tuple(units)


def _template(text: str, version: str, path: str) -> _Template:
    if version != _VARIABLES_VERSION or "${" not in text:
        return _Template(text, (text,) if text else ())
    parts: list[_Part] = []
    position = 0
    for match in _VARIABLE_RE.finditer(text):
        if match.start() > position:
            parts.append(text[position : match.start()])
        parts.append(_variable(match.group(1), path))
        position = match.end()
    if position < len(text):
        parts.append(text[position:])
    return _Template(text, tuple(parts))


def _variable(body: str, path: str) -> _Escaped | _Variable:
    if body in ("*", "?", "$"):
        return _Escaped(body)
    match = _VARIABLE_BODY_RE.fullmatch(body)
    if match is None:
        _invalid(path, f"malformed policy variable '${{{body}}}'")
    key, default = match.groups()
    return _Variable(key.lower(), None if default is None else default.replace("''", "'"))


# --- condition operators ----------------------------------------------------------------------------------

_Test: TypeAlias = Callable[[_Template, str, RequestContext], bool]
_T = TypeVar("_T")


def _parse_decimal(text: str) -> Decimal | None:
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _parse_date(text: str) -> datetime | None:
    """ISO 8601 (a missing zone means UTC) or epoch seconds, the two forms IAM accepts."""
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _parse_bool(text: str) -> bool | None:
    return {"true": True, "false": False}.get(text.lower())


def _string_equals(value: _Template, actual: str, request: RequestContext) -> bool:
    return value.text(request) == actual


def _string_equals_ignore_case(value: _Template, actual: str, request: RequestContext) -> bool:
    wanted = value.text(request)
    return wanted is not None and wanted.casefold() == actual.casefold()


def _string_like(value: _Template, actual: str, request: RequestContext) -> bool:
    pattern = value.pattern(request)
    return pattern is not None and _match_units(pattern, actual)


def _arn_segments(pattern: _Pattern) -> list[_Pattern]:
    """Split at the first five literal colons: the sixth segment (the resource) may hold colons itself."""
    segments: list[_Pattern] = []
    current: list[_Unit] = []
    for unit in pattern:
        if unit == ":" and len(segments) < _ARN_SEGMENTS - 1:
            segments.append(tuple(current))
            current = []
        else:
            current.append(unit)
    return [*segments, tuple(current)]


def _arn_like(value: _Template, actual: str, request: RequestContext) -> bool:
    # AWS compares each of the six ARN segments separately, so a `*` never spans a colon between segments.
    pattern = value.pattern(request)
    if pattern is None:
        return False
    wanted, given = _arn_segments(pattern), actual.split(":", _ARN_SEGMENTS - 1)
    if len(wanted) != _ARN_SEGMENTS or len(given) != _ARN_SEGMENTS:
        return False
    return all(_match_units(segment, text) for segment, text in zip(wanted, given, strict=True))


def _ip_address(value: _Template, actual: str, request: RequestContext) -> bool:
    network = _parse_network(value.source)
    try:
        address = ipaddress.ip_address(actual)
    except ValueError:
        return False
    return network is not None and address in network


def _bool_equals(value: _Template, actual: str, request: RequestContext) -> bool:
    wanted, given = value.text(request), _parse_bool(actual)
    return wanted is not None and given is not None and given == _parse_bool(wanted)


def _ordered(parse: Callable[[str], _T | None], compare: Callable[[_T, _T], bool]) -> _Test:
    """A test comparing the context value (left) with the policy value (right) after parsing both."""

    def test(value: _Template, actual: str, request: RequestContext) -> bool:
        left, right = parse(actual), parse(value.source)
        return left is not None and right is not None and compare(left, right)

    return test


@dataclass(frozen=True)
class _OperatorSpec:
    """A base operator: its positive test, whether the result is negated, and what policy values it takes."""

    test: _Test
    negated: bool = False
    check: Callable[[str], object] = str
    expects: str = "a string"
    variables: bool = True


def _numeric(compare: Callable[[Decimal, Decimal], bool], negated: bool = False) -> _OperatorSpec:
    return _OperatorSpec(_ordered(_parse_decimal, compare), negated, _parse_decimal, "a number", False)


def _date(compare: Callable[[datetime, datetime], bool], negated: bool = False) -> _OperatorSpec:
    return _OperatorSpec(_ordered(_parse_date, compare), negated, _parse_date, "an ISO 8601 date", False)


_IP = _OperatorSpec(_ip_address, check=_parse_network, expects="an IP address or CIDR", variables=False)

_OPERATORS: Final[Mapping[str, _OperatorSpec]] = {
    "StringEquals": _OperatorSpec(_string_equals),
    "StringNotEquals": _OperatorSpec(_string_equals, negated=True),
    "StringEqualsIgnoreCase": _OperatorSpec(_string_equals_ignore_case),
    "StringNotEqualsIgnoreCase": _OperatorSpec(_string_equals_ignore_case, negated=True),
    "StringLike": _OperatorSpec(_string_like),
    "StringNotLike": _OperatorSpec(_string_like, negated=True),
    "ArnEquals": _OperatorSpec(_arn_like),
    "ArnLike": _OperatorSpec(_arn_like),
    "ArnNotEquals": _OperatorSpec(_arn_like, negated=True),
    "ArnNotLike": _OperatorSpec(_arn_like, negated=True),
    "IpAddress": _IP,
    "NotIpAddress": _OperatorSpec(_ip_address, True, _parse_network, _IP.expects, False),
    "Bool": _OperatorSpec(_bool_equals, check=_parse_bool, expects="true or false"),
    "NumericEquals": _numeric(operator.eq),
    "NumericNotEquals": _numeric(operator.eq, negated=True),
    "NumericLessThan": _numeric(operator.lt),
    "NumericLessThanEquals": _numeric(operator.le),
    "NumericGreaterThan": _numeric(operator.gt),
    "NumericGreaterThanEquals": _numeric(operator.ge),
    "DateEquals": _date(operator.eq),
    "DateNotEquals": _date(operator.eq, negated=True),
    "DateLessThan": _date(operator.lt),
    "DateLessThanEquals": _date(operator.le),
    "DateGreaterThan": _date(operator.gt),
    "DateGreaterThanEquals": _date(operator.ge),
}
_NULL: Final = "Null"
_IF_EXISTS: Final = "IfExists"


class SetOperator(Enum):
    FOR_ANY_VALUE = "ForAnyValue"
    FOR_ALL_VALUES = "ForAllValues"


@dataclass(frozen=True)
class Condition:
    """One key tested by one operator, e.g. `ForAnyValue:StringLike` on `aws:TagKeys`."""

    operator: str
    key: str
    values: tuple[str, ...]
    base: str
    set_operator: SetOperator | None
    if_exists: bool
    _templates: tuple[_Template, ...] = field(repr=False)

    @property
    def _spec(self) -> _OperatorSpec | None:
        return _OPERATORS.get(self.base)

    def holds(self, request: RequestContext) -> bool:
        """Whether the request satisfies this condition; the missing-key rules are in the module docstring."""
        actual = request.value(self.key)
        spec = self._spec
        if spec is None:  # only Null has no spec
            return self._null_holds(actual)
        members = (actual,) if isinstance(actual, str) else actual or ()
        if not members:
            return self._absent_outcome(spec)
        if self.set_operator is None:  # a multivalued key needs a set operator to be tested at all
            return isinstance(actual, str) and self._holds_for(spec, actual, request)
        results = (self._holds_for(spec, member, request) for member in members)
        return any(results) if self.set_operator is SetOperator.FOR_ANY_VALUE else all(results)

    def _absent_outcome(self, spec: _OperatorSpec) -> bool:
        if self.if_exists or self.set_operator is SetOperator.FOR_ALL_VALUES:
            return True
        if self.set_operator is SetOperator.FOR_ANY_VALUE:
            return False
        return spec.negated

    def _holds_for(self, spec: _OperatorSpec, actual: str, request: RequestContext) -> bool:
        matched = any(spec.test(value, actual, request) for value in self._templates)
        return matched != spec.negated

    def _null_holds(self, actual: ContextValue | None) -> bool:
        absent = actual is None or actual == ()
        return any(_parse_bool(value) == absent for value in self.values)


def _split_operator(name: str, path: str) -> tuple[str, SetOperator | None, bool]:
    prefix, colon, rest = name.rpartition(":")
    set_operator = None
    if colon:
        try:
            set_operator = SetOperator(prefix)
        except ValueError:
            _invalid(path, f"unknown set operator '{prefix}' (expected ForAnyValue or ForAllValues)")
    if_exists = rest.endswith(_IF_EXISTS) and rest != _IF_EXISTS
    base = rest.removesuffix(_IF_EXISTS) if if_exists else rest
    if base == _NULL and (set_operator or if_exists):
        _invalid(path, "the Null operator takes no IfExists suffix and no set operator")
    if base != _NULL and base not in _OPERATORS:
        _invalid(path, f"unknown condition operator '{name}'")
    return base, set_operator, if_exists


def _condition_values(raw: object, path: str) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        _invalid(path, "a condition key needs at least one value")
    values: list[str] = []
    for item in items:
        if isinstance(item, bool):  # before int: JSON true is a Python bool, and bool is an int
            values.append("true" if item else "false")
        elif isinstance(item, str | int | float):
            values.append(str(item))
        else:
            _invalid(path, f"condition values must be strings, numbers or booleans, got {_show(item)}")
    return tuple(values)


def _parse_condition(name: str, key: object, raw: object, path: str, version: str) -> Condition:
    base, set_operator, if_exists = _split_operator(name, path)
    if not isinstance(key, str) or not _CONDITION_KEY_RE.fullmatch(key):
        _invalid(path, f"condition key {key!r} must look like 'service:Name'")
    values = _condition_values(raw, f"{path}.{key}")
    spec = _OPERATORS.get(base)
    # Null is the one operator without a spec: its values say whether the key must be absent.
    checker: Callable[[str], object] = spec.check if spec else _parse_bool
    expects = spec.expects if spec else "true or false"
    for value in values:
        if checker(value) is None:
            _invalid(f"{path}.{key}", f"{name} needs {expects}, got {value!r}")
    use_variables = version if spec is not None and spec.variables else DEFAULT_VERSION
    templates = tuple(_template(value, use_variables, f"{path}.{key}") for value in values)
    return Condition(name, key.lower(), values, base, set_operator, if_exists, templates)


def _parse_conditions(raw: object, path: str, version: str) -> tuple[Condition, ...]:
    if not isinstance(raw, dict):
        _invalid(path, "Condition must be an object of operators")
    conditions: list[Condition] = []
    for name, block in raw.items():
        if not isinstance(block, dict):
            _invalid(f"{path}.{name}", "a condition operator must map condition keys to values")
        for key, values in block.items():
            conditions.append(_parse_condition(name, key, values, f"{path}.{name}", version))
    return tuple(conditions)


# --- principals -------------------------------------------------------------------------------------------


class _Reach(Enum):
    """How a statement's principal element reaches the caller."""

    NONE = 0
    ACCOUNT = 1  # only through the caller's account: a delegation the account's own policies must confirm
    DIRECT = 2  # the caller itself (by ARN or "*"); identity-policy statements always reach directly


@dataclass(frozen=True)
class PrincipalSet:
    """The principals a statement names. Service and federated principals never match an IAM caller."""

    everyone: bool
    aws: frozenset[str]
    others: frozenset[str] = frozenset()

    def covers(self, arn: str) -> bool:
        return self.everyone or arn in self.aws


def _aws_principal(entry: str, path: str) -> str:
    if entry == "*":
        return entry
    if _ACCOUNT_RE.fullmatch(entry):
        return f"arn:aws:iam::{entry}:root"
    if _PRINCIPAL_ARN_RE.fullmatch(entry):
        return entry
    _invalid(path, f"AWS principal {entry!r} must be '*', an account id or an IAM ARN without wildcards")


def _parse_principal(raw: object, path: str) -> PrincipalSet:
    if raw == "*":
        return PrincipalSet(everyone=True, aws=frozenset())
    if not isinstance(raw, dict) or not raw:
        _invalid(path, 'must be "*" or an object such as {"AWS": "123456789012"}')
    aws: set[str] = set()
    others: set[str] = set()
    for kind, value in raw.items():
        if kind not in _PRINCIPAL_TYPES:
            _invalid(path, f"unknown principal type {kind!r} (expected one of {sorted(_PRINCIPAL_TYPES)})")
        entries = _strings(value, f"{path}.{kind}")
        if kind == "AWS":
            aws.update(_aws_principal(entry, f"{path}.AWS") for entry in entries)
        else:
            others.update(f"{kind}:{entry}" for entry in entries)
    return PrincipalSet("*" in aws, frozenset(aws - {"*"}), frozenset(others))


# --- statements and policies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """One statement. `resources` is None when a resource policy leaves Resource out (its own resource)."""

    sid: str | None
    effect: Effect
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...] | None
    not_resource: bool
    principal: PrincipalSet | None
    not_principal: bool
    conditions: tuple[Condition, ...]
    _action_patterns: tuple[_Pattern, ...] = field(repr=False, compare=False)
    _resource_templates: tuple[_Template, ...] = field(repr=False, compare=False)

    def covers_action(self, action: str) -> bool:
        """Whether the Action (or NotAction) element covers an action; case-insensitive, as in IAM."""
        folded = action.casefold()
        listed = any(_match_units(pattern, folded) for pattern in self._action_patterns)
        return listed != self.not_action

    def covers_resource(self, request: RequestContext) -> bool:
        if self.resources is None:
            return True
        listed = any(self._resource_matches(template, request) for template in self._resource_templates)
        return listed != self.not_resource

    @staticmethod
    def _resource_matches(template: _Template, request: RequestContext) -> bool:
        pattern = template.pattern(request)
        return pattern is not None and _match_units(pattern, request.resource)

    def reach(self, request: RequestContext, is_root: bool) -> _Reach:
        """How the statement applies to the request: not at all, through the caller's account, or directly."""
        if not (self.covers_action(request.action) and self.covers_resource(request)):
            return _Reach.NONE
        if not all(condition.holds(request) for condition in self.conditions):
            return _Reach.NONE
        return self._principal_reach(request, is_root)

    def _principal_reach(self, request: RequestContext, is_root: bool) -> _Reach:
        if self.principal is None:
            return _Reach.DIRECT
        listed = self.principal.covers

        def hit(arn: str) -> bool:
            return listed(arn) != self.not_principal

        account = request.account_arn
        if hit(account if is_root else request.principal_arn):
            return _Reach.DIRECT
        return _Reach.ACCOUNT if hit(account) else _Reach.NONE


def _strings(raw: object, path: str) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(isinstance(item, str) and item for item in items):
        _invalid(path, "must be a non-empty string or a non-empty list of non-empty strings")
    return tuple(str(item) for item in items)


def _one_of(raw: _Raw, names: tuple[str, str], path: str, required: bool) -> tuple[Any, bool]:
    """The value of exactly one of an element and its Not- form, and whether it was the Not- form."""
    present = [name for name in names if name in raw]
    if len(present) > 1:
        _invalid(path, f"a statement cannot have both {names[0]} and {names[1]}")
    if not present:
        if required:
            _invalid(path, f"a statement needs {names[0]} or {names[1]}")
        return None, False
    return raw[present[0]], present[0] == names[1]


def _parse_actions(raw: _Raw, path: str) -> tuple[tuple[str, ...], bool]:
    value, negated = _one_of(raw, ("Action", "NotAction"), path, required=True)
    element = f"{path}.{'NotAction' if negated else 'Action'}"
    actions = _strings(value, element)
    for action in actions:
        if not _ACTION_RE.fullmatch(action):
            _invalid(element, f"action {action!r} must be '*' or 'service:ActionName'")
    return actions, negated


def _parse_resources(raw: _Raw, path: str, kind: PolicyKind) -> tuple[tuple[str, ...] | None, bool]:
    # A resource policy is attached to its resource, so it may leave Resource out; an identity policy may not.
    value, negated = _one_of(raw, ("Resource", "NotResource"), path, required=kind == "identity")
    if value is None:
        return None, False
    element = f"{path}.{'NotResource' if negated else 'Resource'}"
    resources = _strings(value, element)
    for resource in resources:
        if resource != "*" and not (resource.startswith("arn:") and resource.count(":") >= _ARN_SEGMENTS - 1):
            _invalid(element, f"resource {resource!r} must be '*' or an ARN")
    return resources, negated


def _parse_principals(raw: _Raw, path: str, kind: PolicyKind) -> tuple[PrincipalSet | None, bool]:
    if kind == "identity":
        if "Principal" in raw or "NotPrincipal" in raw:
            _invalid(path, "an identity policy cannot name a Principal; it applies to its own identity")
        return None, False
    value, negated = _one_of(raw, ("Principal", "NotPrincipal"), path, required=True)
    return _parse_principal(value, f"{path}.{'NotPrincipal' if negated else 'Principal'}"), negated


def _parse_sid(raw: _Raw, path: str, kind: PolicyKind) -> str | None:
    sid = raw.get("Sid")
    if sid is None:
        return None
    if not isinstance(sid, str):
        _invalid(f"{path}.Sid", "must be a string")
    # IAM limits identity-policy Sids to letters and digits; resource policies (ECR, S3) accept any text.
    if kind == "identity" and not _IDENTITY_SID_RE.fullmatch(sid):
        _invalid(f"{path}.Sid", f"{sid!r} may contain only letters and digits")
    return sid


def _parse_effect(raw: _Raw, path: str) -> Effect:
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        _invalid(f"{path}.Effect", f"must be 'Allow' or 'Deny', got {_show(effect)}")
    return Effect(effect)


def _parse_statement(raw: object, path: str, kind: PolicyKind, version: str) -> Statement:
    if not isinstance(raw, dict):
        _invalid(path, "a statement must be an object")
    unknown = sorted(set(raw) - _STATEMENT_KEYS)
    if unknown:
        _invalid(path, f"unknown statement element(s) {', '.join(unknown)}")
    sid, effect = _parse_sid(raw, path, kind), _parse_effect(raw, path)
    actions, not_action = _parse_actions(raw, path)
    resources, not_resource = _parse_resources(raw, path, kind)
    principal, not_principal = _parse_principals(raw, path, kind)
    conditions = _parse_conditions(raw.get("Condition", {}), f"{path}.Condition", version)
    templates = tuple(_template(resource, version, f"{path}.Resource") for resource in resources or ())
    return Statement(
        sid=sid,
        effect=effect,
        actions=actions,
        not_action=not_action,
        resources=resources,
        not_resource=not_resource,
        principal=principal,
        not_principal=not_principal,
        conditions=conditions,
        _action_patterns=tuple(_compile(action.casefold()) for action in actions),
        _resource_templates=templates,
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads would silently keep the last of two equal keys; a second "Statement" must not vanish.
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        _invalid("", f"duplicate key(s) {', '.join(duplicates)}")
    return dict(pairs)


def _no_constant(name: str) -> NoReturn:
    _invalid("", f"{name} is not a valid JSON value")


def _load(source: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(source, str):
        try:
            document = json.loads(source, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except json.JSONDecodeError as error:
            _invalid("", f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno})")
        except (ValueError, RecursionError):  # a number of more than 4300 digits; nesting deeper than the stack
            _invalid("", "not valid JSON (a number too long to read, or nesting too deep)")
    else:
        document = source
    if not isinstance(document, Mapping):
        _invalid("", "a policy must be a JSON object")
    return dict(document)


def _parse_version(document: Mapping[str, Any]) -> str:
    version = document.get("Version", DEFAULT_VERSION)
    if version not in VERSIONS:
        _invalid("Version", f"must be one of {', '.join(VERSIONS)}, got {_show(version)}")
    return str(version)


def _statement_list(document: Mapping[str, Any]) -> list[Any]:
    raw = document.get("Statement")
    statements = raw if isinstance(raw, list) else [raw] if isinstance(raw, dict) else None
    if not statements:
        _invalid("Statement", "a policy needs a Statement object or a non-empty list of them")
    return statements


def _check_unique_sids(statements: Iterable[Statement]) -> None:
    seen: set[str] = set()
    for statement in statements:
        if statement.sid:
            if statement.sid in seen:
                _invalid("Statement", f"Sid {statement.sid!r} is used twice; Sids must be unique in a policy")
            seen.add(statement.sid)


@dataclass(frozen=True)
class Policy:
    """A parsed, validated policy document."""

    version: str
    statements: tuple[Statement, ...]
    kind: PolicyKind = "identity"
    id: str | None = None

    @classmethod
    def parse(cls, source: str | Mapping[str, Any], kind: PolicyKind = "identity") -> Policy:
        """Parse JSON text (or an already decoded object); raises PolicyInvalid naming what is wrong."""
        if kind not in ("identity", "resource"):
            raise ValueError(f"kind must be 'identity' or 'resource', not {kind!r}")
        document = _load(source)
        unknown = sorted(set(document) - _POLICY_KEYS)
        if unknown:
            _invalid("", f"unknown top-level element(s) {', '.join(unknown)}")
        policy_id = document.get("Id")
        if policy_id is not None and not isinstance(policy_id, str):
            _invalid("Id", "must be a string")
        version = _parse_version(document)
        statements = tuple(
            _parse_statement(raw, f"Statement[{index}]", kind, version)
            for index, raw in enumerate(_statement_list(document))
        )
        _check_unique_sids(statements)
        return cls(version, statements, kind, policy_id)

    def mentioned_actions(self) -> tuple[str, ...]:
        """Every action pattern the policy names in Action or NotAction, first appearance first."""
        return tuple(dict.fromkeys(action for statement in self.statements for action in statement.actions))

    def covered_actions(self, known: Iterable[str]) -> frozenset[str]:
        """Which of `known` actions some statement covers (expanding `*` and NotAction against the list)."""
        return frozenset(action for action in known if any(s.covers_action(action) for s in self.statements))


# --- evaluation -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hit:
    statement: Statement
    source: Literal["identity", "resource"]
    reach: _Reach

    @property
    def order(self) -> tuple[bool, str, str]:
        # Statement order carries no meaning in IAM; a fixed order keeps the reported Sid deterministic.
        return (self.statement.sid is None, self.statement.sid or "", self.source)


def _hits(
    request: RequestContext,
    identity_policies: Sequence[Policy],
    resource_policy: Policy | None,
    is_root: bool,
) -> list[_Hit]:
    sources: list[tuple[Literal["identity", "resource"], Policy]] = [
        ("identity", policy) for policy in ([] if is_root else identity_policies)
    ]
    if resource_policy is not None:
        sources.append(("resource", resource_policy))
    hits = [
        _Hit(statement, source, statement.reach(request, is_root))
        for source, policy in sources
        for statement in policy.statements
    ]
    return [hit for hit in hits if hit.reach is not _Reach.NONE]


def _decide(outcome: Outcome, hits: Sequence[_Hit]) -> Decision:
    first = min(hits, key=lambda hit: hit.order)
    return Decision(outcome, first.statement.sid, first.source)


def _check_kinds(identity_policies: Sequence[Policy], resource_policy: Policy | None) -> None:
    if any(policy.kind != "identity" for policy in identity_policies):
        raise ValueError("identity_policies must be parsed with kind='identity'")
    if resource_policy is not None and resource_policy.kind != "resource":
        raise ValueError("resource_policy must be parsed with kind='resource'")


def evaluate(
    request: RequestContext,
    identity_policies: Sequence[Policy],
    resource_policy: Policy | None,
    is_root: bool = False,
) -> Decision:
    """Decide a request as AWS does; see the module docstring for the rules."""
    _check_kinds(identity_policies, resource_policy)
    hits = _hits(request, identity_policies, resource_policy, is_root)
    denies = [hit for hit in hits if hit.statement.effect is Effect.DENY]
    if denies:
        return _decide(Outcome.EXPLICIT_DENY, denies)
    identity_allows = [hit for hit in hits if hit.source == "identity"]
    resource_allows = [hit for hit in hits if hit.source == "resource"]
    if request.principal_account == request.resource_account:
        if is_root:
            return Decision(Outcome.ALLOW, None, "root")
        grants = identity_allows + [hit for hit in resource_allows if hit.reach is _Reach.DIRECT]
    else:
        # Cross account: the resource's owner must let the caller in, and the caller's account must let it go.
        grants = resource_allows if resource_allows and (is_root or identity_allows) else []
    return _decide(Outcome.ALLOW, grants) if grants else Decision(Outcome.IMPLICIT_DENY)
