"""`dockyard scan-db update` against a local OSV mirror over real HTTP, and scans before the database exists.

The mirror (tests/support/osv_mirror.py) serves the real fixture archives as `<Ecosystem>/all.zip`, and the
faults a download meets: a 404, an archive cut short on the server, a transfer that breaks off, a corrupt
member, a wrong checksum, a host that does not answer. Every refused download must leave the database as it
was (nothing of the archive imported) and say why on one line.

Then a real `dockyard serve` with an empty database: a scan is FAILED with the reason, not a clean COMPLETE,
and the rescan after `scan-db update` runs at once (no daily-quota refusal) and finds the advisories.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.ecr.helpers import ecr_client, error_code
from tests.support.cli import data_directory, dockyard, dockyard_ok
from tests.support.osv_mirror import OsvMirror
from tests.support.osv_oracle import ECOSYSTEM_ZIPS, OSV_FIXTURES, expected_findings, load_records, reported
from tests.support.scan_images import debian11_app
from tests.support.scan_layers import put_layers, wait_for_scan
from tests.support.server import ServerProcess, free_port
from tests.support.tools import describe

RECORDS_PER_ZIP = {"PyPI": 25, "npm": 3, "Debian": 3, "Alpine": 2}  # SOURCES.md
SCANNED = ("AlmaLinux", "Alpine", "Chainguard", "Debian", "npm", "PyPI", "Rocky Linux", "Ubuntu", "Wolfi")


@pytest.fixture
def mirror() -> Iterator[OsvMirror]:
    with OsvMirror.of_fixtures().running() as running:
        yield running


def update(data_dir: Path, mirror: OsvMirror, *ecosystems: str) -> Any:
    options = [arg for name in ecosystems for arg in ("--ecosystem", name)]
    return dockyard("scan-db", "update", "--source-url", mirror.url, *options, "--data-dir", str(data_dir))


def reports(stderr: str) -> dict[str, tuple[int, int, int]]:
    found = re.findall(r"^(\S+): (\d+) advisories written, (\d+) unchanged, (\d+) rejected$", stderr, re.MULTILINE)
    return {name: (int(a), int(b), int(c)) for name, a, b, c in found}


def status(data_dir: Path) -> list[str]:
    return dockyard_ok("scan-db", "status", "--data-dir", str(data_dir)).stdout.splitlines()


def one_line_error(result: Any, *words: str) -> str:
    """The stderr line that holds every word (so the message is not wrapped or split); no traceback."""
    assert "Traceback" not in result.stderr, describe(result)
    lines = [line for line in result.stderr.splitlines() if all(word in line for word in words)]
    assert len(lines) == 1, (words, result.stderr)
    return lines[0]


def test_update_imports_each_archive_through_the_import_path(tmp_path: Path, mirror: OsvMirror) -> None:
    data = data_directory(tmp_path / "data")
    done = update(data, mirror, *ECOSYSTEM_ZIPS)
    assert done.returncode == 0, describe(done)
    assert reports(done.stderr) == {name: (count, 0, 0) for name, count in RECORDS_PER_ZIP.items()}, done.stderr
    assert sorted(mirror.requested) == sorted(OsvMirror.path_of(name) for name in ECOSYSTEM_ZIPS)
    # Not a terminal: plain progress lines, no bar redraws.
    assert re.search(r"^PyPI: downloading \(28\.1 kB\)$", done.stderr, re.MULTILINE), done.stderr
    assert "\r" not in done.stderr and "\x1b[" not in done.stderr

    lines = status(data)
    assert lines[-1] == f"total\t{sum(RECORDS_PER_ZIP.values())} advisories"
    sources = {line.split("\t")[0]: line.split("\t")[2] for line in lines[:-1]}
    assert sources == {f"{mirror.url}{OsvMirror.path_of(n)}": f"{c} records" for n, c in RECORDS_PER_ZIP.items()}

    # Same snapshot again: incremental, nothing written; `pypi` is PyPI as OSV spells it.
    again = update(data, mirror, "pypi")
    assert again.returncode == 0, describe(again)
    assert reports(again.stderr) == {"PyPI": (0, 25, 0)}


def test_update_without_ecosystems_fetches_every_one_dockyard_scans(tmp_path: Path, mirror: OsvMirror) -> None:
    """The mirror has four of them: the other five are 404, each said on its line, and the exit status is 1."""
    data = data_directory(tmp_path / "data")
    done = update(data, mirror)
    assert done.returncode == 1, describe(done)
    assert sorted(mirror.requested) == sorted(OsvMirror.path_of(name) for name in SCANNED)
    assert "/Rocky%20Linux/all.zip" in mirror.requested
    assert set(reports(done.stderr)) == set(ECOSYSTEM_ZIPS)
    for missing in set(SCANNED) - set(ECOSYSTEM_ZIPS):
        one_line_error(done, f"{missing}: ", "HTTP 404")
    one_line_error(done, "not updated:", "5 of 9 ecosystems", "the others were updated")
    assert status(data)[-1] == f"total\t{sum(RECORDS_PER_ZIP.values())} advisories"


def test_a_404_for_one_ecosystem_does_not_stop_the_others(tmp_path: Path, mirror: OsvMirror) -> None:
    mirror.remove("Debian")
    data = data_directory(tmp_path / "data")
    done = update(data, mirror, "Debian", "PyPI")
    assert done.returncode == 1, describe(done)
    line = one_line_error(done, "Debian:", "HTTP 404")
    assert line == f"Debian: {mirror.url}/Debian/all.zip: HTTP 404 Not Found"
    assert reports(done.stderr) == {"PyPI": (25, 0, 0)}
    assert status(data)[-1] == "total\t25 advisories"


def _imported_once(tmp_path: Path, mirror: OsvMirror) -> tuple[Path, list[str]]:
    data = data_directory(tmp_path / "data")
    first = update(data, mirror, "PyPI", "npm")
    assert first.returncode == 0, describe(first)
    return data, status(data)


def _renamed_records(count: int) -> list[tuple[str, bytes]]:
    """Fixture records under new ids: importing any of them would change the database."""
    source = zipfile.ZipFile(OSV_FIXTURES / "PyPI-all.zip")
    members = []
    for number, name in enumerate(source.namelist()[:count]):
        record = json.loads(source.read(name))
        record["id"] = f"DOCKYARD-TEST-{number}"
        members.append((f"DOCKYARD-TEST-{number}.json", json.dumps(record).encode()))
    return members


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def test_an_archive_cut_short_on_the_server_is_refused(tmp_path: Path, mirror: OsvMirror) -> None:
    data, before = _imported_once(tmp_path, mirror)
    whole = (OSV_FIXTURES / "PyPI-all.zip").read_bytes()
    mirror.put("PyPI", whole[: len(whole) // 2])  # a complete HTTP answer holding half a zip
    done = update(data, mirror, "PyPI")
    assert done.returncode == 1, describe(done)
    one_line_error(done, "PyPI:", "is not a readable OSV zip archive")
    assert status(data) == before  # same sources, same import times, same count


def test_a_transfer_that_breaks_off_is_refused(tmp_path: Path, mirror: OsvMirror) -> None:
    data, before = _imported_once(tmp_path, mirror)
    whole = (OSV_FIXTURES / "PyPI-all.zip").read_bytes()
    mirror.put("PyPI", whole[:10000], declared_length=len(whole))
    done = update(data, mirror, "PyPI")
    assert done.returncode == 1, describe(done)
    one_line_error(done, "PyPI:", f"truncated download: 10000 of {len(whole)} bytes")
    assert status(data) == before


def test_a_corrupt_member_imports_nothing(tmp_path: Path, mirror: OsvMirror) -> None:
    """The last of 20 new records is damaged (its CRC no longer matches): not even the first 19 are written."""
    data, before = _imported_once(tmp_path, mirror)
    members = _renamed_records(20)
    body = bytearray(_zip(members))
    last = body.rfind(members[-1][1])
    body[last + 10] ^= 0x01  # stored (not deflated): the record's bytes are in the archive as they are
    mirror.put("PyPI", bytes(body))
    done = update(data, mirror, "PyPI")
    assert done.returncode == 1, describe(done)
    one_line_error(done, "PyPI:", "is not a readable OSV zip archive", "CRC")
    assert status(data) == before

    # The same archive intact is imported whole: the refusal above was about the damage only.
    mirror.put("PyPI", _zip(members))
    fixed = update(data, mirror, "PyPI")
    assert fixed.returncode == 0, describe(fixed)
    assert reports(fixed.stderr) == {"PyPI": (20, 0, 0)}


def test_a_checksum_that_differs_from_the_buckets_is_refused(tmp_path: Path, mirror: OsvMirror) -> None:
    """Google Cloud Storage states each object's MD5 in `x-goog-hash`: a body that differs is not imported."""
    data, before = _imported_once(tmp_path, mirror)
    body = _zip(_renamed_records(3))
    mirror.put("PyPI", body, headers={"x-goog-hash": "crc32c=AAAAAA==,md5=" + "A" * 22 + "=="})
    done = update(data, mirror, "PyPI")
    assert done.returncode == 1, describe(done)
    one_line_error(done, "PyPI:", "corrupt download", "x-goog-hash")
    assert status(data) == before


