"""Scanning a large image: inventory from its layers plus matching, the work one scan job does.

    python benchmarks/scan_image.py [--mib 500]

Builds an image of gzipped tar layers in a temp dir: a Debian-like base (an os-release, a dpkg status file
listing 400 packages, and bulk files making up most of the size) and a layer of 200 Python packages
(dist-info folders), then scans it with `read_inventory` + matching against the OSV fixtures when they are
kept in the repository (tests/fixtures/osv). Reports wall and CPU seconds and peak RSS of the scan alone.
Target: a 500 MB image in under 10 s on one core, under 200 MB of memory.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import os
import resource
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from dockyard.domain.scanning.inventory import read_inventory
from dockyard.domain.scanning.matching import match_inventory
from dockyard.domain.scanning.osv import AdvisoryIndex, iter_zip_records

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "osv"
FILE_BYTES = 4 * 1024 * 1024


def add(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    tar.addfile(info, io.BytesIO(content))


def base_layer(path: Path, mib: int) -> None:
    stanzas = [
        f"Package: pkg{n}\nStatus: install ok installed\nVersion: 1.{n}-1\nArchitecture: amd64\n" for n in range(400)
    ] + ["Package: openssl\nStatus: install ok installed\nVersion: 1.1.1n-0+deb11u3\nArchitecture: amd64\n"]
    with gzip.open(path, "wb", compresslevel=1) as raw, tarfile.open(fileobj=raw, mode="w|") as tar:
        add(tar, "etc/os-release", b'ID=debian\nVERSION_ID="11"\nPRETTY_NAME="Debian GNU/Linux 11"\n')
        add(tar, "var/lib/dpkg/status", "\n".join(stanzas).encode())
        for n in range(mib * 1024 * 1024 // FILE_BYTES):
            # Text-like content: it compresses (~25 %) as real files do, so reading it costs real inflation.
            add(tar, f"usr/share/bulk/file-{n:05d}.txt", base64.b64encode(os.urandom(FILE_BYTES * 3 // 4)))


def python_layer(path: Path) -> None:
    with gzip.open(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w|") as tar:
        for n in range(200):
            name, version = (f"package{n}", "1.0.0") if n else ("urllib3", "1.26.5")
            metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
            add(tar, f"usr/lib/python3/dist-packages/{name}-{version}.dist-info/METADATA", metadata)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=500)
    args = parser.parse_args()
    records = []
    if FIXTURES.is_dir():
        for archive in sorted(FIXTURES.glob("*-all.zip")):
            records.extend(iter_zip_records(archive))
    index = AdvisoryIndex(records)
    with tempfile.TemporaryDirectory(prefix="dockyard-scan-bench-") as work:
        base, python = Path(work) / "base.tar.gz", Path(work) / "python.tar.gz"
        started = time.perf_counter()
        base_layer(base, args.mib)
        python_layer(python)
        size = (base.stat().st_size + python.stat().st_size) / 1e6
        print(f"built a {size:.0f} MB image in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cpu, wall = time.process_time(), time.perf_counter()
        with base.open("rb") as first, python.open("rb") as second:
            inventory = read_inventory([first, second])
        findings = match_inventory(inventory, index)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(
            f"| scan of a {size:.0f} MB image ({len(inventory.packages)} packages, {len(findings.findings)} findings)"
            f" | {wall:.1f} s wall | {cpu:.1f} s CPU | peak RSS {peak / 1024:.0f} MiB"
            f" (before the scan {rss_before / 1024:.0f} MiB) |"
        )


if __name__ == "__main__":
    main()
