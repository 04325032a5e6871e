"""The real OSV advisories kept in tests/fixtures/osv (see SOURCES.md there), loaded once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.domain.scanning.osv import AdvisoryIndex, OsvRecord, iter_zip_records

# The fixtures live in the repository (tests/fixtures/osv), so a clone anywhere runs these tests.
OSV_FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "osv"
ECOSYSTEM_ZIPS = ("PyPI", "npm", "Debian", "Alpine")


@pytest.fixture(scope="session")
def osv_fixtures() -> Path:
    if not (OSV_FIXTURES / "PyPI-all.zip").is_file():
        pytest.fail(f"the OSV fixtures are not at {OSV_FIXTURES}", pytrace=False)
    return OSV_FIXTURES


@pytest.fixture(scope="session")
def osv_records(osv_fixtures: Path) -> dict[str, OsvRecord]:
    """Every fixture record by id, read through the streaming zip reader."""
    records = (record for name in ECOSYSTEM_ZIPS for record in iter_zip_records(osv_fixtures / f"{name}-all.zip"))
    return {record.id: record for record in records}


@pytest.fixture(scope="session")
def advisory_index(osv_records: dict[str, OsvRecord]) -> AdvisoryIndex:
    return AdvisoryIndex(osv_records.values())
