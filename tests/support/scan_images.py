"""Images with real package metadata for scanning tests, each with the list of what it installs.

Layers are built with the inventory tests' builders (tests/unit/domain/scanning/layers.py): a dpkg status
file or distroless `status.d` stanzas, apk's installed database, Python dist-info folders, node_modules
trees, os-release, and whiteouts (`.wh.<name>`, `.wh..wh..opq`) that remove packages of lower layers.
Every package an image ever had is listed as `Installed`, with `present=False` when a later layer removed
it (or dpkg does not count it as installed), so a test can expect findings for the present ones only.

Versions were chosen against the fixture advisories in tests/fixtures/osv (see SOURCES.md there): some
inside an affected range, some exactly at or above the fixed version, some in an OS release the record does
not cover.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.support.images import Layout
from tests.unit.domain.scanning.layers import (
    Entry,
    dist_info,
    dpkg_stanza,
    file,
    layer,
    npm_package,
    opaque,
    os_release,
    whiteout,
)

SITE = "usr/lib/python3/dist-packages"


@dataclass(frozen=True)
class Installed:
    """One package as ECR reports it (`package_name`, `package_version`) and as OSV keys it."""

    ecosystem: str  # the OSV ecosystem, release-qualified for OS packages
    name: str
    version: str
    source: str | None = None  # the source package OSV names (dpkg Source:, apk origin), if not `name`
    source_version: str | None = None
    present: bool = True  # False: removed by a later layer, or not installed as far as dpkg is concerned

    @property
    def osv_name(self) -> str:
        return self.source or self.name

    @property
    def osv_version(self) -> str:
        return self.source_version or self.version


@dataclass(frozen=True)
class ScanImage:
    name: str  # used as the tag
    layers: tuple[bytes, ...]  # gzipped tar layers, base first
    installed: tuple[Installed, ...] = field(default_factory=tuple)

    @property
    def present(self) -> list[Installed]:
        return [package for package in self.installed if package.present]

    @property
    def removed(self) -> list[Installed]:
        return [package for package in self.installed if not package.present]

    def layout(self, root: Path) -> Layout:
        """An OCI layout holding this image under its name."""
        built = Layout(root)
        built.tag(built.add_image(list(self.layers), label=self.name), self.name)
        return built


def _gz(entries: list[Entry]) -> bytes:
    return layer(entries, "gz").getvalue()


def _status(*stanzas: str) -> str:
    return "\n".join(stanzas)


def _apk(*records: tuple[str, str, str]) -> str:
    """apk's installed database: one record per (name, version, origin)."""
    return "".join(
        f"C:Q1{name}=\nP:{name}\nV:{version}\nA:x86_64\no:{origin}\nL:MIT\n\n" for name, version, origin in records
    )


def debian11_app() -> ScanImage:
    """Debian 11 with dpkg, Python and npm packages; layer 2 whites out some of them."""
    deb, py, npm = "Debian:11", "PyPI", "npm"
    status = _status(
        dpkg_stanza("chromium", "120.0.6099.224-1~deb11u1"),
        dpkg_stanza("unixodbc-common", "2.3.6-0.1", source="unixodbc"),  # the record covers Debian:10 only
    )
    base = [
        os_release("debian", "11", "11 (bullseye)"),
        file("var/lib/dpkg/status", status),
        dist_info(SITE, "urllib3", "1.24.1"),
        dist_info(SITE, "requests", "2.19.1"),
        dist_info(SITE, "Jinja2", "2.10"),
        dist_info(SITE, "PyYAML", "5.3"),
        dist_info(SITE, "Django", "2.2"),
        npm_package("app", "lodash", "4.17.20"),
        npm_package("app", "lodash-es", "4.17.21"),
        npm_package("app", "semver", "7.5.1"),
        npm_package("app", "minimist", "1.2.5"),
        npm_package("app/node_modules/foo", "semver", "6.3.1"),
        npm_package("app/node_modules/bar", "minimist", "0.2.3"),
        npm_package("opt/legacy", "lodash", "4.17.15"),
    ]
    upper = [
        whiteout(f"{SITE}/Django-2.2.dist-info"),
        dist_info(SITE, "Django", "2.2.28"),
        whiteout("app/node_modules/minimist"),
        opaque("opt/legacy"),
    ]
    installed = (
        Installed(deb, "chromium", "120.0.6099.224-1~deb11u1"),
        Installed(deb, "unixodbc-common", "2.3.6-0.1", source="unixodbc"),
        Installed(py, "urllib3", "1.24.1"),
        Installed(py, "requests", "2.19.1"),
        Installed(py, "Jinja2", "2.10"),
        Installed(py, "PyYAML", "5.3"),
        Installed(py, "Django", "2.2", present=False),
        Installed(py, "Django", "2.2.28"),
        Installed(npm, "lodash", "4.17.20"),
        Installed(npm, "lodash-es", "4.17.21"),
        Installed(npm, "semver", "7.5.1"),
        Installed(npm, "minimist", "1.2.5", present=False),
        Installed(npm, "semver", "6.3.1"),
        Installed(npm, "minimist", "0.2.3"),
        Installed(npm, "lodash", "4.17.15", present=False),
    )
    return ScanImage("debian11-app", (_gz(base), _gz(upper)), installed)


