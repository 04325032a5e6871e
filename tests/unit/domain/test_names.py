"""Digests, repository names, tags and registry hosts, checked against independent reference parsers."""

from __future__ import annotations

import hashlib
import string
from itertools import groupby

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dockyard.domain.errors import DigestInvalid, DigestUnsupported, NameInvalid, TagInvalid
from dockyard.domain.names import (
    MAX_INT64,
    Digest,
    check_repository_name,
    check_tag,
    is_digest_reference,
    parse_decimal,
    registry_from_host,
)

HEX_LENGTH = {"sha256": 64, "sha512": 128}
LOWER_HEX = "0123456789abcdef"
ALNUM = string.ascii_lowercase + string.digits


def hex_of(length: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=LOWER_HEX, min_size=length, max_size=length)


valid_digests = st.sampled_from(sorted(HEX_LENGTH)).flatmap(
    lambda algorithm: hex_of(HEX_LENGTH[algorithm]).map(lambda encoded: f"{algorithm}:{encoded}")
)

# ------------------------------------------------------------------------------------------ digests


@given(valid_digests)
def test_digest_round_trips(text: str) -> None:
    digest = Digest.parse(text)
    assert str(digest) == text
    assert (digest.algorithm, digest.hex) == tuple(text.split(":"))


@given(valid_digests)
def test_uppercase_hex_is_invalid(text: str) -> None:
    assume(any(c in "abcdef" for c in text.split(":")[1]))
    algorithm, encoded = text.split(":")
    with pytest.raises(DigestInvalid):
        Digest.parse(f"{algorithm}:{encoded.upper()}")


@given(st.sampled_from(sorted(HEX_LENGTH)), st.integers(min_value=1, max_value=200), st.data())
def test_wrong_length_is_invalid(algorithm: str, length: int, data: st.DataObject) -> None:
    assume(length != HEX_LENGTH[algorithm])
    with pytest.raises(DigestInvalid):
        Digest.parse(f"{algorithm}:{data.draw(hex_of(length))}")


@given(st.from_regex(r"[a-z0-9]+([+._-][a-z0-9]+)*", fullmatch=True), hex_of(64))
def test_unknown_algorithm_is_unsupported(algorithm: str, encoded: str) -> None:
    assume(algorithm not in HEX_LENGTH)
    with pytest.raises(DigestUnsupported):
        Digest.parse(f"{algorithm}:{encoded}")


@given(st.one_of(st.text(max_size=140), valid_digests, valid_digests.map(lambda d: d[:-1] + "G")))
def test_parse_accepts_exactly_the_reference_grammar(text: str) -> None:
    algorithm, _, encoded = text.partition(":")
    expected = algorithm in HEX_LENGTH and len(encoded) == HEX_LENGTH[algorithm] and set(encoded) <= set(LOWER_HEX)
    try:
        Digest.parse(text)
    except (DigestInvalid, DigestUnsupported):
        assert not expected
    else:
        assert expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256",
        "sha256:",
        ":" + "0" * 64,
        "SHA256:" + "0" * 64,
        "sha256:" + "0" * 64 + "\n",
        " sha256:" + "0" * 64,
        "sha256:" + "0" * 63 + "g",
        "sha256::" + "0" * 64,
    ],
)
def test_malformed_digests_are_invalid(text: str) -> None:
    with pytest.raises((DigestInvalid, DigestUnsupported)):
        Digest.parse(text)


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_digest_of_matches_hashlib(algorithm: str) -> None:
    assert str(Digest.of(b"abc", algorithm)) == f"{algorithm}:{hashlib.new(algorithm, b'abc').hexdigest()}"


def test_digests_order_and_compare_by_value() -> None:
    low, high = Digest("sha256", "0" * 64), Digest("sha256", "f" * 64)
    assert sorted([high, low]) == [low, high]
    assert Digest.parse(str(low)) == low


@pytest.mark.parametrize(("reference", "expected"), [("latest", False), ("sha256:abc", True), ("a:b", True)])
def test_digest_reference_is_anything_with_a_colon(reference: str, expected: bool) -> None:
    assert is_digest_reference(reference) is expected


# ------------------------------------------------------------------------------------------ names


def reference_component_ok(component: str) -> bool:
    """A name component without regexes: alphanumeric runs joined by '.', '_', '__' or a run of '-'."""
    if not component or component[0] not in ALNUM or component[-1] not in ALNUM:
        return False
    for is_alnum, run in groupby(component, key=lambda c: c in ALNUM):
        separator = "".join(run)
        if not is_alnum and separator not in (".", "_", "__") and set(separator) != {"-"}:
            return False
    return True


def reference_name_ok(name: str) -> bool:
    return 2 <= len(name) <= 256 and all(reference_component_ok(c) for c in name.split("/"))


def accepts_name(name: str) -> bool:
    try:
        return check_repository_name(name) == name
    except NameInvalid:
        return False


alnum_runs = st.text(alphabet="ab09", min_size=1, max_size=4)
separators = st.one_of(st.sampled_from([".", "_", "__"]), st.text(alphabet="-", min_size=1, max_size=3))


