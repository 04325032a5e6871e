"""Fixtures of the end-to-end suite: real clients (skopeo) and servers restarted on the same data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess
from tests.support.tools import Skopeo


@pytest.fixture
def skopeo(tmp_path: Path) -> Skopeo:
    return Skopeo.create(tmp_path / "skopeo")


@pytest.fixture
def restart(server: ServerProcess) -> Iterator[Callable[[], ServerProcess]]:
    """Start another `dockyard serve` on the `server` fixture's data directory (after it was stopped)."""
    started: list[ServerProcess] = []

    def start_again() -> ServerProcess:
        running = [p for p in (server, *started) if p.process is not None and p.process.poll() is None]
        assert not running, "stop the running server before starting another on the same data directory"
        process = ServerProcess(server.data_dir)
        started.append(process)
        return process.start()

    yield start_again
    for process in started:
        process.stop()
