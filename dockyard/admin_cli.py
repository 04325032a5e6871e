"""`dockyard admin …`: accounts, IAM users, access keys, user policies and quotas, on a data directory.

It works on the metadata store directly (SQLite allows it while the server runs), through the same domain
services the IAM API uses.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from dockyard.cli_common import (
    Database,
    DataDir,
    Output,
    OutputFormat,
    account_option,
    existing_data_dir,
    fail,
    open_services,
    print_json,
)
from dockyard.config import DEFAULT_DATA_DIR, MASTER_KEY_ENV
from dockyard.domain.accounts import Accounts
from dockyard.domain.keys import MASTER_KEY_BYTES, SecretBox
from dockyard.domain.master_key import opens_with, reseal_with, sealed_sample
from dockyard.domain.quotas import DEFAULTS
from dockyard.usage_cli import usage_app

if TYPE_CHECKING:  # each command imports the stores itself: `--help` loads no SQL
    from dockyard.services import Services

admin_app = typer.Typer(
    help="Manage accounts, IAM users, access keys, policies, quotas and the master key.", no_args_is_help=True
)
account_app = typer.Typer(help="Accounts (12-digit ids).", no_args_is_help=True)
user_app = typer.Typer(help="IAM users of an account.", no_args_is_help=True)
key_app = typer.Typer(help="Access keys of a user (or of the account's root user).", no_args_is_help=True)
policy_app = typer.Typer(help="Inline identity policies of a user.", no_args_is_help=True)
quota_app = typer.Typer(help="Service quotas of an account.", no_args_is_help=True)
for name, sub_app in (
    ("account", account_app),
    ("user", user_app),
    ("key", key_app),
    ("policy", policy_app),
    ("quota", quota_app),
    ("usage", usage_app),
):
    admin_app.add_typer(sub_app, name=name)

console = Console()
AccountOption = Annotated[str, typer.Option("--account", help="12-digit account id.", callback=account_option)]


def _services(data_dir: Path, database: str | None) -> Services:

    # The default account is irrelevant to admin commands; every command names its account.
    return open_services(data_dir, database)


def _accounts(data_dir: Path, database: str | None, account: str | None = None) -> Accounts:
    """The accounts service; with `account`, once that account is known to exist (a user or key of an account
    that does not exist would otherwise reach the database as a foreign-key error)."""
    accounts = _services(data_dir, database).accounts
    if account is not None:
        _require_account(accounts, account)
    return accounts


def _require_account(accounts: Accounts, account: str) -> None:
    if account not in accounts.list_accounts():
        fail(f"no account {account}: create it with `dockyard admin account create {account}` (or check --data-dir)")


@account_app.command("create")
def account_create(
    account_id: Annotated[str, typer.Argument(help="12 digits.", callback=account_option)],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database: Database = None,
) -> None:
    _accounts(data_dir, database).create_account(account_id)
    console.print(f"account {account_id} ready")


@account_app.command("list")
def account_list(
    data_dir: DataDir = DEFAULT_DATA_DIR, database: Database = None, output: Output = OutputFormat.table
) -> None:
    accounts = _accounts(data_dir, database).list_accounts()
    if output is OutputFormat.json:
        print_json({"Accounts": accounts})
        return
    for account in accounts:
        console.print(account)


@account_app.command("delete")
def account_delete(account_id: str, data_dir: DataDir = DEFAULT_DATA_DIR, database: Database = None) -> None:
    _accounts(data_dir, database).delete_account(account_id)
    console.print(f"account {account_id} deleted")


@user_app.command("create")
def user_create(
    user_name: str, account: AccountOption, data_dir: DataDir = DEFAULT_DATA_DIR, database: Database = None
) -> None:
    user = _accounts(data_dir, database, account).create_user(account, user_name)
    console.print(f"created {user.arn} ({user.user_id})")


@user_app.command("list")
def user_list(
    account: AccountOption,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database: Database = None,
    output: Output = OutputFormat.table,
) -> None:
    users = _accounts(data_dir, database, account).list_users(account)
    if output is OutputFormat.json:  # as IAM's ListUsers names the fields
        print_json(
            {
                "Users": [
                    {
                        "UserName": user.user_name,
                        "UserId": user.user_id,
                        "Arn": user.arn,
                        "Path": user.path,
                        "CreateDate": user.created_at.isoformat(),
                    }
                    for user in users
                ]
            }
        )
        return
    table = Table("user", "id", "arn", "created")
    for user in users:
        table.add_row(user.user_name, user.user_id, user.arn, user.created_at.isoformat())
    console.print(table)


@user_app.command("delete")
def user_delete(
    user_name: str, account: AccountOption, data_dir: DataDir = DEFAULT_DATA_DIR, database: Database = None
) -> None:
    _accounts(data_dir, database, account).delete_user(account, user_name)
    console.print(f"deleted user {user_name}")


@key_app.command("create")
def key_create(
    account: AccountOption,
    user: Annotated[str | None, typer.Option(help="User name; omit for the account's root user.")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database: Database = None,
) -> None:
    """Create an access key and print it once as JSON (the secret is never shown again)."""
    key = _accounts(data_dir, database, account).create_access_key(account, user)
    record = {
        "AccessKeyId": key.info.access_key_id,
        "SecretAccessKey": key.secret_access_key,
        "Account": account,
        "UserName": user,
    }
    typer.echo(json.dumps(record, indent=2))


@key_app.command("list")
def key_list(
    account: AccountOption,
    user: Annotated[str | None, typer.Option(help="User name; omit for the root user.")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database: Database = None,
    output: Output = OutputFormat.table,
) -> None:
    keys = _accounts(data_dir, database, account).list_access_keys(account, user)
    if output is OutputFormat.json:  # as IAM's ListAccessKeys names the fields (never a secret)
        print_json(
            {
                "AccessKeyMetadata": [
                    {
                        "AccessKeyId": key.access_key_id,
                        "UserName": key.user_name,
                        "Status": "Active",
                        "CreateDate": key.created_at.isoformat(),
                    }
                    for key in keys
                ]
            }
        )
        return
    for key in keys:
        console.print(f"{key.access_key_id}  created {key.created_at.isoformat()}")


@key_app.command("delete")
def key_delete(
    access_key_id: str,
    account: AccountOption,
    user: Annotated[str | None, typer.Option(help="User name; omit for the root user.")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database: Database = None,
) -> None:
    _accounts(data_dir, database, account).delete_access_key(account, user, access_key_id)
    console.print(f"deleted access key {access_key_id}")


@policy_app.command("put")
def policy_put(
    user_name: str,
    policy_name: str,
    file: Annotated[Path, typer.Option("--file", exists=True, dir_okay=False, help="Policy document (JSON).")],
    account: AccountOption,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database: Database = None,
) -> None:
    _accounts(data_dir, database, account).put_user_policy(account, user_name, policy_name, file.read_text())
    console.print(f"attached {policy_name} to {user_name}")


@policy_app.command("list")
def policy_list(
    user_name: str,
    account: AccountOption,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database: Database = None,
    output: Output = OutputFormat.table,
) -> None:
    names = _accounts(data_dir, database, account).list_user_policies(account, user_name)
    if output is OutputFormat.json:  # as IAM's ListUserPolicies
        print_json({"PolicyNames": names})
        return
    for name in names:
        console.print(name)


@policy_app.command("delete")
def policy_delete(
    user_name: str,
    policy_name: str,
    account: AccountOption,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database: Database = None,
) -> None:
    _accounts(data_dir, database, account).delete_user_policy(account, user_name, policy_name)
    console.print(f"detached {policy_name} from {user_name}")


@quota_app.command("set")
def quota_set(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(sorted(DEFAULTS))}.")],
    value: int,
    account: AccountOption,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database: Database = None,
) -> None:
    services = _services(data_dir, database)
    _require_account(services.accounts, account)
    services.repositories.quotas.set(account, name, value)
    console.print(f"{name} = {value} for account {account}")


@quota_app.command("list")
def quota_list(
    account: AccountOption,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database: Database = None,
    output: Output = OutputFormat.table,
) -> None:
    services = _services(data_dir, database)
    _require_account(services.accounts, account)
    quotas = services.repositories.quotas
    rows = [(name, quotas.limit(account, name), default) for name, default in sorted(DEFAULTS.items())]
    if output is OutputFormat.json:
        print_json({"Quotas": [{"QuotaName": n, "Value": v, "DefaultValue": d} for n, v, d in rows]})
        return
    table = Table("quota", "value", "default")
    for name, limit, default in rows:
        table.add_row(name, str(limit), str(default))
    console.print(table)


@admin_app.command("rotate-master-key")
def rotate_master_key(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database: Database = None,
    new_key_file: Annotated[
        Path | None, typer.Option(help="A file holding the new 32-byte key, base64-encoded (default: generate one).")
    ] = None,
) -> None:
    """Re-seal every secret and key under a new master key; no blob or manifest is read or rewritten.

    Stop every node first, run this once, then start every node with the new key: the data directory's
    master.key is replaced (with DOCKYARD_MASTER_KEY set, the new key is printed to set in its place instead).
    Outstanding login tokens become invalid. A rotation that stopped half-way is finished by running it again.
    """
    from dockyard.services import load_master_key, write_private_file

    data_dir = existing_data_dir(data_dir, database)
    metadata = _services(data_dir, database).metadata
    old_key = load_master_key(data_dir)
    pending = data_dir / "master.key.next"
    new_key = _new_master_key(pending, new_key_file)
    if new_key == old_key:
        console.print("[red]the new master key is the current one[/]")
        raise typer.Exit(1)
    if not pending.exists():
        write_private_file(pending, base64.b64encode(new_key) + b"\n")
    old, new = SecretBox(old_key), SecretBox(new_key)
    sample = sealed_sample(metadata)
    if opens_with(old, sample):
        report = reseal_with(metadata, old, new)
        console.print(f"re-sealed {report.secrets} access-key secrets and the material of {report.keys} keys")
    elif opens_with(new, sample):
        console.print("the metadata is already sealed with the new key: finishing the rotation")
    else:
        console.print("[red]the metadata opens with neither the current nor the pending master key[/]")
        raise typer.Exit(1)
    if os.environ.get(MASTER_KEY_ENV):
        pending.unlink()
        console.print(f"set {MASTER_KEY_ENV}={base64.b64encode(new_key).decode()} on every node, then start them")
    else:
        os.replace(pending, data_dir / "master.key")
        console.print(f"{data_dir / 'master.key'} now holds the new key; start every node with it")


def _new_master_key(pending: Path, new_key_file: Path | None) -> bytes:
    """The key a half-finished rotation chose, else the one given, else a fresh one."""
    if pending.exists():
        source = pending.read_bytes()
    elif new_key_file is not None:
        source = new_key_file.read_bytes()
    else:
        return secrets.token_bytes(MASTER_KEY_BYTES)
    key = base64.b64decode(source.strip())
    if len(key) != MASTER_KEY_BYTES:
        console.print(f"[red]a master key is {MASTER_KEY_BYTES} bytes, base64-encoded[/]")
        raise typer.Exit(1)
    return key
