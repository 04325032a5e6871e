"""OSV advisories: parsing, ecosystems, range evaluation, severity, the bulk-zip reader and a lookup index.

Records are parsed into frozen dataclasses once, when the offline database is loaded; matching then only
walks tuples. Unknown fields are ignored (newer OSV schema minors only add fields).
"""

from __future__ import annotations

import functools
import json
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import IO, Any, Final, Literal

import cvss  # type: ignore[import-untyped]  # no py.typed; wrapped in typed functions below
from packaging.utils import canonicalize_name

from dockyard.domain.scanning.versions import APK, DPKG, PEP440, RPM, SEMVER, VersionError, VersionScheme

EventKind = Literal["introduced", "fixed", "last_affected", "limit"]
EVENT_KINDS: Final[tuple[EventKind, ...]] = ("introduced", "fixed", "last_affected", "limit")
# At equal versions the later kind wins, so `introduced X, fixed X` is an empty window.
_EVENT_RANK: Final[Mapping[str, int]] = {"introduced": 0, "last_affected": 1, "fixed": 2, "limit": 3}
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})

MAX_RECORD_BYTES: Final = 16 * 1024 * 1024  # the largest real OSV records are a few hundred KiB


class OsvFormatError(ValueError):
    """A record (or archive) that does not follow the OSV schema closely enough to be trusted."""


# --- records ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    kind: EventKind
    version: str


@dataclass(frozen=True)
class Range:
    type: str  # ECOSYSTEM, SEMVER or GIT (others are kept but never evaluated)
    events: tuple[Event, ...]
    repo: str | None = None


@dataclass(frozen=True)
class AffectedPackage:
    ecosystem: str
    name: str
    purl: str | None = None

    @functools.cached_property
    def normalized_name(self) -> str:
        return normalize_name(self.ecosystem, self.name)


@dataclass(frozen=True)
class SeverityScore:
    type: str  # CVSS_V2, CVSS_V3, CVSS_V4 or Ubuntu
    score: str


@dataclass(frozen=True)
class Affected:
    package: AffectedPackage
    ranges: tuple[Range, ...] = ()
    versions: tuple[str, ...] = ()
    severity: tuple[SeverityScore, ...] = ()
    ecosystem_specific: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, compare=False)
    database_specific: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, compare=False)

    @functools.cached_property
    def listed_versions(self) -> frozenset[str]:
        """The explicit versions, raw and in the ecosystem's canonical form (`1.0` and `1.0.0` for PyPI)."""
        scheme = scheme_for(self.package.ecosystem)
        canonical = {scheme.canonical(version) for version in self.versions} if scheme else set()
        return frozenset(self.versions) | canonical


@dataclass(frozen=True)
class Reference:
    type: str
    url: str


@dataclass(frozen=True)
class OsvRecord:
    id: str
    modified: str
    published: str | None = None
    withdrawn: str | None = None
    aliases: tuple[str, ...] = ()
    upstream: tuple[str, ...] = ()
    related: tuple[str, ...] = ()
    summary: str = ""
    details: str = ""
    severity: tuple[SeverityScore, ...] = ()
    affected: tuple[Affected, ...] = ()
    references: tuple[Reference, ...] = ()
    database_specific: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, compare=False)
    schema_version: str = "1.0.0"

    @property
    def ids(self) -> tuple[str, ...]:
        """This record's id and its aliases: the same vulnerability under every name (never `upstream`)."""
        return (self.id, *self.aliases)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _texts(value: Any) -> tuple[str, ...]:
    return tuple(item for item in value if isinstance(item, str)) if isinstance(value, list) else ()


