"""OSV records: parsing, ecosystems, range evaluation on real advisories, severity, the zip reader, the index."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dockyard.domain.scanning.osv import (
    AdvisoryIndex,
    Ecosystem,
    OsvFormatError,
    OsvRecord,
    Severity,
    affected_contains,
    affected_entries,
    cvss_score,
    iter_zip_records,
    normalize_name,
    parse_record,
    parse_record_json,
    rating_severity,
    scheme_for,
    severity_evidence,
)
from dockyard.domain.scanning.versions import APK, DPKG, PEP440, SEMVER, VersionError


def _affects(record: OsvRecord, ecosystem: str, name: str, version: str) -> bool:
    return any(affected_contains(entry, version) for entry in affected_entries(record, ecosystem, name))


def _synthetic(affected: list[dict[str, Any]], **extra: Any) -> OsvRecord:
    """A hand-made record (SYNTHETIC-… ids), for shapes the real fixtures do not have."""
    return parse_record({"id": "SYNTHETIC-1", "modified": "2024-01-01T00:00:00Z", "affected": affected, **extra})


# --- parsing ----------------------------------------------------------------------------------------


def test_every_fixture_record_parses(osv_records: dict[str, OsvRecord]) -> None:
    assert len(osv_records) == 33  # 25 PyPI, 3 npm, 3 Debian, 2 Alpine
    assert all(record.affected and record.modified for record in osv_records.values())


def test_record_fields(osv_records: dict[str, OsvRecord]) -> None:
    record = osv_records["GHSA-c2qf-rxjj-qqgw"]
    assert record.aliases == ("CVE-2022-25883",)
    assert record.summary.startswith("semver vulnerable")
    assert [entry.package.name for entry in record.affected] == ["semver"] * 3
    assert record.affected[0].ranges[0].events[1].kind == "fixed"
    assert record.database_specific["severity"] == "MODERATE"
    assert record.references[0].type == "ADVISORY"
    assert record.ids == ("GHSA-c2qf-rxjj-qqgw", "CVE-2022-25883")


def test_null_versions_and_git_ranges_are_read(osv_records: dict[str, OsvRecord]) -> None:
    assert osv_records["CVE-2012-2812"].affected[0].versions == ()  # "versions": null
    urllib3 = osv_records["PYSEC-2023-212"].affected[0]
    assert [rng.type for rng in urllib3.ranges] == ["GIT", "ECOSYSTEM"]
    assert urllib3.ranges[0].repo == "https://github.com/urllib3/urllib3"
    assert "1.26.17" in urllib3.versions


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"affected": []},
        {"id": ""},
        {"id": "X", "affected": [{"package": {"ecosystem": "PyPI", "name": "a"}, "ranges": [{"events": []}]}]},
        {
            "id": "X",
            "affected": [
                {
                    "package": {"ecosystem": "PyPI", "name": "a"},
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0", "fixed": "1"}]}],
                }
            ],
        },
        {
            "id": "X",
            "affected": [
                {
                    "package": {"ecosystem": "PyPI", "name": "a"},
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"fixed": 1}]}],
                }
            ],
        },
    ],
)
def test_untrustworthy_records_are_refused(bad: Any) -> None:
    with pytest.raises(OsvFormatError):
        parse_record(bad)


def test_unknown_fields_and_odd_types_are_ignored() -> None:
    record = parse_record(
        {
            "id": "SYNTHETIC-2",
            "modified": "2024-01-01T00:00:00Z",
            "future_field": {"x": 1},
            "aliases": ["CVE-1", 7],
            "affected": [{"package": "not an object"}, {"package": {"ecosystem": "npm", "name": "x"}}],
            "references": [{"type": "WEB"}, {"url": "https://example.org"}],
        }
    )
    assert record.aliases == ("CVE-1",)
    assert [entry.package.name for entry in record.affected] == ["x"]
    assert [(ref.type, ref.url) for ref in record.references] == [("WEB", "https://example.org")]


def test_json_errors_are_format_errors() -> None:
    with pytest.raises(OsvFormatError):
        parse_record_json(b"{not json")
    with pytest.raises(OsvFormatError):
        parse_record_json(b"[" * 100_000 + b"]" * 100_000)  # nesting deep enough to exhaust the recursion


# --- ecosystems -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "release"),
    [
        ("Debian:12", "Debian", "12"),
        ("Alpine:v3.19", "Alpine", "v3.19"),
        ("Ubuntu:22.04:LTS", "Ubuntu", "22.04:LTS"),
        ("Ubuntu:Pro:18.04:LTS", "Ubuntu", "Pro:18.04:LTS"),
        ("Red Hat:enterprise_linux:9::appstream", "Red Hat", "enterprise_linux:9::appstream"),
        ("PyPI", "PyPI", None),
    ],
)
def test_ecosystem_strings(text: str, name: str, release: str | None) -> None:
    ecosystem = Ecosystem.parse(text)
    assert (ecosystem.name, ecosystem.release, str(ecosystem)) == (name, release, text)


def test_schemes_by_ecosystem() -> None:
    assert scheme_for("Debian:12") is DPKG and scheme_for("Ubuntu:22.04:LTS") is DPKG
    assert scheme_for("Alpine:v3.19") is APK and scheme_for("PyPI") is PEP440 and scheme_for("npm") is SEMVER
    assert scheme_for("Maven") is None and scheme_for("pypi") is None  # case matters in OSV


def test_pypi_names_are_pep503_normalised_and_others_are_not() -> None:
    assert normalize_name("PyPI", "Jinja2") == normalize_name("PyPI", "jinja2") == "jinja2"
    assert normalize_name("PyPI", "zope.interface") == "zope-interface"
    assert normalize_name("npm", "JSONStream") == "JSONStream"


# --- ranges on real advisories ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record_id", "ecosystem", "name", "version", "affected"),
    [
        # DSA-3029-1: nginx in Debian:7, fixed in 1.2.1-2.2+wheezy3
        ("DSA-3029-1", "Debian:7", "nginx", "1.2.1-2.2", True),
        ("DSA-3029-1", "Debian:7", "nginx", "1.2.1-2.2+wheezy2", True),
        ("DSA-3029-1", "Debian:7", "nginx", "1.2.1-2.2+wheezy3", False),
        ("DSA-3029-1", "Debian:7", "nginx", "1.2.1-2.2+wheezy3+deb7u1", False),
        ("DSA-3029-1", "Debian:8", "nginx", "1.2.1-2.2", False),  # another release: no entry
        # CVE-2024-1013: unfixed in Debian:10 (introduced 0 only)
        ("CVE-2024-1013", "Debian:10", "unixodbc", "2.3.6-0.1", True),
        ("CVE-2024-1013", "Debian:10", "unixodbc", "99:9.9-9", True),
        # CVE-2012-2812: libexif in Alpine, fixed in 0.6.21-r0
        ("CVE-2012-2812", "Alpine:v3.12", "libexif", "0.6.19-r0", True),
        ("CVE-2012-2812", "Alpine:v3.12", "libexif", "0.6.21_rc1-r0", True),
        ("CVE-2012-2812", "Alpine:v3.12", "libexif", "0.6.21-r0", False),
        ("CVE-2012-2812", "Alpine:v3.12", "libexif", "0.6.22-r0", False),
        # CVE-2022-27449: mariadb, a different fix per Alpine release
        ("CVE-2022-27449", "Alpine:v3.12", "mariadb", "10.4.24-r0", True),
        ("CVE-2022-27449", "Alpine:v3.12", "mariadb", "10.4.25-r0", False),
        ("CVE-2022-27449", "Alpine:v3.15", "mariadb", "10.6.7-r0", True),
        ("CVE-2022-27449", "Alpine:v3.15", "mariadb", "10.6.8-r0", False),
        ("CVE-2022-27449", "Alpine:v3.19", "mariadb", "10.6.7-r0", False),
        # PYSEC-2019-10: three windows listed out of order
        ("PYSEC-2019-10", "PyPI", "django", "1.11.21", True),
        ("PYSEC-2019-10", "PyPI", "django", "1.11.22", False),
        ("PYSEC-2019-10", "PyPI", "django", "2.0", False),
        ("PYSEC-2019-10", "PyPI", "django", "2.1.9", True),
        ("PYSEC-2019-10", "PyPI", "django", "2.1.10", False),
        ("PYSEC-2019-10", "PyPI", "Django", "2.2.0", True),
        ("PYSEC-2019-10", "PyPI", "django", "2.2.3", False),
        # PYSEC-2023-212: "introduced 2.0.0, fixed 2.0.7, introduced 0, fixed 1.26.18"
        ("PYSEC-2023-212", "PyPI", "urllib3", "1.24.1", True),
        ("PYSEC-2023-212", "PyPI", "urllib3", "1.26.18", False),
        ("PYSEC-2023-212", "PyPI", "urllib3", "2.0.6", True),
        ("PYSEC-2023-212", "PyPI", "urllib3", "2.0.7", False),
        # PYSEC-2020-176: a pre-release fix (5.2b1)
        ("PYSEC-2020-176", "PyPI", "pyyaml", "5.1", True),
        ("PYSEC-2020-176", "PyPI", "pyyaml", "5.2a1", True),
        ("PYSEC-2020-176", "PyPI", "pyyaml", "5.2b1", False),
        ("PYSEC-2020-176", "PyPI", "PyYAML", "5.3", False),
        ("PYSEC-2018-49", "PyPI", "pyyaml", "5.3", False),
        ("PYSEC-2019-220", "PyPI", "jinja2", "2.10", False),
        ("PYSEC-2019-217", "PyPI", "jinja2", "2.10", True),
        ("PYSEC-2019-217", "PyPI", "jinja2", "2.10.1", False),
        # GHSA-h75v-3vvj-5mfj names the package "Jinja2"
        ("GHSA-h75v-3vvj-5mfj", "PyPI", "jinja2", "3.1.3", True),
        ("GHSA-h75v-3vvj-5mfj", "PyPI", "jinja2", "3.1.4", False),
        # GHSA-34jh-p97f-mpxf: two affected entries
        ("GHSA-34jh-p97f-mpxf", "PyPI", "urllib3", "1.26.18", True),
        ("GHSA-34jh-p97f-mpxf", "PyPI", "urllib3", "1.26.19", False),
        ("GHSA-34jh-p97f-mpxf", "PyPI", "urllib3", "2.2.1", True),
        ("GHSA-34jh-p97f-mpxf", "PyPI", "urllib3", "2.2.2", False),
        # npm: semver has three entries, minimist two
        ("GHSA-c2qf-rxjj-qqgw", "npm", "semver", "7.5.1", True),
        ("GHSA-c2qf-rxjj-qqgw", "npm", "semver", "7.5.2", False),
        ("GHSA-c2qf-rxjj-qqgw", "npm", "semver", "7.0.0-rc.1", False),  # below 7.0.0, above 5.7.2
        ("GHSA-c2qf-rxjj-qqgw", "npm", "semver", "6.3.0", True),
        ("GHSA-c2qf-rxjj-qqgw", "npm", "semver", "6.3.1", False),
        ("GHSA-c2qf-rxjj-qqgw", "npm", "semver", "5.7.1", True),
        ("GHSA-c2qf-rxjj-qqgw", "npm", "semver", "5.7.2", False),
        ("GHSA-xvch-5gv4-984h", "npm", "minimist", "0.2.3", True),
        ("GHSA-xvch-5gv4-984h", "npm", "minimist", "0.2.4", False),
        ("GHSA-xvch-5gv4-984h", "npm", "minimist", "0.9.0", False),
        ("GHSA-xvch-5gv4-984h", "npm", "minimist", "1.2.5", True),
        ("GHSA-xvch-5gv4-984h", "npm", "minimist", "1.2.6", False),
        ("GHSA-35jh-r3h4-6jhm", "npm", "lodash-es", "4.17.20", True),
        ("GHSA-35jh-r3h4-6jhm", "npm", "lodash", "4.17.21", False),
    ],
)
def test_real_advisory_ranges(
    osv_records: dict[str, OsvRecord], record_id: str, ecosystem: str, name: str, version: str, affected: bool
) -> None:
    assert _affects(osv_records[record_id], ecosystem, name, version) is affected


def test_explicit_versions_list_matches_in_canonical_form() -> None:
    record = _synthetic([{"package": {"ecosystem": "PyPI", "name": "demo"}, "versions": ["2.2", "3.0rc1"]}])
    assert _affects(record, "PyPI", "demo", "2.2.0")
    assert _affects(record, "PyPI", "demo", "3.0.0-rc.1")
    assert not _affects(record, "PyPI", "demo", "2.2.1")


def test_versions_list_needs_no_ordering() -> None:
    record = _synthetic([{"package": {"ecosystem": "Maven", "name": "g:a"}, "versions": ["1.0-SNAPSHOT"]}])
    assert _affects(record, "Maven", "g:a", "1.0-SNAPSHOT")


@pytest.mark.parametrize(
    ("events", "version", "affected"),
    [
        ([{"introduced": "1.0.0"}, {"last_affected": "1.2.0"}], "1.2.0", True),
        ([{"introduced": "1.0.0"}, {"last_affected": "1.2.0"}], "1.2.1", False),
        ([{"introduced": "1.0.0"}, {"last_affected": "1.2.0"}], "0.9.0", False),
        ([{"introduced": "0"}, {"limit": "2.0.0"}], "1.9.0", True),
        ([{"introduced": "0"}, {"limit": "2.0.0"}], "2.0.0", False),
        ([{"introduced": "0"}, {"limit": "*"}], "9.0.0", True),
        ([{"introduced": "1.0.0"}, {"fixed": "1.0.0"}], "1.0.0", False),  # an empty window
        ([{"fixed": "2.0.0"}, {"introduced": "1.0.0"}], "1.5.0", True),  # order in the record is irrelevant
    ],
)
def test_synthetic_semver_ranges(events: list[dict[str, str]], version: str, affected: bool) -> None:
    record = _synthetic(
        [{"package": {"ecosystem": "Go", "name": "m"}, "ranges": [{"type": "SEMVER", "events": events}]}]
    )
    assert _affects(record, "Go", "m", version) is affected


def test_git_ranges_are_never_evaluated(osv_records: dict[str, OsvRecord]) -> None:
    record = _synthetic(
        [{"package": {"ecosystem": "PyPI", "name": "x"}, "ranges": [{"type": "GIT", "events": [{"introduced": "0"}]}]}]
    )
    assert not _affects(record, "PyPI", "x", "1.0")


@pytest.mark.parametrize(
    ("ecosystem", "version", "event"),
    [
        ("Debian:12", "", "1.0-1"),  # installed version dpkg refuses
        ("Debian:12", "1.0-1", "1.0-"),  # advisory version dpkg refuses
        ("PyPI", "not-pep-440 x", "1.0"),
        ("npm", "1.0", "1.0.1"),
        ("Maven", "1.0", "1.1"),  # no ordering for this ecosystem
    ],
)
def test_unorderable_versions_raise_instead_of_saying_not_affected(ecosystem: str, version: str, event: str) -> None:
    record = _synthetic(
        [
            {
                "package": {"ecosystem": ecosystem, "name": "p"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": event}]}],
            }
        ]
    )
    with pytest.raises(VersionError):
        _affects(record, ecosystem, "p", version)


# --- severity ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "vector", "score", "severity"),
    [
        ("CVSS_V3", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", "7.5", Severity.HIGH),
        ("CVSS_V3", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "9.8", Severity.CRITICAL),
        ("CVSS_V3", "CVSS:3.1/AV:A/AC:H/PR:H/UI:N/S:U/C:H/I:N/A:N", "4.2", Severity.MEDIUM),
        ("CVSS_V3", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L", "5.3", Severity.MEDIUM),
        ("CVSS_V3", "CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", "1.6", Severity.LOW),
        ("CVSS_V3", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", "0.0", Severity.INFORMATIONAL),
        ("CVSS_V2", "AV:N/AC:L/Au:N/C:N/I:N/A:P", "5.0", Severity.MEDIUM),
        ("CVSS_V2", "(AV:N/AC:L/Au:N/C:C/I:C/A:C)", "10.0", Severity.HIGH),  # v2 has no CRITICAL band
        ("CVSS_V4", "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", "9.3", Severity.CRITICAL),
    ],
)
def test_cvss_base_scores_and_bands(kind: str, vector: str, score: str, severity: Severity) -> None:
    result = cvss_score(kind, vector)
    assert result is not None
    assert (result.base_score, result.score_text, result.severity) == (Decimal(score), score, severity)


@pytest.mark.parametrize(
    ("kind", "vector"),
    [
        ("CVSS_V3", "CVSS:3.1/AV:N"),
        ("CVSS_V3", "AV:N/AC:L/Au:N/C:N/I:N/A:P"),
        ("CVSS_V2", "garbage"),
        ("Ubuntu", "high"),
    ],
)
def test_unreadable_vectors_have_no_score(kind: str, vector: str) -> None:
    assert cvss_score(kind, vector) is None


@pytest.mark.parametrize(
    ("word", "severity"),
    [
        ("MODERATE", Severity.MEDIUM),
        ("important", Severity.HIGH),
        ("unimportant", Severity.INFORMATIONAL),
        ("negligible", Severity.INFORMATIONAL),
        ("low**", Severity.LOW),
        ("CRITICAL", Severity.CRITICAL),
        ("not yet assigned", None),
        ("untriaged", None),
    ],
)
def test_rating_words(word: str, severity: Severity | None) -> None:
    assert rating_severity(word) is severity


@pytest.mark.parametrize(
    ("record_id", "ecosystem", "name", "severity"),
    [
        ("CVE-2024-1013", "Debian:10", "unixodbc", Severity.INFORMATIONAL),  # Debian urgency "unimportant"
        ("CVE-2024-3847", "Debian:11", "chromium", Severity.LOW),  # Debian urgency "low"
        ("GHSA-c2qf-rxjj-qqgw", "npm", "semver", Severity.MEDIUM),  # GHSA "MODERATE" (CVSS 5.3 agrees)
        ("GHSA-xvch-5gv4-984h", "npm", "minimist", Severity.CRITICAL),
        ("PYSEC-2023-212", "PyPI", "urllib3", Severity.MEDIUM),  # no rating: CVSS 3.1 base 4.2
        ("PYSEC-2018-28", "PyPI", "requests", Severity.UNDEFINED),  # no data at all
        ("CVE-2012-2812", "Alpine:v3.12", "libexif", Severity.UNDEFINED),
    ],
)
def test_severity_of_real_advisories(
    osv_records: dict[str, OsvRecord], record_id: str, ecosystem: str, name: str, severity: Severity
) -> None:
    record = osv_records[record_id]
    assert severity_evidence(record, affected_entries(record, ecosystem, name)[0]).severity is severity


def test_distribution_rating_wins_over_database_and_cvss() -> None:
    record = _synthetic(
        [
            {
                "package": {"ecosystem": "Ubuntu:22.04:LTS", "name": "p"},
                "severity": [
                    {"type": "Ubuntu", "score": "negligible"},
                    {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"},
                ],
            }
        ],
        database_specific={"severity": "HIGH"},
    )
    evidence = severity_evidence(record, record.affected[0])
    assert evidence.severity is Severity.INFORMATIONAL
    assert evidence.cvss3 is not None and evidence.cvss3.score_text == "9.8"


# --- the zip reader and the index -------------------------------------------------------------------


def _zip(members: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


def test_zip_reader_streams_the_fixture_archives(osv_fixtures: Path) -> None:
    ids = [record.id for record in iter_zip_records(osv_fixtures / "Debian-all.zip")]
    assert sorted(ids) == ["CVE-2024-1013", "CVE-2024-3847", "DSA-3029-1"]
    with (osv_fixtures / "npm-all.zip").open("rb") as stream:  # a file object works as well as a path
        assert len(list(iter_zip_records(stream))) == 3


def test_zip_reader_reports_bad_members_and_goes_on() -> None:
    good = json.dumps({"id": "SYNTHETIC-OK", "modified": "2024-01-01T00:00:00Z"}).encode()
    archive = _zip({"a.json": b"{broken", "b.json": good, "notes.txt": b"ignored", "c.json": b"0" * 2048})
    errors: list[str] = []
    records = list(iter_zip_records(archive, max_record_bytes=1024, on_error=lambda name, _: errors.append(name)))
    assert [record.id for record in records] == ["SYNTHETIC-OK"]
    assert errors == ["a.json", "c.json"]


def test_zip_reader_raises_without_an_error_handler() -> None:
    with pytest.raises(OsvFormatError, match=r"a\.json"):
        list(iter_zip_records(_zip({"a.json": b"{broken"})))
    with pytest.raises(OsvFormatError):
        list(iter_zip_records(io.BytesIO(b"not a zip at all")))


def test_index_looks_up_by_release_qualified_ecosystem_and_normalised_name(advisory_index: AdvisoryIndex) -> None:
    assert len(advisory_index) == 33
    assert {record.id for record in advisory_index("PyPI", "Jinja2")} == {
        "GHSA-h5c8-rqwp-cp95",
        "GHSA-h75v-3vvj-5mfj",
        "PYSEC-2019-217",
        "PYSEC-2019-220",
        "PYSEC-2021-66",
    }
    assert [record.id for record in advisory_index("Debian:10", "chromium")] == ["CVE-2024-3847"]
    assert advisory_index("Debian:12", "chromium") == ()
    assert advisory_index.newest_modified == datetime(2024, 6, 17, 21, 37, 20, tzinfo=UTC)


def test_index_leaves_withdrawn_records_out() -> None:
    withdrawn = _synthetic([{"package": {"ecosystem": "npm", "name": "w"}}], withdrawn="2024-02-01T00:00:00Z")
    index = AdvisoryIndex([withdrawn])
    assert len(index) == 0 and index("npm", "w") == ()
