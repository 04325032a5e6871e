"""`dockyard gc` and `dockyard lifecycle run`: background work, run now, on a data directory."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dockyard.config import Settings
from dockyard.domain.errors import DockyardError
from dockyard.domain.gc import GarbageCollector
from dockyard.domain.lifecycle import epoch_seconds
from dockyard.domain.names import RepositoryRef
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
    credentials = data_dir / "root-credentials.json"
    if not credentials.exists():
        console.print("[red]--account is required (no root-credentials.json in the data directory)[/]")
        raise typer.Exit(2)
    account: str = json.loads(credentials.read_text())["accountId"]
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
