"""A fleet agrees on its default account: nodes sharing one metadata database (each with its own data
directory) serve the account the first node stored there, whether or not they were given `--default-account`."""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support.cli import data_directory
from tests.support.databases import postgres_url, sqlite_url
from tests.support.server import ServerProcess, free_port
from tests.support.tools import describe

BACKENDS: dict[str, Callable[[Path], str]] = {"sqlite": sqlite_url, "postgresql": postgres_url}
NO_ROOT_KEYS = {"DOCKYARD_ROOT_ACCESS_KEY_ID": "", "DOCKYARD_ROOT_SECRET_ACCESS_KEY": ""}


@pytest.fixture(params=sorted(BACKENDS))
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return BACKENDS[request.param](tmp_path)


@pytest.fixture
def master_key() -> dict[str, str]:
    """One master key for every node (sealed secrets open on any)."""
    return {"DOCKYARD_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}


def _node(tmp_path: Path, name: str, database: str, master_key: dict[str, str], account: str | None) -> ServerProcess:
    data_dir = tmp_path / name / "data"
    data_dir.parent.mkdir(parents=True)
    return ServerProcess(
        data_dir, extra_args=["--database", database], environment=NO_ROOT_KEYS | master_key, default_account=account
    )


def _served_account(node: ServerProcess) -> str:
    found = re.findall(r"^Default registry: account (\d{12}), region", node.log(), re.MULTILINE)
    assert len(found) == 1, node.log()
    return str(found[0])


def _stored(database: str) -> list[tuple[str, str]]:
    engine = create_engine(database)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text("SELECT name, value FROM registry_settings"))]
    finally:
        engine.dispose()


@pytest.fixture
def stopped_at_end() -> Iterator[list[ServerProcess]]:
    nodes: list[ServerProcess] = []
    yield nodes
    for node in nodes:
        node.stop()


def test_nodes_started_at_once_without_the_flag_agree(
    tmp_path: Path, database: str, master_key: dict[str, str], stopped_at_end: list[ServerProcess]
) -> None:
    nodes = [_node(tmp_path, f"node-{n}", database, master_key, None) for n in range(1, 3)]
    stopped_at_end.extend(nodes)
    with ThreadPoolExecutor(len(nodes)) as pool:  # as an orchestrator starts a fleet: at the same moment
        list(pool.map(ServerProcess.start, nodes))
    accounts = {_served_account(node) for node in nodes}
    assert len(accounts) == 1, [node.log() for node in nodes]
    (account,) = accounts
    assert _stored(database) == [("default-account", account)]
    for node in nodes:
        assert (node.data_dir / "default-account").read_text().strip() == account


def test_a_later_node_reads_the_account_and_says_where_the_root_keys_are(
    tmp_path: Path, database: str, master_key: dict[str, str], stopped_at_end: list[ServerProcess]
) -> None:
    first = _node(tmp_path, "first", database, master_key, "111122223333")
    stopped_at_end.append(first)
    first.start()
    assert (first.data_dir / "root-credentials.json").exists()
    later = _node(tmp_path, "later", database, master_key, None)
    stopped_at_end.append(later)
    later.start()
    assert _served_account(later) == "111122223333"
    assert not (later.data_dir / "root-credentials.json").exists()  # made once, by the first node
    assert "Root credentials: account 111122223333 has them already" in later.log()
    again = _node(tmp_path, "again", database, master_key, "111122223333")  # the same flag is fine
    stopped_at_end.append(again)
    again.start()
    assert _served_account(again) == "111122223333"


def test_a_different_default_account_is_refused_in_one_line(
    tmp_path: Path, database: str, master_key: dict[str, str], stopped_at_end: list[ServerProcess]
) -> None:
    first = _node(tmp_path, "first", database, master_key, "111122223333")
    stopped_at_end.append(first)
    first.start()
    other = tmp_path / "other" / "data"
    command = [sys.executable, "-m", "dockyard", "serve", "--port", str(free_port()), "--data-dir", str(other)]
    command += ["--database", database, "--default-account", "444455556666"]
    env = {**os.environ, **NO_ROOT_KEYS, **master_key}
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 2, describe(refused)
    assert "Traceback" not in refused.stderr, describe(refused)
    lines = [line for line in refused.stderr.splitlines() if "444455556666" in line]
    assert len(lines) == 1 and "111122223333" in lines[0] and "--default-account" in lines[0], describe(refused)
    assert _stored(database) == [("default-account", "111122223333")]


def test_an_older_data_directory_keeps_its_account(tmp_path: Path, stopped_at_end: list[ServerProcess]) -> None:
    """A data directory from before the database kept the account: its `default-account` file is stored."""
    data_dir = data_directory(tmp_path / "old" / "data", account="777788889999")  # metadata, no stored setting
    assert _stored(f"sqlite:///{data_dir / 'metadata.db'}") == []
    node = ServerProcess(data_dir, default_account=None)
    stopped_at_end.append(node)
    node.start()
    assert _served_account(node) == "777788889999"
    assert _stored(f"sqlite:///{data_dir / 'metadata.db'}") == [("default-account", "777788889999")]
