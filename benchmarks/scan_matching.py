"""Matching speed: 1,000 installed packages against 200,000 synthetic OSV advisories, indexed by package.

Run: `python -m benchmarks.scan_matching`. Prints, for two spreads of the same 200,000 advisories (4 and
40 advisories per package name), the time to build the index and to match 1,000 packages, cold (empty
version-parse caches) and warm, in CPU time of the process. The advisories are synthetic (SYNTHETIC-…
ids): package names spread over Debian:12, PyPI and npm, one ECOSYSTEM range each, half with a CVSS v3
vector.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable
from typing import Any, TypeVar

from dockyard.domain.scanning import osv, versions
from dockyard.domain.scanning.inventory import Package
from dockyard.domain.scanning.matching import match_packages
from dockyard.domain.scanning.osv import AdvisoryIndex, parse_record

ADVISORIES = 200_000
PACKAGES = 1_000
ECOSYSTEMS = ("Debian:12", "PyPI", "npm")
MANAGERS = {"Debian:12": "dpkg", "PyPI": "python", "npm": "npm"}
VECTOR = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"
T = TypeVar("T")


def _version(ecosystem: str, major: int, minor: int) -> str:
    return f"{major}.{minor}.0-1+deb12u1" if ecosystem == "Debian:12" else f"{major}.{minor}.0"


def _advisory(number: int, names: int, rng: random.Random) -> dict[str, Any]:
    name_index = number % names
    ecosystem = ECOSYSTEMS[name_index % len(ECOSYSTEMS)]
    low = rng.randrange(0, 5)
    events = [
        {"introduced": "0" if low == 0 else _version(ecosystem, low, 0)},
        {"fixed": _version(ecosystem, low + 1 + rng.randrange(0, 3), rng.randrange(0, 10))},
    ]
    record: dict[str, Any] = {
        "id": f"SYNTHETIC-{number}",
        "modified": "2024-01-01T00:00:00Z",
        "aliases": [f"CVE-2024-{number}"],
        "details": f"synthetic advisory {number}",
        "affected": [
            {
                "package": {"ecosystem": ecosystem, "name": f"pkg{name_index}"},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
            }
        ],
    }
    if number % 2:
        record["severity"] = [{"type": "CVSS_V3", "score": VECTOR}]
    return record


def _packages(names: int, rng: random.Random) -> list[Package]:
    packages = []
    for name_index in rng.sample(range(names), PACKAGES):
        ecosystem = ECOSYSTEMS[name_index % len(ECOSYSTEMS)]
        version = _version(ecosystem, rng.randrange(0, 8), rng.randrange(0, 10))
        packages.append(Package(f"pkg{name_index}", version, ecosystem, MANAGERS[ecosystem], "/synthetic"))
    return packages


def _timed(action: Callable[[], T]) -> tuple[float, T]:
    """CPU seconds of this process: steadier than wall time on a shared machine (matching is single-threaded)."""
    start = time.process_time()
    result = action()
    return time.process_time() - start, result


def _clear_caches() -> None:
    cached_functions = (versions.parse_dpkg, versions.parse_semver, versions._pep440, versions._apk_valid)
    for cached in (*cached_functions, osv.cvss_score, osv.scheme_for, osv.normalize_name):
        cached.cache_clear()


def scenario(names: int) -> None:
    rng = random.Random(20240101)
    parse_seconds, records = _timed(lambda: [parse_record(_advisory(n, names, rng)) for n in range(ADVISORIES)])
    index_seconds, index = _timed(lambda: AdvisoryIndex(records))
    packages = _packages(names, rng)
    # A server builds the index once, long before a scan; without this the first timed match would pay for
    # the full garbage collection that millions of freshly allocated objects trigger.
    gc.collect()
    _clear_caches()
    runs = [_timed(lambda: match_packages(packages, index)) for _ in range(5)]
    looked_at = statistics.mean(len(index(p.ecosystem or "", p.name)) for p in packages)
    warm = statistics.median(seconds for seconds, _ in runs[1:])
    print(f"{len(index)} advisories, {looked_at:.0f} per package name; {PACKAGES} packages")
    print(f"  parse records: {parse_seconds:.2f} s; build index: {index_seconds:.2f} s")
    findings = len(runs[0][1].findings)
    print(f"  match: cold {runs[0][0] * 1000:.0f} ms, warm median {warm * 1000:.0f} ms; findings {findings}")


def main() -> None:
    for names in (50_000, 5_000):
        scenario(names)


if __name__ == "__main__":
    main()
