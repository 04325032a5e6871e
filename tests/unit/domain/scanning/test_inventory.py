"""Package inventory from in-memory layers: package databases, overlay semantics, hostile input."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.domain.scanning.errors import ScanFailed
from dockyard.domain.scanning.inventory import Inventory, InventoryLimits, OperatingSystem, Package, read_inventory
from tests.unit.domain.scanning.layers import (
    Compression,
    Entry,
    directory,
    dist_info,
    dpkg_stanza,
    file,
    hardlink,
    layer,
    npm_package,
    opaque,
    os_release,
    rpm_header,
    rpmdb,
    symlink,
    whiteout,
)

SITE = "usr/local/lib/python3.11/site-packages"


def _names(inventory: Inventory, manager: str | None = None) -> set[tuple[str, str]]:
    return {(p.name, p.version) for p in inventory.packages if manager is None or p.manager == manager}


def _package(inventory: Inventory, name: str) -> Package:
    return next(package for package in inventory.packages if package.name == name)


# --- package databases ------------------------------------------------------------------------------


def test_dpkg_status_with_sources_and_states() -> None:
    status = "\n".join(
        [
            dpkg_stanza("libssl3", "3.0.11-1~deb12u2", source="openssl"),
            dpkg_stanza("openssl", "3.0.11-1~deb12u2"),
            dpkg_stanza("libodbc1", "2.3.6-0.1+b1", source="unixodbc (2.3.6-0.1)"),
            dpkg_stanza("removed", "1.0-1", status="deinstall ok config-files"),
            dpkg_stanza("half", "1.0-1", status="install ok half-installed"),
        ]
    )
    inventory = read_inventory([layer([os_release("debian", "12"), file("var/lib/dpkg/status", status)])])
    assert inventory.os == OperatingSystem("debian", "12", "", "debian 12")
    assert _names(inventory) == {
        ("libssl3", "3.0.11-1~deb12u2"),
        ("openssl", "3.0.11-1~deb12u2"),
        ("libodbc1", "2.3.6-0.1+b1"),
    }
    libssl = _package(inventory, "libssl3")
    assert (libssl.ecosystem, libssl.lookup_names, libssl.arch, libssl.location) == (
        "Debian:12",
        ("openssl",),
        "amd64",
        "/var/lib/dpkg/status",
    )
    odbc = _package(inventory, "libodbc1")
    assert (odbc.lookup_names, odbc.lookup_version) == (("unixodbc",), "2.3.6-0.1")  # binNMU: source version


def test_malformed_dpkg_stanzas_are_skipped() -> None:
    status = (
        "garbage without a colon\n\x00\xff binary noise\n\n"
        "Package: noversion\nStatus: install ok installed\n\n"
        "Version: 1.0\nStatus: install ok installed\n\n"
        "Package: crlf\r\nStatus: install ok installed\r\nVersion: 2.0-1\r\n\r\n"
        "Package: odd-status\nStatus: installed\nVersion: 1.0\n\n"
        "Package: weird-source\nStatus: install ok installed\nVersion: 1.0\nSource: (((\n"
    )
    inventory = read_inventory([layer([os_release("debian", "12"), file("var/lib/dpkg/status", status)])])
    assert _names(inventory) == {("crlf", "2.0-1"), ("weird-source", "1.0")}
    assert _package(inventory, "weird-source").source_name == "weird-source"


def test_distroless_status_d_files() -> None:
    entries = [
        os_release("debian", "12"),
        file("var/lib/dpkg/status.d/base", dpkg_stanza("base-files", "12.4+deb12u5", status=None)),
        file("var/lib/dpkg/status.d/base.md5sums", "d41d8cd98f00b204e9800998ecf8427e  etc/issue\n"),
        file("var/lib/dpkg/status.d/libssl3", dpkg_stanza("libssl3", "3.0.11-1~deb12u2", "openssl", status=None)),
    ]
    inventory = read_inventory([layer(entries)])
    assert _names(inventory) == {("base-files", "12.4+deb12u5"), ("libssl3", "3.0.11-1~deb12u2")}
    assert _package(inventory, "libssl3").lookup_names == ("openssl",)


def test_apk_installed_database() -> None:
    installed = (
        "C:Q1abc=\nP:libcrypto3\nV:3.1.4-r5\nA:x86_64\no:openssl\nL:Apache-2.0\nF:lib\nR:libcrypto.so.3\n\n"
        "P:musl\nV:1.2.4_git20230717-r4\nA:x86_64\n\n"
        "P:broken\n\nV:9.9\n\n"
    )
    layers = [layer([file("etc/alpine-release", "3.19.1\n"), file("lib/apk/db/installed", installed)])]
    inventory = read_inventory(layers)
    assert inventory.os is not None and inventory.os.osv_ecosystem == "Alpine:v3.19"
    assert _names(inventory) == {("libcrypto3", "3.1.4-r5"), ("musl", "1.2.4_git20230717-r4")}
    assert _package(inventory, "libcrypto3").lookup_names == ("openssl",)
    assert _package(inventory, "musl").lookup_names == ("musl",)


def test_rpm_sqlite_database(tmp_path: Path) -> None:
    headers = [
        rpm_header(
            {
                1000: "openssl-libs",
                1001: "3.0.7",
                1002: "24.el9",
                1003: 1,
                1022: "x86_64",
                1044: "openssl-3.0.7-24.el9.src.rpm",
            }
        ),
        rpm_header({1000: "bash", 1001: "5.1.8", 1002: "6.el9_1", 1022: "x86_64", 1044: "bash-5.1.8-6.el9_1.src.rpm"}),
        rpm_header({1000: "gpg-pubkey", 1001: "fd431d51", 1002: "4ae0493b"}),
        b"\x00\x00\x00\x01garbage",
        b"",
    ]
    database = rpmdb(tmp_path / "rpmdb.sqlite", headers)
    inventory = read_inventory([layer([os_release("rocky", "9.3"), file("var/lib/rpm/rpmdb.sqlite", database)])])
    assert _names(inventory) == {("openssl-libs", "1:3.0.7-24.el9"), ("bash", "5.1.8-6.el9_1")}
    libs = _package(inventory, "openssl-libs")
    assert (libs.ecosystem, libs.lookup_names, libs.arch) == ("Rocky Linux:9", ("openssl-libs", "openssl"), "x86_64")


def test_rpm_database_of_newer_fedora_location(tmp_path: Path) -> None:
    database = rpmdb(tmp_path / "rpmdb.sqlite", [rpm_header({1000: "glibc", 1001: "2.38", 1002: "1.fc39"})])
    inventory = read_inventory(
        [layer([os_release("fedora", "39"), file("usr/lib/sysimage/rpm/rpmdb.sqlite", database)])]
    )
    assert _names(inventory) == {("glibc", "2.38-1.fc39")}
    assert _package(inventory, "glibc").ecosystem is None  # OSV has no Fedora feed


def test_corrupt_rpm_database_fails_the_scan() -> None:
    entries = [os_release("almalinux", "9"), file("var/lib/rpm/rpmdb.sqlite", b"SQLite format 3\x00" + b"\xa5" * 4096)]
    with pytest.raises(ScanFailed, match="RPM database"):
        read_inventory([layer(entries)])


def test_python_metadata_of_old_releases() -> None:
    entries = [
        dist_info(SITE, "Jinja2", "2.10"),
        dist_info(SITE, "PyYAML", "5.3"),
        dist_info("usr/lib/python3/dist-packages", "requests", "2.19.1"),
        dist_info("opt/venv/lib/python3.11/site-packages", "Django", "2.2.0"),
        file(f"{SITE}/urllib3-1.24.1-py3.7.egg-info", "Metadata-Version: 1.1\nName: urllib3\nVersion: 1.24.1\n"),
        file(f"{SITE}/six.egg-info/PKG-INFO", "Metadata-Version: 1.0\nName: six\nVersion: 1.11.0\n"),
        file(f"{SITE}/nameless-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nSummary: no name\n"),
        file(f"{SITE}/notes-1.0.dist-info/RECORD", "Name: not metadata\nVersion: 1\n"),
    ]
    inventory = read_inventory([layer(entries)])
    assert inventory.os is None
    assert _names(inventory, "python") == {
        ("Jinja2", "2.10"),
        ("PyYAML", "5.3"),
        ("requests", "2.19.1"),
        ("Django", "2.2.0"),
        ("urllib3", "1.24.1"),
        ("six", "1.11.0"),
    }
    assert {package.ecosystem for package in inventory.packages} == {"PyPI"}


def test_package_json_tree() -> None:
    entries = [
        file("app/package.json", '{"name": "my-app", "version": "1.0.0"}'),  # the application itself
        npm_package("app", "lodash", "4.17.20"),
        npm_package("app", "@babel/core", "7.0.0"),
        npm_package("app/node_modules/mkdirp", "minimist", "0.0.8"),  # a nested, separate install
        file("app/node_modules/minimist/package.json", '{"name": "minimist", "version": "1.2.5"}'),
        file("app/node_modules/lodash/fp/package.json", '{"name": "lodash-fp-internal", "version": "0.0.0"}'),
        file("app/node_modules/@babel/package.json", '{"name": "@babel", "version": "0.0.0"}'),
        file("app/node_modules/.bin/package.json", '{"name": "dot", "version": "0.0.0"}'),
        file("app/node_modules/broken/package.json", "{not json"),
        file("app/node_modules/deep/package.json", "[" * 50_000 + "]" * 50_000),
        file("app/node_modules/numbers/package.json", '{"name": 1, "version": 2}'),
        file("usr/local/lib/node_modules/npm/package.json", '{"name": "npm", "version": "10.2.4"}'),
    ]
    inventory = read_inventory([layer(entries)])
    assert _names(inventory, "npm") == {
        ("lodash", "4.17.20"),
        ("@babel/core", "7.0.0"),
        ("minimist", "0.0.8"),
        ("minimist", "1.2.5"),
        ("npm", "10.2.4"),
    }
    assert _package(inventory, "lodash").location == "/app/node_modules/lodash/package.json"


@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz"])
def test_every_layer_compression(compression: Compression) -> None:
    inventory = read_inventory([layer([dist_info(SITE, "six", "1.16.0")], compression)])
    assert _names(inventory) == {("six", "1.16.0")}


# --- operating system -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "ecosystem"),
    [
        ([os_release("ubuntu", "22.04", "22.04.3 LTS (Jammy Jellyfish)")], "Ubuntu:22.04:LTS"),
        ([os_release("ubuntu", "23.10", "23.10 (Mantic Minotaur)")], "Ubuntu:23.10"),
        ([os_release("alpine", "3.20.0_alpha20240329")], "Alpine:v3.20"),
        ([os_release("debian", "12")], "Debian:12"),
        ([os_release("almalinux", "9.3")], "AlmaLinux:9"),
        ([os_release("amzn", "2023")], None),
        ([file("etc/debian_version", "12.5\n")], "Debian:12"),
        ([file("etc/debian_version", "trixie/sid\n")], None),
        ([file("usr/lib/os-release", 'ID=debian\nVERSION_ID="11"\n')], "Debian:11"),
        (
            [file("etc/os-release", "ID='alpine'\nVERSION_ID=3.18.4\n"), file("usr/lib/os-release", "ID=debian\n")],
            "Alpine:v3.18",
        ),
    ],
)
def test_os_detection(entries: list[Entry], ecosystem: str | None) -> None:
    inventory = read_inventory([layer(entries)])
    assert inventory.os is not None and inventory.os.osv_ecosystem == ecosystem


def test_os_release_symlink_is_not_followed_but_usr_lib_is_read() -> None:
    entries = [
        symlink("etc/os-release", "../usr/lib/os-release"),
        file("usr/lib/os-release", "ID=debian\nVERSION_ID=12\n"),
    ]
    assert read_inventory([layer(entries)]).os == OperatingSystem("debian", "12")


# --- overlay semantics ------------------------------------------------------------------------------


def test_whiteout_of_a_dist_info_directory() -> None:
    base = layer([dist_info(SITE, "Jinja2", "2.10"), dist_info(SITE, "PyYAML", "5.3")])
    upgrade = layer([whiteout(f"{SITE}/Jinja2-2.10.dist-info"), dist_info(SITE, "Jinja2", "3.1.4")])
    assert _names(read_inventory([base, upgrade])) == {("Jinja2", "3.1.4"), ("PyYAML", "5.3")}


def test_opaque_directory_hides_everything_below_from_lower_layers() -> None:
    base = layer([npm_package("app", "lodash", "4.17.20"), npm_package("app", "minimist", "1.2.5")])
    rebuilt = layer([opaque("app/node_modules"), npm_package("app", "lodash", "4.17.21")])
    assert _names(read_inventory([base, rebuilt])) == {("lodash", "4.17.21")}


def test_whiteouts_never_hide_their_own_layer() -> None:
    base = layer([os_release("debian", "12"), file("var/lib/dpkg/status", dpkg_stanza("old", "1.0-1"))])
    replaced = layer([whiteout("var/lib/dpkg/status"), file("var/lib/dpkg/status", dpkg_stanza("new", "2.0-1"))])
    assert _names(read_inventory([base, replaced])) == {("new", "2.0-1")}


def test_whiteout_of_a_parent_directory_and_readding_later() -> None:
    base = layer([os_release("debian", "12"), file("var/lib/dpkg/status", dpkg_stanza("a", "1.0-1"))])
    removed = layer([whiteout("var/lib/dpkg")])
    assert _names(read_inventory([base, removed])) == set()
    base.seek(0)
    readded = layer([file("var/lib/dpkg/status", dpkg_stanza("b", "1.0-1"))])
    assert _names(read_inventory([base, layer([whiteout("var/lib/dpkg")]), readded])) == {("b", "1.0-1")}


def test_a_later_symlink_or_file_replaces_what_lower_layers_had() -> None:
    base = layer(
        [
            os_release("debian", "12"),
            file("var/lib/dpkg/status", dpkg_stanza("a", "1.0-1")),
            dist_info(SITE, "six", "1.0"),
        ]
    )
    upper = layer([symlink("var/lib/dpkg/status", "/etc/shadow"), file(f"{SITE}/six-1.0.dist-info", "now a file")])
    assert _names(read_inventory([base, upper])) == set()


def test_hard_links_share_the_captured_content() -> None:
    entries = [
        dist_info(SITE, "six", "1.16.0"),
        hardlink("opt/venv/site-packages/six-1.16.0.dist-info/METADATA", f"{SITE}/six-1.16.0.dist-info/METADATA"),
        hardlink("opt/other/six-1.0.dist-info/METADATA", "etc/passwd"),  # not captured: nothing to share
    ]
    packages = read_inventory([layer(entries)]).packages
    assert [(p.name, p.location.split("/")[1]) for p in packages] == [("six", "opt"), ("six", "usr")]


# --- hostile and broken input -----------------------------------------------------------------------


def test_paths_outside_the_root_are_ignored() -> None:
    entries = [
        file("/var/lib/dpkg/status", dpkg_stanza("absolute", "1.0-1")),
        file("../var/lib/dpkg/status", dpkg_stanza("escape", "1.0-1")),
        file("a/../../var/lib/dpkg/status", dpkg_stanza("sneaky", "1.0-1")),
        file("./etc/../var/lib/dpkg/status", dpkg_stanza("fine", "1.0-1")),  # normalises inside the root
        os_release("debian", "12"),
    ]
    assert _names(read_inventory([layer(entries)])) == {("fine", "1.0-1")}


def test_symlinks_out_of_the_root_are_never_followed() -> None:
    entries = [
        symlink("var/lib/dpkg/status", "../../../../etc/shadow"),
        symlink(f"{SITE}/evil-1.0.dist-info", "/"),
        symlink("lib/apk/db/installed", "/proc/self/environ"),
    ]
    assert read_inventory([layer(entries)]).packages == ()


def _gzip_tar_headers(*infos: tarfile.TarInfo, tail: bytes = b"") -> io.BytesIO:
    raw = b"".join(info.tobuf(tarfile.GNU_FORMAT) for info in infos) + tail
    return io.BytesIO(gzip.compress(raw))


def test_huge_declared_member_size_stops_before_skipping_it() -> None:
    info = tarfile.TarInfo("blob.bin")
    info.size = 1 << 40  # a terabyte announced, a kilobyte delivered
    with pytest.raises(ScanFailed, match="uncompressed bytes"):
        read_inventory([_gzip_tar_headers(info, tail=b"x" * 1024)])


def test_huge_package_database_is_refused() -> None:
    info = tarfile.TarInfo("var/lib/dpkg/status")
    info.size = 1 << 31
    with pytest.raises(ScanFailed, match=r"var/lib/dpkg/status is 2147483648 bytes"):
        read_inventory([_gzip_tar_headers(info, tail=b"Package: x\n" * 10)])


def test_huge_extended_header_is_refused_before_tarfile_reads_it() -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, 512 * 1024 * 1024
    with pytest.raises(ScanFailed, match="extended header"):
        read_inventory([_gzip_tar_headers(info, tail=b"0" * 4096)])


def _forged_header(name: str, typeflag: bytes, patch: dict[int, bytes]) -> bytes:
    """A tar header with raw bytes patched in, its checksum recomputed: shapes tarfile would never write."""
    header = bytearray(tarfile.TarInfo(name).tobuf(tarfile.GNU_FORMAT))
    header[156:157] = typeflag
    for offset, value in patch.items():
        header[offset : offset + len(value)] = value
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (_forged_header("neg", tarfile.REGTYPE, {124: b"\xff" * 12}), "negative size"),
        (_forged_header("holes", tarfile.GNUTYPE_SPARSE, {482: b"\x01"}), "extended GNU sparse"),
    ],
    ids=["negative-size", "gnu-sparse-chain"],
)
def test_forged_headers_are_refused(header: bytes, message: str) -> None:
    with pytest.raises(ScanFailed, match=message):
        read_inventory([io.BytesIO(gzip.compress(header + b"\0" * 4096))])


def test_limits_on_members_paths_and_bytes_read() -> None:
    many = layer([file(f"f{index}", "x") for index in range(20)])
    with pytest.raises(ScanFailed, match="more than 10 tar members"):
        read_inventory([many], InventoryLimits(max_members=10))
    deep = layer([file("a/" * 300 + "METADATA", "x")])
    with pytest.raises(ScanFailed, match="deeper than 256"):
        read_inventory([deep])
    long = layer([file("d" * 5000, "x")])
    with pytest.raises(ScanFailed, match="longer than 4096"):
        read_inventory([long])
    metadata = layer([dist_info(SITE, "a", "1.0"), dist_info(SITE, "b", "1.0")])
    with pytest.raises(ScanFailed, match="package data"):
        read_inventory([metadata], InventoryLimits(max_read_bytes=100))
    with pytest.raises(ScanFailed, match="over the 10-byte limit"):
        read_inventory([layer([dist_info(SITE, "a", "1.0")])], InventoryLimits(max_file_bytes=10))


def _half(blob: bytes) -> bytes:
    return blob[: len(blob) // 2]


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"this is not deflate data", r"layer 1 \(gzip\) is corrupt"),
        (gzip.compress(b"not a tar archive, just text " * 40), r"layer 1 \(gzip\) is corrupt"),
        (_half(layer([dist_info(SITE, "a", "1.0")]).getvalue()), r"layer 1 \(gzip\) is corrupt"),
        (bz2.compress(b"\x00" * 10)[:-5], r"layer 1 \(bzip2\) is corrupt"),
        (b"\x28\xb5\x2f\xfd" + b"\x00" * 100, "zstd"),
        (b"", r"layer 1 \(uncompressed tar\) is corrupt"),
        (b"\xff" * 1024, r"layer 1 \(uncompressed tar\) is corrupt"),
    ],
    ids=["bad-deflate", "gzip-not-tar", "truncated-gzip", "truncated-bzip2", "zstd", "empty", "junk"],
)
def test_unreadable_layers_fail_the_scan_with_a_clear_message(blob: bytes, message: str) -> None:
    good = layer([dist_info(SITE, "a", "1.0")])
    with pytest.raises(ScanFailed, match=message) as failure:
        read_inventory([good, io.BytesIO(blob)]) if "layer 1" not in message else read_inventory([io.BytesIO(blob)])
    assert failure.value.ecr_exception == "UnsupportedImageTypeException"
    assert (failure.value.http_status, failure.value.oci_code) == (400, "UNSUPPORTED")


def test_the_failing_layer_is_named() -> None:
    with pytest.raises(ScanFailed, match=r"layer 2 \(gzip\)"):
        read_inventory([layer([directory("etc")]), io.BytesIO(b"\x1f\x8b\x08\x00broken")])


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_damaged_layers_never_escape_as_other_exceptions(data: st.DataObject) -> None:
    blob = bytearray(
        layer([os_release("debian", "12"), file("var/lib/dpkg/status", dpkg_stanza("a", "1.0-1"))]).getvalue()
    )
    for _ in range(data.draw(st.integers(1, 8))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    with contextlib.suppress(ScanFailed):
        read_inventory([io.BytesIO(bytes(blob[:cut]))])
