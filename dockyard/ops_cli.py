"""`dockyard gc`, `lifecycle run`, `scan-db` and `scan`: background work and scanning, run now, on a data directory."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import http.client
import json
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, Final

import typer
from rich import filesize
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dockyard.cli_common import Database, DataDir, Output, OutputFormat, open_services, print_json
from dockyard.config import DEFAULT_DATA_DIR, remembered_account
from dockyard.domain.errors import DockyardError
from dockyard.domain.gc import DEFAULT_UPLOAD_TTL
from dockyard.domain.iam import DEFAULT_ACCOUNT_SETTING
from dockyard.domain.lifecycle import epoch_seconds
from dockyard.domain.names import RepositoryRef
from dockyard.domain.scanning.inventory import SCANNED_ECOSYSTEMS
from dockyard.lifecycle_cli import lifecycle_app

if TYPE_CHECKING:  # the commands import what they run: `--help` loads no SQL, scanner or progress bar
    from dockyard.domain.scanning.service import ImageScanner, ImportReport

console = Console(stderr=True)


@lifecycle_app.command("run")
def lifecycle_run(
    repository: Annotated[str | None, typer.Option(help="Only this repository (else every one with a policy).")] = None,
    account: Annotated[str | None, typer.Option(help="Account of --repository (default: the server's).")] = None,
    region: Annotated[str, typer.Option(help="Region of --repository.")] = "us-east-1",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would happen; change nothing.")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database: Database = None,
) -> None:
    """Apply lifecycle policies now; prints one JSON line per image acted on."""
    services = open_services(data_dir, database)
    try:
        if repository is not None:
            owner = (
                account or services.metadata.registry_setting(DEFAULT_ACCOUNT_SETTING) or _remembered_account(data_dir)
            )
            results = [services.lifecycle.run(RepositoryRef(owner, region, repository), dry_run)]
        else:
            results = services.lifecycle.run_all(dry_run)
    except DockyardError as error:
        console.print(f"[red]{error.ecr_exception}:[/] {error.message}")
        raise typer.Exit(1) from None
    for result in results:
        for action in result.actions:
            record = {
                "repositoryName": result.repository.name,
                "imageDigest": action.digest,
                "imageTags": list(action.tags),
                "imagePushedAt": epoch_seconds(action.pushed_at),
                "action": str(action.action),
                "appliedRulePriority": action.applied_rule_priority,
                "dryRun": dry_run,
            }
            typer.echo(json.dumps(record))
    console.print(f"{sum(len(r.actions) for r in results)} image(s) {'would be ' if dry_run else ''}acted on")


def _remembered_account(data_dir: Path) -> str:
    account = remembered_account(data_dir)
    if account is None:
        console.print("[red]--account is required (the data directory has not been served yet)[/]")
        raise typer.Exit(2)
    return account


def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be deleted; delete nothing.")] = False,
    grace: Annotated[float, typer.Option(help="Seconds: anything younger is kept (uploads in flight).")] = 3600.0,
    upload_ttl: Annotated[
        float, typer.Option(help="Seconds after its start an unfinished upload is abandoned and its bytes freed.")
    ] = DEFAULT_UPLOAD_TTL.total_seconds(),
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database: Database = None,
) -> None:
    """Collect garbage now: expired uploads, partial files of failed writes, unreferenced blob links and blobs.
    Safe while the server runs."""
    from dockyard.domain.gc import GarbageCollector

    services = open_services(data_dir, database)
    collector = GarbageCollector(
        services.metadata, services.blobs, grace=timedelta(seconds=grace), upload_ttl=timedelta(seconds=upload_ttl)
    )
    report = collector.run(dry_run)
    typer.echo(json.dumps({**report.__dict__, "dryRun": dry_run}))


scan_db_app = typer.Typer(help="The offline vulnerability database (OSV advisories).", no_args_is_help=True)
OSV_BUCKET: Final = "https://osv-vulnerabilities.storage.googleapis.com"
DOWNLOAD_TIMEOUT: Final = 60.0  # seconds without a byte (per socket operation), not for the whole file
_CHUNK: Final = 1 << 20


class DownloadError(Exception):
    """A download that cannot be used: unreachable, refused, truncated or corrupt (a one-line message)."""


def _error(text: str) -> None:
    # soft_wrap: an error stays one line when stderr is a pipe (Rich wraps at 80 columns otherwise)
    console.print(f"[red]{escape(text)}[/]", soft_wrap=True, highlight=False)  # escape: URLs, "[Errno 111]"


def _report_line(label: str, report: ImportReport) -> str:
    return f"{label}: {report.written} advisories written, {report.unchanged} unchanged, {report.rejected} rejected"


@scan_db_app.command("import")
def scan_db_import(
    sources: Annotated[list[str], typer.Argument(help="OSV all.zip files (paths or http(s) URLs).")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database: Database = None,
) -> None:
    """Import (or incrementally refresh) advisories from OSV per-ecosystem all.zip bulk files."""
    services = open_services(data_dir, database)
    imported = False
    try:
        for source in sources:
            try:
                with _local_copy(source) as path:
                    report = services.vulnerabilities.import_zip(path, source_name=source)
            except DownloadError as error:
                _error(str(error))
                raise typer.Exit(1) from None
            except DockyardError as error:
                _error(f"{source}: {error.message}")
                raise typer.Exit(1) from None
            imported = True
            console.print(_report_line(source, report), soft_wrap=True, highlight=False)
    finally:
        if imported:  # what was imported before a failure counts too
            _rescan_incomplete(services.scanner)


def _rescan_incomplete(scanner: ImageScanner) -> None:
    """Scans FAILED for want of advisories run again by themselves (a running server's workers take them)."""
    if queued := scanner.rescan_incomplete():
        console.print(f"{queued} scan(s) that lacked advisories queued again", highlight=False)


def _known_ecosystem(text: str) -> str:
    """An ecosystem named on the command line, spelled as OSV spells it (`pypi` is `PyPI`)."""
    for name in SCANNED_ECOSYSTEMS:
        if name.lower() == text.strip().lower():
            return name
    raise typer.BadParameter(f"{text!r} is not an ecosystem Dockyard scans ({', '.join(SCANNED_ECOSYSTEMS)})")


@scan_db_app.command("update")
def scan_db_update(
    ecosystem: Annotated[
        list[str] | None,
        typer.Option(
            "--ecosystem",
            metavar="NAME",
            help=f"Only this OSV ecosystem (repeatable). Default: all Dockyard scans, {', '.join(SCANNED_ECOSYSTEMS)}.",
        ),
    ] = None,
    source_url: Annotated[
        str, typer.Option(help="Base URL that serves <Ecosystem>/all.zip: OSV's public bucket, or a mirror.")
    ] = OSV_BUCKET,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database: Database = None,
) -> None:
    """Download OSV's per-ecosystem all.zip archives and import them (as `scan-db import` does).

    Each archive is streamed to a temporary file and verified (length, the bucket's MD5, every record's
    CRC) before anything is imported: a failed download leaves that ecosystem's advisories as they were.
    Scans that failed for want of advisories are then queued again. Exit status 1 when any ecosystem could
    not be updated (the others are), 2 for bad options.
    """
    wanted = list(dict.fromkeys(_known_ecosystem(name) for name in ecosystem)) if ecosystem else SCANNED_ECOSYSTEMS
    base = source_url.rstrip("/")
    if urllib.parse.urlsplit(base).scheme not in ("http", "https") or not urllib.parse.urlsplit(base).netloc:
        raise typer.BadParameter(f"{source_url!r} is not an http(s) URL", param_hint="--source-url")
    services = open_services(data_dir, database)
    failed: list[str] = []
    for name in wanted:
        url = f"{base}/{urllib.parse.quote(name)}/all.zip"
        try:
            with _downloaded(url, name) as path:
                report = services.vulnerabilities.import_zip(path, source_name=url)
        except DownloadError as error:
            _error(f"{name}: {error}")
            failed.append(name)
            continue
        except DockyardError as error:
            _error(f"{name}: {url}: {error.message}")
            failed.append(name)
            continue
        console.print(_report_line(name, report), soft_wrap=True, highlight=False)
    if len(failed) < len(wanted):
        _rescan_incomplete(services.scanner)
    if failed:
        rest = "none was updated" if len(failed) == len(wanted) else "the others were updated"
        _error(f"not updated: {', '.join(failed)} ({len(failed)} of {len(wanted)} ecosystems); {rest}")
        raise typer.Exit(1)


@scan_db_app.command("status")
def scan_db_status(
    data_dir: DataDir = DEFAULT_DATA_DIR, database: Database = None, output: Output = OutputFormat.table
) -> None:
    """Show the imported sources and how many advisories the database holds."""
    services = open_services(data_dir, database)
    sources = services.metadata.vulnerability_sources()
    total = services.metadata.count_vulnerabilities()
    if output is OutputFormat.json:
        listed = [{"source": n, "importedAt": t.isoformat(), "records": r} for n, t, r in sources]
        print_json({"sources": listed, "advisories": total})
        return
    for name, imported_at, records in sources:
        typer.echo(f"{name}\t{imported_at.isoformat()}\t{records} records")
    typer.echo(f"total\t{total} advisories")


@contextlib.contextmanager
def _local_copy(source: str) -> Iterator[Path]:
    """A path for the source: itself, or a temporary download streamed from an URL."""
    if not source.startswith(("http://", "https://")):
        yield Path(source)
        return
    with _downloaded(source, Path(urllib.parse.urlsplit(source).path).name or source) as path:
        yield path


@contextlib.contextmanager
def _downloaded(url: str, label: str) -> Iterator[Path]:
    """The URL's content in a temporary file (removed afterwards), complete and intact or DownloadError."""
    with tempfile.NamedTemporaryFile(prefix="dockyard-osv-", suffix=".zip") as file:
        _download(url, file, label)
        file.flush()
        yield Path(file.name)


def _download(url: str, target: IO[bytes], label: str) -> None:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"{url}: not an http(s) URL")
    request = urllib.request.Request(url, headers={"User-Agent": "dockyard-scan-db"})  # noqa: S310 (checked above)
    try:
        response = urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT)  # noqa: S310 (checked above)
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise DownloadError(f"{url}: cannot connect: {error.reason}") from None
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise DownloadError(f"{url}: {error}") from None
    with response:
        length = _content_length(response.headers)
        expected_md5 = _gcs_md5(response.headers)
        md5 = hashlib.md5(usedforsecurity=False)
        received = 0
        try:
            with _progress(label, length) as advance:
                while chunk := response.read(_CHUNK):
                    target.write(chunk)
                    md5.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
        except (OSError, http.client.HTTPException) as error:
            raise DownloadError(f"{url}: the download broke off after {received} bytes: {error}") from None
    # http.client does not raise when a response ends short of its Content-Length: check it here.
    if length is not None and received != length:
        raise DownloadError(f"{url}: truncated download: {received} of {length} bytes")
    if expected_md5 is not None and md5.digest() != expected_md5:
        raise DownloadError(f"{url}: corrupt download: its MD5 differs from the server's x-goog-hash")