def debian10_distroless() -> ScanImage:
    """Debian 10 the distroless way (one stanza per file in status.d); layer 2 whites out chromium."""
    deb = "Debian:10"
    base = [
        os_release("debian", "10", "10 (buster)"),
        file("var/lib/dpkg/status.d/libodbc1", dpkg_stanza("libodbc1", "2.3.6-0.1+b1", "unixodbc (2.3.6-0.1)", None)),
        file("var/lib/dpkg/status.d/libodbc1.md5sums", "d41d8cd98f00b204e9800998ecf8427e  usr/lib/libodbc.so.2\n"),
        file("var/lib/dpkg/status.d/chromium", dpkg_stanza("chromium", "89.0.4389.114-1~deb10u1", status=None)),
        file("var/lib/dpkg/status.d/nginx", dpkg_stanza("nginx", "1.14.2-2+deb10u4", status=None)),
    ]
    upper = [whiteout("var/lib/dpkg/status.d/chromium")]
    installed = (
        Installed(deb, "libodbc1", "2.3.6-0.1+b1", source="unixodbc", source_version="2.3.6-0.1"),
        Installed(deb, "chromium", "89.0.4389.114-1~deb10u1", present=False),
        Installed(deb, "nginx", "1.14.2-2+deb10u4"),  # DSA-3029-1 is about Debian:7
    )
    return ScanImage("debian10-distroless", (_gz(base), _gz(upper)), installed)


def debian7_wheezy() -> ScanImage:
    """Debian 7: DSA-3029-1 (nginx fixed in 1.2.1-2.2+wheezy3) through binary packages of source nginx."""
    deb = "Debian:7"
    status = _status(
        dpkg_stanza("nginx-full", "1.2.1-2.2+wheezy2", source="nginx"),
        dpkg_stanza("nginx-common", "1.2.1-2.2+wheezy3", source="nginx"),
        dpkg_stanza("nginx-light", "1.2.1-2.2+wheezy1", source="nginx", status="deinstall ok config-files"),
        dpkg_stanza("libodbc1", "2.2.14p2-5", source="unixodbc"),
    )
    entries = [os_release("debian", "7", "7 (wheezy)"), file("var/lib/dpkg/status", status)]
    installed = (
        Installed(deb, "nginx-full", "1.2.1-2.2+wheezy2", source="nginx"),
        Installed(deb, "nginx-common", "1.2.1-2.2+wheezy3", source="nginx"),
        Installed(deb, "nginx-light", "1.2.1-2.2+wheezy1", source="nginx", present=False),
        Installed(deb, "libodbc1", "2.2.14p2-5", source="unixodbc"),
    )
    return ScanImage("debian7-wheezy", (_gz(entries),), installed)


def alpine(minor: str) -> ScanImage:
    """Alpine v3.12 or v3.15: libexif and mariadb (source `o:` origin) around the records' fixed versions."""
    eco = f"Alpine:v3.{minor}"
    if minor == "12":
        records = [
            ("libexif", "0.6.20-r1", "libexif"),  # fixed in 0.6.21-r0
            ("mariadb", "10.4.25-r0", "mariadb"),  # exactly the fixed version of v3.12
            ("mariadb-common", "10.4.24-r0", "mariadb"),
        ]
    else:
        records = [
            ("libexif", "0.6.20-r0", "libexif"),  # CVE-2012-2812 lists no v3.15 entry
            ("mariadb", "10.6.7-r0", "mariadb"),  # fixed in 10.6.8-r0 on v3.15
            ("mariadb-client", "10.6.7-r0", "mariadb"),
        ]
    entries = [
        os_release("alpine", f"3.{minor}.4"),
        file("etc/alpine-release", f"3.{minor}.4\n"),
        file("lib/apk/db/installed", _apk(*records)),
    ]
    installed = tuple(Installed(eco, name, version, source=origin) for name, version, origin in records)
    return ScanImage(f"alpine3{minor}", (_gz(entries),), installed)


def all_images() -> list[ScanImage]:
    return [debian11_app(), debian10_distroless(), debian7_wheezy(), alpine("12"), alpine("15")]
