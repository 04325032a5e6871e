"""The real OSV advisories kept in shared/fixtures/osv (see SOURCES.md there), loaded once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.domain.scanning.osv import AdvisoryIndex, OsvRecord, iter_zip_records

# shared/ sits beside the repository checkout, in development and in CI alike.
OSV_FIXTURES = Path(__file__).resolve().parents[4].parent / "shared" / "fixtures" / "osv"
ECOSYSTEM_ZIPS = ("PyPI", "npm", "Debian", "Alpine")


@pytest.fixture(scope="session")
def osv_fixtures() -> Path:
    if not (OSV_FIXTURES / "PyPI-all.zip").is_file():
        pytest.skip(f"the OSV fixtures are not at {OSV_FIXTURES}")
    return OSV_FIXTURES


@pytest.fixture(scope="session")
def osv_records(osv_fixtures: Path) -> dict[str, OsvRecord]:
    """Every fixture record by id, read through the streaming zip reader."""
    records = (record for name in ECOSYSTEM_ZIPS for record in iter_zip_records(osv_fixtures / f"{name}-all.zip"))
    return {record.id: record for record in records}


@pytest.fixture(scope="session")
def advisory_index(osv_records: dict[str, OsvRecord]) -> AdvisoryIndex:
    return AdvisoryIndex(osv_records.values())