def _content_length(headers: Message) -> int | None:
    value = headers.get("Content-Length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _gcs_md5(headers: Message) -> bytes | None:
    """The MD5 Google Cloud Storage states for the object (`x-goog-hash: crc32c=…,md5=…`); mirrors may not."""
    for header in headers.get_all("x-goog-hash") or []:
        for part in header.split(","):
            kind, _, value = part.strip().partition("=")
            if kind == "md5":
                try:
                    return base64.b64decode(value, validate=True)
                except binascii.Error:
                    return None
    return None


@contextlib.contextmanager
def _progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A Rich progress bar on a terminal; a line at the start and at the end otherwise (logs, CI)."""
    if console.is_terminal:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns = (TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(label, total=total)
            yield lambda size: progress.advance(task, size)
        return
    size = f" ({_size(total)})" if total is not None else ""
    typer.echo(f"{label}: downloading{size}", err=True)
    started, received = time.monotonic(), [0]

    def advance(chunk: int) -> None:
        received[0] += chunk

    yield advance
    typer.echo(f"{label}: downloaded {_size(received[0])} in {time.monotonic() - started:.1f} s", err=True)


def _size(size: int) -> str:
    return filesize.decimal(size)


def scan(
    layout: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="An OCI image layout directory.")],
    ref: Annotated[
        str | None, typer.Option(help="The image's ref name in index.json (default: its only image).")
    ] = None,
    output: Annotated[str, typer.Option("--format", help="json or table")] = "json",
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database: Database = None,
) -> None:
    """Scan an OCI image layout on disk with the server's code and database; prints the findings."""
    from dockyard.domain.scanning.layout import scan_layout
    from dockyard.domain.scanning.service import incomplete_description

    services = open_services(data_dir, database)
    try:
        findings = scan_layout(layout, ref, services.scanner)
    except DockyardError as error:
        console.print(f"[red]{error.message}[/]")
        raise typer.Exit(1) from None
    updated = services.vulnerabilities.updated_at()
    document = {
        **findings.to_ecr(),
        "vulnerabilitySourceUpdatedAt": updated.isoformat() if updated else None,
    }
    if findings.uncovered:
        document["notEvaluated"] = dict(findings.uncovered)
    _print_findings(document, output)
    if findings.uncovered:  # the findings printed are not the whole image's: never a clean exit
        _error(incomplete_description(findings))
        raise typer.Exit(1)


def _print_findings(document: dict[str, Any], output: str) -> None:
    if output == "json":
        typer.echo(json.dumps(document, indent=2))
        return
    table = Table("severity", "name", "package", "version")
    for finding in document["findings"]:
        attributes = {item["key"]: item["value"] for item in finding["attributes"]}
        table.add_row(
            finding["severity"],
            finding["name"],
            attributes.get("package_name", ""),
            attributes.get("package_version", ""),
        )
    Console().print(table)
