"""Version orderings of the ecosystems the scanner matches: dpkg, apk, RPM, PEP 440 and SemVer 2.0.

Every `compare_*` function returns -1, 0 or 1 and is a total preorder on the strings it accepts. A
`VersionScheme` bundles one ordering with the validity check the matcher runs first: a version the
ecosystem's own tool would refuse must make a package *unscannable*, never *not vulnerable*.

What is written by hand here, and why no library is used for it:
- dpkg: a port of dpkg's `verrevcmp` and `parseversion` (lib/dpkg/version.c, parsehelp.c). python-debian
  re-derives the order by pairing digit/non-digit runs and silently switches to python-apt's `apt_pkg`
  whenever that is importable, so its answers would depend on the host.
- apk: a port of apk-tools' current tokenizer (src/version.c with `~hash` and the string sort of
  leading-zero components); no Python library implements it.
- RPM: a port of `rpmvercmp` (rpmio/rpmvercmp.c, with `~` and `^`) and of rpm's EVR split; the only
  PyPI port (rpm-vercmp) is unmaintained since 2018 and predates `^`.
- PEP 440: `packaging.version`; only the fallback order for invalid strings is ours.
- SemVer 2.0: the `semver` library; only the `v`/`=` prefix stripping is ours.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import semver
from packaging.utils import canonicalize_version
from packaging.version import InvalidVersion, Version


class VersionError(ValueError):
    """A version string the ecosystem's grammar cannot order."""


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


def _identity(version: str) -> str:
    return version


@dataclass(frozen=True)
class VersionScheme:
    """One ecosystem's ordering, its validity check and the canonical form used for exact matches."""

    name: str
    compare: Callable[[str, str], int]
    is_valid: Callable[[str], bool]
    canonical: Callable[[str], str] = _identity

    def key(self, version: str) -> Any:
        """A sort key, for `sorted(versions, key=scheme.key)`."""
        return functools.cmp_to_key(self.compare)(version)

    def check(self, version: str) -> None:
        if not self.is_valid(version):
            raise VersionError(f"{version!r} is not a valid {self.name} version")


# --- dpkg -------------------------------------------------------------------------------------------

_ASCII_DIGITS: Final = frozenset("0123456789")
_DPKG_EPOCH_MAX: Final = 2**31 - 1  # dpkg refuses epochs above INT_MAX


@dataclass(frozen=True)
class DpkgVersion:
    epoch: int
    upstream: str
    revision: str


@functools.lru_cache(maxsize=65536)
def parse_dpkg(version: str) -> DpkgVersion:
    """Split `[epoch:]upstream[-revision]` the way dpkg's parseversion does, raising on its errors.

    dpkg's mere warnings (upstream not starting with a digit, odd characters) are accepted, as dpkg
    itself still compares such versions.
    """
    text = version.strip(" \t")
    if not text:
        raise VersionError("version string is empty")
    if " " in text or "\t" in text:
        raise VersionError(f"version {version!r} has embedded spaces")
    epoch = 0
    if ":" in text:
        head, _, text = text.partition(":")
        if not head or not set(head) <= _ASCII_DIGITS:
            raise VersionError(f"epoch in version {version!r} is not a number")
        epoch = int(head)
        if epoch > _DPKG_EPOCH_MAX:
            raise VersionError(f"epoch in version {version!r} is too big")
        if not text:
            raise VersionError(f"nothing after colon in version {version!r}")
    upstream, hyphen, revision = text.rpartition("-")
    if not hyphen:
        upstream, revision = text, ""
    elif not revision:
        raise VersionError(f"revision number is empty in {version!r}")
    if not upstream:
        raise VersionError(f"version number is empty in {version!r}")
    return DpkgVersion(epoch, upstream, revision)


def _dpkg_order(char: str) -> int:
    """dpkg's character weight: `~` < end of string (and digits) < letters < everything else."""
    if char in _ASCII_DIGITS:
        return 0
    if char.isascii() and char.isalpha():
        return ord(char)
    if char == "~":
        return -1
    # Non-ASCII never appears in a valid version; dpkg's weight depends on the C `char` signedness of the
    # platform, and this is the unsigned-char answer.
    return ord(char) + 256


