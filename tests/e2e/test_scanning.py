"""Scanning end to end: `dockyard scan-db import` of the real OSV fixture zips into a running server's data
directory, images with real package metadata pushed with skopeo to a scan-on-push repository, findings read
with boto3 and the aws CLI, and `dockyard scan` on the same OCI layouts.

Expected findings are computed from the fixture records by tests/support/osv_oracle.py (dpkg's own version
comparison, `packaging`, plain-form comparators), independently of Dockyard's scanning code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.api.ecr.helpers import ecr_client
from tests.support.cli import Aws, dockyard, dockyard_ok
from tests.support.osv_oracle import ECOSYSTEM_ZIPS, OSV_FIXTURES, expected_findings, load_records, reported
from tests.support.scan_images import ScanImage, all_images
from tests.support.scan_layers import wait_for_scan
from tests.support.server import ServerProcess
from tests.support.tools import Skopeo, describe, layout_manifest_digest

REPO = "scanning/e2e"
RECORDS_PER_ZIP = {"PyPI": 25, "npm": 3, "Debian": 3, "Alpine": 2}  # SOURCES.md


@dataclass
class ScanServer:
    server: ServerProcess
    imports: str  # what `dockyard scan-db import` said (on stderr)


@dataclass
class Pushed:
    image: ScanImage
    layout: Path
    digest: str


@pytest.fixture(scope="module")
def scan_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScanServer]:
    if not (OSV_FIXTURES / "PyPI-all.zip").is_file():
        pytest.fail(f"the OSV fixtures are not at {OSV_FIXTURES}", pytrace=False)
    process = ServerProcess(tmp_path_factory.mktemp("scan-e2e") / "data").start()
    try:
        zips = [str(OSV_FIXTURES / f"{name}-all.zip") for name in ECOSYSTEM_ZIPS]
        imported = dockyard_ok("scan-db", "import", *zips, "--data-dir", str(process.data_dir))
        yield ScanServer(process, imported.stderr)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def ecr(scan_server: ScanServer) -> Any:
    return ecr_client(scan_server.server)


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return load_records()


@pytest.fixture(scope="module")
def pushed(scan_server: ScanServer, ecr: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pushed]:
    """Every test image, pushed with skopeo to a repository created with scanOnPush."""
    ecr.create_repository(repositoryName=REPO, imageScanningConfiguration={"scanOnPush": True})
    workdir = tmp_path_factory.mktemp("scan-layouts")
    skopeo = Skopeo.create(workdir / "skopeo")
    result = {}
    for image in all_images():
        root = workdir / image.name
        image.layout(root)
        skopeo.push(scan_server.server, f"oci:{root}:{image.name}", f"{REPO}:{image.name}")
        result[image.name] = Pushed(image, root, layout_manifest_digest(root, image.name))
    return result


def _reports(stderr: str) -> dict[str, tuple[int, int, int]]:
    """`<source>: N advisories written, N unchanged, N rejected` per source (the console may wrap lines)."""
    text = " ".join(stderr.split())
    found = re.findall(r"(\S+): (\d+) advisories written, (\d+) unchanged, (\d+) rejected", text)
    return {Path(source).name: (int(a), int(b), int(c)) for source, a, b, c in found}


def test_scan_db_import_and_status(scan_server: ScanServer) -> None:
    data_dir = str(scan_server.server.data_dir)
    said = _reports(scan_server.imports)
    assert said == {f"{n}-all.zip": (RECORDS_PER_ZIP[n], 0, 0) for n in ECOSYSTEM_ZIPS}, scan_server.imports

    # The same snapshot again writes nothing (records are keyed by id and `modified`); a file that is not a
    # zip is refused with a message and a failing exit status.
    not_zip = scan_server.server.data_dir.parent / "not-a.zip"
    not_zip.write_text("plain text")
    again = dockyard("scan-db", "import", str(OSV_FIXTURES / "npm-all.zip"), str(not_zip), "--data-dir", data_dir)
    assert again.returncode == 1, describe(again)
    assert _reports(again.stderr) == {"npm-all.zip": (0, 3, 0)}, again.stderr
    assert "not a readable OSV zip archive" in " ".join(again.stderr.split()), again.stderr

    status = dockyard_ok("scan-db", "status", "--data-dir", data_dir).stdout.splitlines()
    assert status[-1] == f"total\t{sum(RECORDS_PER_ZIP.values())} advisories", status
    sources = {line.split("\t")[0]: line.split("\t")[2] for line in status[:-1]}
    assert {Path(source).name: count for source, count in sources.items()} == {
        f"{name}-all.zip": f"{count} records" for name, count in RECORDS_PER_ZIP.items()
    }


def test_scan_on_push_findings_equal_the_advisories(ecr: Any, pushed: dict[str, Pushed], records: Any) -> None:
    for name, image in pushed.items():
        answer = wait_for_scan(ecr, REPO, {"imageTag": name})
        assert answer["imageScanStatus"]["status"] == "COMPLETE", (name, answer["imageScanStatus"])
        assert answer["imageId"]["imageDigest"] == image.digest
        findings = answer["imageScanFindings"]["findings"]
        expected = expected_findings(records, image.image.present)
        assert reported(findings) == expected, name
        assert len(findings) == len(expected), f"{name}: a finding listed twice"
        removed = {(p.name, p.version) for p in image.image.removed}
        assert not {(package, version) for _, package, version in reported(findings)} & removed, name
    # Every fixture ecosystem and both kinds of advisory (still open, fixed in a later version) were exercised.
    names = {n for p in pushed.values() for n, _, _ in reported_for(ecr, p)}
    assert {"CVE-2024-3847", "CVE-2024-1013", "CVE-2014-3616", "CVE-2012-2812", "CVE-2022-27449"} <= names
    assert {"CVE-2018-18074", "CVE-2021-23337", "CVE-2021-44906", "CVE-2022-25883"} <= names


def reported_for(ecr: Any, image: Pushed) -> set[tuple[str, str, str]]:
    return reported(wait_for_scan(ecr, REPO, {"imageDigest": image.digest})["imageScanFindings"]["findings"])


def test_describe_images_carries_the_scan_summary(ecr: Any, pushed: dict[str, Pushed]) -> None:
    for image in pushed.values():
        wait_for_scan(ecr, REPO, {"imageDigest": image.digest})
    details = {d["imageDigest"]: d for d in ecr.describe_images(repositoryName=REPO)["imageDetails"]}
    for image in pushed.values():
        detail = details[image.digest]
        scan = ecr.describe_image_scan_findings(repositoryName=REPO, imageId={"imageDigest": image.digest})
        assert detail["imageScanStatus"] == scan["imageScanStatus"]
        summary = detail["imageScanFindingsSummary"]
        assert summary["findingSeverityCounts"] == scan["imageScanFindings"]["findingSeverityCounts"]
        assert summary["imageScanCompletedAt"] == scan["imageScanFindings"]["imageScanCompletedAt"]


def test_dockyard_scan_prints_the_same_findings(
    scan_server: ScanServer, ecr: Any, pushed: dict[str, Pushed], records: Any
) -> None:
    image = pushed["debian11-app"]
    served = wait_for_scan(ecr, REPO, {"imageTag": "debian11-app"})["imageScanFindings"]
    data_dir = str(scan_server.server.data_dir)

    printed = json.loads(dockyard_ok("scan", str(image.layout), "--format", "json", "--data-dir", data_dir).stdout)
    assert {"findings", "findingSeverityCounts", "vulnerabilitySourceUpdatedAt"} <= set(printed)
    assert printed["findings"] == served["findings"]
    assert printed["findingSeverityCounts"] == served["findingSeverityCounts"]
    assert reported(printed["findings"]) == expected_findings(records, image.image.present)

    table = dockyard_ok("scan", str(image.layout), "--format", "table", "--data-dir", data_dir).stdout
    header = next(line for line in table.splitlines() if "severity" in line)
    assert re.search(r"severity\s*\S\s*name\s*\S\s*package\s*\S\s*version", header), table
    rows = [line for line in table.splitlines() if re.search(r"CVE-\d{4}-\d+", line)]
    assert len(rows) == len(served["findings"]), table
    for finding in served["findings"]:
        attributes = {a["key"]: a["value"] for a in finding["attributes"]}
        assert any(
            finding["name"] in row and finding["severity"] in row and attributes["package_name"] in row for row in rows
        ), (finding["name"], table)


def test_aws_cli_shows_the_same_findings(scan_server: ScanServer, ecr: Any, pushed: dict[str, Pushed]) -> None:
    aws = Aws(scan_server.server, scan_server.server.data_dir.parent / "aws-home")
    image_id = "imageTag=debian11-app"
    waited = aws("wait", "image-scan-complete", "--repository-name", REPO, "--image-id", image_id)
    assert waited.returncode == 0, describe(waited)
    shown = aws.json("describe-image-scan-findings", "--repository-name", REPO, "--image-id", image_id)
    served = wait_for_scan(ecr, REPO, {"imageTag": "debian11-app"})
    assert shown["imageScanStatus"]["status"] == "COMPLETE"
    assert shown["imageScanFindings"]["findings"] == served["imageScanFindings"]["findings"]
    assert shown["imageScanFindings"]["findingSeverityCounts"] == served["imageScanFindings"]["findingSeverityCounts"]
    described = aws.json("describe-images", "--repository-name", REPO, "--image-ids", image_id)["imageDetails"][0]
    assert described["imageScanStatus"]["status"] == "COMPLETE"
    assert (
        described["imageScanFindingsSummary"]["findingSeverityCounts"]
        == shown["imageScanFindings"]["findingSeverityCounts"]
    )