def _objects(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _frozen(value: Any) -> Mapping[str, Any]:
    return MappingProxyType(dict(value)) if isinstance(value, dict) else _EMPTY


def _parse_event(data: dict[str, Any]) -> Event:
    kinds = [kind for kind in EVENT_KINDS if kind in data]
    if len(kinds) != 1 or not isinstance(data[kinds[0]], str) or not data[kinds[0]]:
        raise OsvFormatError(f"a range event must hold exactly one version: {data!r}")
    return Event(kinds[0], data[kinds[0]])


def _parse_range(data: dict[str, Any]) -> Range:
    kind = _text(data.get("type"))
    if not kind:
        raise OsvFormatError("a range without a type")
    return Range(kind, tuple(_parse_event(event) for event in _objects(data.get("events"))), _text(data.get("repo")))


def _parse_severity(value: Any) -> tuple[SeverityScore, ...]:
    scores = ((_text(item.get("type")), _text(item.get("score"))) for item in _objects(value))
    return tuple(SeverityScore(kind, score) for kind, score in scores if kind and score)


def _parse_affected(data: dict[str, Any]) -> Affected | None:
    package = data.get("package")
    if not isinstance(package, dict):
        return None  # GIT-only entries without a package say nothing about installed packages
    ecosystem, name = _text(package.get("ecosystem")), _text(package.get("name"))
    if not ecosystem or not name:
        return None
    return Affected(
        package=AffectedPackage(ecosystem, name, _text(package.get("purl"))),
        ranges=tuple(_parse_range(item) for item in _objects(data.get("ranges"))),
        versions=_texts(data.get("versions")),
        severity=_parse_severity(data.get("severity")),
        ecosystem_specific=_frozen(data.get("ecosystem_specific")),
        database_specific=_frozen(data.get("database_specific")),
    )


def parse_record(data: Any) -> OsvRecord:
    """One OSV record from its decoded JSON; raises OsvFormatError when it cannot be trusted."""
    if not isinstance(data, dict) or not _text(data.get("id")):
        raise OsvFormatError("an OSV record must be an object with an id")
    affected = (_parse_affected(item) for item in _objects(data.get("affected")))
    references = ((_text(item.get("type")), _text(item.get("url"))) for item in _objects(data.get("references")))
    return OsvRecord(
        id=data["id"],
        modified=_text(data.get("modified")) or "",
        published=_text(data.get("published")),
        withdrawn=_text(data.get("withdrawn")),
        aliases=_texts(data.get("aliases")),
        upstream=_texts(data.get("upstream")),
        related=_texts(data.get("related")),
        summary=_text(data.get("summary")) or "",
        details=_text(data.get("details")) or "",
        severity=_parse_severity(data.get("severity")),
        affected=tuple(entry for entry in affected if entry is not None),
        references=tuple(Reference(kind or "WEB", url) for kind, url in references if url),
        database_specific=_frozen(data.get("database_specific")),
        schema_version=_text(data.get("schema_version")) or "1.0.0",
    )


def parse_record_json(raw: bytes | str) -> OsvRecord:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise OsvFormatError(f"not JSON: {exc}") from exc
    return parse_record(data)


def parse_timestamp(text: str) -> datetime | None:
    """An RFC 3339 timestamp (`Z` or offset, optional fraction) as an aware datetime; None if unreadable."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- ecosystems -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ecosystem:
    """An OSV ecosystem string: `Debian:12` is release `12` of `Debian`; `Ubuntu:22.04:LTS` keeps `22.04:LTS`."""

    name: str
    release: str | None = None

    @classmethod
    def parse(cls, text: str) -> Ecosystem:
        name, colon, release = text.partition(":")
        return cls(name, release if colon else None)

    def __str__(self) -> str:
        return self.name if self.release is None else f"{self.name}:{self.release}"


_SCHEMES: Final[Mapping[str, VersionScheme]] = {
    "Debian": DPKG,
    "Ubuntu": DPKG,
    "Alpine": APK,
    "Wolfi": APK,
    "Chainguard": APK,
    "Red Hat": RPM,
    "Rocky Linux": RPM,
    "AlmaLinux": RPM,
    "openSUSE": RPM,
    "SUSE": RPM,
    "PyPI": PEP440,
    "npm": SEMVER,
    "crates.io": SEMVER,
    "Go": SEMVER,
}


@functools.lru_cache(maxsize=1024)  # a database names a few hundred ecosystems at most
def scheme_for(ecosystem: str) -> VersionScheme | None:
    """The version ordering of an OSV ecosystem (release qualifiers ignored), None when we have none."""
    return _SCHEMES.get(Ecosystem.parse(ecosystem).name)


@functools.lru_cache(maxsize=65536)
def normalize_name(ecosystem: str, name: str) -> str:
    """The name as the ecosystem compares it: PEP 503 for PyPI (`Jinja2` is `jinja2`), verbatim elsewhere."""
    return str(canonicalize_name(name)) if Ecosystem.parse(ecosystem).name == "PyPI" else name


# --- range evaluation -------------------------------------------------------------------------------


_SENTINELS: Final = frozenset({("introduced", "0"), ("limit", "*")})


def _check_event(event: Event, scheme: VersionScheme) -> None:
    """Event versions must be orderable too; `introduced: 0` and `limit: *` are the spec's sentinels."""
    if (event.kind, event.version) not in _SENTINELS:
        scheme.check(event.version)


def _event_cmp(a: Event, b: Event, scheme: VersionScheme) -> int:
    a_zero, b_zero = a.version == "0" and a.kind == "introduced", b.version == "0" and b.kind == "introduced"
    order = (b_zero - a_zero) if a_zero or b_zero else scheme.compare(a.version, b.version)
    return order or (_EVENT_RANK[a.kind] - _EVENT_RANK[b.kind])


def _fires(event: Event, version: str, scheme: VersionScheme) -> bool:
    """Whether walking up to `version` passes this event (OSV's evaluation, one event at a time)."""
    if event.kind == "introduced":
        return event.version == "0" or scheme.compare(version, event.version) >= 0
    if event.kind == "fixed":
        return scheme.compare(version, event.version) >= 0
    if event.kind == "last_affected":
        return scheme.compare(version, event.version) > 0
    return False


def range_affects(rng: Range, version: str, scheme: VersionScheme) -> bool:
    """OSV's range evaluation; raises VersionError when `version` or an event cannot be ordered.

    Sorting the events and walking them leaves the state of the last event that fired, i.e. the greatest
    firing event; finding that maximum directly needs no sort and works on unsorted records as well.
    """
    scheme.check(version)
    limits: list[str] = []
    last: Event | None = None
    for event in rng.events:
        _check_event(event, scheme)
        if event.kind == "limit":
            limits.append(event.version)
        elif _fires(event, version, scheme) and (last is None or _event_cmp(event, last, scheme) > 0):
            last = event
    if limits and not any(limit == "*" or scheme.compare(version, limit) < 0 for limit in limits):
        return False
    return last is not None and last.kind == "introduced"


def _listed(affected: Affected, version: str, scheme: VersionScheme | None) -> bool:
    if version in affected.listed_versions:
        return True
    return scheme is not None and scheme.canonical(version) in affected.listed_versions


def affected_contains(affected: Affected, version: str) -> bool:
    """Whether `version` of the affected package is vulnerable: listed explicitly, or inside a range.

    Raises VersionError when an ECOSYSTEM/SEMVER range cannot be evaluated (unknown ordering, invalid
    version): the caller must then report the package as unscannable, never as not vulnerable.
    """
    scheme = scheme_for(affected.package.ecosystem)
    if affected.versions and _listed(affected, version, scheme):
        return True
    for rng in affected.ranges:
        if rng.type == "GIT":
            continue  # commit ranges describe source trees, not installed packages
        range_scheme = SEMVER if rng.type == "SEMVER" else scheme if rng.type == "ECOSYSTEM" else None
        if range_scheme is None:
            raise VersionError(f"no ordering for {rng.type} ranges of {affected.package.ecosystem}")
        if range_affects(rng, version, range_scheme):
            return True
    return False


def affected_entries(record: OsvRecord, ecosystem: str, name: str) -> tuple[Affected, ...]:
    """The record's `affected` entries about this exact (release-qualified) ecosystem and package name."""
    wanted = normalize_name(ecosystem, name)
    return tuple(
        entry
        for entry in record.affected
        if entry.package.ecosystem == ecosystem and entry.package.normalized_name == wanted
    )


# --- severity ---------------------------------------------------------------------------------------


class Severity(StrEnum):
    """ECR's FindingSeverity values."""

    INFORMATIONAL = "INFORMATIONAL"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"
    UNDEFINED = "UNDEFINED"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK: Final[Mapping[Severity, int]] = {
    Severity.UNDEFINED: 0,
    Severity.INFORMATIONAL: 1,
    Severity.LOW: 2,
    Severity.MEDIUM: 3,
    Severity.HIGH: 4,
    Severity.CRITICAL: 5,
}

# Words distributions and databases rate with: GHSA (MODERATE), Red Hat (important), Debian urgency
# (unimportant, low**), Ubuntu priority (negligible). Anything else ("not yet assigned", "untriaged",
# "end-of-life") says nothing, so the next source decides. Negligible maps to INFORMATIONAL as ECR's
# Clair-era basic scanning did.
_RATINGS: Final[Mapping[str, Severity]] = {
    "critical": Severity.CRITICAL,
    "high": Severity.HIGH,
    "important": Severity.HIGH,
    "moderate": Severity.MEDIUM,
    "medium": Severity.MEDIUM,
    "low": Severity.LOW,
    "negligible": Severity.INFORMATIONAL,
    "unimportant": Severity.INFORMATIONAL,
}


def rating_severity(word: str) -> Severity | None:
    return _RATINGS.get(word.strip().rstrip("*").strip().lower())


_V3_BANDS: Final = (
    (Decimal("9.0"), Severity.CRITICAL),
    (Decimal("7.0"), Severity.HIGH),
    (Decimal("4.0"), Severity.MEDIUM),
    (Decimal("0.1"), Severity.LOW),
)
_V2_BANDS: Final = ((Decimal("7.0"), Severity.HIGH), (Decimal("4.0"), Severity.MEDIUM))


@dataclass(frozen=True)
class CvssScore:
    version: str  # "2.0", "3.0", "3.1" or "4.0"
    vector: str
    base_score: Decimal

    @property
    def severity(self) -> Severity:
        """NVD's bands: v3/v4 0.1-3.9 LOW … 9.0-10 CRITICAL (0.0 is none); v2 stops at HIGH from 7.0."""
        bands, floor = (_V2_BANDS, Severity.LOW) if self.version == "2.0" else (_V3_BANDS, Severity.INFORMATIONAL)
        return next((level for threshold, level in bands if self.base_score >= threshold), floor)

    @property
    def score_text(self) -> str:
        return f"{self.base_score:.1f}"


def _one_decimal(score: Any) -> Decimal:
    # CVSS 3 scores come back as Decimal, CVSS 4 ones as float; base scores have one decimal place.
    return Decimal(str(score)).quantize(Decimal("0.1"))


@functools.lru_cache(maxsize=4096)  # the same few thousand vectors recur across a whole database
def cvss_score(kind: str, vector: str) -> CvssScore | None:
    """The base score of an OSV severity vector (computed by the `cvss` library); None if unreadable."""
    text = vector.strip()
    try:
        if kind == "CVSS_V3" and text.startswith(("CVSS:3.0/", "CVSS:3.1/")):
            return CvssScore(text[5:8], text, _one_decimal(cvss.CVSS3(text).base_score))
        if kind == "CVSS_V4" and text.startswith("CVSS:4.0/"):
            return CvssScore("4.0", text, _one_decimal(cvss.CVSS4(text).base_score))
        if kind == "CVSS_V2":
            text = text.strip("()").removeprefix("CVSS:2.0/")
            return CvssScore("2.0", text, _one_decimal(cvss.CVSS2(text).base_score))
    except (cvss.CVSSError, ValueError, KeyError, IndexError, ArithmeticError):
        return None
    return None


@dataclass(frozen=True)
class SeverityEvidence:
    """What the advisory data says about severity, by source, highest precedence first."""

    distribution: Severity | None = None
    database: Severity | None = None
    cvss3: CvssScore | None = None
    cvss4: CvssScore | None = None
    cvss2: CvssScore | None = None

    @property
    def severity(self) -> Severity:
        """Distribution rating, else `database_specific.severity`, else CVSS v3 → v4 → v2 bands."""
        for level in (self.distribution, self.database):
            if level is not None:
                return level
        for score in (self.cvss3, self.cvss4, self.cvss2):
            if score is not None:
                return score.severity
        return Severity.UNDEFINED


def _first_score(scores: Iterable[SeverityScore], kind: str) -> CvssScore | None:
    parsed = (cvss_score(item.type, item.score) for item in scores if item.type == kind)
    return next((score for score in parsed if score is not None), None)


def _distribution_rating(affected: Affected, scores: Sequence[SeverityScore]) -> Severity | None:
    words = [item.score for item in scores if item.type == "Ubuntu"]
    for specific in (affected.ecosystem_specific, affected.database_specific):
        urgency = specific.get("urgency")  # Debian's tracker urgency
        if isinstance(urgency, str):
            words.append(urgency)
    return _highest(rating_severity(word) for word in words)


def _highest(levels: Iterable[Severity | None]) -> Severity | None:
    known = [level for level in levels if level is not None]
    return max(known, key=lambda level: level.rank) if known else None


def severity_evidence(record: OsvRecord, affected: Affected) -> SeverityEvidence:
    """The evidence for one matched `affected` entry (its own `severity` replaces the record's, per OSV)."""
    scores = affected.severity or record.severity
    database = [record.database_specific.get("severity"), affected.database_specific.get("severity")]
    return SeverityEvidence(
        distribution=_distribution_rating(affected, scores),
        database=_highest(rating_severity(word) for word in database if isinstance(word, str)),
        cvss3=_first_score(scores, "CVSS_V3"),
        cvss4=_first_score(scores, "CVSS_V4"),
        cvss2=_first_score(scores, "CVSS_V2"),
    )


def merge_evidence(items: Sequence[SeverityEvidence]) -> SeverityEvidence:
    """Evidence of several aliases of one vulnerability: the highest rating per source, the first scores."""
    if len(items) == 1:
        return items[0]
    return SeverityEvidence(
        distribution=_highest(item.distribution for item in items),
        database=_highest(item.database for item in items),
        cvss3=next((item.cvss3 for item in items if item.cvss3), None),
        cvss4=next((item.cvss4 for item in items if item.cvss4), None),
        cvss2=next((item.cvss2 for item in items if item.cvss2), None),
    )


# --- bulk data --------------------------------------------------------------------------------------


def iter_zip_records(
    source: str | os.PathLike[str] | IO[bytes],
    *,
    max_record_bytes: int = MAX_RECORD_BYTES,
    on_error: Callable[[str, Exception], None] | None = None,
) -> Iterator[OsvRecord]:
    """Stream the records of an OSV `all.zip`, one member at a time.

    Only the central directory and one record are in memory at once. A bad record is passed to
    `on_error(member name, error)` and skipped; without `on_error` it raises OsvFormatError.
    """
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise OsvFormatError(f"not a readable zip archive: {exc}") from exc
    with archive:
        for info in archive.infolist():
            if info.is_dir() or not info.filename.endswith(".json"):
                continue
            try:
                yield parse_record_json(_read_member(archive, info, max_record_bytes))
            except (OsvFormatError, zipfile.BadZipFile, OSError, EOFError) as exc:
                if on_error is None:
                    raise OsvFormatError(f"{info.filename}: {exc}") from exc
                on_error(info.filename, exc)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    if info.file_size > limit:
        raise OsvFormatError(f"{info.file_size} bytes, over the {limit}-byte limit for one record")
    with archive.open(info) as member:
        data = member.read(limit + 1)  # the declared size is not trusted: a zip bomb lies about it
    if len(data) > limit:
        raise OsvFormatError(f"more than {limit} bytes, over the limit for one record")
    return data


class AdvisoryIndex:
    """Records by (release-qualified ecosystem, normalised package name): the scanner's lookup callable."""

    def __init__(self, records: Iterable[OsvRecord] = ()) -> None:
        self._by_package: dict[tuple[str, str], list[OsvRecord]] = {}
        self._count = 0
        self.newest_modified: datetime | None = None
        for record in records:
            self.add(record)

    def add(self, record: OsvRecord) -> None:
        """Index a record under every package it affects; withdrawn records are left out."""
        if record.withdrawn:
            return
        keys = {(entry.package.ecosystem, entry.package.normalized_name) for entry in record.affected}
        for key in keys:
            self._by_package.setdefault(key, []).append(record)
        self._count += 1
        modified = parse_timestamp(record.modified)
        if modified is not None and (self.newest_modified is None or modified > self.newest_modified):
            self.newest_modified = modified

    def lookup(self, ecosystem: str, name: str) -> tuple[OsvRecord, ...]:
        return tuple(self._by_package.get((ecosystem, normalize_name(ecosystem, name)), ()))

    def __call__(self, ecosystem: str, name: str) -> tuple[OsvRecord, ...]:
        return self.lookup(ecosystem, name)

    def __len__(self) -> int:
        return self._count
