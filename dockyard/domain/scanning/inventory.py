"""The package inventory of an image, read from its layers as tar streams, never extracted to disk.

Layers are applied in order the way an overlay filesystem would (OCI whiteouts `.wh.<name>` and opaque
directories `.wh..wh..opq` hide what lower layers had), but only the files that list packages are kept,
so memory stays small whatever the image size. Member paths are untrusted: they are normalised, absolute
paths and `..` escapes are ignored, and symlinks are never followed. Limits against tar and gzip bombs
raise ScanFailed with the limit that was hit.

The one file that touches disk is an RPM SQLite database: SQLite needs a seekable file, a tar stream is
not seekable, and keeping a database of up to `max_rpmdb_bytes` in memory would break the flat-memory
promise, so that one member is copied (bounded) to a private temporary file, read, and deleted.
"""

from __future__ import annotations

import io
import posixpath
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum, auto
from pathlib import Path
from typing import IO, Final, Self, TypeVar

from dockyard.domain.scanning import package_dbs
from dockyard.domain.scanning.errors import ScanFailed
from dockyard.domain.scanning.package_dbs import InstalledEntry, decode

MiB: Final = 1024 * 1024
GiB: Final = 1024 * MiB
_MAX_META_HEADER_BYTES: Final = 1 * MiB  # pax / GNU long-name headers that tarfile reads into memory
_META_HEADER_TYPES: Final = frozenset(
    {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
)
_MAGIC: Final = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}


@dataclass(frozen=True)
class InventoryLimits:
    """Bounds on the work one scan may do; exceeding any of them raises ScanFailed."""

    max_members: int = 2_000_000  # tar entries, all layers together
    max_stream_bytes: int = 64 * GiB  # uncompressed tar bytes streamed, all layers together
    max_file_bytes: int = 64 * MiB  # one package database or metadata file read into memory
    max_rpmdb_bytes: int = 1 * GiB  # one RPM SQLite database copied to a temporary file
    max_read_bytes: int = 2 * GiB  # every file read or copied, all layers together
    max_path_length: int = 4096
    max_path_depth: int = 256


# The OSV ecosystems (release qualifiers aside) whose advisories scans query: those `osv_ecosystem` names and
# the language managers' (`_LANGUAGE_ECOSYSTEMS`). `dockyard scan-db update` downloads these.
SCANNED_ECOSYSTEMS: Final = (
    "AlmaLinux",
    "Alpine",
    "Chainguard",
    "Debian",
    "npm",
    "PyPI",
    "Rocky Linux",
    "Ubuntu",
    "Wolfi",
)


@dataclass(frozen=True)
class OperatingSystem:
    id: str
    version_id: str = ""
    version: str = ""
    pretty_name: str = ""

    @property
    def osv_ecosystem(self) -> str | None:
        """The release-qualified OSV ecosystem of this OS's packages, None where OSV has none we can name."""
        major = re.match(r"[0-9]+", self.version_id)
        major_minor = re.match(r"([0-9]+)\.([0-9]+)", self.version_id)
        if self.id == "debian" and major:
            return f"Debian:{major.group()}"
        if self.id == "ubuntu" and self.version_id:
            return f"Ubuntu:{self.version_id}:LTS" if "LTS" in self.version else f"Ubuntu:{self.version_id}"
        if self.id == "alpine" and major_minor:
            return f"Alpine:v{major_minor.group(1)}.{major_minor.group(2)}"
        if self.id in ("rocky", "almalinux") and major:
            return f"{'Rocky Linux' if self.id == 'rocky' else 'AlmaLinux'}:{major.group()}"
        # Red Hat's OSV ecosystems name CPE-like product streams an image does not state; Fedora, Amazon
        # Linux, CentOS and Oracle Linux have no OSV feed.
        return {"wolfi": "Wolfi", "chainguard": "Chainguard"}.get(self.id)


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    ecosystem: str | None  # the OSV ecosystem to query; None when the OS has none
    manager: str  # dpkg, apk, rpm, python, npm
    location: str  # the file it was listed in
    source_name: str | None = None
    source_version: str | None = None
    arch: str | None = None

    @property
    def lookup_names(self) -> tuple[str, ...]:
        """Names to query OSV with: distros key on the source package; RPM feeds use either name."""
        if self.manager == "rpm":
            return tuple(dict.fromkeys(name for name in (self.name, self.source_name) if name))
        return (self.source_name or self.name,)

    @property
    def lookup_version(self) -> str:
        """The version OSV ranges speak of: the source version (a binNMU `+b1` is not a new source)."""
        return self.source_version or self.version