@st.composite
def valid_names(draw: st.DrawFn) -> str:
    """Names built from the grammar's parts (valid by construction, up to the length limits)."""
    components = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        parts = [draw(alnum_runs)]
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            parts += [draw(separators), draw(alnum_runs)]
        components.append("".join(parts))
    return "/".join(components)


names = st.one_of(st.text(alphabet="ab09._-/A", max_size=14), valid_names())


@given(names)
def test_name_check_agrees_with_reference(name: str) -> None:
    assert accepts_name(name) == reference_name_ok(name)


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("a", False),
        ("ab", True),
        ("a" * 256, True),
        ("a" * 257, False),
        ("a/" * 127 + "ab", True),
        ("a/" * 128 + "a", False),
        ("a__b", True),
        ("a___b", False),
        ("a---b", True),
        ("a.-b", False),
        ("a/b/", False),
        ("/a/b", False),
        ("A/b", False),
        ("ab\n", False),
    ],
)
def test_name_boundaries(name: str, valid: bool) -> None:
    assert accepts_name(name) is valid


# ------------------------------------------------------------------------------------------ tags

TAG_FIRST = string.ascii_letters + string.digits + "_"
TAG_REST = TAG_FIRST + ".-"


def reference_tag_ok(tag: str) -> bool:
    return 1 <= len(tag) <= 128 and tag[0] in TAG_FIRST and all(c in TAG_REST for c in tag[1:])


def accepts_tag(tag: str) -> bool:
    try:
        return check_tag(tag) == tag
    except TagInvalid:
        return False


@given(st.one_of(st.text(alphabet="aZ9_.-+:/é\n", max_size=12), st.text(alphabet="a.", min_size=120, max_size=140)))
def test_tag_check_agrees_with_reference(tag: str) -> None:
    assert accepts_tag(tag) == reference_tag_ok(tag)


@pytest.mark.parametrize(
    ("tag", "valid"),
    [
        ("", False),
        ("a", True),
        ("_", True),
        ("-a", False),
        (".a", False),
        ("a" * 128, True),
        ("a" * 129, False),
        ("V1.0_rc-1", True),
        ("latest\n", False),
    ],
)
def test_tag_boundaries(tag: str, valid: bool) -> None:
    assert accepts_tag(tag) is valid


# ------------------------------------------------------------------------------------------ hosts


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("123456789012.dkr.ecr.us-east-1.example.com", ("123456789012", "us-east-1")),
        ("123456789012.dkr.ecr.eu-west-3.localhost:5000", ("123456789012", "eu-west-3")),
        ("000000000000.dkr.ecr.us-gov-west-1.amazonaws.com", ("000000000000", "us-gov-west-1")),
        ("localhost:5000", None),
        ("127.0.0.1:5000", None),
        ("", None),
        ("12345678901.dkr.ecr.us-east-1.example.com", None),
        ("1234567890123.dkr.ecr.us-east-1.example.com", None),
        ("123456789012.dkr.ecr.notaregion.example.com", None),
        ("123456789012.dkr.ecr.us-east-1", None),
        ("123456789012.dkr.ecr.us-east-1.example.com:port", None),
        ("x123456789012.dkr.ecr.us-east-1.example.com", None),
    ],
)
def test_registry_from_host(host: str, expected: tuple[str, str] | None) -> None:
    assert registry_from_host(host) == expected


@given(
    st.text(alphabet=string.digits, min_size=12, max_size=12),
    st.lists(st.text(alphabet="abcxyz", min_size=1, max_size=5), min_size=1, max_size=3),
    st.integers(min_value=0, max_value=99),
    st.sampled_from(["example.com", "localhost:5000", "registry.internal:443"]),
)
def test_registry_host_round_trips(account: str, words: list[str], number: int, domain: str) -> None:
    region = "-".join(["us", *words, str(number)])
    assert registry_from_host(f"{account}.dkr.ecr.{region}.{domain}") == (account, region)


# ------------------------------------------------------------------------------------------ bounded integers


@given(st.integers(min_value=0, max_value=MAX_INT64), st.integers(min_value=0, max_value=5000))
def test_parse_decimal_reads_every_64_bit_count(value: int, zeros: int) -> None:
    assert parse_decimal("0" * zeros + str(value)) == value


@given(st.integers(min_value=MAX_INT64 + 1, max_value=10**4000))
def test_parse_decimal_refuses_numbers_beyond_64_bits(value: int) -> None:
    assert parse_decimal(str(value)) is None


@given(st.text(max_size=12))
def test_parse_decimal_takes_only_ascii_digits(text: str) -> None:
    """Unicode digits (`²`, Arabic-Indic) pass str.isdigit() but are no decimal number on the wire."""
    parsed = parse_decimal(text)
    if text and all(c in string.digits for c in text):
        assert parsed == int(text)
    else:
        assert parsed is None


def test_parse_decimal_is_bounded_before_int() -> None:
    """int() raises beyond 4300 digits: the bound must come first."""
    assert parse_decimal("9" * 5000) is None
    assert parse_decimal("0" * 5000) == 0
