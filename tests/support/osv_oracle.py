"""The findings a scan must report, computed from the OSV fixture records without Dockyard's scanning code.

Kept deliberately plain: the records are read with `json`, ranges are walked as the OSV schema describes
(events sorted by version; `introduced` opens, `fixed` and `last_affected` close), `versions` lists are
honoured, and versions are ordered by independent means: dpkg's own `dpkg --compare-versions`, the
`packaging` library for PEP 440, and small comparators for the plain forms used in the test images (npm
`X.Y.Z`, apk `X.Y.Z-rN`), which refuse anything else rather than guess. Advisories that are aliases of one
another are one finding, named by its CVE id, as ECR names findings.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.scan_images import Installed

OSV_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "osv"
ECOSYSTEM_ZIPS = ("PyPI", "npm", "Debian", "Alpine")
_CVE = re.compile(r"CVE-(\d{4})-(\d+)")
_PLAIN_SEMVER = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_PLAIN_APK = re.compile(r"(\d+(?:\.\d+)*)-r(\d+)")

Finding = tuple[str, str, str]  # (name, package_name, package_version)


def load_records(root: Path = OSV_FIXTURES) -> list[dict[str, Any]]:
    """Every record of the fixture zips, as JSON documents."""
    records = []
    for name in ECOSYSTEM_ZIPS:
        with zipfile.ZipFile(root / f"{name}-all.zip") as archive:
            members = [member for member in archive.namelist() if member.endswith(".json")]
            records.extend(json.loads(archive.read(member)) for member in members)
    return records


@functools.cache
def _dpkg_compare(left: str, right: str) -> int:
    def holds(relation: str) -> bool:
        result = subprocess.run(
            ["dpkg", "--compare-versions", left, relation, right], capture_output=True, timeout=10, check=False
        )
        return result.returncode == 0

    return -1 if holds("lt") else 0 if holds("eq") else 1


def _key_compare(key: Callable[[str], Any]) -> Callable[[str, str], int]:
    def compare(left: str, right: str) -> int:
        a, b = key(left), key(right)
        return (a > b) - (a < b)

    return compare


def _semver_key(version: str) -> tuple[int, ...]:
    match = _PLAIN_SEMVER.fullmatch(version)
    if match is None:
        raise ValueError(f"the oracle only orders plain X.Y.Z npm versions, not {version!r}")
    return tuple(int(part) for part in match.groups())


def _apk_key(version: str) -> tuple[tuple[int, ...], int]:
    match = _PLAIN_APK.fullmatch(version)
    if match is None:
        raise ValueError(f"the oracle only orders plain X.Y.Z-rN apk versions, not {version!r}")
    return tuple(int(part) for part in match.group(1).split(".")), int(match.group(2))


def comparator(ecosystem: str) -> Callable[[str, str], int]:
    base = ecosystem.split(":", 1)[0]
    if base in ("Debian", "Ubuntu"):
        return _dpkg_compare
    if base == "Alpine":
        return _key_compare(_apk_key)
    if base == "PyPI":
        return _key_compare(Version)
    if base == "npm":
        return _key_compare(_semver_key)
    raise ValueError(f"no comparator for {ecosystem}")


def _normalise(ecosystem: str, name: str) -> str:
    return canonicalize_name(name) if ecosystem == "PyPI" else name


def _in_range(events: list[dict[str, str]], version: str, compare: Callable[[str, str], int]) -> bool:
    def position(event: dict[str, str]) -> tuple[int, Any]:
        ((_, value),) = event.items()
        return (0, 0) if value == "0" else (1, functools.cmp_to_key(compare)(value))

    affected = False
    for event in sorted(events, key=position):
        ((kind, value),) = event.items()
        if kind == "introduced" and (value == "0" or compare(version, value) >= 0):
            affected = True
        elif kind in ("fixed", "last_affected"):
            order = compare(version, value)  # `fixed` is the first safe version, `last_affected` the last bad one
            if order > 0 or (order == 0 and kind == "fixed"):
                affected = False
    return affected


def affects(record: dict[str, Any], package: Installed) -> bool:
    if record.get("withdrawn"):
        return False
    compare = comparator(package.ecosystem)
    wanted = _normalise(package.ecosystem, package.osv_name)
    for entry in record.get("affected") or []:
        named = entry.get("package", {})
        if named.get("ecosystem") != package.ecosystem or _normalise(package.ecosystem, named["name"]) != wanted:
            continue
        if any(compare(package.osv_version, listed) == 0 for listed in entry.get("versions") or []):
            return True
        for events in (r["events"] for r in entry.get("ranges") or [] if r["type"] in ("ECOSYSTEM", "SEMVER")):
            if _in_range(events, package.osv_version, compare):
                return True
    return False


def _cve_order(name: str) -> tuple[int, int]:
    match = _CVE.fullmatch(name)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _finding_name(ids: set[str]) -> str:
    """The CVE id when the group has one (the oldest, if several), else the smallest advisory id."""
    cves = sorted((i for i in ids if _CVE.fullmatch(i)), key=_cve_order)
    return cves[0] if cves else min(ids)


def _alias_groups(records: list[dict[str, Any]]) -> list[set[str]]:
    groups: list[set[str]] = []
    for record in records:
        names = {record["id"], *record.get("aliases", [])}
        joined = [group for group in groups if group & names]
        for group in joined:
            groups.remove(group)
            names |= group
        groups.append(names)
    return groups


def expected_findings(records: Iterable[dict[str, Any]], packages: Iterable[Installed]) -> set[Finding]:
    """(finding name, package_name, package_version) of every advisory truly affecting a present package."""
    records = list(records)
    expected: set[Finding] = set()
    for package in packages:
        hits = [record for record in records if affects(record, package)]
        for group in _alias_groups(hits):
            expected.add((_finding_name(group), package.name, package.version))
    return expected


def reported(findings: Iterable[dict[str, Any]]) -> set[Finding]:
    """The same triples from ECR-shaped findings."""
    result = set()
    for finding in findings:
        attributes = {item["key"]: item["value"] for item in finding["attributes"]}
        result.add((finding["name"], attributes["package_name"], attributes["package_version"]))
    return result
