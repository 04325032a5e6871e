"""From an inventory and OSV advisories to ECR's basic-scan findings.

The output mirrors DescribeImageScanFindings' `imageScanFindings.findings` items (ImageScanFinding:
name, description, uri, severity, attributes[{key, value}]) and `findingSeverityCounts`. One finding is
one vulnerability in one installed package: advisories that are aliases of each other (PYSEC-2018-28 and
GHSA-x84v-xcm2-53pg are both CVE-2018-18074) become a single finding named after the CVE.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dockyard.domain.scanning.inventory import Inventory, Package
from dockyard.domain.scanning.osv import (
    Affected,
    Ecosystem,
    OsvRecord,
    Severity,
    affected_contains,
    affected_entries,
    merge_evidence,
    severity_evidence,
)
from dockyard.domain.scanning.versions import VersionError

Lookup = Callable[[str, str], Iterable[OsvRecord]]
"""(release-qualified OSV ecosystem, package name) -> the advisories about that package."""

_CVE_RE: Final = re.compile(r"CVE-([0-9]{4})-([0-9]+)")
_TRACKERS: Final = {
    "Debian": "https://security-tracker.debian.org/tracker/{}",
    "Ubuntu": "https://ubuntu.com/security/{}",
    "Alpine": "https://security.alpinelinux.org/vuln/{}",
}
_MAX_ATTRIBUTE_VALUE: Final = 256  # ECR's AttributeValue length limit
_MAX_REASONS: Final = 3

_Hit = tuple[OsvRecord, Affected]


@dataclass(frozen=True)
class Attribute:
    key: str
    value: str


@dataclass(frozen=True)
class Finding:
    name: str
    description: str
    uri: str
    severity: Severity
    attributes: tuple[Attribute, ...]
    package: Package
    advisory_ids: tuple[str, ...]  # the OSV records merged into this finding

    def to_ecr(self) -> dict[str, Any]:
        """An ImageScanFinding as the ECR API returns it."""
        return {
            "name": self.name,
            "description": self.description,
            "uri": self.uri,
            "severity": str(self.severity),
            "attributes": [{"key": item.key, "value": item.value} for item in self.attributes],
        }


@dataclass(frozen=True)
class Unscannable:
    """A package whose advisories could not be evaluated: it is neither vulnerable nor clean."""

    package: Package
    reason: str


@dataclass(frozen=True)
class ScanFindings:
    findings: tuple[Finding, ...]
    unscannable: tuple[Unscannable, ...]
    scanned_packages: int
    # (OSV ecosystem, package count) for the image's ecosystems the advisory database holds nothing about:
    # those packages were not evaluated, so the findings are not the image's whole story.
    uncovered: tuple[tuple[str, int], ...] = ()

    @property
    def severity_counts(self) -> dict[str, int]:
        """ECR's findingSeverityCounts: only the severities that occur, most severe first."""
        counts = Counter(finding.severity for finding in self.findings)
        return {str(level): counts[level] for level in sorted(counts, key=lambda level: -level.rank)}

    def to_ecr(self) -> dict[str, Any]:
        """The `findings` and `findingSeverityCounts` members of ECR's ImageScanFindings."""
        return {
            "findings": [finding.to_ecr() for finding in self.findings],
            "findingSeverityCounts": self.severity_counts,
        }


def match_inventory(inventory: Inventory, lookup: Lookup) -> ScanFindings:
    return match_packages(inventory.packages, lookup)


def match_packages(packages: Iterable[Package], lookup: Lookup) -> ScanFindings:
    """Every advisory affecting every package, de-duplicated by alias, most severe first."""
    findings: dict[tuple[str, str, str], Finding] = {}
    unscannable: list[Unscannable] = []
    scanned = 0
    for package in packages:
        hits, reasons = _hits(package, lookup)
        if reasons:
            unscannable.append(Unscannable(package, "; ".join(reasons[:_MAX_REASONS])))
        else:
            scanned += 1
        for group in _alias_groups(hits):
            finding = _finding(package, group)
            # The same package installed twice (two site-packages) is one finding, as ECR lists it.
            findings.setdefault((finding.name, package.name, package.version), finding)
    ordered = sorted(findings.values(), key=lambda item: (-item.severity.rank, item.name, item.package.name))
    return ScanFindings(tuple(ordered), tuple(unscannable), scanned)