@dataclass(frozen=True)
class Inventory:
    os: OperatingSystem | None
    packages: tuple[Package, ...]


class _Kind(Enum):
    OS_RELEASE = auto()
    ALPINE_RELEASE = auto()
    DEBIAN_VERSION = auto()
    DPKG_STATUS = auto()
    DPKG_STATUS_D = auto()
    APK_INSTALLED = auto()
    RPMDB = auto()
    PYTHON_METADATA = auto()
    NPM_PACKAGE = auto()


_FIXED_PATHS: Final = {
    "etc/os-release": _Kind.OS_RELEASE,
    "usr/lib/os-release": _Kind.OS_RELEASE,
    "etc/alpine-release": _Kind.ALPINE_RELEASE,
    "etc/debian_version": _Kind.DEBIAN_VERSION,
    "var/lib/dpkg/status": _Kind.DPKG_STATUS,
    "lib/apk/db/installed": _Kind.APK_INSTALLED,
    "var/lib/rpm/rpmdb.sqlite": _Kind.RPMDB,
    "usr/lib/sysimage/rpm/rpmdb.sqlite": _Kind.RPMDB,
}


def _is_npm_manifest(parts: list[str]) -> bool:
    """`…/node_modules/<name>/package.json` or `…/node_modules/@scope/<name>/package.json`."""
    if len(parts) < 3 or parts[-1] != "package.json" or parts[-2].startswith((".", "@")):
        return False
    if parts[-3] == "node_modules":
        return True
    return len(parts) >= 4 and parts[-3].startswith("@") and parts[-4] == "node_modules"


def _interest(path: str) -> _Kind | None:
    """Which package source a path is, if any (decided from the path alone)."""
    kind = _FIXED_PATHS.get(path)
    if kind is not None:
        return kind
    parent, base = posixpath.split(path)
    if parent == "var/lib/dpkg/status.d" and not base.endswith(".md5sums"):
        return _Kind.DPKG_STATUS_D
    dist_info = base == "METADATA" and parent.endswith(".dist-info")
    egg_info = (base == "PKG-INFO" and parent.endswith(".egg-info")) or base.endswith(".egg-info")
    if dist_info or egg_info:
        return _Kind.PYTHON_METADATA
    return _Kind.NPM_PACKAGE if _is_npm_manifest(path.split("/")) else None


@dataclass(frozen=True)
class _Captured:
    kind: _Kind
    data: bytes = b""
    spool: Path | None = None  # an RPM database copied to the scan's private directory


_T = TypeVar("_T")


class _Unreadable(Exception):
    """A failure inside tarfile or a decompressor, raised from the original error."""


def _untar(call: Callable[[], _T]) -> _T:
    """Run a call into tarfile/the layer stream. On malformed input those raise far more than TarError
    (TypeError, ValueError, struct.error, zlib.error, EOFError, OSError…), so at this boundary, and only
    here, any exception means "unreadable layer"; our own code outside these calls is not masked."""
    try:
        return call()
    except ScanFailed:
        raise
    except Exception as exc:
        raise _Unreadable from exc


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    iterator = iter(tar)
    while (member := _untar(lambda: next(iterator, None))) is not None:
        yield member


class _HeaderRefused(Exception):
    """A tar header tarfile would otherwise act on blindly (negative size, huge pax record)."""