def verrevcmp(a: str, b: str) -> int:
    """dpkg's verrevcmp, step for step: alternate non-digit runs (by weight) and digit runs (numerically)."""
    i, j, len_a, len_b = 0, 0, len(a), len(b)
    while i < len_a or j < len_b:
        while (i < len_a and a[i] not in _ASCII_DIGITS) or (j < len_b and b[j] not in _ASCII_DIGITS):
            weight_a = _dpkg_order(a[i]) if i < len_a else 0
            weight_b = _dpkg_order(b[j]) if j < len_b else 0
            if weight_a != weight_b:
                return _sign(weight_a - weight_b)
            i, j = i + 1, j + 1
        while i < len_a and a[i] == "0":
            i += 1
        while j < len_b and b[j] == "0":
            j += 1
        first_diff = 0
        while i < len_a and j < len_b and a[i] in _ASCII_DIGITS and b[j] in _ASCII_DIGITS:
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i, j = i + 1, j + 1
        if i < len_a and a[i] in _ASCII_DIGITS:
            return 1
        if j < len_b and b[j] in _ASCII_DIGITS:
            return -1
        if first_diff:
            return _sign(first_diff)
    return 0


def compare_dpkg(a: str, b: str) -> int:
    """Order two Debian/Ubuntu versions like `dpkg --compare-versions`; raises VersionError on invalid ones."""
    left, right = parse_dpkg(a), parse_dpkg(b)
    if left.epoch != right.epoch:
        return _sign(left.epoch - right.epoch)
    return verrevcmp(left.upstream, right.upstream) or verrevcmp(left.revision, right.revision)


def _dpkg_valid(version: str) -> bool:
    try:
        parse_dpkg(version)
    except VersionError:
        return False
    return True


# --- apk --------------------------------------------------------------------------------------------

# Token kinds in apk-tools' order; the order matters when two versions run out differently.
_INITIAL_DIGIT, _DIGIT, _LETTER, _SUFFIX, _SUFFIX_NO, _COMMIT_HASH, _REVISION_NO, _END, _INVALID = range(9)
_SUFFIX_NONE: Final = 5
_APK_SUFFIXES: Final = {"alpha": 1, "beta": 2, "pre": 3, "rc": 4, "cvs": 6, "svn": 7, "git": 8, "hg": 9, "p": 10}
_DIGITS_RE: Final = re.compile(r"[0-9]+")
_LOWER_RE: Final = re.compile(r"[a-z]+")
_LOWER_HEX_RE: Final = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class _ApkToken:
    kind: int
    text: str = ""
    number: int = 0
    suffix: int = 0


def _run(pattern: re.Pattern[str], text: str, pos: int) -> str:
    match = pattern.match(text, pos)
    return match.group() if match else ""


def _apk_digits(kind: int, version: str, pos: int) -> tuple[_ApkToken, int]:
    # apk-tools reads these into a uint64; Python's ints differ only past 20 digits.
    text = _run(_DIGITS_RE, version, pos)
    if not text:
        return _ApkToken(_INVALID), pos
    return _ApkToken(kind, text, int(text)), pos + len(text)


def _apk_next(previous: int, version: str, pos: int) -> tuple[_ApkToken, int]:
    """apk-tools' token_next: the next token's kind from its first character, checked against the previous."""
    if pos >= len(version):
        return _ApkToken(_END), pos
    char = version[pos]
    if "a" <= char <= "z":
        return (_ApkToken(_LETTER, char), pos + 1) if previous <= _DIGIT else (_ApkToken(_INVALID), pos)
    if char == "." or "0" <= char <= "9":
        if char == ".":
            if previous > _DIGIT:
                return _ApkToken(_INVALID), pos
            pos += 1
        if previous in (_INITIAL_DIGIT, _DIGIT):
            return _apk_digits(_DIGIT, version, pos)
        if previous == _SUFFIX:
            return _apk_digits(_SUFFIX_NO, version, pos)
        return _ApkToken(_INVALID), pos
    if char == "_" and previous <= _SUFFIX_NO:
        name = _run(_LOWER_RE, version, pos + 1)
        suffix = _APK_SUFFIXES.get(name, 0)
        return (_ApkToken(_SUFFIX, name, suffix=suffix), pos + 1 + len(name)) if suffix else (_ApkToken(_INVALID), pos)
    if char == "~" and previous < _COMMIT_HASH:
        digest = _run(_LOWER_HEX_RE, version, pos + 1)
        return (_ApkToken(_COMMIT_HASH, digest), pos + 1 + len(digest)) if digest else (_ApkToken(_INVALID), pos)
    if char == "-" and previous < _REVISION_NO and version.startswith("-r", pos):
        return _apk_digits(_REVISION_NO, version, pos + 2)
    return _ApkToken(_INVALID), pos


