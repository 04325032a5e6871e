"""The `dockyard` CLI as an operator meets it: which data directory a command uses, and what a mistake looks like.

Every case runs `python -m dockyard …` in a subprocess, from a directory that is not the data directory's
parent (the default `./dockyard-data` is relative), and reads what a terminal or a log would show.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from dockyard.config import DATA_DIR_ENV
from tests.support.cli import data_directory, dockyard
from tests.support.tools import describe

ACCOUNT = "210987654321"
MISSING = "123456789012"


def _env(**extra: str) -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != DATA_DIR_ENV} | extra


def one_line_error(result: subprocess.CompletedProcess[str], status: int, *words: str) -> str:
    """The refusal: exit `status`, nothing on stdout, exactly one line on stderr holding every word."""
    assert result.returncode == status, describe(result)
    assert "Traceback" not in result.stdout + result.stderr, describe(result)
    assert result.stdout == "", describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, describe(result)
    assert all(word in lines[0] for word in words), (words, lines[0])
    return lines[0]


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """The directory the operator's shell is in: not where the data directory is."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """A data directory as `serve` made it, with one account."""
    data = data_directory(tmp_path / "srv" / "data")
    created = dockyard("admin", "account", "create", ACCOUNT, "--data-dir", str(data))
    assert created.returncode == 0, describe(created)
    return data


def _layout(tmp_path: Path) -> Path:
    layout = tmp_path / "layout"
    layout.mkdir()
    return layout