def test_an_unreachable_host_is_one_line(tmp_path: Path) -> None:
    port = free_port()  # bound and released: nothing listens there
    data = data_directory(tmp_path / "data")
    done = dockyard(
        "scan-db", "update", "--source-url", f"http://127.0.0.1:{port}/", "--ecosystem", "PyPI", "--data-dir", str(data)
    )
    assert done.returncode == 1, describe(done)
    line = one_line_error(done, "PyPI:", f"http://127.0.0.1:{port}/PyPI/all.zip", "cannot connect")
    assert "refused" in line.lower(), line
    one_line_error(done, "not updated: PyPI", "none was updated")
    # `scan-db import` of a URL goes through the same download and says it the same way.
    imported = dockyard("scan-db", "import", f"http://127.0.0.1:{port}/PyPI/all.zip", "--data-dir", str(data))
    assert imported.returncode == 1, describe(imported)
    one_line_error(imported, f"http://127.0.0.1:{port}/PyPI/all.zip", "cannot connect")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--ecosystem", "Go"], "'Go' is not an ecosystem Dockyard scans"),
        (["--source-url", "ftp://mirror.example/osv"], "is not an http(s) URL"),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, options: list[str], words: str) -> None:
    done = dockyard("scan-db", "update", *options, "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 2, describe(done)
    assert words in " ".join(re.sub(r"[│╭╮╰╯─]", " ", done.stderr).split()), done.stderr
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------------------------ scans before an import


@pytest.fixture
def empty_server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data").start()
    try:
        yield process
    finally:
        process.stop()


def _scan(ecr: Any, repository: str, tag: str) -> dict[str, Any]:
    ecr.start_image_scan(repositoryName=repository, imageId={"imageTag": tag})  # raises LimitExceededException
    return wait_for_scan(ecr, repository, {"imageTag": tag})


def test_a_scan_without_advisories_is_failed_and_the_rescan_after_update_is_not_refused(
    empty_server: ServerProcess, mirror: OsvMirror, tmp_path: Path
) -> None:
    ecr = ecr_client(empty_server)
    repository = "scan-db/before-import"
    ecr.create_repository(repositoryName=repository)
    image = debian11_app()
    digest = put_layers(ecr, repository, list(image.layers), image.name)
    per_ecosystem = Counter(package.ecosystem.partition(":")[0] for package in image.present)
    assert per_ecosystem == {"Debian": 2, "PyPI": 5, "npm": 5}

    # No database at all: FAILED, naming every ecosystem and the command; no findings, no summary.
    first = _scan(ecr, repository, image.name)
    scan_status = first["imageScanStatus"]
    assert scan_status["status"] == "FAILED", scan_status
    assert scan_status["description"] == (
        "The scan is incomplete: no advisory database for ecosystems Debian (2 packages not evaluated), "
        "PyPI (5 packages not evaluated), npm (5 packages not evaluated); run `dockyard scan-db update` "
        "(or `dockyard scan-db import`), then scan again."
    )
    assert "imageScanFindings" not in first
    detail = ecr.describe_images(repositoryName=repository, imageIds=[{"imageDigest": digest}])["imageDetails"][0]
    assert detail["imageScanStatus"] == scan_status
    assert "imageScanFindingsSummary" not in detail

    # A FAILED scan did not use the day's quota: StartImageScan runs again at once (and fails the same way).
    assert _scan(ecr, repository, image.name)["imageScanStatus"] == scan_status

    # PyPI only: the update queues the incomplete scan again by itself; still FAILED (Debian and npm have
    # no advisories), with the PyPI part counted.
    records = load_records()
    pypi = update(empty_server.data_dir, mirror, "PyPI")
    assert pypi.returncode == 0, describe(pypi)
    assert "1 scan(s) that lacked advisories queued again" in pypi.stderr
    partial = wait_for_scan(ecr, repository, {"imageTag": image.name})["imageScanStatus"]
    assert partial["status"] == "FAILED", partial
    pypi_findings = expected_findings([r for r in records if _ecosystems(r) == {"PyPI"}], image.present)
    assert partial["description"].startswith(
        "The scan is incomplete: no advisory database for ecosystems Debian (2 packages not evaluated), "
        "npm (5 packages not evaluated); run `dockyard scan-db update`"
    ), partial
    assert f"Evaluated: 5 packages of the other ecosystems, {len(pypi_findings)} finding(s) (" in partial["description"]

    # Everything imported: COMPLETE with the advisories' findings, without anyone asking again.
    rest = update(empty_server.data_dir, mirror, "Debian", "npm", "Alpine")
    assert rest.returncode == 0, describe(rest)
    complete = wait_for_scan(ecr, repository, {"imageTag": image.name})
    assert complete["imageScanStatus"]["status"] == "COMPLETE", complete["imageScanStatus"]
    assert reported(complete["imageScanFindings"]["findings"]) == expected_findings(records, image.present)
    detail = ecr.describe_images(repositoryName=repository, imageIds=[{"imageDigest": digest}])["imageDetails"][0]
    assert detail["imageScanStatus"]["status"] == "COMPLETE"
    counts = complete["imageScanFindings"]["findingSeverityCounts"]
    assert detail["imageScanFindingsSummary"]["findingSeverityCounts"] == counts

    # A verdict uses the day's quota, as ECR; and a later import leaves a COMPLETE scan alone.
    with pytest.raises(ClientError) as again:
        ecr.start_image_scan(repositoryName=repository, imageId={"imageTag": image.name})
    assert error_code(again.value) == "LimitExceededException"
    once_more = update(empty_server.data_dir, mirror, "PyPI")
    assert once_more.returncode == 0 and "queued again" not in once_more.stderr, describe(once_more)


def _ecosystems(record: dict[str, Any]) -> set[str]:
    return {entry["package"]["ecosystem"].partition(":")[0] for entry in record.get("affected", [])}


def test_dockyard_scan_without_advisories_exits_1(tmp_path: Path) -> None:
    """`dockyard scan` of a layout with an empty database: the document says what was not evaluated, and
    the exit status is not a pass."""
    image = debian11_app()
    image.layout(tmp_path / "layout")
    done = dockyard("scan", str(tmp_path / "layout"), "--data-dir", str(data_directory(tmp_path / "data")))
    assert done.returncode == 1, describe(done)
    document = json.loads(done.stdout)
    assert document["findings"] == []
    assert document["notEvaluated"] == {"Debian": 2, "PyPI": 5, "npm": 5}
    one_line_error(done, "no advisory database for ecosystems Debian", "dockyard scan-db update")
