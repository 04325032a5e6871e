"""`dockyard gc` and `dockyard lifecycle run`: background work, run now, on a data directory."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dockyard.config import Settings, remembered_account
from dockyard.domain.errors import DockyardError
from dockyard.domain.gc import GarbageCollector
from dockyard.domain.lifecycle import epoch_seconds
from dockyard.domain.names import RepositoryRef
from dockyard.domain.scanning.layout import scan_layout
from dockyard.lifecycle_cli import lifecycle_app
from dockyard.server import prepare

console = Console(stderr=True)
DataDir = Annotated[Path, typer.Option(help="The server's data directory.")]
Database = Annotated[str | None, typer.Option(help="SQLAlchemy URL of the metadata store, if not the default.")]


@lifecycle_app.command("run")
def lifecycle_run(
    repository: Annotated[str | None, typer.Option(help="Only this repository (else every one with a policy).")] = None,
    account: Annotated[str | None, typer.Option(help="Account of --repository (default: the server's).")] = None,
    region: Annotated[str, typer.Option(help="Region of --repository.")] = "us-east-1",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would happen; change nothing.")] = False,
    data_dir: DataDir = Path("dockyard-data"),
    database: Database = None,
) -> None:
    """Apply lifecycle policies now; prints one JSON line per image acted on."""
    services = prepare(Settings(data_dir.resolve(), account or "000000000000", database_url=database))
    try:
        if repository is not None:
            owner = account or _remembered_account(data_dir)
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
    data_dir: DataDir = Path("dockyard-data"),
    database: Database = None,
) -> None:
    """Collect garbage now: expired uploads, unreferenced blob links and blobs. Safe while the server runs."""
    services = prepare(Settings(data_dir.resolve(), "000000000000", database_url=database))
    collector = GarbageCollector(services.metadata, services.blobs, grace=timedelta(seconds=grace))
    report = collector.run(dry_run)
    typer.echo(json.dumps({**report.__dict__, "dryRun": dry_run}))


scan_db_app = typer.Typer(help="The offline vulnerability database (OSV advisories).", no_args_is_help=True)


@scan_db_app.command("import")
def scan_db_import(
    sources: Annotated[list[str], typer.Argument(help="OSV all.zip files (paths or http(s) URLs).")],
    data_dir: DataDir = Path("dockyard-data"),
    database: Database = None,
) -> None:
    """Import (or incrementally refresh) advisories from OSV per-ecosystem all.zip bulk files."""
    services = prepare(Settings(data_dir.resolve(), "000000000000", database_url=database))
    for source in sources:
        with _local_copy(source) as path:
            try:
                report = services.vulnerabilities.import_zip(path, source_name=source)
            except DockyardError as error:
                console.print(f"[red]{source}: {error.message}[/]")
                raise typer.Exit(1) from None
        console.print(
            f"{source}: {report.written} advisories written, {report.unchanged} unchanged, {report.rejected} rejected"
        )


@scan_db_app.command("status")
def scan_db_status(data_dir: DataDir = Path("dockyard-data"), database: Database = None) -> None:
    """Show the imported sources and how many advisories the database holds."""
    services = prepare(Settings(data_dir.resolve(), "000000000000", database_url=database))
    for name, imported_at, records in services.metadata.vulnerability_sources():
        typer.echo(f"{name}\t{imported_at.isoformat()}\t{records} records")
    typer.echo(f"total\t{services.metadata.count_vulnerabilities()} advisories")


@contextlib.contextmanager
def _local_copy(source: str) -> Iterator[Path]:
    """A path for the source: itself, or a temporary download streamed from an URL."""
    if not source.startswith(("http://", "https://")):
        yield Path(source)
        return
    with tempfile.NamedTemporaryFile(suffix=".zip") as file:
        with urllib.request.urlopen(source, timeout=120) as response:  # noqa: S310 (http(s) only, checked above)
            shutil.copyfileobj(response, file, 1 << 20)
        file.flush()
        yield Path(file.name)


def scan(
    layout: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="An OCI image layout directory.")],
    ref: Annotated[
        str | None, typer.Option(help="The image's ref name in index.json (default: its only image).")
    ] = None,
    output: Annotated[str, typer.Option("--format", help="json or table")] = "json",
    data_dir: DataDir = Path("dockyard-data"),
    database: Database = None,
) -> None:
    """Scan an OCI image layout on disk with the server's code and database; prints the findings."""
    services = prepare(Settings(data_dir.resolve(), "000000000000", database_url=database))
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