COMMANDS = [
    ["admin", "account", "list"],
    ["admin", "account", "create", ACCOUNT],
    ["admin", "user", "list", "--account", ACCOUNT],
    ["admin", "user", "create", "bob", "--account", ACCOUNT],
    ["admin", "key", "create", "--account", ACCOUNT],
    ["admin", "quota", "list", "--account", ACCOUNT],
    ["admin", "usage", "report", "--account", ACCOUNT],
    ["admin", "usage", "rollup"],
    ["admin", "rotate-master-key"],
    ["gc"],
    ["lifecycle", "run"],
    ["scan-db", "status"],
    ["scan-db", "import", "all.zip"],
    ["scan-db", "update"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_command_without_a_data_directory_refuses_and_creates_none(elsewhere: Path, command: list[str]) -> None:
    result = dockyard(*command, env=_env(), cwd=elsewhere)
    one_line_error(result, 2, str(elsewhere / "dockyard-data"), "--data-dir", DATA_DIR_ENV)
    assert list(elsewhere.iterdir()) == []  # no fresh, empty registry left behind


def test_scan_without_a_data_directory_refuses(tmp_path: Path, elsewhere: Path) -> None:
    result = dockyard("scan", str(_layout(tmp_path)), env=_env(), cwd=elsewhere)
    one_line_error(result, 2, "no data directory", "--data-dir")
    assert list(elsewhere.iterdir()) == []


def test_a_directory_that_is_no_data_directory_is_refused(tmp_path: Path, elsewhere: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = dockyard("admin", "user", "list", "--account", ACCOUNT, "--data-dir", str(empty), cwd=elsewhere)
    one_line_error(result, 2, str(empty), "metadata.db", "--data-dir", DATA_DIR_ENV)
    assert list(empty.iterdir()) == []  # no master key, no database made in it


def test_the_environment_names_the_data_directory(served: Path, elsewhere: Path) -> None:
    made = dockyard("admin", "user", "create", "bob", "--account", ACCOUNT, env=_env(DOCKYARD_DATA_DIR=str(served)))
    assert made.returncode == 0, describe(made)
    listed = dockyard(
        "admin",
        "user",
        "list",
        "--account",
        ACCOUNT,
        "-o",
        "json",
        env=_env(DOCKYARD_DATA_DIR=str(served)),
        cwd=elsewhere,
    )
    assert listed.returncode == 0, describe(listed)
    assert [user["UserName"] for user in json.loads(listed.stdout)["Users"]] == ["bob"]
    # --data-dir wins over the environment
    other = dockyard(
        "admin",
        "user",
        "list",
        "--account",
        ACCOUNT,
        "--data-dir",
        str(elsewhere),
        env=_env(DOCKYARD_DATA_DIR=str(served)),
    )
    one_line_error(other, 2, str(elsewhere), "metadata.db")


@pytest.mark.parametrize(
    "command",
    [
        ["admin", "user", "create", "bob", "--account", MISSING],
        ["admin", "user", "list", "--account", MISSING],
        ["admin", "key", "create", "--account", MISSING],
        ["admin", "key", "create", "--account", MISSING, "--user", "bob"],
        ["admin", "quota", "set", "repositories-per-region", "5", "--account", MISSING],
        ["admin", "quota", "list", "--account", MISSING],
        ["admin", "usage", "report", "--account", MISSING],
    ],
    ids=" ".join,
)
def test_an_account_that_does_not_exist_is_one_line(served: Path, command: list[str]) -> None:
    result = dockyard(*command, "--data-dir", str(served))
    line = one_line_error(result, 2, f"no account {MISSING}")
    assert "FOREIGN KEY" not in line and "INSERT" not in line


@pytest.mark.parametrize(
    "command",
    [
        ["admin", "user", "create", "bob", "--account", "12345"],
        ["admin", "key", "create", "--account", "12345"],
        ["admin", "user", "list", "--account", "12345"],
    ],
    ids=" ".join,
)
def test_a_malformed_account_is_a_usage_error(served: Path, command: list[str]) -> None:
    result = dockyard(*command, "--data-dir", str(served))
    one_line_error(
        result, 2, "'--account'", "an account id is 12 digits, not '12345'", f"{' '.join(command[:3])} --help"
    )


def test_a_missing_option_is_one_line(served: Path) -> None:
    result = dockyard("admin", "user", "list", "--data-dir", str(served))
    one_line_error(result, 2, "Missing option '--account'", "admin user list --help")


def test_domain_refusals_are_one_line(served: Path) -> None:
    assert dockyard("admin", "user", "create", "bob", "--account", ACCOUNT, "--data-dir", str(served)).returncode == 0
    again = dockyard("admin", "user", "create", "bob", "--account", ACCOUNT, "--data-dir", str(served))
    one_line_error(again, 2, "EntityAlreadyExists", "bob")
    nobody = dockyard("admin", "key", "list", "--account", ACCOUNT, "--user", "nobody", "--data-dir", str(served))
    one_line_error(nobody, 2, "NoSuchEntity", "nobody")


@pytest.mark.parametrize(
    ("database", "status", "words"),
    [
        (
            "postgresql://dockyard:hunter2secret@127.0.0.1:1/dockyard",
            1,
            ("cannot use the metadata database", "--database"),
        ),
        ("nosuchdialect://x", 2, ("--database", "not a usable SQLAlchemy URL")),
        ("sqlite:////nonexistent-dir-for-dockyard/metadata.db", 1, ("/nonexistent-dir-for-dockyard",)),
    ],
)
def test_an_unusable_database_is_one_line(served: Path, database: str, status: int, words: tuple[str, ...]) -> None:
    result = dockyard("admin", "account", "list", "--data-dir", str(served), "--database", database)
    line = one_line_error(result, status, *words)
    assert "hunter2secret" not in line


def test_every_list_speaks_json(served: Path, tmp_path: Path) -> None:
    def json_of(*command: str) -> object:
        result = dockyard(*command, "--data-dir", str(served), "--output", "json")
        assert result.returncode == 0, describe(result)
        return json.loads(result.stdout)

    assert dockyard("admin", "user", "create", "bob", "--account", ACCOUNT, "--data-dir", str(served)).returncode == 0
    key = dockyard("admin", "key", "create", "--account", ACCOUNT, "--user", "bob", "--data-dir", str(served))
    secret = json.loads(key.stdout)["SecretAccessKey"]
    policy = tmp_path / "policy.json"
    policy.write_text(
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}'
    )
    put = dockyard(
        "admin", "policy", "put", "bob", "all", "--file", str(policy), "--account", ACCOUNT, "--data-dir", str(served)
    )
    assert put.returncode == 0, describe(put)

    assert json_of("admin", "account", "list") == {"Accounts": [ACCOUNT]}
    users = json_of("admin", "user", "list", "--account", ACCOUNT)
    assert isinstance(users, dict) and [user["Arn"] for user in users["Users"]] == [f"arn:aws:iam::{ACCOUNT}:user/bob"]
    keys = json_of("admin", "key", "list", "--account", ACCOUNT, "--user", "bob")
    assert isinstance(keys, dict) and [k["AccessKeyId"] for k in keys["AccessKeyMetadata"]] == [
        json.loads(key.stdout)["AccessKeyId"]
    ]
    assert secret not in json.dumps(keys)
    assert json_of("admin", "policy", "list", "bob", "--account", ACCOUNT) == {"PolicyNames": ["all"]}
    quotas = json_of("admin", "quota", "list", "--account", ACCOUNT)
    assert isinstance(quotas, dict) and {"QuotaName", "Value", "DefaultValue"} == set(quotas["Quotas"][0])
    report = json_of("admin", "usage", "report", "--account", ACCOUNT)
    assert isinstance(report, dict) and report["account"] == ACCOUNT
    assert json_of("scan-db", "status") == {"sources": [], "advisories": 0}
