"""Readers of the files that list installed packages: dpkg, apk, rpm (SQLite), Python metadata, npm.

Every parser takes the file's content and yields what it can read; a malformed entry is skipped, never
raised, because one broken stanza must not hide the rest of an image. Only an unreadable RPM database
raises (ScanFailed): without it there is no OS inventory at all, and silence would read as "no findings".
"""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dockyard.domain.scanning.errors import ScanFailed


@dataclass(frozen=True)
class InstalledEntry:
    """One installed package as its database states it."""

    name: str
    version: str
    source_name: str | None = None
    source_version: str | None = None
    arch: str | None = None


def decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


# --- os-release -------------------------------------------------------------------------------------


def parse_os_release(text: str) -> dict[str, str]:
    """`KEY=value` lines with shell quoting (os-release(5)); unreadable lines are skipped."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, equals, value = line.strip().partition("=")
        if not equals or not key.isidentifier():
            continue
        try:
            fields[key] = " ".join(shlex.split(value))
        except ValueError:  # unbalanced quotes
            fields[key] = value.strip().strip("\"'")
    return fields


# --- dpkg -------------------------------------------------------------------------------------------

_DPKG_SOURCE_RE: Final = re.compile(r"\s*([^\s(]+)\s*(?:\(\s*([^\s)]+)\s*\))?\s*")


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    """RFC 822-style paragraphs; field names are case-insensitive, continuation lines are not needed."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields = {}
        elif line[0] not in " \t":
            key, colon, value = line.partition(":")
            if colon and key.strip():
                fields[key.strip().lower()] = value.strip()
    if fields:
        yield fields


def _dpkg_installed(stanza: dict[str, str], require_status: bool) -> bool:
    status = stanza.get("status")
    if status is None:
        return not require_status  # distroless status.d files carry no Status: present means installed
    words = status.split()
    return len(words) == 3 and words[2] == "installed"  # "want flag status", e.g. "install ok installed"


def parse_dpkg_status(text: str, *, require_status: bool = True) -> Iterator[InstalledEntry]:
    """Installed packages of a dpkg status file (or one distroless `status.d` file)."""
    for stanza in _stanzas(text):
        name, version = stanza.get("package"), stanza.get("version")
        if not name or not version or not _dpkg_installed(stanza, require_status):
            continue
        match = _DPKG_SOURCE_RE.fullmatch(stanza.get("source", ""))
        source_name = match.group(1) if match else name
        source_version = (match.group(2) if match else None) or version
        yield InstalledEntry(name, version, source_name, source_version, stanza.get("architecture"))


# --- apk --------------------------------------------------------------------------------------------


def _apk_records(text: str) -> Iterator[dict[str, str]]:
    record: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if record:
                yield record
            record = {}
        elif len(line) >= 2 and line[1] == ":" and line[0] not in record:
            record[line[0]] = line[2:].strip()
    if record:
        yield record


def parse_apk_installed(text: str) -> Iterator[InstalledEntry]:
    """Packages of apk's `installed` database: P name, V version, A arch, o origin (the source package)."""
    for record in _apk_records(text):
        name, version = record.get("P"), record.get("V")
        if name and version:
            yield InstalledEntry(name, version, record.get("o") or name, version, record.get("A"))


# --- Python -----------------------------------------------------------------------------------------


def parse_python_metadata(text: str) -> InstalledEntry | None:
    """Name and Version from the headers of a `METADATA` / `PKG-INFO` file (core metadata, RFC 822)."""
    headers: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the body (long description) starts here
        key, colon, value = line.partition(":")
        if colon and line[0] not in " \t":
            headers.setdefault(key.strip().lower(), value.strip())
    name, version = headers.get("name"), headers.get("version")
    return InstalledEntry(name, version) if name and version else None


# --- npm --------------------------------------------------------------------------------------------


