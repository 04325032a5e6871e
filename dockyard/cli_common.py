"""What every `dockyard` command shares: the data-directory and database options, opening an existing data
directory, `--output`, and one-line reports of refused commands (never a stack trace, never a secret)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # the click Typer runs on

from dockyard.config import DATA_DIR_ENV, METADATA_FILE, Settings
from dockyard.domain.errors import DockyardError
from dockyard.domain.keys import WrongMasterKey
from dockyard.domain.names import check_account

if TYPE_CHECKING:  # commands import the stores when they run: `--help` loads no SQL
    from dockyard.services import Services

# Exit statuses: 2 for what the operator can fix on the command line (click's own usage errors are 2 too),
# 1 for what failed although the command was right (an unreachable database, a wrong master key).
INPUT_ERROR = 2
FAILURE = 1
NO_ACCOUNT = "000000000000"  # for commands that name their account (the default account does not matter)

# soft_wrap: a message stays one line when stderr is a pipe (Rich wraps at 80 columns otherwise)
errors = Console(stderr=True, soft_wrap=True, highlight=False)

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        help="The data directory (metadata, blobs, keys). Only `serve` creates it; the others refuse one that "
        "does not exist.",
    ),
]
Database = Annotated[
    str | None,
    typer.Option("--database", help="SQLAlchemy URL of the metadata store (default: SQLite in --data-dir)."),
]


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="table (for people) or json (for scripts).")]


def fail(message: str, status: int = INPUT_ERROR) -> NoReturn:
    """Print one red line on stderr and exit with `status`."""
    errors.print(f"[red]{escape(message)}[/]")
    raise SystemExit(status)  # not typer.Exit: `reported` also runs outside click (around the whole app)


def print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2))


def account_option(value: str | None) -> str | None:
    """A `--account` callback: 12 digits, else a usage error naming the option."""
    if value is not None:
        try:
            check_account(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def existing_data_dir(data_dir: Path, database: str | None) -> Path:
    """The data directory, made absolute, if it is one Dockyard served: never a new, empty one made by mistake
    (a command run from another directory would otherwise answer "no users" from a registry of its own)."""
    resolved = data_dir.expanduser().resolve()
    fix = f"name the server's with --data-dir or {DATA_DIR_ENV} (only `dockyard serve` creates one)"
    if not resolved.is_dir():
        fail(f"no data directory at {resolved}: {fix}")
    if database is None and not (resolved / METADATA_FILE).is_file():
        fail(f"{resolved} is not a Dockyard data directory (it holds no {METADATA_FILE}): {fix}, or give --database")
    return resolved


def open_services(data_dir: Path, database: str | None, account: str = NO_ACCOUNT) -> Services:
    """The services over an existing data directory (and its database)."""
    from dockyard.services import prepare

    return prepare(Settings(existing_data_dir(data_dir, database), account, database_url=database))


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip() if error is not None else ""
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def reported() -> Iterator[None]:
    """A refused command prints one line (what is wrong and, where it helps, what to do) and exits: 2 for an
    input error, 1 for a failure. SQLAlchemy's own messages are not printed: they carry the SQL statement and
    its parameters, sealed secrets among them."""
    try:
        yield
    except NoArgsIsHelpError as error:  # the help page was printed already
        raise SystemExit(error.exit_code) from None
    except ClickException as error:  # a usage error: its message on one line, not a usage block and a box
        context = getattr(error, "ctx", None)
        hint = f" (see `{context.command_path} --help`)" if context is not None else ""
        fail(f"{error.format_message()}{hint}", error.exit_code)
    except typer.Abort:
        fail("aborted", FAILURE)
    except DockyardError as error:
        fail(f"{error.ecr_exception}: {error.message}")
    except WrongMasterKey as error:
        fail(str(error), FAILURE)
    except OSError as error:  # e.g. a SQLite --database in a directory that does not exist
        fail(f"{error.strerror or error}: {error.filename}" if error.filename else str(error), FAILURE)
    except Exception as error:
        _database_failure(error)
        raise


def _database_failure(error: Exception) -> None:
    """One line for the metadata database's errors (and return for any other). SQLAlchemy is imported only if
    the command loaded it already: an error of a command that never did is none of its errors."""
    if "sqlalchemy" not in sys.modules:
        return
    from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError, OperationalError

    if isinstance(error, NoSuchModuleError | ArgumentError):
        fail(f"--database: not a usable SQLAlchemy URL: {_first_line(error)}")
    if isinstance(error, OperationalError):
        fail(f"cannot use the metadata database: {_first_line(error.orig)} (check --database)", FAILURE)
    if isinstance(error, IntegrityError):
        fail(f"refused by the metadata database: {_first_line(error.orig)}")
    if isinstance(error, DBAPIError):
        fail(f"the metadata database failed: {_first_line(error.orig)}", FAILURE)
