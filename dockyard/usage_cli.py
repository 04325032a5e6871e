"""`dockyard admin usage …`: cost reports (storage GB-months, data transfer out) and the storage roll-up."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from dockyard.config import Settings
from dockyard.domain.names import check_account
from dockyard.domain.usage import Prices, UsageLedger, UsageLine, UsageReport, month_range

if TYPE_CHECKING:
    from dockyard.services import Services


def prepare(settings: Settings) -> Services:
    """`dockyard.services.prepare`, imported when a command runs: `--help` loads no SQL."""
    from dockyard.services import prepare as prepare_services

    return prepare_services(settings)


usage_app = typer.Typer(
    help="Usage metering and cost reports (storage per GB-month, data transfer out per GB).", no_args_is_help=True
)
console = Console()
DataDir = Annotated[Path, typer.Option(help="The server's data directory.")]
Database = Annotated[str | None, typer.Option(help="SQLAlchemy URL of the metadata store, if not the default.")]
DEFAULT_PRICES = Prices()


class ReportFormat(StrEnum):
    table = "table"
    json = "json"


def _ledger(data_dir: Path, database: str | None) -> UsageLedger:
    return prepare(Settings(data_dir.resolve(), "000000000000", database_url=database)).usage


def _account(value: str) -> str:
    try:
        return check_account(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def _day(value: str, option: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise typer.BadParameter(f"a date is YYYY-MM-DD, not {value!r}", param_hint=option) from None


def _report_range(month: str | None, start: str | None, end: str | None) -> tuple[datetime, datetime]:
    if month is not None and (start is not None or end is not None):
        raise typer.BadParameter("give --month or --start/--end, not both")
    if start is not None or end is not None:
        if start is None or end is None:
            raise typer.BadParameter("--start and --end go together")
        first, last = _day(start, "--start"), _day(end, "--end")
        if last <= first:
            raise typer.BadParameter("--end (exclusive) must come after --start")
        return first, last
    try:
        return month_range(month or datetime.now(UTC).strftime("%Y-%m"))
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--month") from None


@usage_app.command("report")
def report(
    account: Annotated[str, typer.Option("--account", help="12-digit account id.", callback=_account)],
    month: Annotated[str | None, typer.Option(help="YYYY-MM (default: the current month, UTC).")] = None,
    start: Annotated[str | None, typer.Option(help="YYYY-MM-DD: first day of a date range (UTC).")] = None,
    end: Annotated[str | None, typer.Option(help="YYYY-MM-DD: the day after the range (exclusive).")] = None,
    output: Annotated[ReportFormat, typer.Option("--format", help="table or json.")] = ReportFormat.table,
    storage_price: Annotated[
        float, typer.Option(min=0.0, help="USD per GB-month of storage.")
    ] = DEFAULT_PRICES.storage_per_gb_month,
    transfer_price: Annotated[
        float, typer.Option(min=0.0, help="USD per GB of data transfer out.")
    ] = DEFAULT_PRICES.transfer_out_per_gb,
    data_dir: DataDir = Path("dockyard-data"),
    database: Database = None,
) -> None:
    """Usage and cost of an account's repositories over a month or a date range, per repository and in total.

    Storage is billed from the hourly samples of the usage roll-up (an hour without a sample counts as
    nothing); transfer out counts the blob and manifest bytes pulls were served. GB are 2^30 bytes.
    """
    first, last = _report_range(month, start, end)
    prices = Prices(storage_per_gb_month=storage_price, transfer_out_per_gb=transfer_price)
    result = _ledger(data_dir, database).report(account, first, last, prices)
    if output is ReportFormat.json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
    else:  # a table written to a file or a pipe is not cut to 80 columns
        (console if console.is_terminal else Console(width=160)).print(_table(result))


@usage_app.command("rollup")
def rollup(data_dir: DataDir = Path("dockyard-data"), database: Database = None) -> None:
    """Sample every repository's stored bytes for the current hour now (the servers do it twice an hour)."""
    done = _ledger(data_dir, database).roll_up()
    console.print(
        f"sampled {done.repositories} repositories for {done.hour:%Y-%m-%d %H:00} UTC: {_size(done.stored_bytes)}"
    )


def _table(result: UsageReport) -> Table:
    caption = (
        f"{result.start:%Y-%m-%d} to {result.end:%Y-%m-%d} (exclusive), UTC; "
        f"{_dollars(result.prices.storage_per_gb_month)}/GB-month, "
        f"{_dollars(result.prices.transfer_out_per_gb)}/GB out"
    )
    table = Table(
        "repository", "stored", "GB-mo", "out", "pulls", "pushes", "storage $", "out $", "total $",
        title=f"Usage of account {result.account_id}", caption=caption,
    )  # fmt: skip
    for line in result.repositories:
        table.add_row(f"{line.region}/{line.repository}", *_cells(line))
    table.add_section()
    table.add_row("total", *_cells(result.total), style="bold")
    return table


def _cells(line: UsageLine) -> list[str]:
    return [
        _size(line.stored_bytes),
        _amount(line.storage_gb_months),
        _size(line.transfer_out_bytes),
        str(line.pulls),
        str(line.pushes),
        _amount(line.storage_cost),
        _amount(line.transfer_cost),
        _amount(line.cost),
    ]


def _amount(value: float) -> str:
    """Cents from a dollar up; below, three significant digits (the JSON format has every digit)."""
    return f"{value:,.2f}" if value >= 1 or value == 0 else f"{value:.3g}"


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _dollars(price: float) -> str:
    return f"${price:.2f}" if round(price, 2) == price else f"${price}"
