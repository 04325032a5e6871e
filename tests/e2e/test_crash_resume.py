"""A real `dockyard serve` (encryption at rest on, the default) killed at random points of chunked uploads.

Each run starts a server, takes several upload sessions part of the way with acknowledged PATCHes, then sends
the rest of every session at once (a PATCH, or the final PUT with the last bytes as its body) and kills the
server, with SIGKILL or SIGTERM, when one of those bodies reaches a random byte. On the restarted server every
session must either resume from the offset its status reports, and then complete with the right digest and
be pullable, or be refused with a 4xx, after which a fresh session must succeed. No answer may be a 5xx.

A SIGKILL lands mid-write only sometimes (a record is two write calls, and the kernel stops a large write
between pages). So that every run also covers a record cut at an arbitrary byte, after a SIGKILL some upload
files are cut back to a random length between their size at the last acknowledged chunk and their size at the
kill: the file only ever grows by appends, so each such prefix is what it held at some instant of the request
in flight, i.e. what a kill at that instant leaves. Those sessions must resume (the defect: they answered
`204 Range: 0-…` and then 500 on every PATCH from there).

Everything random comes from one seeded generator: DOCKYARD_CRASH_SEED replays a run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.server import ServerProcess
from tests.support.uploads import MiB, blob_of, received, start_upload

SEED = int(os.environ.get("DOCKYARD_CRASH_SEED", "20261208"))
RUNS = (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL)
SESSIONS_PER_RUN = 5
CUT_SHARE = 0.6  # of the sessions interrupted by a SIGKILL, those whose upload file is cut back too
PIECE = 256 * 1024  # how the bodies in flight are handed to the client, so a kill can land between any two
SIGTERM_GRACE_SECONDS = 30.0
NAME = "crash/resume"
Restart = Callable[[], ServerProcess]


@dataclass
class Session:
    number: int
    data: bytes
    digest: str
    location: str = ""
    acknowledged: int = 0  # bytes the server answered 202 for
    file_size: int = 0  # the upload file's size then
    cut: bool = False  # the upload file was cut back mid-request after the kill

    @property
    def upload_id(self) -> str:
        return self.location.rsplit("/", 1)[1]


class InFlight(threading.Thread):
    """Sends the rest of a session as one request, and sets `reached` when `trigger` bytes were handed over."""

    def __init__(self, server: ServerProcess, session: Session, final: bool, trigger: int | None) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.session = session
        self.final = final  # the final PUT with the remaining bytes as its body, else a PATCH
        self.trigger = trigger
        self.reached = threading.Event()
        self.response: httpx.Response | None = None
        self.error: Exception | None = None

    def body(self) -> Iterator[bytes]:
        data, start = self.session.data, self.session.acknowledged
        handed = 0
        for offset in range(start, len(data), PIECE):
            piece = data[offset : offset + PIECE]
            handed += len(piece)
            yield piece
            if self.trigger is not None and handed >= self.trigger:
                self.reached.set()
        self.reached.set()

    def run(self) -> None:
        session = self.session
        headers = {
            **self.server.auth_header,
            "Content-Length": str(len(session.data) - session.acknowledged),
            "Content-Type": "application/octet-stream",
        }
        if not self.final:
            headers["Content-Range"] = f"{session.acknowledged}-{len(session.data) - 1}"
        url = self.server.url + session.location
        try:
            with httpx.Client(timeout=60) as client:
                if self.final:
                    self.response = client.put(
                        url, params={"digest": session.digest}, content=self.body(), headers=headers
                    )
                else:
                    self.response = client.patch(url, content=self.body(), headers=headers)
        except httpx.TransportError as error:
            self.error = error
        finally:
            self.reached.set()


def not_a_server_error(response: httpx.Response, what: str) -> httpx.Response:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text}"
    return response


def upload_file(server: ServerProcess, session: Session) -> Path:
    return server.data_dir / "storage" / "uploads" / session.upload_id


def begin(server: ServerProcess, http: httpx.Client, session: Session, rng: random.Random) -> None:
    """Start the session and PATCH chunks of odd sizes (short records mid-upload) up to a random point."""
    session.location = start_upload(http, NAME)
    goal = rng.randrange(MiB, len(session.data) - MiB)  # at least 1 byte: `Range: 0-0` is also what 0 bytes say
    while session.acknowledged < goal:
        size = min(rng.randrange(MiB // 3, 3 * MiB), goal - session.acknowledged)
        session.location = patch(http, session, size).headers["location"]
    session.file_size = upload_file(server, session).stat().st_size


def patch(http: httpx.Client, session: Session, size: int) -> httpx.Response:
    start = session.acknowledged
    response = http.patch(
        session.location,
        content=session.data[start : start + size],
        headers={"Content-Range": f"{start}-{start + size - 1}", "Content-Type": "application/octet-stream"},
    )
    not_a_server_error(response, f"session {session.number}: PATCH {start}-{start + size - 1}")
    assert response.status_code == 202, response.text
    assert received(response) == start + size
    session.acknowledged = start + size
    return response


def interrupt(server: ServerProcess, sessions: list[Session], how: signal.Signals, rng: random.Random) -> None:
    """Send the rest of every session at once; stop the server with `how` when one body reaches a random byte."""
    trigger_session = max(sessions, key=lambda session: len(session.data) - session.acknowledged)
    trigger = rng.randrange(1, len(trigger_session.data) - trigger_session.acknowledged)
    flights = [
        InFlight(server, session, rng.random() < 0.3, trigger if session is trigger_session else None)
        for session in sessions
    ]
    for flight in flights:
        flight.start()
    trigger_flight = next(flight for flight in flights if flight.session is trigger_session)
    assert trigger_flight.reached.wait(timeout=60), "the request in flight never got its bytes out"
    assert server.process is not None
    if how == signal.SIGKILL:
        server.kill()
    else:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=SIGTERM_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()  # how long a shutdown may take is the launcher's business, not this test's
    for flight in flights:
        flight.join(timeout=60)
        assert not flight.is_alive(), "a request in flight did not end with the server"
        if flight.response is not None:
            not_a_server_error(flight.response, f"session {flight.session.number}: the request in flight")


def cut_back(server: ServerProcess, session: Session, rng: random.Random) -> None:
    """Leave the upload file as it was at a random instant of the request in flight (see the module docstring)."""
    path = upload_file(server, session)
    if not path.exists():  # committed (the final PUT completed) before the kill
        return
    size = path.stat().st_size
    if size > session.file_size:
        os.truncate(path, rng.randrange(session.file_size, size))
        session.cut = True


def resume(http: httpx.Client, session: Session, rng: random.Random) -> str:
    """Carry the session on from where its status says, or start afresh when refused; returns what happened."""
    status = not_a_server_error(http.get(session.location), f"session {session.number}: status")
    if status.status_code != 204:
        assert 400 <= status.status_code < 500
        if http.head(f"/v2/{NAME}/blobs/{session.digest}").status_code == 200 and not session.cut:
            return "completed before the kill"  # the final PUT in flight committed; its answer was lost
        push_afresh(http, session)
        return "refused"
    offset = received(status)
    assert session.acknowledged <= offset <= len(session.data), (session.number, session.acknowledged, offset)
    session.acknowledged, session.location = offset, status.headers["location"]
    while session.acknowledged < len(session.data):
        size = min(rng.randrange(MiB // 2, 4 * MiB), len(session.data) - session.acknowledged)
        answer = http.patch(
            session.location,
            content=session.data[offset : offset + size],
            headers={"Content-Range": f"{offset}-{offset + size - 1}", "Content-Type": "application/octet-stream"},
        )
        not_a_server_error(answer, f"session {session.number}: resumed PATCH {offset}-{offset + size - 1}")
        assert answer.status_code != 416, f"session {session.number}: the status gave {offset}, a wrong offset"
        if answer.status_code != 202:  # refused cleanly: the client starts over
            push_afresh(http, session)
            return "refused"
        offset = session.acknowledged = offset + size
        session.location = answer.headers["location"]
    finished = not_a_server_error(
        http.put(session.location, params={"digest": session.digest}), f"session {session.number}: final PUT"
    )
    if finished.status_code != 201:
        push_afresh(http, session)
        return "refused"
    assert finished.headers["docker-content-digest"] == session.digest
    return "resumed"


def push_afresh(http: httpx.Client, session: Session) -> None:
    location = start_upload(http, NAME)
    pushed = http.put(location, params={"digest": session.digest}, content=session.data)
    assert pushed.status_code == 201, pushed.text


def test_uploads_interrupted_at_random_points_resume_or_are_refused_never_a_server_error(
    server: ServerProcess, restart: Restart
) -> None:
    rng = random.Random(SEED)
    running = server
    outcomes: dict[str, int] = {}
    for run, how in enumerate(RUNS):
        sizes = [rng.randrange(3 * MiB, 12 * MiB) for _ in range(SESSIONS_PER_RUN)]
        sessions = [
            Session(run * SESSIONS_PER_RUN + number, *blob_of(size, rng.randrange(2**62)))
            for number, size in enumerate(sizes)
        ]
        with running.client() as http:
            for session in sessions:
                begin(running, http, session, rng)
        interrupt(running, sessions, how, rng)
        if how == signal.SIGKILL:
            for session in sessions:
                if rng.random() < CUT_SHARE:
                    cut_back(running, session, rng)

        running = restart()
        with running.client() as http:
            for session in sessions:
                outcome = resume(http, session, rng)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                assert not (session.cut and outcome != "resumed"), (
                    f"session {session.number} (seed {SEED}): cut mid-request, then {outcome}; its status said "
                    "where to resume, so it must resume"
                )
                head = http.head(f"/v2/{NAME}/blobs/{session.digest}")
                assert head.status_code == 200 and int(head.headers["content-length"]) == len(session.data)
                assert http.get(f"/v2/{NAME}/blobs/{session.digest}").content == session.data
    assert sum(outcomes.values()) == len(RUNS) * SESSIONS_PER_RUN, outcomes
    assert outcomes.get("resumed", 0) > 0, outcomes
