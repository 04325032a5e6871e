"""Build small image layers (tar streams) in memory for the inventory tests."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import posixpath
import sqlite3
import struct
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Compression = Literal["", "gz", "bz2", "xz"]
_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda data: data,
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
}


@dataclass(frozen=True)
class Entry:
    path: str
    kind: bytes = tarfile.REGTYPE
    content: bytes = b""
    link: str = ""


def file(path: str, content: str | bytes) -> Entry:
    return Entry(path, tarfile.REGTYPE, content.encode() if isinstance(content, str) else content)


def directory(path: str) -> Entry:
    return Entry(path, tarfile.DIRTYPE)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, tarfile.SYMTYPE, link=target)


def hardlink(path: str, target: str) -> Entry:
    return Entry(path, tarfile.LNKTYPE, link=target)


def whiteout(path: str) -> Entry:
    parent, base = posixpath.split(path)
    return file(posixpath.join(parent, f".wh.{base}"), b"")


def opaque(directory_path: str) -> Entry:
    return file(posixpath.join(directory_path, ".wh..wh..opq"), b"")


def layer(entries: Iterable[Entry], compression: Compression = "gz") -> io.BytesIO:
    """A layer blob as a registry would store it (gzip unless told otherwise)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.type, info.linkname, info.mode = (
                entry.kind,
                entry.link,
                0o755 if entry.kind == tarfile.DIRTYPE else 0o644,
            )
            info.size = len(entry.content) if entry.kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(entry.content) if entry.kind == tarfile.REGTYPE else None)
    return io.BytesIO(_COMPRESSORS[compression](buffer.getvalue()))


def os_release(os_id: str, version_id: str, version: str = "") -> Entry:
    lines = [f'ID="{os_id}"', f'VERSION_ID="{version_id}"', f'PRETTY_NAME="{os_id} {version_id}"']
    if version:
        lines.append(f'VERSION="{version}"')
    return file("etc/os-release", "\n".join(lines) + "\n")


def dpkg_stanza(
    package: str, version: str, source: str | None = None, status: str | None = "install ok installed"
) -> str:
    lines = [f"Package: {package}"]
    if status is not None:
        lines.append(f"Status: {status}")
    lines += ["Priority: optional", "Architecture: amd64", f"Version: {version}"]
    if source:
        lines.append(f"Source: {source}")
    lines += [f"Description: the {package} package", " a continuation line: Version: 0.0"]
    return "\n".join(lines) + "\n"


def dist_info(site_packages: str, name: str, version: str) -> Entry:
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nVersion: 0.0 in the description\n"
    return file(f"{site_packages}/{name}-{version}.dist-info/METADATA", metadata)


def npm_package(root: str, name: str, version: str) -> Entry:
    return file(f"{root}/node_modules/{name}/package.json", f'{{"name": "{name}", "version": "{version}"}}')


def rpm_header(tags: dict[int, str | int]) -> bytes:
    """An RPM header blob as rpmdb.sqlite stores it: counts, index entries, then the data store."""
    index, store = b"", b""
    for tag, value in sorted(tags.items()):
        if isinstance(value, int):
            store += b"\0" * (-len(store) % 4)  # INT32 values are 4-byte aligned
            index += struct.pack(">iIiI", tag, 4, len(store), 1)
            store += struct.pack(">i", value)
        else:
            index += struct.pack(">iIiI", tag, 6, len(store), 1)
            store += value.encode() + b"\0"
    return struct.pack(">ii", len(tags), len(store)) + index + store


def rpmdb(path: Path, headers: Iterable[bytes]) -> bytes:
    """An rpmdb.sqlite file with rpm's schema, returned as bytes."""
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)")
    connection.executemany("INSERT INTO Packages (blob) VALUES (?)", [(blob,) for blob in headers])
    connection.commit()
    connection.close()
    return path.read_bytes()
