"""Image scanning, the pure part: version orderings, OSV advisories, package inventory, matching.

`versions` orders dpkg, apk, RPM, PEP 440 and SemVer versions; `osv` parses advisories, evaluates their
ranges and rates their severity; `inventory` reads the packages of an image from its layer streams;
`matching` turns both into ECR's basic-scan findings. Nothing here does HTTP, SQL or cloud calls.
"""

from dockyard.domain.scanning.errors import SCAN_FAILED, ScanFailed
from dockyard.domain.scanning.inventory import (
    SCANNED_ECOSYSTEMS,
    Inventory,
    InventoryLimits,
    OperatingSystem,
    Package,
    read_inventory,
)
from dockyard.domain.scanning.matching import (
    Finding,
    Lookup,
    ScanFindings,
    Unscannable,
    match_inventory,
    match_packages,
)
from dockyard.domain.scanning.osv import AdvisoryIndex, OsvRecord, Severity, iter_zip_records, parse_record

__all__ = [
    "SCANNED_ECOSYSTEMS",
    "SCAN_FAILED",
    "AdvisoryIndex",
    "Finding",
    "Inventory",
    "InventoryLimits",
    "Lookup",
    "OperatingSystem",
    "OsvRecord",
    "Package",
    "ScanFailed",
    "ScanFindings",
    "Severity",
    "Unscannable",
    "iter_zip_records",
    "match_inventory",
    "match_packages",
    "parse_record",
    "read_inventory",
]