class _GuardedTarInfo(tarfile.TarInfo):
    """Checks each header as it is decoded, before tarfile reads a pax or long-name record into memory."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        info = super().frombuf(buf, encoding, errors)
        if info.size < 0:
            raise _HeaderRefused(f"member {info.name!r} declares a negative size")
        if info.type in _META_HEADER_TYPES and info.size > _MAX_META_HEADER_BYTES:
            raise _HeaderRefused(f"an extended header of {info.size} bytes (limit {_MAX_META_HEADER_BYTES})")
        if info.type == tarfile.GNUTYPE_SPARSE and buf[482]:
            # Old GNU sparse headers chain extension blocks that tarfile collects into an unbounded list;
            # image builders never write them.
            raise _HeaderRefused(f"member {info.name!r} uses extended GNU sparse headers")
        return info


class _Prefixed(io.RawIOBase):
    """A stream with its first bytes peeked at and put back (tarfile's stream mode only calls `read`)."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        super().__init__()
        self._head, self._rest = head, rest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(size)
        if size < 0:
            data, self._head = self._head + self._rest.read(), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        return data if len(data) == size else data + self._rest.read(size - len(data))


@dataclass
class _LayerChanges:
    """What one layer does to the files of interest, applied only once the whole layer has been read."""

    entries: dict[str, _Captured | None] = field(default_factory=dict)  # None: replaced by a non-file
    whiteouts: set[str] = field(default_factory=set)
    opaque_dirs: set[str] = field(default_factory=set)
    replaced_dirs: set[str] = field(default_factory=set)  # directories of lower layers now a non-directory


class _Filesystem:
    """The files of interest of the image so far, with a count of captured files under each directory."""

    def __init__(self) -> None:
        self.files: dict[str, _Captured] = {}
        self._dirs: dict[str, int] = {}  # directory -> captured files below it; absent when none

    def has_files_under(self, directory: str) -> bool:
        return directory in self._dirs

    def apply(self, changes: _LayerChanges) -> None:
        # OCI: whiteouts and opaque markers hide lower layers only, never entries of their own layer.
        for directory in changes.opaque_dirs | changes.replaced_dirs:
            self._remove_under(directory)
        for path in changes.whiteouts:
            self._remove(path)
            self._remove_under(path)
        for path, captured in changes.entries.items():
            self._remove(path)
            if captured is not None:
                self._put(path, captured)

    def _ancestors(self, path: str) -> Iterator[str]:
        parent = posixpath.dirname(path)
        while parent:
            yield parent
            parent = posixpath.dirname(parent)
        yield ""

    def _put(self, path: str, captured: _Captured) -> None:
        self.files[path] = captured
        for directory in self._ancestors(path):
            self._dirs[directory] = self._dirs.get(directory, 0) + 1

    def _remove(self, path: str) -> None:
        if self.files.pop(path, None) is None:
            return
        for directory in self._ancestors(path):
            self._dirs[directory] -= 1
            if not self._dirs[directory]:
                del self._dirs[directory]

    def _remove_under(self, directory: str) -> None:
        if directory not in self._dirs:
            return
        prefix = f"{directory}/" if directory else ""
        for path in [path for path in self.files if path.startswith(prefix)]:
            self._remove(path)


class _LayerReader:
    """Streams layers one by one into a _Filesystem, enforcing the limits as it goes."""

    def __init__(self, limits: InventoryLimits, spool_dir: Path) -> None:
        self.limits = limits
        self.filesystem = _Filesystem()
        self._spool_dir = spool_dir
        self._members = 0
        self._streamed = 0  # uncompressed bytes of the layers before the current one
        self._read = 0
        self._spooled = 0

    def read_layer(self, index: int, stream: IO[bytes]) -> None:
        changes = _LayerChanges()
        layer_end = 0
        compression = "unknown format"
        try:
            source, compression = _untar(lambda: _open_stream(index, stream))
            with _untar(lambda: tarfile.open(fileobj=source, mode="r|*", tarinfo=_GuardedTarInfo)) as tar:
                for member in _members(tar):
                    layer_end = self._count(member)
                    self._visit(tar, member, changes)
        except _Unreadable as exc:
            cause = exc.__cause__
            raise ScanFailed(f"layer {index + 1} ({compression}) is corrupt or not a tar archive: {cause}") from cause
        self._streamed += layer_end
        self.filesystem.apply(changes)

    def _count(self, member: tarfile.TarInfo) -> int:
        """Check the member and stream budgets before tarfile is asked to skip over the member's data."""
        self._members += 1
        if self._members > self.limits.max_members:
            raise ScanFailed(f"the image has more than {self.limits.max_members} tar members")
        end = member.offset_data + member.size
        if self._streamed + end > self.limits.max_stream_bytes:
            raise ScanFailed(f"the layers hold more than {self.limits.max_stream_bytes} uncompressed bytes")
        return end

    def _visit(self, tar: tarfile.TarFile, member: tarfile.TarInfo, changes: _LayerChanges) -> None:
        path = _normalise(member.name, self.limits)
        if path is None:
            return
        parent, base = posixpath.split(path)
        if base == ".wh..wh..opq":
            changes.opaque_dirs.add(parent)
        elif base.startswith(".wh..wh."):
            return  # other aufs bookkeeping (hard-link directories), no filesystem meaning
        elif base.startswith(".wh."):
            changes.whiteouts.add(posixpath.join(parent, base[4:]))
        else:
            if not member.isdir() and self.filesystem.has_files_under(path):
                changes.replaced_dirs.add(path)
            kind = _interest(path)
            if kind is not None:
                changes.entries[path] = self._capture(tar, member, kind, path, changes)

    def _capture(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, kind: _Kind, path: str, changes: _LayerChanges
    ) -> _Captured | None:
        if member.islnk():
            return self._hardlink(member, kind, changes)
        if not member.isreg():
            return None  # directories, devices and symlinks: symlinks are never followed
        limit = self.limits.max_rpmdb_bytes if kind is _Kind.RPMDB else self.limits.max_file_bytes
        if member.size > limit:
            raise ScanFailed(f"{path} is {member.size} bytes, over the {limit}-byte limit for one file")
        self._read += member.size
        if self._read > self.limits.max_read_bytes:
            raise ScanFailed(f"more than {self.limits.max_read_bytes} bytes of package data to read")
        source = _untar(lambda: tar.extractfile(member))
        if source is None:
            return None
        if kind is _Kind.RPMDB:
            return _Captured(kind, spool=_untar(lambda: self._spool(source, member.size)))
        return _Captured(kind, _untar(lambda: source.read(member.size)))

    def _hardlink(self, member: tarfile.TarInfo, kind: _Kind, changes: _LayerChanges) -> _Captured | None:
        """A hard link shares the content of a file captured earlier (in this layer or a lower one)."""
        target = _normalise(member.linkname, self.limits)
        if target is None:
            return None
        found = changes.entries[target] if target in changes.entries else self.filesystem.files.get(target)
        return _Captured(kind, found.data, found.spool) if found else None

    def _spool(self, source: IO[bytes], size: int) -> Path:
        self._spooled += 1
        target = self._spool_dir / f"rpmdb-{self._spooled}.sqlite"  # never a name taken from the tar
        with target.open("xb") as sink:
            shutil.copyfileobj(_Bounded(source, size), sink, length=MiB)
        return target


class _Bounded:
    """Reads at most `size` bytes from a stream, whatever the stream would give."""

    def __init__(self, source: IO[bytes], size: int) -> None:
        self._source, self._left = source, size

    def read(self, size: int = -1) -> bytes:
        wanted = self._left if size < 0 else min(size, self._left)
        data = self._source.read(wanted) if wanted > 0 else b""
        self._left -= len(data)
        return data


def _compression(head: bytes) -> str:
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return "uncompressed tar"


def _open_stream(index: int, stream: IO[bytes]) -> tuple[_Prefixed, str]:
    """Peek at the magic bytes, to name the format in errors; tarfile cannot read zstd at all."""
    head = stream.read(6)
    compression = _compression(head)
    if compression == "zstd":
        raise ScanFailed(f"layer {index + 1} is zstd-compressed, which this scanner cannot read")
    return _Prefixed(head, stream), compression


def _normalise(name: str, limits: InventoryLimits) -> str | None:
    """The member's path inside the image root, or None for paths that point outside it or at it."""
    if len(name) > limits.max_path_length:
        raise ScanFailed(f"a tar member path is longer than {limits.max_path_length} characters")
    if name.startswith("/"):
        return None  # layers hold relative paths; an absolute one is not trusted
    path = posixpath.normpath(name)
    if path in (".", "..") or path.startswith("../"):
        return None
    if path.count("/") + 1 > limits.max_path_depth:
        raise ScanFailed(f"a tar member path is deeper than {limits.max_path_depth} directories")
    return path


# --- assembling the inventory ---------------------------------------------------------------------


def _detect_os(files: dict[str, _Captured]) -> OperatingSystem | None:
    for path in ("etc/os-release", "usr/lib/os-release"):  # os-release(5): /etc wins
        if path in files:
            fields = package_dbs.parse_os_release(decode(files[path].data))
            if fields.get("ID"):
                return OperatingSystem(
                    fields["ID"].lower(),
                    fields.get("VERSION_ID", ""),
                    fields.get("VERSION", ""),
                    fields.get("PRETTY_NAME", ""),
                )
    if "etc/alpine-release" in files:
        return OperatingSystem("alpine", decode(files["etc/alpine-release"].data).strip())
    if "etc/debian_version" in files:
        return OperatingSystem("debian", decode(files["etc/debian_version"].data).strip())
    return None


def _entries(captured: _Captured, limits: InventoryLimits) -> tuple[str, Iterable[InstalledEntry]]:
    """The manager name and entries of one captured file."""
    if captured.kind is _Kind.DPKG_STATUS:
        return "dpkg", package_dbs.parse_dpkg_status(decode(captured.data))
    if captured.kind is _Kind.DPKG_STATUS_D:
        return "dpkg", package_dbs.parse_dpkg_status(decode(captured.data), require_status=False)
    if captured.kind is _Kind.APK_INSTALLED:
        return "apk", package_dbs.parse_apk_installed(decode(captured.data))
    if captured.kind is _Kind.RPMDB and captured.spool is not None:
        return "rpm", package_dbs.read_rpmdb(captured.spool, limits.max_file_bytes)
    if captured.kind is _Kind.PYTHON_METADATA:
        entry = package_dbs.parse_python_metadata(decode(captured.data))
        return "python", [entry] if entry else []
    if captured.kind is _Kind.NPM_PACKAGE:
        entry = package_dbs.parse_npm_package(captured.data)
        return "npm", [entry] if entry else []
    return "", []


def _package(entry: InstalledEntry, ecosystem: str | None, manager: str, location: str) -> Package:
    return Package(
        name=entry.name,
        version=entry.version,
        ecosystem=ecosystem,
        manager=manager,
        location=location,
        source_name=entry.source_name,
        source_version=entry.source_version,
        arch=entry.arch,
    )


_LANGUAGE_ECOSYSTEMS: Final = {"python": "PyPI", "npm": "npm"}
_PACKAGE_DATABASES: Final = frozenset({_Kind.DPKG_STATUS, _Kind.APK_INSTALLED})


def _packages(
    files: dict[str, _Captured], operating_system: OperatingSystem | None, limits: InventoryLimits
) -> list[Package]:
    os_ecosystem = operating_system.osv_ecosystem if operating_system else None
    packages: list[Package] = []
    for path, captured in files.items():
        manager, read = _entries(captured, limits)
        entries = list(read)
        if not entries and captured.kind in _PACKAGE_DATABASES and captured.data.strip():
            raise ScanFailed(f"/{path} is malformed: no installed package could be read from it")
        ecosystem = _LANGUAGE_ECOSYSTEMS.get(manager, os_ecosystem)
        packages.extend(_package(entry, ecosystem, manager, f"/{path}") for entry in entries)
    return packages


def read_inventory(layers: Iterable[IO[bytes]], limits: InventoryLimits | None = None) -> Inventory:
    """The OS and the installed packages of an image whose layers (base first) are given as tar streams.

    Each stream may be uncompressed, gzip, bzip2 or xz; it is read once, front to back. Raises ScanFailed
    for unreadable layers and exceeded limits; malformed package entries are skipped.
    """
    limits = limits or InventoryLimits()
    with tempfile.TemporaryDirectory(prefix="dockyard-scan-") as spool:
        reader = _LayerReader(limits, Path(spool))
        for index, stream in enumerate(layers):
            reader.read_layer(index, stream)
        files = reader.filesystem.files
        operating_system = _detect_os(files)
        packages = _packages(files, operating_system, limits)
    packages.sort(key=lambda package: (package.manager, package.name, package.version, package.location))
    return Inventory(operating_system, tuple(packages))
