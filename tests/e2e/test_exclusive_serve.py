"""One `dockyard serve` per port and per data directory, with real processes.

A second server on a busy port used to start silently (Granian binds each worker's socket with SO_REUSEPORT)
and the kernel split the connections between two registries: with one server's credentials, 30 `GET /v2/`
gave 9 x 200 and 21 x 401. On a port held by another program it printed the banner and a new root secret,
then a traceback. Now the second refuses in one line, before it generates or prints anything.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dockyard.exclusive import EXIT_CANNOT_LISTEN, EXIT_DATA_DIR_IN_USE
from tests.support.server import ServerProcess, _kill_tree, free_port

REFUSAL_SECONDS = 60  # a refusal comes before the app is even imported: this bounds a regression that serves


def busy_port_line(port: int) -> str:
    return (
        f"dockyard: cannot listen on 127.0.0.1:{port}: the address is already in use (another server?); "
        "choose another --port"
    )


def serve_expecting_refusal(data_dir: Path, port: int, *flags: str) -> subprocess.CompletedProcess[str]:
    """Run `dockyard serve` without given root credentials (a start would generate and print a secret) and
    return how it ended; one that starts serving instead fails the test (and is stopped)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DOCKYARD_")}
    command = [sys.executable, "-m", "dockyard", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--data-dir", str(data_dir), *flags]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=REFUSAL_SECONDS)
    except subprocess.TimeoutExpired:
        _kill_tree(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"the second dockyard serve started instead of refusing:\n{stdout}{stderr}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def assert_refused(result: subprocess.CompletedProcess[str], exit_code: int, line: str, data_dir: Path) -> None:
    assert (result.returncode, result.stdout, result.stderr) == (exit_code, "", line + "\n")
    assert not (data_dir / "root-credentials.json").exists()  # nothing was generated


def statuses(server: ServerProcess, count: int) -> list[int]:
    """`count` authenticated `GET /v2/`, each on a new connection (the kernel picks a listener per connection)."""
    return [httpx.get(f"{server.url}/v2/", headers=server.auth_header, timeout=10).status_code for _ in range(count)]


def listening_sockets(port: int) -> int:
    """How many sockets listen on `port` (one per worker if they were bound with SO_REUSEPORT)."""
    found = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            found += int(local.rsplit(":", 1)[1], 16) == port and state == "0A"  # 0A: LISTEN
    return found


@pytest.fixture
def first(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "first").start()
    yield server
    server.stop()


def test_a_second_server_on_a_busy_port_refuses_and_the_first_keeps_every_connection(
    first: ServerProcess, tmp_path: Path
) -> None:
    second_dir = tmp_path / "second"
    result = serve_expecting_refusal(second_dir, first.port)
    assert_refused(result, EXIT_CANNOT_LISTEN, busy_port_line(first.port), second_dir)
    assert statuses(first, 30) == [200] * 30
    assert listening_sockets(first.port) == 1


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "reuse-port"])
def test_a_port_held_by_another_program_is_refused_in_one_line(tmp_path: Path, reuse_port: bool) -> None:
    """Also when the other program set SO_REUSEPORT, which let Granian's own sockets share its port."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuse_port))
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = serve_expecting_refusal(tmp_path / "data", port)
    assert_refused(result, EXIT_CANNOT_LISTEN, busy_port_line(port), tmp_path / "data")


def test_two_servers_never_share_a_data_directory(first: ServerProcess) -> None:
    assert first.process is not None
    other_port = free_port()
    data_dir = first.data_dir.resolve()
    result = serve_expecting_refusal(first.data_dir, other_port)
    line = (
        f"dockyard: the data directory {data_dir} is in use by another dockyard serve (PID {first.process.pid}); "
        "stop it or choose another --data-dir"
    )
    assert (result.returncode, result.stdout, result.stderr) == (EXIT_DATA_DIR_IN_USE, "", line + "\n")
    with pytest.raises(httpx.ConnectError):  # it did not start listening either
        httpx.get(f"http://127.0.0.1:{other_port}/healthz", timeout=5)
    assert statuses(first, 5) == [200] * 5
    assert (data_dir / ".lock").stat().st_mode & 0o777 == 0o600

    first.stop()  # the lock goes with the server
    successor = ServerProcess(first.data_dir, port=other_port).start()
    try:
        assert statuses(successor, 5) == [200] * 5
    finally:
        successor.stop()


def test_the_workers_share_one_socket_and_each_serves(tmp_path: Path) -> None:
    """With --workers 2 one socket listens; with either worker stopped the other takes every connection."""
    server = ServerProcess(tmp_path / "data", extra_args=["--workers", "2"]).start()
    try:
        assert server.process is not None
        children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
        deadline = time.monotonic() + 60
        while len(workers := [int(pid) for pid in children.read_text().split()]) < 2:
            assert time.monotonic() < deadline, "the second worker never started"
            time.sleep(0.05)  # polling for the worker to exist, not dodging a race
        for paused in workers:
            os.kill(paused, signal.SIGSTOP)
            try:
                assert statuses(server, 10) == [200] * 10, f"with worker {paused} stopped"
            finally:
                os.kill(paused, signal.SIGCONT)
        assert listening_sockets(server.port) == 1  # both workers listen by now: on one socket
        result = serve_expecting_refusal(tmp_path / "second", server.port)
        assert_refused(result, EXIT_CANNOT_LISTEN, busy_port_line(server.port), tmp_path / "second")
    finally:
        with contextlib.suppress(ProcessLookupError):
            server.stop()