def _apk_tokens(version: str) -> Iterator[_ApkToken]:
    """Tokens up to and including the first END or INVALID."""
    token, pos = _apk_digits(_INITIAL_DIGIT, version, 0)
    while True:
        yield token
        if token.kind >= _END:
            return
        token, pos = _apk_next(token.kind, version, pos)


def _apk_token_cmp(a: _ApkToken, b: _ApkToken) -> int:
    """apk-tools' token_cmp for two tokens of the same kind."""
    if a.kind == _DIGIT and (a.text.startswith("0") or b.text.startswith("0")):
        return _bytes_cmp(a.text, b.text)  # Gentoo's rule: a leading zero makes it a fraction, sort as text
    if a.kind in (_INITIAL_DIGIT, _DIGIT, _SUFFIX_NO, _REVISION_NO):
        return _sign(a.number - b.number)
    if a.kind == _SUFFIX:
        return _sign(a.suffix - b.suffix)
    return _bytes_cmp(a.text, b.text)  # letters and commit hashes


def _bytes_cmp(a: str, b: str) -> int:
    return (a > b) - (a < b)


def compare_apk(a: str, b: str) -> int:
    """Order two Alpine versions like `apk version -t`; invalid strings compare up to their first bad token."""
    for left, right in zip(_apk_tokens(a), _apk_tokens(b), strict=False):
        if left.kind != right.kind:
            return _apk_tail_cmp(left, right)
        if left.kind >= _END:
            return 0
        result = _apk_token_cmp(left, right)
        if result:
            return result
    return 0  # unreachable: both streams end with END or INVALID


def _apk_tail_cmp(left: _ApkToken, right: _ApkToken) -> int:
    """Equal so far, different token kinds next: a pre-release suffix loses, else the later kind loses."""
    if left.kind == _SUFFIX and left.suffix < _SUFFIX_NONE:
        return -1
    if right.kind == _SUFFIX and right.suffix < _SUFFIX_NONE:
        return 1
    return _sign(right.kind - left.kind)


@functools.lru_cache(maxsize=65536)
def _apk_valid(version: str) -> bool:
    return all(token.kind != _INVALID for token in _apk_tokens(version))


# --- RPM --------------------------------------------------------------------------------------------


def _rpm_separator(char: str) -> bool:
    return not (char.isascii() and char.isalnum()) and char not in "~^"


def _rpm_segment(text: str, pos: int, numeric: bool) -> int:
    end = pos
    while end < len(text) and text[end].isascii() and (text[end].isdigit() if numeric else text[end].isalpha()):
        end += 1
    return end


def rpmvercmp(a: str, b: str) -> int:
    """rpm's rpmvercmp: `~` sorts before anything, `^` after the end but before anything else."""
    if a == b:
        return 0
    i, j = 0, 0
    while i < len(a) or j < len(b):
        while i < len(a) and _rpm_separator(a[i]):
            i += 1
        while j < len(b) and _rpm_separator(b[j]):
            j += 1
        char_a, char_b = a[i : i + 1], b[j : j + 1]
        if char_a == "~" or char_b == "~":
            if char_a != "~":
                return 1
            if char_b != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if char_a == "^" or char_b == "^":
            if not char_a:
                return -1
            if not char_b:
                return 1
            if char_a != "^":
                return 1
            if char_b != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not (char_a and char_b):
            break
        numeric = char_a.isdigit()
        end_a, end_b = _rpm_segment(a, i, numeric), _rpm_segment(b, j, numeric)
        if end_b == j:
            return 1 if numeric else -1  # numeric segments are newer than alpha ones
        segment_a, segment_b = a[i:end_a], b[j:end_b]
        if numeric:
            segment_a, segment_b = segment_a.lstrip("0"), segment_b.lstrip("0")
            if len(segment_a) != len(segment_b):
                return 1 if len(segment_a) > len(segment_b) else -1
        if segment_a != segment_b:
            return 1 if segment_a > segment_b else -1
        i, j = end_a, end_b
    if i >= len(a) and j >= len(b):
        return 0
    return 1 if i < len(a) else -1


