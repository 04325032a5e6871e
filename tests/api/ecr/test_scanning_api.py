"""Image scanning through the ECR API of a real `dockyard serve`: scan on push (repository flag and registry
rules), StartImageScan's daily quota, DescribeImageScanFindings and DescribeImages' scan fields, and images
the scanner must refuse (corrupt, tar bombs, hostile paths, malformed databases) without the server faltering.

The advisory database is the real OSV fixture set (tests/fixtures/osv), imported into the server's data
directory before it starts; expected findings come from tests/support/osv_oracle.py, never from Dockyard.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from dockyard.config import Settings
from dockyard.server import prepare
from tests.api.ecr.helpers import ecr_client, error_code, put_api_image
from tests.support.osv_oracle import ECOSYSTEM_ZIPS, OSV_FIXTURES, expected_findings, load_records, reported
from tests.support.scan_images import debian7_wheezy, debian11_app
from tests.support.scan_layers import (
    GiB,
    corrupt_gzip,
    deep_path,
    header_only,
    put_layers,
    wait_for_scan,
    zstd_like,
)
from tests.support.server import ACCOUNT_ID, ServerProcess
from tests.unit.domain.scanning.layers import directory, dpkg_stanza, file, layer, os_release, symlink


@pytest.fixture(scope="module")
def scan_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not (OSV_FIXTURES / "PyPI-all.zip").is_file():
        pytest.fail(f"the OSV fixtures are not at {OSV_FIXTURES}", pytrace=False)
    data_dir = tmp_path_factory.mktemp("scan-api") / "data"
    services = prepare(Settings(data_dir, ACCOUNT_ID, background_jobs=False))
    for name in ECOSYSTEM_ZIPS:
        services.vulnerabilities.import_zip(OSV_FIXTURES / f"{name}-all.zip")
    services.audit.close()
    services.events.close()
    services.engine.dispose()
    process = ServerProcess(data_dir).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def ecr(scan_server: ServerProcess) -> Any:
    return ecr_client(scan_server)


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return load_records()


@pytest.fixture
def scanned_repo(ecr: Any) -> str:
    """A repository with scan on push."""
    name = f"scan-api/{uuid.uuid4().hex[:12]}"
    ecr.create_repository(repositoryName=name, imageScanningConfiguration={"scanOnPush": True})
    return name


@pytest.fixture
def manual_repo(ecr: Any) -> str:
    name = f"manual-scan/{uuid.uuid4().hex[:12]}"
    ecr.create_repository(repositoryName=name)
    return name


# ------------------------------------------------------------------------------------------ findings


def test_scan_on_push_reports_the_advisories_affecting_the_image(ecr: Any, scanned_repo: str, records: Any) -> None:
    image = debian11_app()
    digest = put_layers(ecr, scanned_repo, list(image.layers), image.name)
    answer = wait_for_scan(ecr, scanned_repo, {"imageTag": image.name})
    assert answer["imageScanStatus"]["status"] == "COMPLETE", answer["imageScanStatus"]
    assert answer["imageId"]["imageDigest"] == digest
    scan = answer["imageScanFindings"]
    findings = scan["findings"]
    assert reported(findings) == expected_findings(records, image.present)
    assert len(findings) == len(reported(findings)), "a finding listed twice (aliases must merge)"
    removed = {(p.name, p.version) for p in image.removed}
    assert not {(name, version) for _, name, version in reported(findings)} & removed

    # Shapes: severities from ECR's enum, counts that add up, attributes within ECR's limits.
    severities = Counter(f["severity"] for f in findings)
    assert scan["findingSeverityCounts"] == dict(severities)
    assert set(severities) <= {"INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL", "UNDEFINED"}
    for finding in findings:
        assert finding["uri"].startswith("https://"), finding
        assert 0 < len(finding["attributes"]) <= 50
        assert all(1 <= len(a["key"]) <= 128 and 1 <= len(a["value"]) <= 256 for a in finding["attributes"])
    now = datetime.now(UTC)
    assert now - timedelta(minutes=5) < scan["imageScanCompletedAt"] <= now + timedelta(seconds=5)
    assert scan["vulnerabilitySourceUpdatedAt"] <= scan["imageScanCompletedAt"]

    # One page at a time: counts and status repeat on every page, findings are split.
    first = ecr.describe_image_scan_findings(repositoryName=scanned_repo, imageId={"imageDigest": digest}, maxResults=5)
    assert len(first["imageScanFindings"]["findings"]) == 5 and first["nextToken"]
    assert first["imageScanFindings"]["findingSeverityCounts"] == scan["findingSeverityCounts"]

    # DescribeImages mirrors the last scan.
    detail = ecr.describe_images(repositoryName=scanned_repo, imageIds=[{"imageDigest": digest}])["imageDetails"][0]
    assert detail["imageScanStatus"]["status"] == "COMPLETE"
    assert detail["imageScanFindingsSummary"]["findingSeverityCounts"] == scan["findingSeverityCounts"]
    assert detail["imageScanFindingsSummary"]["imageScanCompletedAt"] == scan["imageScanCompletedAt"]


def test_start_image_scan_twice_in_a_day_is_refused(ecr: Any, manual_repo: str, records: Any) -> None:
    image = debian7_wheezy()
    put_layers(ecr, manual_repo, list(image.layers), image.name)
    with pytest.raises(ClientError) as never:
        ecr.describe_image_scan_findings(repositoryName=manual_repo, imageId={"imageTag": image.name})
    assert error_code(never.value) == "ScanNotFoundException"
    detail = ecr.describe_images(repositoryName=manual_repo)["imageDetails"][0]
    assert "imageScanStatus" not in detail  # nothing scanned it on push: the repository does not ask for it

    started = ecr.start_image_scan(repositoryName=manual_repo, imageId={"imageTag": image.name})
    assert started["imageId"] == {"imageDigest": detail["imageDigest"], "imageTag": image.name}
    answer = wait_for_scan(ecr, manual_repo, {"imageTag": image.name})
    assert answer["imageScanStatus"]["status"] == "COMPLETE"
    assert reported(answer["imageScanFindings"]["findings"]) == expected_findings(records, image.present)

    for image_id in ({"imageTag": image.name}, {"imageDigest": detail["imageDigest"]}):
        with pytest.raises(ClientError) as again:
            ecr.start_image_scan(repositoryName=manual_repo, imageId=image_id)
        assert error_code(again.value) == "LimitExceededException"
        assert "quota" in str(again.value).lower()
    # The refused requests changed nothing: the earlier result stands.
    still = ecr.describe_image_scan_findings(repositoryName=manual_repo, imageId={"imageTag": image.name})
    assert still["imageScanStatus"] == answer["imageScanStatus"]
    assert still["imageScanFindings"]["imageScanCompletedAt"] == answer["imageScanFindings"]["imageScanCompletedAt"]


def test_start_image_scan_answers_in_progress(ecr: Any, manual_repo: str) -> None:
    """The notes (A.3, A.4): StartImageScan answers IN_PROGRESS, and a basic scan shows IN_PROGRESS until it
    ends; PENDING belongs to enhanced scanning (clients written for basic scanning do not expect it)."""
    put_api_image(ecr, manual_repo, seed=77, tag="v1")
    started = ecr.start_image_scan(repositoryName=manual_repo, imageId={"imageTag": "v1"})
    assert started["imageScanStatus"]["status"] == "IN_PROGRESS", started["imageScanStatus"]


def test_start_image_scan_of_absent_things(ecr: Any, manual_repo: str) -> None:
    with pytest.raises(ClientError) as no_image:
        ecr.start_image_scan(repositoryName=manual_repo, imageId={"imageTag": "absent"})
    assert error_code(no_image.value) == "ImageNotFoundException"
    with pytest.raises(ClientError) as no_repo:
        ecr.start_image_scan(repositoryName=f"{manual_repo}-absent", imageId={"imageTag": "x"})
    assert error_code(no_repo.value) == "RepositoryNotFoundException"


def test_registry_rules_choose_the_repositories_scanned_on_push(ecr: Any) -> None:
    """PutRegistryScanningConfiguration: SCAN_ON_PUSH for matching repositories, the rest MANUAL.

    Filter semantics per the notes (A.2, 2022 user guide): with `*` the rest must match exactly; without
    `*` the filter matches every repository name that contains it (`prod` matches `repo-prod-repo`).
    """
    token = uuid.uuid4().hex[:8]
    ecr.put_registry_scanning_configuration(
        scanType="BASIC",
        rules=[
            {
                "scanFrequency": "SCAN_ON_PUSH",
                "repositoryFilters": [
                    {"filter": f"auto{token}-*", "filterType": "WILDCARD"},
                    {"filter": f"contains{token}", "filterType": "WILDCARD"},
                ],
            }
        ],
    )
    try:
        got = ecr.get_registry_scanning_configuration()["scanningConfiguration"]
        assert got["rules"][0]["repositoryFilters"][0]["filter"] == f"auto{token}-*"
        by_prefix, by_substring, unmatched = f"auto{token}-a", f"team-contains{token}-app", f"other{token}"
        for number, name in enumerate((by_prefix, by_substring, unmatched)):
            ecr.create_repository(repositoryName=name)
            put_api_image(ecr, name, seed=9000 + number, tag="v1")
        assert wait_for_scan(ecr, by_prefix, {"imageTag": "v1"})["imageScanStatus"]["status"] in (
            "COMPLETE",
            "UNSUPPORTED_IMAGE",
        )
        with pytest.raises(ClientError) as manual:
            ecr.describe_image_scan_findings(repositoryName=unmatched, imageId={"imageTag": "v1"})
        assert error_code(manual.value) == "ScanNotFoundException"
        # Scans are queued by the push itself: by now the substring match's scan exists, or never will.
        queued = ecr.describe_image_scan_findings(repositoryName=by_substring, imageId={"imageTag": "v1"})
        assert queued["imageScanStatus"]["status"]
    finally:
        ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[])


# ------------------------------------------------------------------------------------------ hostile input


def _symlinks_out_of_root(tmp: Path) -> bytes:
    """os-release and the dpkg database as symlinks to files outside the image (here: on the host)."""
    (tmp / "os-release").write_text('ID=debian\nVERSION_ID="11"\n')
    (tmp / "status").write_text(dpkg_stanza("chromium", "90.0-1"))
    escape = "../" * 12
    entries = [
        directory("etc"),
        symlink("etc/os-release", str(tmp / "os-release")),
        directory("var/lib/dpkg"),
        symlink("var/lib/dpkg/status", escape + str(tmp / "status").lstrip("/")),
        symlink("usr/lib/python3/dist-packages/evil.dist-info", escape + "tmp"),
    ]
    return layer(entries).getvalue()


REFUSED = [
    ("corrupt-gzip", lambda tmp: [corrupt_gzip()], "FAILED", ["layer 1", "corrupt"]),
    ("zstd-layer", lambda tmp: [zstd_like()], "FAILED", ["zstd"]),
    (
        "bomb-package-file",
        lambda tmp: [header_only("var/lib/dpkg/status", 10 * GiB)],
        "FAILED",
        ["var/lib/dpkg/status", "limit"],
    ),
    ("bomb-stream", lambda tmp: [header_only("data/blob.bin", 100 * GiB)], "FAILED", ["uncompressed bytes"]),
    ("deep-path", lambda tmp: [deep_path()], "FAILED", ["deeper than"]),
]


@pytest.mark.parametrize(("case", "build", "status", "words"), REFUSED, ids=[c[0] for c in REFUSED])
def test_unreadable_images_fail_clearly(
    ecr: Any,
    scan_server: ServerProcess,
    scanned_repo: str,
    tmp_path: Path,
    case: str,
    build: Any,
    status: str,
    words: Any,
) -> None:
    put_layers(ecr, scanned_repo, build(tmp_path), case)
    answer = wait_for_scan(ecr, scanned_repo, {"imageTag": case})
    scan_status = answer["imageScanStatus"]
    assert scan_status["status"] == status, scan_status
    assert all(word in scan_status["description"] for word in words), scan_status
    assert "imageScanFindings" not in answer
    detail = ecr.describe_images(repositoryName=scanned_repo, imageIds=[{"imageTag": case}])["imageDetails"][0]
    assert detail["imageScanStatus"] == scan_status
    assert httpx.get(f"{scan_server.url}/healthz", timeout=5).status_code == 200


def test_symlinks_out_of_the_root_are_never_followed(ecr: Any, scanned_repo: str, tmp_path: Path) -> None:
    """Nothing outside the image is read: had the links been followed, Debian 11's chromium would be found.
    (What is left has no OS and no package: UNSUPPORTED_IMAGE by the notes, see the next test.)"""
    put_layers(ecr, scanned_repo, [_symlinks_out_of_root(tmp_path)], "symlinks")
    answer = wait_for_scan(ecr, scanned_repo, {"imageTag": "symlinks"})
    assert answer["imageScanStatus"]["status"] in ("COMPLETE", "UNSUPPORTED_IMAGE"), answer["imageScanStatus"]
    assert not answer.get("imageScanFindings", {}).get("findings"), answer


def test_an_image_without_os_or_packages_is_unsupported(ecr: Any, scanned_repo: str) -> None:
    """The notes (C.7.6): images with no detectable OS/packages → UNSUPPORTED_IMAGE, not a clean COMPLETE."""
    put_api_image(ecr, scanned_repo, seed=4242, tag="data-only")  # random data files, no OS, no package db
    answer = wait_for_scan(ecr, scanned_repo, {"imageTag": "data-only"})
    assert answer["imageScanStatus"]["status"] == "UNSUPPORTED_IMAGE", answer["imageScanStatus"]
    assert answer["imageScanStatus"]["description"]


def test_a_malformed_status_file_is_not_a_clean_bill_of_health(ecr: Any, scanned_repo: str) -> None:
    """A dpkg status file with no readable stanza: the OS inventory is unknown, so "no findings" would be a
    false all-clear (the notes, C.7.4: an evaluation failure is never "not vulnerable")."""
    garbage = b"\x00\xff\xfe\x01 this is not a dpkg database\n" + bytes(range(256)) * 16
    entries = [os_release("debian", "11"), file("var/lib/dpkg/status", garbage)]
    put_layers(ecr, scanned_repo, [layer(entries).getvalue()], "garbage-status")
    answer = wait_for_scan(ecr, scanned_repo, {"imageTag": "garbage-status"})
    assert answer["imageScanStatus"]["status"] in ("FAILED", "UNSUPPORTED_IMAGE"), answer
    assert "status" in answer["imageScanStatus"]["description"], answer["imageScanStatus"]


def test_unreadable_versions_are_reported_not_hidden(ecr: Any, scanned_repo: str, records: Any) -> None:
    """One stanza with a version dpkg cannot order: its package is unscannable (said in the description),
    the rest of the database still counts."""
    status = "\n".join(
        [
            dpkg_stanza("chromium", "120.0.6099.224-1~deb11u1"),
            dpkg_stanza("chromium-common", ":::not-a-version:::", source="chromium"),
            "Package chromium-without-colon\nthis stanza has no fields at all\n",
        ]
    )
    entries = [os_release("debian", "11"), file("var/lib/dpkg/status", status)]
    put_layers(ecr, scanned_repo, [layer(entries).getvalue()], "bad-version")
    answer = wait_for_scan(ecr, scanned_repo, {"imageTag": "bad-version"})
    assert answer["imageScanStatus"]["status"] == "COMPLETE", answer["imageScanStatus"]
    assert "could not be evaluated" in answer["imageScanStatus"]["description"]
    names = {(name, package) for name, package, _ in reported(answer["imageScanFindings"]["findings"])}
    assert names == {("CVE-2024-3847", "chromium")}


ABSURD = "9" * 5000  # past the 4,300 digits Python's int() converts


def test_absurd_version_numbers_end_the_scan(ecr: Any, scan_server: ServerProcess, scanned_repo: str) -> None:
    """5,000-digit version numbers must not leave a scan IN_PROGRESS for ever: the package is unscannable
    (or the scan FAILED), within the usual time. One image per version order (apk and PEP 440, dpkg)."""
    images = {
        "apk-and-pep440": [
            os_release("alpine", "3.12.1"),
            file("lib/apk/db/installed", f"P:libexif\nV:{ABSURD}\no:libexif\n\n"),
            file("site/u.dist-info/METADATA", f"Name: urllib3\nVersion: {ABSURD}\n\n"),
        ],
        "dpkg-epoch": [os_release("debian", "11"), file("var/lib/dpkg/status", dpkg_stanza("chromium", f"{ABSURD}:1"))],
    }
    for tag, entries in images.items():
        put_layers(ecr, scanned_repo, [layer(entries).getvalue()], tag)
    wait_for_scan(ecr, scanned_repo, {"imageTag": "dpkg-epoch"}, timeout=10)  # raises while IN_PROGRESS
    for tag in images:
        answer = wait_for_scan(ecr, scanned_repo, {"imageTag": tag}, timeout=1)
        if answer["imageScanStatus"]["status"] == "COMPLETE":
            assert "could not be evaluated" in answer["imageScanStatus"]["description"], answer["imageScanStatus"]
            assert not answer["imageScanFindings"]["findings"]
    assert httpx.get(f"{scan_server.url}/healthz", timeout=5).status_code == 200


def test_the_server_keeps_scanning_after_hostile_images(ecr: Any, scanned_repo: str, records: Any) -> None:
    """Run after the hostile cases in this module: a normal image still scans to the expected result."""
    for case, build, _, _ in REFUSED[:2]:
        put_layers(ecr, scanned_repo, build(None), f"again-{case}")
    image = debian7_wheezy()
    put_layers(ecr, scanned_repo, list(image.layers), image.name)
    answer = wait_for_scan(ecr, scanned_repo, {"imageTag": image.name})
    assert answer["imageScanStatus"]["status"] == "COMPLETE"
    assert reported(answer["imageScanFindings"]["findings"]) == expected_findings(records, image.present)
