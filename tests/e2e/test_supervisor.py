"""The supervisor of a real `dockyard serve`: dead workers are replaced, SIGTERM drains before it stops."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess
from tests.support.tools import fresh_seed
from tests.support.uploads import MiB, StalledPatch, blob_of, received, start_upload

RESPAWN_SECONDS = 30.0  # a replaced worker imports the app and runs its lifespan start: seconds, not more
GRACE_SECONDS = 20.0
ECR_DESCRIBE = "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


def worker_pids(server: ServerProcess) -> set[int]:
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return {int(pid) for pid in children.read_text().split()}


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def answers(server: ServerProcess) -> bool:
    """The registry serves an authenticated request and says it is ready."""
    try:
        with server.client() as http:
            return http.get("/v2/").status_code == 200 and http.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start `dockyard serve` with extra flags (on the same data directory each time); stops them all."""
    started: list[ServerProcess] = []

    def start_server(*flags: str) -> ServerProcess:
        server = ServerProcess(tmp_path / "data", extra_args=list(flags))
        started.append(server)
        return server.start()

    yield start_server
    for server in started:
        server.kill()


def kill_one_worker_and_wait_for_its_replacement(server: ServerProcess, workers: int) -> None:
    assert server.process is not None
    wait_until(lambda: len(worker_pids(server)) == workers, RESPAWN_SECONDS, f"{workers} worker processes")
    before = worker_pids(server)
    victim = min(before)
    signal_sent = time.monotonic()
    os.kill(victim, signal.SIGKILL)  # as the OOM killer would
    wait_until(lambda: process_gone(victim), 10, "the killed worker to be gone")

    def replaced() -> bool:
        now = worker_pids(server)
        return len(now) == workers and victim not in now and answers(server)

    wait_until(replaced, RESPAWN_SECONDS, "a replacement worker and the server answering again")
    assert server.process.poll() is None, server.log()
    assert time.monotonic() - signal_sent < RESPAWN_SECONDS


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_worker_is_replaced_and_the_server_keeps_serving(
    start: Callable[..., ServerProcess], workers: int
) -> None:
    server = start("--workers", str(workers))
    assert server.process is not None
    supervisor = server.process.pid
    wait_until(lambda: answers(server), RESPAWN_SECONDS, "the server to answer")
    with server.client() as http:
        location = start_upload(http, "team/survivor")

    kill_one_worker_and_wait_for_its_replacement(server, workers)
    # Killed again right after its replacement started: Granian's own loop calls that a crash loop and
    # stops the server; here it is replaced again (after a short pause).
    kill_one_worker_and_wait_for_its_replacement(server, workers)

    assert server.process.pid == supervisor and server.process.poll() is None
    with server.client() as http:
        assert http.get(location).status_code == 204, "an upload begun before the kills is still there"
    assert "crash loop" not in server.log()


def test_sigterm_lets_an_upload_in_flight_finish_refuses_new_work_then_exits(
    start: Callable[..., ServerProcess],
) -> None:
    server = start("--shutdown-grace", str(GRACE_SECONDS))
    assert server.process is not None
    data, digest = blob_of(12 * MiB, fresh_seed())
    with server.client() as http:
        location = start_upload(http, "team/draining")
    in_flight = StalledPatch(server.url + location, server.auth_header, data, 0, send_first=6 * MiB)
    in_flight.start()
    try:
        assert in_flight.sent.wait(timeout=30), "the PATCH did not get its first bytes out"
        with server.client() as http:
            # The PATCH is being served (some of its bytes are stored) before the signal.
            wait_until(lambda: received(http.get(location)) > 0, 20, "the server to store part of the PATCH")
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()

            def refused() -> bool:
                return http.get("/v2/").status_code == 503

            wait_until(refused, 10, "new requests to be refused")
            base = http.get("/v2/")
            assert base.headers["retry-after"].isdigit(), base.headers
            assert base.json()["errors"][0]["code"] == "UNAVAILABLE", base.text
            assert http.post("/v2/team/other/blobs/uploads/").status_code == 503, "a new upload may not start"
            ready = http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "not ready", ready.text
            assert http.get("/healthz").status_code == 200, "the process is alive, only not ready"
            ecr = http.post("/", headers={"X-Amz-Target": ECR_DESCRIBE}, content=b"{}")
            assert ecr.status_code == 503 and "retry-after" in ecr.headers, ecr.text
            assert ecr.json()["__type"] == "ServiceUnavailableException", ecr.text
            iam = http.post("/", data={"Action": "ListUsers", "Version": "2010-05-08"})
            assert iam.status_code == 503 and "<Code>ServiceUnavailable</Code>" in iam.text, iam.text

            in_flight.finish()  # the rest of the body: the PATCH in flight completes
            assert in_flight.error is None, in_flight.error
            assert in_flight.response is not None and in_flight.response.status_code == 202, in_flight.response
            assert received(in_flight.response) == len(data)
            # The PUT that completes the upload continues work already begun: it is served, not refused.
            finished = http.put(in_flight.response.headers["location"], params={"digest": digest})
            assert finished.status_code == 201, finished.text
        exit_code = server.process.wait(timeout=GRACE_SECONDS)
    finally:
        in_flight.finish()
    assert exit_code == 0, server.log()
    assert time.monotonic() - signalled < GRACE_SECONDS, "the server waited out the grace period"
    assert "still busy are stopped" not in server.log()

    restarted = start()
    with restarted.client() as http:
        pulled = http.get(f"/v2/team/draining/blobs/{digest}")
        assert pulled.status_code == 200 and pulled.content == data


def test_a_second_sigterm_ends_the_drain_at_once(start: Callable[..., ServerProcess]) -> None:
    server = start("--shutdown-grace", "600")
    assert server.process is not None
    data, _ = blob_of(12 * MiB, fresh_seed())
    with server.client() as http:
        location = start_upload(http, "team/impatient")
    stalled = StalledPatch(server.url + location, server.auth_header, data, 0, send_first=6 * MiB)
    stalled.start()
    try:
        assert stalled.sent.wait(timeout=30), "the PATCH did not get its first bytes out"
        with server.client() as http:
            wait_until(lambda: received(http.get(location)) > 0, 20, "the server to store part of the PATCH")
            server.process.send_signal(signal.SIGTERM)
            wait_until(lambda: http.get("/readyz").status_code == 503, 10, "the drain to begin")
        server.process.send_signal(signal.SIGTERM)  # the operator will not wait for the stalled client
        signalled = time.monotonic()
        exit_code = server.process.wait(timeout=30)
    finally:
        stalled.finish()
    assert exit_code == 0, server.log()
    assert time.monotonic() - signalled < 15, "the second signal did not cut the drain short"