@dataclass(frozen=True)
class RpmVersion:
    epoch: int
    version: str
    release: str


@functools.lru_cache(maxsize=65536)
def parse_rpm(evr: str) -> RpmVersion:
    """rpm's EVR split: digits before a `:` are the epoch, text after the last `-` the release."""
    digits = len(evr) - len(evr.lstrip("0123456789"))
    epoch, rest = 0, evr
    if evr[digits : digits + 1] == ":":
        epoch, rest = int(evr[:digits] or "0"), evr[digits + 1 :]
    version, hyphen, release = rest.rpartition("-")
    if not hyphen:
        version, release = rest, ""
    return RpmVersion(epoch, version, release)


def compare_rpm(a: str, b: str) -> int:
    """Order two `[epoch:]version[-release]` strings the way rpm does.

    rpm itself skips the release comparison when either side lacks one; that is not a total order
    (`1.0 == 1.0-1`, `1.0 == 1.0-2`, yet `1.0-1 < 1.0-2`), so a missing release here counts as empty,
    which sorts before any release. Installed packages and OSV `fixed` versions always carry a release.
    """
    left, right = parse_rpm(a), parse_rpm(b)
    if left.epoch != right.epoch:
        return _sign(left.epoch - right.epoch)
    return rpmvercmp(left.version, right.version) or rpmvercmp(left.release, right.release)


def _rpm_valid(version: str) -> bool:
    return bool(parse_rpm(version).version)


# --- PEP 440 ----------------------------------------------------------------------------------------

_NATURAL_RE: Final = re.compile(r"[0-9]+|[^0-9]+")


@functools.lru_cache(maxsize=65536)
def _pep440(version: str) -> Version | None:
    try:
        return Version(version)
    except InvalidVersion:
        return None


def _natural_key(version: str) -> tuple[tuple[int, int, str], ...]:
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in _NATURAL_RE.findall(version.lower())
    )


def compare_pep440(a: str, b: str) -> int:
    """Order two Python package versions by PEP 440.

    Fallback (ours): a string that is not PEP 440 sorts below every valid version, as setuptools'
    LegacyVersion did, and such strings order among themselves naturally (digit runs as numbers). The
    matcher never relies on the fallback: it checks validity first.
    """
    left, right = _pep440(a), _pep440(b)
    if left is not None and right is not None:
        return (left > right) - (left < right)
    if left is not None or right is not None:
        return 1 if left is not None else -1
    key_a, key_b = _natural_key(a), _natural_key(b)
    return (key_a > key_b) - (key_a < key_b)


def _pep440_valid(version: str) -> bool:
    return _pep440(version) is not None


def _pep440_canonical(version: str) -> str:
    # `1.0 == 1.0.0` under PEP 440, so exact-version lists are compared in canonical, zero-stripped form.
    return canonicalize_version(version, strip_trailing_zero=True) if _pep440_valid(version) else version


# --- SemVer -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=65536)
def parse_semver(version: str) -> semver.Version:
    """A SemVer 2.0 version; a leading `v` (Go) or `=` (npm) is dropped first."""
    text = version.strip()
    if text[:1] in ("v", "="):
        text = text[1:]
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError) as exc:
        raise VersionError(f"{version!r} is not a valid SemVer version") from exc


def compare_semver(a: str, b: str) -> int:
    """SemVer 2.0 precedence: build metadata ignored, a pre-release sorts before its release."""
    return _sign(parse_semver(a).compare(parse_semver(b)))


def _semver_valid(version: str) -> bool:
    try:
        parse_semver(version)
    except VersionError:
        return False
    return True


def _semver_canonical(version: str) -> str:
    return str(parse_semver(version).replace(build=None)) if _semver_valid(version) else version


DPKG: Final = VersionScheme("dpkg", compare_dpkg, _dpkg_valid)
APK: Final = VersionScheme("apk", compare_apk, _apk_valid)
RPM: Final = VersionScheme("rpm", compare_rpm, _rpm_valid)
PEP440: Final = VersionScheme("PEP 440", compare_pep440, _pep440_valid, _pep440_canonical)
SEMVER: Final = VersionScheme("SemVer", compare_semver, _semver_valid, _semver_canonical)
