"""From layers to ECR findings: inventory → matching against the real OSV fixture advisories."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from botocore.model import StructureShape
from botocore.validate import ParamValidator

from dockyard.domain.scanning.inventory import Package, read_inventory
from dockyard.domain.scanning.matching import ScanFindings, match_inventory, match_packages
from dockyard.domain.scanning.osv import AdvisoryIndex, OsvRecord, Severity
from tests.unit.domain.scanning.layers import dist_info, dpkg_stanza, file, layer, npm_package, os_release, whiteout

SITE = "usr/local/lib/python3.11/site-packages"


def _vulnerable_buster_image() -> list[Any]:
    """A Debian 10 image with old Python and npm packages, in two layers (the second removes one)."""
    status = "\n".join(
        [
            dpkg_stanza("libodbc1", "2.3.6-0.1+b1", source="unixodbc (2.3.6-0.1)"),
            dpkg_stanza("chromium", "90.0.4430.212-1~deb10u1"),
            dpkg_stanza("bash", "5.0-4"),
        ]
    )
    base = layer(
        [
            os_release("debian", "10"),
            file("var/lib/dpkg/status", status),
            dist_info(SITE, "Jinja2", "2.10"),
            dist_info(SITE, "PyYAML", "5.3"),
            dist_info(SITE, "requests", "2.19.1"),
            dist_info(SITE, "urllib3", "1.24.1"),
            dist_info(SITE, "six", "1.11.0"),
            npm_package("app", "lodash", "4.17.20"),
            npm_package("app", "semver", "7.5.1"),
            npm_package("app", "minimist", "1.2.5"),
        ]
    )
    app = layer(
        [
            dist_info("app/.venv/lib/python3.11/site-packages", "Django", "2.2.0"),
            whiteout(f"{SITE}/six-1.11.0.dist-info"),
        ]
    )
    return [base, app]


EXPECTED_BUSTER = {
    ("CVE-2024-1013", "libodbc1", Severity.INFORMATIONAL),
    ("CVE-2024-3847", "chromium", Severity.LOW),
    ("CVE-2024-22195", "Jinja2", Severity.MEDIUM),
    ("CVE-2024-34064", "Jinja2", Severity.MEDIUM),
    ("CVE-2019-10906", "Jinja2", Severity.UNDEFINED),
    ("CVE-2020-28493", "Jinja2", Severity.UNDEFINED),
    ("CVE-2020-1747", "PyYAML", Severity.UNDEFINED),
    ("CVE-2020-14343", "PyYAML", Severity.UNDEFINED),
    ("CVE-2024-35195", "requests", Severity.MEDIUM),
    ("CVE-2018-18074", "requests", Severity.HIGH),
    ("CVE-2023-32681", "requests", Severity.UNDEFINED),
    ("CVE-2024-37891", "urllib3", Severity.MEDIUM),
    ("CVE-2019-11236", "urllib3", Severity.UNDEFINED),
    ("CVE-2019-11324", "urllib3", Severity.UNDEFINED),
    ("CVE-2020-26137", "urllib3", Severity.UNDEFINED),
    ("CVE-2021-33503", "urllib3", Severity.UNDEFINED),
    ("CVE-2023-45803", "urllib3", Severity.MEDIUM),
    ("CVE-2019-12781", "Django", Severity.UNDEFINED),
    ("CVE-2019-19844", "Django", Severity.UNDEFINED),
    ("CVE-2019-12308", "Django", Severity.UNDEFINED),
    ("CVE-2020-7471", "Django", Severity.UNDEFINED),
    ("CVE-2021-44420", "Django", Severity.UNDEFINED),
    ("CVE-2022-28347", "Django", Severity.UNDEFINED),
    ("CVE-2021-23337", "lodash", Severity.HIGH),
    ("CVE-2022-25883", "semver", Severity.MEDIUM),
    ("CVE-2021-44906", "minimist", Severity.CRITICAL),
}


@pytest.fixture
def buster_findings(advisory_index: AdvisoryIndex) -> ScanFindings:
    return match_inventory(read_inventory(_vulnerable_buster_image()), advisory_index)


def test_layers_to_findings_end_to_end(buster_findings: ScanFindings) -> None:
    found = {(finding.name, finding.package.name, finding.severity) for finding in buster_findings.findings}
    assert found == EXPECTED_BUSTER
    assert buster_findings.unscannable == ()
    assert buster_findings.scanned_packages == 11  # 3 dpkg, 4 Python (six is whited out), Django, 3 npm


def test_fixed_advisories_are_not_reported(buster_findings: ScanFindings) -> None:
    names = {finding.name for finding in buster_findings.findings}
    # PYSEC-2019-220 (fixed in Jinja2 2.8.1), PYSEC-2018-49 (PyYAML 5.1), PYSEC-2020-176 (PyYAML 5.2b1)
    assert names.isdisjoint({"CVE-2016-10745", "CVE-2017-18342", "CVE-2019-20477"})


def test_aliases_become_one_finding(buster_findings: ScanFindings) -> None:
    requests = [finding for finding in buster_findings.findings if finding.name == "CVE-2018-18074"]
    assert len(requests) == 1
    assert requests[0].advisory_ids == ("GHSA-x84v-xcm2-53pg", "PYSEC-2018-28")
    assert requests[0].description.startswith("The Requests package through 2.19.1")


def test_finding_details_in_ecr_shape(buster_findings: ScanFindings) -> None:
    by_name = {finding.name: finding.to_ecr() for finding in buster_findings.findings}
    assert by_name["CVE-2024-1013"]["uri"] == "https://security-tracker.debian.org/tracker/CVE-2024-1013"
    assert by_name["CVE-2024-1013"]["attributes"] == [
        {"key": "package_name", "value": "libodbc1"},
        {"key": "package_version", "value": "2.3.6-0.1+b1"},
    ]
    assert by_name["CVE-2022-25883"] == {
        "name": "CVE-2022-25883",
        "description": by_name["CVE-2022-25883"]["description"],
        "uri": "https://nvd.nist.gov/vuln/detail/CVE-2022-25883",
        "severity": "MEDIUM",
        "attributes": [
            {"key": "package_name", "value": "semver"},
            {"key": "package_version", "value": "7.5.1"},
            {"key": "CVSS3_SCORE", "value": "5.3"},
            {"key": "CVSS3_VECTOR", "value": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L"},
        ],
    }
    assert by_name["CVE-2022-25883"]["description"].startswith("Versions of the package semver before 7.5.2")


def test_severity_counts_and_order(buster_findings: ScanFindings) -> None:
    counts = buster_findings.severity_counts
    assert counts == {"CRITICAL": 1, "HIGH": 2, "MEDIUM": 6, "LOW": 1, "INFORMATIONAL": 1, "UNDEFINED": 15}
    assert list(counts) == ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED"]
    ranks = [finding.severity.rank for finding in buster_findings.findings]
    assert ranks == sorted(ranks, reverse=True)


def test_output_validates_against_botocore_ecr_model(buster_findings: ScanFindings) -> None:
    model = botocore.session.get_session().get_service_model("ecr")
    document = buster_findings.to_ecr()
    report = ParamValidator().validate(document, model.shape_for("ImageScanFindings"))
    assert not report.has_errors(), report.generate_report()
    finding, attribute = model.shape_for("ImageScanFinding"), model.shape_for("Attribute")
    assert isinstance(finding, StructureShape) and isinstance(attribute, StructureShape)
    assert set(finding.members) == set(document["findings"][0])
    assert set(attribute.members) == set(document["findings"][0]["attributes"][0])


def test_images_with_fixed_versions_have_no_findings(advisory_index: AdvisoryIndex) -> None:
    layers = [
        layer(
            [
                os_release("debian", "7"),
                file("var/lib/dpkg/status", dpkg_stanza("nginx", "1.2.1-2.2+wheezy3")),
                dist_info(SITE, "Jinja2", "3.1.4"),
                dist_info(SITE, "PyYAML", "5.4"),
                dist_info(SITE, "requests", "2.32.2"),
                dist_info(SITE, "urllib3", "2.2.2"),
                dist_info(SITE, "Django", "4.0.4"),
                npm_package("app", "lodash", "4.17.21"),
                npm_package("app", "semver", "7.5.2"),
                npm_package("app", "minimist", "1.2.6"),
            ]
        )
    ]
    result = match_inventory(read_inventory(layers), advisory_index)
    assert result.findings == () and result.unscannable == ()
    assert result.severity_counts == {}


def test_debian_advisory_for_an_older_release(advisory_index: AdvisoryIndex) -> None:
    layers = [
        layer(
            [
                os_release("debian", "7"),
                file("var/lib/dpkg/status", dpkg_stanza("nginx-full", "1.2.1-2.2+wheezy2", "nginx")),
            ]
        )
    ]
    (finding,) = match_inventory(read_inventory(layers), advisory_index).findings
    assert (finding.name, finding.advisory_ids, finding.severity) == (
        "CVE-2014-3616",
        ("DSA-3029-1",),
        Severity.UNDEFINED,
    )
    assert finding.uri == "https://security-tracker.debian.org/tracker/CVE-2014-3616"


def test_alpine_advisories_match_the_origin_package(advisory_index: AdvisoryIndex) -> None:
    installed = (
        "P:libexif\nV:0.6.19-r0\no:libexif\n\nP:mariadb-client\nV:10.4.24-r0\no:mariadb\n\nP:musl\nV:1.1.24-r10\n"
    )
    layers = [layer([os_release("alpine", "3.12.12"), file("lib/apk/db/installed", installed)])]
    result = match_inventory(read_inventory(layers), advisory_index)
    assert {(finding.name, finding.package.name) for finding in result.findings} == {
        ("CVE-2012-2812", "libexif"),
        ("CVE-2022-27449", "mariadb-client"),
    }
    assert result.findings[0].uri.startswith("https://security.alpinelinux.org/vuln/CVE-")


def test_unorderable_versions_make_packages_unscannable_not_clean(advisory_index: AdvisoryIndex) -> None:
    broken = Package("nginx", "1.0-", "Debian:7", "dpkg", "/var/lib/dpkg/status", "nginx", "1.0-")
    amazon = Package("openssl", "3.0.8-1.amzn2023", None, "rpm", "/var/lib/rpm/rpmdb.sqlite", "openssl")
    result = match_packages([broken, amazon], advisory_index)
    assert result.findings == ()
    assert [(item.package.name, item.reason) for item in result.unscannable] == [
        ("nginx", "'1.0-' is not a valid dpkg version"),
        ("openssl", "no OSV ecosystem is known for this operating system release"),
    ]
    assert result.scanned_packages == 0


def test_any_lookup_callable_works_and_duplicate_installs_are_one_finding(osv_records: dict[str, OsvRecord]) -> None:
    calls: list[tuple[str, str]] = []

    def lookup(ecosystem: str, name: str) -> list[OsvRecord]:
        calls.append((ecosystem, name))
        return [osv_records["GHSA-xvch-5gv4-984h"]] if name == "minimist" else []

    twice = [
        Package("minimist", "1.2.5", "npm", "npm", f"/{root}/node_modules/minimist/package.json") for root in ("a", "b")
    ]
    result = match_packages(twice, lookup)
    assert [finding.name for finding in result.findings] == ["CVE-2021-44906"]
    assert calls == [("npm", "minimist"), ("npm", "minimist")]
