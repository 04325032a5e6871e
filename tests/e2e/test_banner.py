"""The banner `dockyard serve` prints at start, read where an operator reads it: a terminal (a pty) or
whatever collects stderr (a pipe: systemd's journal, a container log, `2> file`)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import selectors
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.server import ACCOUNT_ID, ServerProcess, free_port

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
NO_ROOT_KEYS = {"DOCKYARD_ROOT_ACCESS_KEY_ID": "", "DOCKYARD_ROOT_SECRET_ACCESS_KEY": ""}
NARROW = 40  # columns of the test terminal: every banner line is longer


def _read_until(fd: int, marker: str, timeout: float = 120) -> str:
    """What the server writes on `fd` up to the end of the line holding `marker`."""
    seen = b""
    deadline = time.monotonic() + timeout
    # A selector, not select(): deep in a long suite the pty's descriptor can be numbered past select's 1024.
    with selectors.DefaultSelector() as watch:
        watch.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not watch.select(1.0):
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the pty's other end closed: the server exited
                chunk = b""
            if not chunk:
                break
            seen += chunk
            text = ANSI.sub("", seen.decode(errors="replace")).replace("\r\n", "\n")
            if marker in text and text.split(marker, 1)[1].find("\n") >= 0:
                return text
    pytest.fail(f"no {marker!r} line within {timeout}s: {seen.decode(errors='replace')!r}")


@contextmanager
def _serving(data_dir: Path, *, terminal: bool, args: tuple[str, ...] = ()) -> Iterator[str]:
    """Start `dockyard serve` with stderr on a pty (`terminal`) or a pipe; yield its banner; stop it."""
    command = [sys.executable, "-m", "dockyard", "serve", "--port", str(free_port()), "--data-dir", str(data_dir)]
    env = os.environ | NO_ROOT_KEYS | {"COLUMNS": str(NARROW), "TERM": "xterm"}
    if terminal:
        reader, writer = pty.openpty()
        fcntl.ioctl(writer, termios.TIOCSWINSZ, struct.pack("HHHH", 24, NARROW, 0, 0))
    else:
        reader, writer = os.pipe()
    server = ServerProcess(data_dir)
    try:
        server.process = subprocess.Popen(
            [*command, "--default-account", ACCOUNT_ID, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=writer,
        )
        os.close(writer)
        writer = -1
        yield _read_until(reader, "Log in:")
    finally:
        server.stop()
        os.close(reader)
        if writer >= 0:
            os.close(writer)


def _generated_secret(data_dir: Path) -> tuple[str, str]:
    record = json.loads((data_dir / "root-credentials.json").read_text())
    return record["accessKeyId"], record["secretAccessKey"]


def _check_unwrapped(banner: str, data_dir: Path) -> list[str]:
    lines = [line for line in banner.splitlines() if line.strip()]
    login = [line for line in lines if "skopeo login" in line]
    assert len(login) == 1 and login[0].startswith("Log in: skopeo login --tls-verify=false --username"), lines
    host = login[0].rsplit(" ", 1)[1]
    assert re.fullmatch(r"localhost:\d+", host), lines
    assert f"Dockyard listening on http://{host} (data in {data_dir})" in lines, lines
    return lines


def test_on_a_pipe_the_banner_names_the_file_and_never_prints_the_secret(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with _serving(data_dir, terminal=False) as banner:
        lines = _check_unwrapped(banner, data_dir)
        key_id, secret = _generated_secret(data_dir)
    assert secret not in banner
    assert f"Root credentials were generated: access key id {key_id}" in lines
    assert f"  saved with mode 0600 in {data_dir / 'root-credentials.json'}" in lines


def test_on_a_terminal_the_banner_shows_the_secret_once_unwrapped(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with _serving(data_dir, terminal=True) as banner:
        lines = _check_unwrapped(banner, data_dir)
        key_id, secret = _generated_secret(data_dir)
    assert f"Root credentials were generated: access key id {key_id}" in lines
    assert [line for line in lines if secret in line] == [f"  secret access key: {secret} (shown once)"]
    assert f"  saved with mode 0600 in {data_dir / 'root-credentials.json'}" in lines


def test_a_restart_says_where_the_credentials_are_and_generates_none(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with _serving(data_dir, terminal=False):
        first = _generated_secret(data_dir)
    with _serving(data_dir, terminal=True) as banner:
        lines = _check_unwrapped(banner, data_dir)
    assert _generated_secret(data_dir) == first
    assert first[1] not in banner
    assert f"Root credentials: in {data_dir / 'root-credentials.json'}" in lines
    assert not any("generated" in line for line in lines), lines


def test_a_config_file_sets_serves_options_and_the_command_line_wins(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text('default-region = "eu-west-1"\ndefault-account = "555566667777"\nworkers = 1\n')
    data_dir = tmp_path / "data"
    with _serving(data_dir, terminal=False, args=("--config", str(config))) as banner:  # --default-account given
        lines = _check_unwrapped(banner, data_dir)
    assert f"Default registry: account {ACCOUNT_ID}, region eu-west-1" in lines, lines


def test_a_config_file_with_an_unknown_key_is_refused_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text("port = 5000\nlisten = '0.0.0.0'\n")
    command = [sys.executable, "-m", "dockyard", "serve", "--config", str(config), "--data-dir", str(tmp_path / "d")]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    lines = refused.stderr.splitlines()
    assert len(lines) == 1 and f"{config}: 'listen' is not an option of serve" in lines[0], lines
    assert "data-dir" in lines[0] and not (tmp_path / "d").exists()
