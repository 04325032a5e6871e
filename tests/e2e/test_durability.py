"""Crashes and shutdowns of a real `dockyard serve` in the middle of uploads, then restarts on its data."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess
from tests.support.tools import fresh_seed
from tests.support.uploads import (
    MiB,
    StalledPatch,
    blob_of,
    received,
    start_upload,
    upload_chunks,
)

CHUNK = 4 * MiB
IDLE_SHUTDOWN_SECONDS = 5.0
GRACE_SECONDS = 2.0
STALLED_SHUTDOWN_SECONDS = GRACE_SECONDS + 8.0  # the grace, then the workers' own stop, then SIGKILL
Restart = Callable[[], ServerProcess]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds (readiness polling, bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)


def process_gone(pid: int) -> bool:
    """True once `pid` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def worker_pids(server: ServerProcess) -> list[int]:
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return [int(pid) for pid in children.read_text().split()]


def finish_and_verify(http: httpx.Client, location: str, data: bytes, digest: str, name: str) -> None:
    finished = http.put(location, params={"digest": digest})
    assert finished.status_code == 201, finished.text
    assert finished.headers["docker-content-digest"] == digest
    head = http.head(f"/v2/{name}/blobs/{digest}")
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == len(data)
    assert http.get(f"/v2/{name}/blobs/{digest}").content == data
    assert http.get(location).status_code == 404, "a completed upload session must be gone"


def test_sigkill_mid_upload_keeps_the_received_bytes_and_the_push_resumes(
    server: ServerProcess, restart: Restart
) -> None:
    data, digest = blob_of(64 * MiB, fresh_seed())
    acknowledged = 16 * MiB
    with server.client() as http:
        location = start_upload(http, "team/big")
        location = upload_chunks(http, location, data[:acknowledged], 0, CHUNK)

    # The rest of the blob as one PATCH whose body stops after 10 MiB: in flight when the server dies.
    in_flight = StalledPatch(server.url + location, server.auth_header, data, acknowledged, 10 * MiB)
    in_flight.start()
    try:
        assert in_flight.sent.wait(timeout=30), "the stalled PATCH did not get its first bytes out"
        assert in_flight.error is None and in_flight.response is None, (in_flight.error, in_flight.response)
        with server.client() as http:
            # The server streams a chunk to disk as it arrives (it never buffers a whole chunk): wait until
            # the upload reports some of the in-flight bytes, so the kill lands mid-request, mid-write.
            progress: list[int] = []

            def in_flight_bytes_stored() -> bool:
                status = http.get(location)
                assert status.status_code == 204, status.text
                progress.append(received(status))
                return progress[-1] > acknowledged

            wait_until(in_flight_bytes_stored, 20, "the server to store part of the in-flight PATCH")
        server.kill()
    finally:
        in_flight.finish()
    assert in_flight.response is None, f"the in-flight PATCH cannot have been answered: {in_flight.response}"
    assert in_flight.error is not None

    restarted = restart()
    with restarted.client() as http:
        assert http.head(f"/v2/team/big/blobs/{digest}").status_code == 404, "a partial blob is visible"
        status = http.get(location)
        assert status.status_code == 204, status.text
        durable = received(status)
        # Everything the server reported before the kill survived it; nothing beyond what was sent appeared.
        assert progress[-1] <= durable <= acknowledged + 10 * MiB, (progress, durable)

        # A client resuming from its last acknowledged chunk is told where the upload really stands.
        stale = http.patch(
            location,
            content=data[acknowledged : acknowledged + CHUNK],
            headers={"Content-Range": f"{acknowledged}-{acknowledged + CHUNK - 1}"},
        )
        assert stale.status_code == 416, stale.text
        assert stale.headers["range"] == status.headers["range"]
        assert stale.headers["location"] == status.headers["location"]

        location = upload_chunks(http, status.headers["location"], data, durable, CHUNK)
        finish_and_verify(http, location, data, digest, "team/big")

        # A completely fresh push of the same blob (one monolithic PUT) works too.
        fresh = start_upload(http, "team/big")
        pushed = http.put(fresh, params={"digest": digest}, content=data)
        assert pushed.status_code == 201, pushed.text
        assert http.get(f"/v2/team/big/blobs/{digest}").content == data


def test_sigterm_stops_an_idle_server_promptly_and_cleanly(server: ServerProcess) -> None:
    assert server.process is not None
    workers = worker_pids(server)
    assert workers, "expected Granian to run at least one worker process"
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    exit_code = server.process.wait(timeout=IDLE_SHUTDOWN_SECONDS)
    assert exit_code == 0, server.log()
    assert time.monotonic() - started < IDLE_SHUTDOWN_SECONDS
    wait_until(lambda: all(process_gone(pid) for pid in workers), 5, "the workers to exit")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/healthz", timeout=2)


