"""A worker's drain: which requests still start, and when the worker leaves."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Scope

from dockyard.http.drain import Drain, continues_work, is_door_request
from dockyard.launcher import MAX_BACKOFF_SECONDS, backoff

QUIET = 0.05
ECR = "AmazonEC2ContainerRegistry_V20150921"


def scope(method: str, path: str, target: str = "") -> Scope:
    headers = [(b"x-amz-target", target.encode())] if target else []
    return {"type": "http", "method": method, "path": path, "headers": headers}


@pytest.mark.parametrize(
    ("method", "path", "target", "continues"),
    [
        ("PATCH", "/v2/team/app/blobs/uploads/3f2a-77", "", True),
        ("PUT", "/v2/team/app/blobs/uploads/3f2a-77", "", True),
        ("GET", "/v2/team/app/blobs/uploads/3f2a-77", "", True),
        ("PUT", "/v2/team/app/manifests/v1", "", True),
        ("POST", "/v2/team/app/blobs/uploads/", "", False),
        ("GET", "/v2/team/app/manifests/v1", "", False),
        ("GET", "/v2/team/app/blobs/sha256:" + "a" * 64, "", False),
        ("GET", "/v2/", "", False),
        ("POST", "/", f"{ECR}.UploadLayerPart", True),
        ("POST", "/", f"{ECR}.CompleteLayerUpload", True),
        ("POST", "/", f"{ECR}.PutImage", True),
        ("POST", "/", f"{ECR}.InitiateLayerUpload", False),
        ("POST", "/", f"{ECR}.DescribeRepositories", False),
    ],
)
def test_only_requests_that_carry_on_a_push_continue_during_a_drain(
    method: str, path: str, target: str, continues: bool
) -> None:
    assert is_door_request(scope(method, path, target))
    assert continues_work(scope(method, path, target)) is continues


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_are_not_counted_as_work(path: str) -> None:
    assert not is_door_request(scope("GET", path))


async def left_within(drain: Drain, seconds: float) -> bool:
    left = asyncio.Event()
    drain.on_idle = left.set
    try:
        await asyncio.wait_for(left.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def idle_worker_leaves() -> None:
    drain = Drain(quiet=QUIET)
    drain.bind(asyncio.get_running_loop())
    drain.begin()
    assert drain.draining
    assert await left_within(drain, 5)


async def busy_worker_waits() -> None:
    drain = Drain(quiet=QUIET)
    drain.bind(asyncio.get_running_loop())
    drain.enter()
    drain.begin()
    assert not await left_within(drain, QUIET * 6), "left with a request in flight"
    drain.enter()  # the next chunk of the upload
    drain.leave()
    assert not await left_within(drain, QUIET * 6), "left with a request in flight"
    drain.leave()
    assert await left_within(drain, 5)


async def early_signal_kept() -> None:
    drain = Drain(quiet=QUIET)
    drain.begin()  # the signal came while the worker was still starting
    drain.bind(asyncio.get_running_loop())
    assert await left_within(drain, 5)


def test_an_idle_worker_leaves_once_quiet() -> None:
    asyncio.run(idle_worker_leaves())


def test_a_worker_leaves_only_after_its_last_request_ends() -> None:
    asyncio.run(busy_worker_waits())


def test_a_drain_signalled_before_the_lifespan_starts_is_kept() -> None:
    asyncio.run(early_signal_kept())


def test_a_worker_that_keeps_dying_is_replaced_after_growing_pauses() -> None:
    delays = [backoff(failures) for failures in range(1, 10)]
    assert delays[0] == 0.0, "the first death is replaced at once"
    assert delays == sorted(delays) and delays[1] > 0
    assert delays[-1] == MAX_BACKOFF_SECONDS