def parse_npm_package(data: bytes) -> InstalledEntry | None:
    """`name` and `version` of an installed package's package.json."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return None
    if not isinstance(document, dict):
        return None
    name, version = document.get("name"), document.get("version")
    if isinstance(name, str) and isinstance(version, str) and name and version:
        return InstalledEntry(name, version)
    return None


# --- rpm --------------------------------------------------------------------------------------------

_RPM_NAME, _RPM_VERSION, _RPM_RELEASE, _RPM_EPOCH, _RPM_ARCH, _RPM_SOURCERPM = 1000, 1001, 1002, 1003, 1022, 1044
_RPM_TAGS: Final = frozenset({_RPM_NAME, _RPM_VERSION, _RPM_RELEASE, _RPM_EPOCH, _RPM_ARCH, _RPM_SOURCERPM})
_RPM_INT32, _RPM_STRING, _RPM_I18NSTRING = 4, 6, 9
_RPM_MAX_ENTRIES: Final = 1 << 16  # rpm's own sanity bound on a header's index


def _rpm_value(store: bytes, kind: int, offset: int) -> str | int | None:
    if offset < 0 or offset >= len(store):
        return None
    if kind == _RPM_INT32 and offset + 4 <= len(store):
        number: int = struct.unpack_from(">i", store, offset)[0]
        return number
    if kind in (_RPM_STRING, _RPM_I18NSTRING):
        end = store.find(b"\0", offset)
        return decode(store[offset:end]) if end >= 0 else None
    return None


def _rpm_tags(blob: bytes) -> dict[int, str | int]:
    """The wanted tags of an RPM header blob (index count, data length, index entries, data store)."""
    if len(blob) < 8:
        return {}
    count, length = struct.unpack_from(">ii", blob, 0)
    start = 8 + 16 * count
    if not 0 < count <= _RPM_MAX_ENTRIES or length < 0 or start + length > len(blob):
        return {}
    store, tags = blob[start : start + length], {}
    for index in range(count):
        tag, kind, offset, _ = struct.unpack_from(">iIiI", blob, 8 + 16 * index)
        value = _rpm_value(store, kind, offset) if tag in _RPM_TAGS else None
        if value is not None:
            tags[tag] = value
    return tags


def _source_rpm_name(source_rpm: str) -> str | None:
    """`openssl-3.0.7-24.el9.src.rpm` → `openssl`."""
    stem = source_rpm.removesuffix(".rpm").rpartition(".")[0]  # drop the `.src` / `.nosrc` architecture
    parts = stem.rsplit("-", 2)
    return parts[0] if len(parts) == 3 and parts[0] else None


def parse_rpm_header(blob: bytes) -> InstalledEntry | None:
    tags = _rpm_tags(blob)
    name, version, release = tags.get(_RPM_NAME), tags.get(_RPM_VERSION), tags.get(_RPM_RELEASE)
    if not (isinstance(name, str) and isinstance(version, str) and isinstance(release, str)):
        return None
    if name == "gpg-pubkey":  # imported signing keys live in the same table; they are not packages
        return None
    epoch = tags.get(_RPM_EPOCH)
    evr = f"{epoch}:{version}-{release}" if isinstance(epoch, int) and epoch > 0 else f"{version}-{release}"
    source = tags.get(_RPM_SOURCERPM)
    source_name = _source_rpm_name(source) if isinstance(source, str) else None
    arch = tags.get(_RPM_ARCH)
    return InstalledEntry(name, evr, source_name or name, evr, arch if isinstance(arch, str) else None)


def read_rpmdb(path: Path, max_value_bytes: int) -> list[InstalledEntry]:
    """Packages of an `rpmdb.sqlite` copied to a private file; raises ScanFailed when SQLite cannot read it.

    The file comes from an untrusted image: it is opened read-only and immutable (no journal, WAL or lock
    files are created or consulted), with schema functions distrusted and values capped in size.
    """
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        raise ScanFailed(f"the RPM database cannot be opened: {exc}") from exc
    try:
        connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_value_bytes)
        connection.execute("PRAGMA trusted_schema = OFF")
        connection.execute("PRAGMA query_only = ON")
        blobs = (row[0] for row in connection.execute("SELECT blob FROM Packages"))
        entries = [parse_rpm_header(bytes(blob)) for blob in blobs if isinstance(blob, bytes)]
    except sqlite3.Error as exc:
        raise ScanFailed(f"the RPM database is unreadable: {exc}") from exc
    finally:
        connection.close()
    return [entry for entry in entries if entry is not None]
