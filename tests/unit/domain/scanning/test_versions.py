"""Version orderings: the spec's tricky cases, upstream conformance pairs, and order properties."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.domain.scanning.versions import (
    APK,
    DPKG,
    PEP440,
    RPM,
    SEMVER,
    VersionError,
    VersionScheme,
    compare_apk,
    compare_dpkg,
    compare_pep440,
    compare_rpm,
    compare_semver,
    parse_dpkg,
    rpmvercmp,
)

_OP = {"<": -1, "=": 0, ">": 1}


def _check(compare: Callable[[str, str], int], left: str, op: str, right: str) -> None:
    assert compare(left, right) == _OP[op], f"{left} {op} {right}"
    assert compare(right, left) == -_OP[op], f"{right} vs {left} (reversed)"


# --- dpkg -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "op", "right"),
    [
        # scanning.md C.1 checks
        ("1.0~rc1", "<", "1.0"),
        ("1.0~~", "<", "1.0~"),
        ("1.0~", "<", "1.0"),
        ("1.001", "=", "1.1"),
        ("2.30", ">", "2.3"),
        ("1.0", "=", "1.0-0"),
        ("1:0.9", ">", "2.0"),
        ("1.0-1", "<", "1.0-1ubuntu1"),
        ("1.0a", "<", "1.0+b1"),
        ("1.0-1~bpo1", "<", "1.0-1"),
        ("1.0+dfsg-1", ">", "1.0-1"),
        ("1.2.3", "<", "1.2.3.0"),
        # more of dpkg's behaviour
        ("0:1.0", "=", "1.0"),
        ("1.0-1", "<", "1.0-2"),
        ("1.0-10", ">", "1.0-9"),
        ("1.0-1+b1", ">", "1.0-1"),
        ("3.0.11-1~deb12u2", "<", "3.0.11-1~deb12u3"),
        ("3.0.11-1~deb12u2", "<", "3.0.11-1"),
        ("1.2.1-2.2+wheezy2", "<", "1.2.1-2.2+wheezy3"),
        ("1.2.1-2.2+wheezy3", "<", "1.2.1-2.2+wheezy3+deb7u1"),
        ("1.0-a", "<", "1.0-b"),
        ("1.0a", ">", "1.0"),
        ("1.0A", "<", "1.0a"),  # ASCII order among letters
        ("1.0+", ">", "1.0a"),  # non-letters sort after letters
        ("1.0.", ">", "1.0"),
        ("1:1.0-1", "<", "2:0.1-1"),
        ("1.0-1-1", ">", "1.0-1"),  # the revision is after the last hyphen
        ("2.0~beta1", "<", "2.0~beta1+git1"),
        ("10", ">", "9"),
        ("007", "=", "7"),
    ],
)
def test_dpkg_order(left: str, op: str, right: str) -> None:
    _check(compare_dpkg, left, op, right)


def test_dpkg_splits_epoch_upstream_and_revision_like_dpkg() -> None:
    version = parse_dpkg("2:1.0-rc1-3ubuntu1")
    assert (version.epoch, version.upstream, version.revision) == (2, "1.0-rc1", "3ubuntu1")
    assert parse_dpkg("1.0").revision == ""


@pytest.mark.parametrize("invalid", ["", "   ", "1.0 2", "a:1.0", ":1.0", "1:", "1.0-", "-1", "99999999999:1.0"])
def test_dpkg_rejects_what_dpkg_rejects(invalid: str) -> None:
    assert not DPKG.is_valid(invalid)
    with pytest.raises(VersionError):
        compare_dpkg(invalid, "1.0")


def test_dpkg_accepts_what_dpkg_only_warns_about() -> None:
    assert DPKG.is_valid("abc")  # dpkg warns "does not start with a digit" but still compares
    assert compare_dpkg("abc", "1.0") > 0


# --- apk --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "op", "right"),
    [
        # scanning.md C.2
        ("1.01", "<", "1.1"),
        ("1.001", "<", "1.01"),
        ("1.0", "<", "1.0.1"),
        ("1.0", "<", "1.0a"),
        ("1.0", "<", "1.0_p1"),
        ("1.0", "<", "1.0-r0"),
        ("1.0-r1", "<", "1.0.1"),
        ("1.0-r1", "<", "1.0_p1"),
        ("1.0_rc1", "<", "1.0"),
        ("1.0a", "<", "1.0.1"),
        ("23_foo", ">", "4_beta"),
        ("1.0", "<", "1.0bc"),
        ("006", ">", "1.0.0"),
        # suffix order alpha < beta < pre < rc < (none) < cvs < svn < git < hg < p
        ("1.0_alpha", "<", "1.0_beta"),
        ("1.0_beta", "<", "1.0_pre"),
        ("1.0_pre", "<", "1.0_rc"),
        ("1.0_rc", "<", "1.0"),
        ("1.0", "<", "1.0_cvs"),
        ("1.0_cvs", "<", "1.0_svn"),
        ("1.0_svn", "<", "1.0_git"),
        ("1.0_git", "<", "1.0_hg"),
        ("1.0_hg", "<", "1.0_p"),
        # pairs from apk-tools' test/version.data (current, with ~hash and leading-zero string sort)
        ("0.1.0_alpha2", ">", "0.1.0_alpha"),
        ("1.1", ">", "1.1_alpha1"),
        ("0.12.3", ">", "0.12"),
        ("2.3.0b-r1", "<", "2.3.0b-r2"),
        ("0.15.1b-r2", ">", "0.15.1b"),
        ("1.7", "<", "1.7b"),
        ("20060720", ">", "3.0.20060720"),
        ("0.01", "<", "0.06"),
        ("4.01", "<", "4.20"),
        ("4.20", ">", "0.20070118"),
        ("1.02.07", "<", "1.02.10-r1"),
        ("1.60-r12", "<", "110-r8"),
        ("0.9.28.1", "<", "087-r1"),
        ("1.06-r6", "<", "006"),
        ("2.2.3-r2", "<", "013"),
        ("1.6d", ">", "1.2.07.8"),
        ("2.12r-r4", "<", "2.12r-r5"),
        ("0.59s-r11", "<", "0.65"),
        ("3.9_pre20060124", ">", "0.01"),
        ("4.5_p1-r1", ">", "4.5_p1"),
        ("1.6.8_p12-r1", ">", "1.6.8_p9-r2"),
        ("2.9.11_pre20051101-r3", ">", "2.9.11_pre20051101"),
        ("0.1.0_alpha_pre2", "<", "0.1.0_alpha"),
        ("1.0_p10-r0", ">", "1.0_p9-r0"),
        ("1.3_pre1-r1", "<", "1.3.2"),
        ("6.0_pre1", "<", "6.0"),
        ("6.0_p1", ">", "6.0"),
        ("8.2.0", "<", "8.2.001"),
        ("8.2.0015", "<", "8.2.002"),
        ("1.0~1234", "<", "1.0~2345"),
        ("1.0~1234-r1", "<", "1.0~2345-r0"),
        ("1.0~1234-r1", ">", "1.0~1234-r0"),
        ("2.16.1-r3", "=", "2.16.1-r3"),
        # the OSV fixtures' fixed versions
        ("0.6.19-r0", "<", "0.6.21-r0"),
        ("10.6.7-r0", "<", "10.6.8-r0"),
        ("10.6.8-r1", ">", "10.6.8-r0"),
    ],
)
def test_apk_order(left: str, op: str, right: str) -> None:
    _check(compare_apk, left, op, right)


@pytest.mark.parametrize(
    "valid", ["1.2", "0.1_pre2", "0.1_pre2~1234abcd", "0.1_p1_pre2", "0.1_alpha1_pre2", "1.0a-r3", "3.1.4-r0"]
)
def test_apk_valid_versions(valid: str) -> None:
    assert APK.is_valid(valid)


@pytest.mark.parametrize(
    "invalid",
    [
        "",
        "0.1bc",
        "0.1a1",
        "0.1a.1",
        "0.1_pre2~",
        "0.1_pre2~1234xbcd",
        "0.1_pre2~1234abcd_pre1",
        "0.1_foobar",
        "0.1-pre1.1",
        "0.1-r",
        "0.1-r2_pre1",
        "0.1-r2-r3",
        ".1",
        "a",
        "-r1",
        "0.1_",
        "0.1__alpha",
        "0.1_1_alpha",
    ],
)
def test_apk_invalid_versions(invalid: str) -> None:
    assert not APK.is_valid(invalid)


# --- RPM --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "op", "right"),
    [
        # scanning.md C.3
        ("1.0_1", "=", "1.0.1"),
        ("1.0~rc1", "<", "1.0"),
        ("1.0", "<", "1.0^git1"),
        ("1.0^git1", "<", "1.0.1"),
        ("1.0.1", ">", "1.0.a"),
        ("1.01", "=", "1.1"),
        ("2.10", ">", "2.9"),
        ("1.0a", ">", "1.0"),
        ("el8_4", ">", "el8"),
        # rpm's own rpmvercmp test table
        ("2.0.1a", ">", "2.0.1"),
        ("5.5p1", "<", "5.5p2"),
        ("5.5p1", "<", "5.5p10"),
        ("10xyz", "<", "10.1xyz"),
        ("xyz10", "<", "xyz10.1"),
        ("xyz.4", "<", "8"),
        ("xyz.4", "<", "2"),
        ("5.5p2", "<", "5.6p1"),
        ("6.0.rc1", ">", "6.0"),
        ("10b2", ">", "10a1"),
        ("1.0a", "<", "1.0aa"),
        ("10.0001", "=", "10.1"),
        ("10.0001", "<", "10.0039"),
        ("4.999.9", "<", "5.0"),
        ("20101121", "<", "20101122"),
        ("2.0", "=", "2_0"),
        ("a+", "=", "a_"),
        ("+a", "=", "_a"),
        ("_+", "=", "_"),
        ("1.0~rc1", "<", "1.0~rc2"),
        ("1.0~rc1~git123", "<", "1.0~rc1"),
        ("1.0^", ">", "1.0"),
        ("1.0^git1", "<", "1.0^git2"),
        ("1.0^git1", "<", "1.01"),
        ("1.0^20160101", "<", "1.0.1"),
        ("1.0^20160102", ">", "1.0^20160101^git1"),
        ("1.0~rc1^git1", ">", "1.0~rc1"),
        ("1.0^git1~pre", "<", "1.0^git1"),
    ],
)
def test_rpmvercmp(left: str, op: str, right: str) -> None:
    _check(rpmvercmp, left, op, right)


@pytest.mark.parametrize(
    ("left", "op", "right"),
    [
        ("1:1.0-1", ">", "2.0-1"),
        ("0:1.0-1", "=", "1.0-1"),
        ("1.0-1.el8", "<", "1.0-1.el9"),
        ("3.0.7-24.el9", "<", "3.0.7-25.el9"),
        ("3.0.7-24.el9", "<", "1:3.0.1-1.el9"),
        ("1.0", "<", "1.0-1"),  # a missing release sorts first (rpm would call these equal; see docstring)
        ("1.2-3.el9_1", ">", "1.2-3.el9"),
    ],
)
def test_rpm_evr_order(left: str, op: str, right: str) -> None:
    _check(compare_rpm, left, op, right)


# --- PEP 440 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "op", "right"),
    [
        # scanning.md C.4 normalisation
        ("1.0ALPHA1", "=", "1.0a1"),
        ("v1.0", "=", "1.0"),
        ("1.0-beta.2", "=", "1.0b2"),
        ("1.0c1", "=", "1.0rc1"),
        ("1.0-preview1", "=", "1.0rc1"),
        ("1.0-r1", "=", "1.0.post1"),
        ("1.0-1", "=", "1.0.post1"),
        ("01.002", "=", "1.2"),
        # ordering
        ("1.0", "=", "1.0.0"),
        ("1!0.1", ">", "2.0"),
        ("1.0.dev1", "<", "1.0a1"),
        ("1.0a1.dev1", "<", "1.0a1"),
        ("1.0a1", "<", "1.0a1.post1"),
        ("1.0a1.post1", "<", "1.0b1"),
        ("1.0b1", "<", "1.0rc1"),
        ("1.0rc1", "<", "1.0"),
        ("1.0", "<", "1.0.post1.dev1"),
        ("1.0.post1.dev1", "<", "1.0.post1"),
        ("1.0", "<", "1.0+local"),
        ("1.0+abc", "<", "1.0+1"),
        ("5.2b1", "<", "5.3"),
        ("5.1", "<", "5.2b1"),
        ("2.10", ">", "2.9"),
        # the fallback: invalid strings sort below every valid version, naturally among themselves
        ("not a version", "<", "0.0.1"),
        ("build-9", "<", "build-10"),
    ],
)
def test_pep440_order(left: str, op: str, right: str) -> None:
    _check(compare_pep440, left, op, right)


def test_pep440_validity_and_canonical_form() -> None:
    assert PEP440.is_valid("2.2.0") and not PEP440.is_valid("2.2.0-SNAPSHOT-x")
    assert PEP440.canonical("2.2.0") == PEP440.canonical("2.2") == "2.2"


# --- SemVer -----------------------------------------------------------------------------------------

_SEMVER_CHAIN = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "2.0.0",
]


@pytest.mark.parametrize(("lower", "higher"), list(itertools.pairwise(_SEMVER_CHAIN)))
def test_semver_precedence_chain(lower: str, higher: str) -> None:
    _check(compare_semver, lower, "<", higher)


@pytest.mark.parametrize(
    ("left", "op", "right"),
    [
        ("1.0.0+build.1", "=", "1.0.0+build.2"),  # build metadata is ignored
        ("v1.2.3", "=", "1.2.3"),  # Go's prefix
        ("1.0.0-1", "<", "1.0.0-a"),  # numeric identifiers sort below alphanumeric ones
        ("1.0.0-2", "<", "1.0.0-10"),
        ("0.0.0-20240101120000-abcdef123456", "<", "0.0.0"),  # a Go pseudo-version is a pre-release
        ("1.0.0+incompatible", "=", "1.0.0"),
        ("10.0.0", ">", "9.0.0"),
    ],
)
def test_semver_order(left: str, op: str, right: str) -> None:
    _check(compare_semver, left, op, right)


@pytest.mark.parametrize("invalid", ["1.0", "01.0.0", "1.0.0-", "x.y.z", ""])
def test_semver_rejects_invalid(invalid: str) -> None:
    assert not SEMVER.is_valid(invalid)
    with pytest.raises(VersionError):
        compare_semver(invalid, "1.0.0")


# --- order properties -------------------------------------------------------------------------------

_dpkg_versions = st.from_regex(r"([0-9]{1,2}:)?[0-9][0-9A-Za-z.+~]{0,7}(-[0-9A-Za-z.+~]{1,5})?", fullmatch=True)
_apk_versions = st.one_of(
    st.from_regex(
        r"[0-9]{1,3}(\.[0-9]{1,3}){0,3}[a-z]?(_(alpha|beta|pre|rc|p|git|cvs)[0-9]{0,2}){0,2}(~[0-9a-f]{1,3})?(-r[0-9]{1,2})?",
        fullmatch=True,
    ),
    st.text(alphabet="0123456789._-~abprz", max_size=10),  # mostly invalid: compared up to the first bad token
)
_rpm_versions = st.from_regex(r"([0-9]:)?[0-9A-Za-z.~^_+]{1,8}(-[0-9A-Za-z.~^_]{1,6})?", fullmatch=True)
_pep440_versions = st.one_of(
    st.from_regex(
        r"([0-9]!)?[0-9]{1,2}(\.[0-9]{1,2}){0,3}((a|b|rc)[0-9]{1,2})?(\.post[0-9])?(\.dev[0-9])?(\+[a-z0-9]{1,3}(\.[a-z0-9]{1,3})?)?",
        fullmatch=True,
    ),
    st.text(alphabet="0123456789.abcdevpostr-_+!x ", max_size=10),  # includes invalid ones: the fallback
)
_semver_versions = st.from_regex(
    r"(0|[1-9][0-9]?)\.(0|[1-9][0-9]?)\.(0|[1-9][0-9]?)(-(0|[1-9][0-9]?|[a-z][a-z0-9]{0,3})(\.(0|[1-9]|[a-z]{1,3})){0,2})?(\+[a-z0-9]{1,4})?",
    fullmatch=True,
)


def _assert_total_preorder(scheme: VersionScheme, versions: list[str]) -> None:
    compare = scheme.compare
    for a in versions:
        assert compare(a, a) == 0
        for b in versions:
            result = compare(a, b)
            assert result in (-1, 0, 1)
            assert compare(b, a) == -result  # antisymmetric
    ordered = sorted(versions, key=functools.cmp_to_key(compare))
    for i, lower in enumerate(ordered):  # transitive: a sort by the comparator leaves no pair inverted
        for higher in ordered[i + 1 :]:
            assert compare(lower, higher) <= 0, (lower, higher, ordered)


@pytest.mark.parametrize(
    ("scheme", "strategy"),
    [
        (DPKG, _dpkg_versions),
        (APK, _apk_versions),
        (RPM, _rpm_versions),
        (PEP440, _pep440_versions),
        (SEMVER, _semver_versions),
    ],
    ids=["dpkg", "apk", "rpm", "pep440", "semver"],
)
def test_ordering_is_a_total_preorder(scheme: VersionScheme, strategy: st.SearchStrategy[str]) -> None:
    @given(st.lists(strategy, min_size=2, max_size=8))
    def check(versions: list[str]) -> None:
        _assert_total_preorder(scheme, versions)

    check()


@pytest.mark.parametrize("scheme", [DPKG, APK, RPM, PEP440, SEMVER], ids=lambda scheme: scheme.name)
def test_scheme_key_sorts(scheme: VersionScheme) -> None:
    versions = {"dpkg": ["1.0-1", "1.0~rc1-1", "1:0.1-1"], "apk": ["1.0-r1", "1.0_rc1", "1.0.1"]}.get(
        scheme.name, ["1.0.0", "0.9.0", "1.0.1"]
    )
    ordered = sorted(versions, key=scheme.key)
    assert all(scheme.compare(a, b) <= 0 for a, b in itertools.pairwise(ordered))