def _hits(package: Package, lookup: Lookup) -> tuple[list[_Hit], list[str]]:
    """The (record, affected entry) pairs that affect the package, and why some could not be evaluated."""
    if package.ecosystem is None:
        return [], ["no OSV ecosystem is known for this operating system release"]
    hits: dict[str, _Hit] = {}
    reasons: dict[str, None] = {}
    for name in package.lookup_names:
        for record in lookup(package.ecosystem, name):
            if record.withdrawn or record.id in hits:
                continue
            try:
                entry = _affecting_entry(record, package.ecosystem, name, package.lookup_version)
            except VersionError as exc:
                reasons[str(exc)] = None
                continue
            if entry is not None:
                hits[record.id] = (record, entry)
    return list(hits.values()), list(reasons)


def _affecting_entry(record: OsvRecord, ecosystem: str, name: str, version: str) -> Affected | None:
    """The first entry saying `version` is affected; raises VersionError only if none does and one failed."""
    error: VersionError | None = None
    for entry in affected_entries(record, ecosystem, name):
        try:
            if affected_contains(entry, version):
                return entry
        except ValueError as exc:  # VersionError, or int() refusing a number of more than 4,300 digits
            error = exc if isinstance(exc, VersionError) else VersionError(f"version {version!r}: {exc}")
    if error is not None:
        raise error
    return None


def _alias_groups(hits: Sequence[_Hit]) -> list[list[_Hit]]:
    """Hits whose ids or aliases connect them (aliases are symmetric and transitive), as groups."""
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            parent[name] = parent[parent[name]]  # path halving keeps the chains short
            name = parent[name]
        return name

    for record, _ in hits:
        for alias in record.aliases:
            parent[root(alias)] = root(record.id)
    groups: dict[str, list[_Hit]] = {}
    for hit in hits:
        groups.setdefault(root(hit[0].id), []).append(hit)
    return list(groups.values())


def _cve_key(name: str) -> tuple[int, int]:
    match = _CVE_RE.fullmatch(name)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _finding_name(group: Sequence[_Hit]) -> str:
    """The CVE id when any record or alias has one (the name ECR reports), else the first record id."""
    names = {name for record, _ in group for name in record.ids}
    cves = sorted((name for name in names if _CVE_RE.fullmatch(name)), key=_cve_key)
    return cves[0] if cves else min(record.id for record, _ in group)


def _primary_first(group: Sequence[_Hit], name: str) -> list[_Hit]:
    """The record named like the finding first, then records with text, then by id."""
    if len(group) == 1:
        return list(group)
    return sorted(group, key=lambda hit: (hit[0].id != name, not (hit[0].details or hit[0].summary), hit[0].id))


def _uri(name: str, ecosystem: str, records: Sequence[OsvRecord]) -> str:
    tracker = _TRACKERS.get(Ecosystem.parse(ecosystem).name)
    if tracker and _CVE_RE.fullmatch(name):
        return tracker.format(name)
    for record in records:
        for reference in record.references:
            if reference.type == "ADVISORY":
                return reference.url
    return f"https://osv.dev/vulnerability/{records[0].id}"


def _attribute(key: str, value: str) -> Attribute:
    return Attribute(key, value[:_MAX_ATTRIBUTE_VALUE])


def _finding(package: Package, group: Sequence[_Hit]) -> Finding:
    name = _finding_name(group)
    ordered = _primary_first(group, name)
    records = [record for record, _ in ordered]
    evidence = merge_evidence([severity_evidence(record, entry) for record, entry in ordered])
    attributes = [_attribute("package_name", package.name), _attribute("package_version", package.version)]
    for label, score in (("CVSS2", evidence.cvss2), ("CVSS3", evidence.cvss3)):
        if score is not None:
            attributes += [_attribute(f"{label}_SCORE", score.score_text), _attribute(f"{label}_VECTOR", score.vector)]
    return Finding(
        name=name,
        description=next((text for record in records if (text := (record.details or record.summary).strip())), ""),
        uri=_uri(name, package.ecosystem or "", records),
        severity=evidence.severity,
        attributes=tuple(attributes),
        package=package,
        advisory_ids=tuple(sorted(record.id for record in records)),
    )