def test_sigterm_keeps_an_open_upload_resumable(server: ServerProcess, restart: Restart) -> None:
    data, digest = blob_of(12 * MiB, fresh_seed())
    with server.client() as http:
        location = start_upload(http, "team/paused")
        location = upload_chunks(http, location, data[: 2 * CHUNK], 0, CHUNK)
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=IDLE_SHUTDOWN_SECONDS) == 0, server.log()

    restarted = restart()
    with restarted.client() as http:
        status = http.get(location)
        assert status.status_code == 204, status.text
        assert status.headers["range"] == f"0-{2 * CHUNK - 1}"
        assert status.headers["location"] == location
        assert http.head(f"/v2/team/paused/blobs/{digest}").status_code == 404
        location = upload_chunks(http, location, data, 2 * CHUNK, CHUNK)
        finish_and_verify(http, location, data, digest, "team/paused")


@pytest.mark.parametrize("server", [["--shutdown-grace", str(GRACE_SECONDS)]], indirect=True)
def test_sigterm_with_a_stalled_upload_still_stops_within_a_grace_period(
    server: ServerProcess, restart: Restart
) -> None:
    """A client that stops sending mid-PATCH must not keep the server from shutting down indefinitely."""
    data, digest = blob_of(16 * MiB, fresh_seed())
    with server.client() as http:
        location = start_upload(http, "team/stalled")
    in_flight = StalledPatch(server.url + location, server.auth_header, data, 0, send_first=6 * MiB)
    in_flight.start()
    assert server.process is not None
    try:
        assert in_flight.sent.wait(timeout=30)
        with server.client() as http:
            # Let part of the body reach the disk first, so there is something to resume from.
            def part_stored() -> bool:
                return received(http.get(location)) > CHUNK // 2

            wait_until(part_stored, 20, "the server to store part of the PATCH")
        server.process.send_signal(signal.SIGTERM)
        try:
            exit_code: int | None = server.process.wait(timeout=STALLED_SHUTDOWN_SECONDS)
        except subprocess.TimeoutExpired:
            exit_code = None
    finally:
        if server.process.poll() is None:
            server.kill()
        in_flight.finish()
    assert exit_code is not None, (
        f"the server still ran {STALLED_SHUTDOWN_SECONDS}s after SIGTERM, waiting for a stalled upload"
    )

    restarted = restart()
    with restarted.client() as http:
        status = http.get(location)
        assert status.status_code == 204, status.text
        location = upload_chunks(http, status.headers["location"], data, received(status), CHUNK)
        finish_and_verify(http, location, data, digest, "team/stalled")


def open_upload_files(server: ServerProcess, upload_id: str) -> int:
    """How many file descriptors the server's workers hold open on the bytes of `upload_id`."""
    opened = 0
    for worker in worker_pids(server):
        for descriptor in Path(f"/proc/{worker}/fd").iterdir():
            try:
                target = descriptor.readlink()
            except FileNotFoundError:  # closed while we looked
                continue
            opened += target.name == upload_id and target.parent.name == "uploads"
    return opened


def test_two_patches_of_the_same_range_at_once_cannot_both_be_appended(server: ServerProcess) -> None:
    """A retried chunk racing its first attempt: the upload must keep one copy of the bytes, not both.

    Both PATCHes claim `Content-Range: 0-…` and are held mid-body until the server has opened the upload
    for each of them; then both bodies complete.
    """
    data, digest = blob_of(12 * MiB, fresh_seed())
    with server.client() as http:
        location = start_upload(http, "team/race")
    upload_id = location.rsplit("/", 1)[1]
    first = StalledPatch(server.url + location, server.auth_header, data, 0, send_first=MiB)
    second = StalledPatch(server.url + location, server.auth_header, data, 0, send_first=MiB)
    try:
        first.start()
        second.start()
        assert first.sent.wait(timeout=30) and second.sent.wait(timeout=30)

        # Readiness: both requests are being served (two appenders open), or the server already turned one
        # away. A server that makes the second wait for the first never opens it: give up waiting after 5s.
        def both_in_progress() -> bool:
            answered = first.response is not None or second.response is not None
            return answered or open_upload_files(server, upload_id) >= 2

        deadline = time.monotonic() + 5
        while not both_in_progress() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        first.finish()
        second.finish()
    assert first.response is not None and second.response is not None, (first.error, second.error)
    statuses = sorted([first.response.status_code, second.response.status_code])
    with server.client() as http:
        status = http.get(location)
        assert (statuses, status.headers["range"]) == ([202, 416], f"0-{len(data) - 1}"), (
            f"both PATCHes of bytes 0-{len(data) - 1} answered {statuses}; the upload now holds "
            f"{status.headers['range']}"
        )
        finish_and_verify(http, location, data, digest, "team/race")
