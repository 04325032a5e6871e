"""Lifecycle policies end to end: images pushed with skopeo, policies put with the aws CLI, `dockyard lifecycle
run` (and --dry-run) on the server's data directory, then what skopeo, the ECR API, /v2 and the logs show;
references (a multi-arch index, a signed image) that naive rules would break; archiving and restoring; the
scheduled sweep of `dockyard serve` (once per interval, one node per repository, two servers on one data
directory) and the per-repository lease.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.config import MASTER_KEY_ENV
from dockyard.domain.clock import utc_now
from tests.api.ecr.helpers import ecr_client, put_api_image
from tests.support.cli import Aws, dockyard_ok, json_lines
from tests.support.images import Layout, random_layers, tar_layer
from tests.support.registry_http import manifest_of, push_signature, referrers, tags
from tests.support.seeding import Seeder
from tests.support.server import ServerProcess
from tests.support.tools import Skopeo, fresh_seed

KEEP_NEWEST_TWO_V = {
    "rules": [
        {
            "rulePriority": 1,
            "description": "keep the two newest v* images",
            "selection": {
                "tagStatus": "tagged",
                "tagPrefixList": ["v"],
                "countType": "imageCountMoreThan",
                "countNumber": 2,
            },
            "action": {"type": "expire"},
        }
    ]
}


@pytest.fixture(scope="module")
def lc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("lifecycle-e2e") / "data").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def ecr(lc_server: ServerProcess) -> Any:
    return ecr_client(lc_server)


@pytest.fixture
def aws(lc_server: ServerProcess, tmp_path: Path) -> Aws:
    return Aws(lc_server, tmp_path / "aws")


@pytest.fixture
def http(lc_server: ServerProcess) -> Iterator[httpx.Client]:
    with lc_server.client() as client:
        yield client


def build_layout(root: Path, names: list[str]) -> dict[str, str]:
    """One OCI layout with an image per name (a shared base layer plus one of its own); digests by name."""
    layout = Layout(root)
    seed = fresh_seed()
    base = random_layers(1, 4096, seed)[0]
    digests = {}
    for number, name in enumerate(names):
        own = tar_layer({f"app/{name}.txt": f"{seed}-{number}\n".encode()})
        descriptor = layout.add_image([base, own], label=f"{seed}-{name}")
        layout.tag(descriptor, name)
        digests[name] = str(descriptor["digest"])
    return digests


def image_actions(data_dirs: Path | list[Path], log: str, repository: str) -> list[dict[str, Any]]:
    """`detail` of the "ECR Image Action" lines of events.log or audit.log about one repository (of every
    node's, given several data directories)."""
    paths = [data_dir / log for data_dir in (data_dirs if isinstance(data_dirs, list) else [data_dirs])]
    lines = [json.loads(line) for path in paths if path.exists() for line in path.read_text().splitlines()]
    return [
        line["detail"]
        for line in lines
        if line.get("detail-type") == "ECR Image Action" and line["detail"]["repository-name"] == repository
    ]


def one_line_each(data_dirs: Path | list[Path], repository: str, action: str, digests: set[str]) -> None:
    """events.log and audit.log hold exactly one `action` line per digest, and none for others.

    Both are written by a thread off the request path (within 0.1 s): each is read again until its lines are
    all there, for a few seconds at most, then checked."""
    for log in ("events.log", "audit.log"):
        deadline = time.monotonic() + 10
        while True:
            lines = [d for d in image_actions(data_dirs, log, repository) if d["action-type"] == action]
            if {d["image-digest"] for d in lines} >= digests or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # polling a file another process's thread writes, with a deadline
        assert Counter(d["image-digest"] for d in lines) == Counter(dict.fromkeys(digests, 1)), (log, lines)
        assert all(d["result"] == "SUCCESS" and d["initiator"] == "lifecycle-policy" for d in lines), lines


def listed(ecr: Any, repository: str, status: str = "ACTIVE") -> set[str]:
    ids = ecr.list_images(repositoryName=repository, filter={"tagStatus": "ANY", "imageStatus": status})["imageIds"]
    details = ecr.describe_images(repositoryName=repository, filter={"tagStatus": "ANY", "imageStatus": status})
    described = {d["imageDigest"] for d in details["imageDetails"]}
    assert {i["imageDigest"] for i in ids} == described, (ids, described)
    return described


def run_lifecycle(server: ServerProcess, repository: str, *extra: str) -> list[dict[str, Any]]:
    result = dockyard_ok("lifecycle", "run", "--repository", repository, *extra, "--data-dir", str(server.data_dir))
    return json_lines(result.stdout)


# ------------------------------------------------------------------------------------------ runs


def test_lifecycle_run_expires_what_the_policy_says(
    lc_server: ServerProcess, ecr: Any, aws: Aws, http: httpx.Client, skopeo: Skopeo, tmp_path: Path
) -> None:
    repository = "lifecycle/run"
    names = ["stable", "v1", "v2", "v3", "v4"]  # pushed in this order: v1 is the oldest v* image
    digests = build_layout(tmp_path / "layout", names)
    for name in names:
        skopeo.push(lc_server, f"oci:{tmp_path / 'layout'}:{name}", f"{repository}:{name}")
    aws.json(
        "put-lifecycle-policy",
        "--repository-name",
        repository,
        "--lifecycle-policy-text",
        json.dumps(KEEP_NEWEST_TWO_V),
    )
    expired = {digests["v1"], digests["v2"]}

    dry = run_lifecycle(lc_server, repository, "--dry-run")
    assert {line["imageDigest"] for line in dry} == expired, dry
    assert all(line["dryRun"] and line["action"] == "EXPIRE" and line["appliedRulePriority"] == 1 for line in dry)
    assert {tuple(line["imageTags"]) for line in dry} == {("v1",), ("v2",)}
    # --dry-run changes nothing: the images, the logs and lastEvaluatedAt stay as they were.
    assert listed(ecr, repository) == set(digests.values())
    skopeo.pull(lc_server, f"{repository}:v1", f"oci:{tmp_path / 'dry'}:v1")
    assert image_actions(lc_server.data_dir, "events.log", repository) == []
    # ECR reports epoch 0 until a policy was first evaluated; a dry run is no evaluation.
    assert aws.json("get-lifecycle-policy", "--repository-name", repository)["lastEvaluatedAt"] == 0

    started = datetime.now(UTC)
    run = run_lifecycle(lc_server, repository)
    assert {line["imageDigest"] for line in run} == expired and not any(line["dryRun"] for line in run), run

    # Gone at once, from every view: ECR API, the tag list, manifests by tag and by digest, skopeo.
    assert listed(ecr, repository) == {digests[n] for n in ("stable", "v3", "v4")}
    assert sorted(tags(http, repository)) == ["stable", "v3", "v4"]
    for digest in expired:
        answer = manifest_of(http, repository, digest)
        assert answer.status_code == 404 and answer.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN", answer.text
    for reference in (f"{repository}:v1", f"{repository}@{digests['v2']}"):
        failed = skopeo("copy", "--src-tls-verify=false", "--src-creds", lc_server.creds,
                        f"docker://{lc_server.host}/{reference}", f"oci:{tmp_path / 'gone'}:x")  # fmt: skip
        assert failed.returncode != 0 and "manifest unknown" in failed.stderr.lower(), failed.stderr
    for name in ("stable", "v3", "v4"):
        skopeo.pull(lc_server, f"{repository}:{name}", f"oci:{tmp_path / 'kept'}:{name}")

    one_line_each(lc_server.data_dir, repository, "EXPIRE", expired)
    evaluated = aws.json("get-lifecycle-policy", "--repository-name", repository)["lastEvaluatedAt"]
    assert started - timedelta(seconds=1) <= _cli_time(evaluated) <= datetime.now(UTC)
    # A second run finds nothing more to do.
    assert run_lifecycle(lc_server, repository) == []


def _cli_time(value: Any) -> datetime:
    """The aws CLI prints timestamps as ISO-8601 text (or epoch seconds, depending on its settings)."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    moment = datetime.fromisoformat(str(value))
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)


def test_references_survive_rules_that_would_break_them(
    lc_server: ServerProcess, ecr: Any, http: httpx.Client, skopeo: Skopeo, tmp_path: Path
) -> None:
    """Two untagged signatures and two untagged platform manifests: a naive "keep the newest untagged image"
    would delete a signature of a kept image and a platform of a kept multi-arch index. Dockyard's rules:
    an index keeps what it lists; a signature (an artifact with `subject`) goes with its subject, never alone.
    """
    repository = "lifecycle/references"
    root = tmp_path / "layout"
    digests = build_layout(root, ["build-1", "build-2", "app-old", "app-new"])
    layout = Layout(root)
    layout.manifests = json.loads((root / "index.json").read_text())["manifests"]
    seed = fresh_seed()
    platforms = [
        layout.add_image(random_layers(1, 2048, seed + n), architecture=arch)
        for n, arch in enumerate(("amd64", "arm64"))
    ]
    index = layout.add_index(platforms)
    layout.tag(index, "multi")

    # `latest` moves from build-1 to build-2: build-1 stays, untagged (the usual way untagged images appear).
    skopeo.push(lc_server, f"oci:{root}:build-1", f"{repository}:latest")
    skopeo.push(lc_server, f"oci:{root}:build-2", f"{repository}:latest")
    skopeo.push(lc_server, f"oci:{root}:app-old", f"{repository}:app-old")
    signature_old = push_signature(http, repository, digests["app-old"], b'{"signed": "app-old"}')
    skopeo.push(lc_server, f"oci:{root}:app-new", f"{repository}:app-new")
    signature_new = push_signature(http, repository, digests["app-new"], b'{"signed": "app-new"}')
    skopeo.push(lc_server, f"oci:{root}:multi", f"{repository}:multi", "--all")
    children = [str(p["digest"]) for p in platforms]
    untagged = {digests["build-1"], signature_old, signature_new, *children}
    assert {
        d["imageDigest"]
        for d in ecr.describe_images(repositoryName=repository, filter={"tagStatus": "UNTAGGED"})["imageDetails"]
    } == untagged

    policy = {
        "rules": [
            {"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPatternList": ["app-*"],
                                              "countType": "imageCountMoreThan", "countNumber": 1},
             "action": {"type": "expire"}},
            {"rulePriority": 2, "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan",
                                              "countNumber": 1}, "action": {"type": "expire"}},
        ]
    }  # fmt: skip
    ecr.put_lifecycle_policy(repositoryName=repository, lifecyclePolicyText=json.dumps(policy))
    ecr.start_lifecycle_policy_preview(repositoryName=repository)
    preview = ecr.get_lifecycle_policy_preview(repositoryName=repository)
    expired = {digests["app-old"], signature_old, digests["build-1"]}
    assert {r["imageDigest"] for r in preview["previewResults"]} == expired

    run = run_lifecycle(lc_server, repository)
    assert {line["imageDigest"] for line in run} == expired, run
    by_digest = {line["imageDigest"]: line for line in run}
    assert by_digest[signature_old]["appliedRulePriority"] == by_digest[digests["app-old"]]["appliedRulePriority"] == 1

    # The kept index and every platform it lists still pull, as a whole and one by one.
    skopeo.pull(lc_server, f"{repository}:multi", f"oci:{tmp_path / 'multi'}:multi", "--all")
    for child in children:
        assert manifest_of(http, repository, child).status_code == 200
    # The kept image keeps its signature; the expired one took its own along (no dangling referrer).
    skopeo.pull(lc_server, f"{repository}:app-new", f"oci:{tmp_path / 'app'}:app-new")
    assert referrers(http, repository, digests["app-new"]) == [signature_new]
    assert manifest_of(http, repository, signature_new).status_code == 200
    assert referrers(http, repository, digests["app-old"]) == []
    for digest in expired:
        assert manifest_of(http, repository, digest).status_code == 404
    one_line_each(lc_server.data_dir, repository, "EXPIRE", expired)


def test_transition_archives_and_update_image_storage_class_restores(
    lc_server: ServerProcess, ecr: Any, aws: Aws, skopeo: Skopeo, tmp_path: Path
) -> None:
    repository = "lifecycle/archive"
    digests = build_layout(tmp_path / "layout", ["cold-1", "cold-2"])
    for name in digests:
        skopeo.push(lc_server, f"oci:{tmp_path / 'layout'}:{name}", f"{repository}:{name}")
    policy = {
        "rules": [
            {"rulePriority": 1, "description": "archive all but the newest cold image",
             "selection": {"tagStatus": "tagged", "tagPatternList": ["cold-*"], "countType": "imageCountMoreThan",
                           "countNumber": 1},
             "action": {"type": "transition", "targetStorageClass": "archive"}},
        ]
    }  # fmt: skip
    aws.json("put-lifecycle-policy", "--repository-name", repository, "--lifecycle-policy-text", json.dumps(policy))
    run = run_lifecycle(lc_server, repository)
    assert [(line["imageDigest"], line["action"]) for line in run] == [(digests["cold-1"], "TRANSITION")], run

    assert listed(ecr, repository) == {digests["cold-2"]}
    assert listed(ecr, repository, "ARCHIVED") == {digests["cold-1"]}
    assert listed(ecr, repository, "ANY") == set(digests.values())
    archived = aws.json("describe-images", "--repository-name", repository, "--filter", "imageStatus=ARCHIVED")[
        "imageDetails"
    ]
    assert [(d["imageDigest"], d["imageStatus"]) for d in archived] == [(digests["cold-1"], "ARCHIVED")]
    assert "lastArchivedAt" in archived[0]
    one_line_each(lc_server.data_dir, repository, "ARCHIVE", {digests["cold-1"]})

    refused = skopeo("copy", "--src-tls-verify=false", "--src-creds", lc_server.creds,
                     f"docker://{lc_server.host}/{repository}:cold-1", f"oci:{tmp_path / 'cold'}:cold-1")  # fmt: skip
    assert refused.returncode != 0, refused.stdout
    assert "archived" in refused.stderr and "update-image-storage-class" in refused.stderr, refused.stderr

    restored = aws.json(
        "update-image-storage-class", "--repository-name", repository, "--image-id", "imageTag=cold-1",
        "--target-storage-class", "STANDARD",
    )  # fmt: skip
    assert restored["imageStatus"] == "ACTIVE"
    skopeo.pull(lc_server, f"{repository}:cold-1", f"oci:{tmp_path / 'cold'}:cold-1")
    assert listed(ecr, repository) == set(digests.values())


# ------------------------------------------------------------------------------------------ leases


def test_a_repository_leased_by_another_node_is_left_to_it(tmp_path: Path) -> None:
    """`dockyard lifecycle run` (every repository, as the scheduled sweep) skips a repository whose lease
    another node holds, and processes it once the lease is gone."""
    data_dir = tmp_path / "data"
    keep_one_untagged = {"rules": [{"rulePriority": 1, "description": "keep the newest untagged image",
                                    "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan",
                                                  "countNumber": 1}, "action": {"type": "expire"}}]}  # fmt: skip
    now = utc_now()
    oldest: dict[str, str] = {}
    with Seeder(data_dir) as seeder:
        for name in ("lease/held", "lease/free"):
            ref = seeder.create_repository(name, at=now - timedelta(days=3))
            seeder.set_lifecycle_policy(ref, keep_one_untagged)
            oldest[name] = seeder.put_image(ref, f"{name}-1", [], now - timedelta(hours=2))
            seeder.put_image(ref, f"{name}-2", [], now - timedelta(hours=1))
        held = seeder.registry.repository(seeder.ref("lease/held"))
        lease = f"lifecycle:{held.id}"
        assert seeder.metadata.try_lease(lease, "another-node", now + timedelta(minutes=10), now)

        first = json_lines(dockyard_ok("lifecycle", "run", "--data-dir", str(data_dir)).stdout)
        assert [(line["repositoryName"], line["imageDigest"]) for line in first] == [
            ("lease/free", oldest["lease/free"])
        ]
        assert seeder.metadata.job_last_run(lease) is None  # the held repository was not evaluated at all

        seeder.metadata.release_lease(lease, "another-node")
        second = json_lines(dockyard_ok("lifecycle", "run", "--data-dir", str(data_dir)).stdout)
        assert [(line["repositoryName"], line["imageDigest"]) for line in second] == [
            ("lease/held", oldest["lease/held"])
        ]
        assert seeder.metadata.job_last_run(lease) is not None


# ------------------------------------------------------------------------------------------ scheduled sweeps

SWEEP_INTERVAL = 25.0  # seconds: longer than a server takes to start, so one can start inside an interval
SWEEP_REPOSITORIES = 6


def _last_evaluated(ecr: Any, repository: str) -> datetime | None:
    """When the policy was last evaluated; None before the first time (ECR answers epoch 0 then)."""
    value: datetime = ecr.get_lifecycle_policy(repositoryName=repository)["lastEvaluatedAt"]
    return None if value.timestamp() == 0 else value


def _wait(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)  # polling a background job, with a deadline
    raise AssertionError(f"{what} did not happen within {timeout}s")


def _start_together(servers: list[ServerProcess]) -> None:
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(ServerProcess.start, servers))


def test_scheduled_sweep_runs_once_per_interval_on_one_node(tmp_path: Path) -> None:
    """Two servers on one database (each with a data directory of its own, as nodes are), started together
    with a short --lifecycle-interval: the sweep at their start processes every repository once (one node's
    events, no duplicates); a third server started within the interval does not sweep again; one started
    after it does, and only then."""
    data_dir = tmp_path / "seeded"  # its SQLite database is every node's
    policy = {"rules": [{"rulePriority": 1, "description": "keep the newest untagged image",
                         "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan",
                                       "countNumber": 1}, "action": {"type": "expire"}}]}  # fmt: skip
    now = utc_now()
    expected: dict[str, set[str]] = {}
    with Seeder(data_dir) as seeder:
        for number in range(SWEEP_REPOSITORIES):
            name = f"sweep/r{number}"
            ref = seeder.create_repository(name, at=now - timedelta(days=1))
            seeder.set_lifecycle_policy(ref, policy)
            images = [seeder.put_image(ref, f"{name}-{age}", [], now - timedelta(hours=age)) for age in (3, 2, 1)]
            expected[name] = set(images[:2])
    flags = ["--lifecycle-interval", str(SWEEP_INTERVAL), "--database", f"sqlite:///{data_dir / 'metadata.db'}"]
    same_key = {MASTER_KEY_ENV: (data_dir / "master.key").read_text().strip()}  # the sealed secrets open anywhere
    numbers = iter(range(1, 5))

    def node() -> ServerProcess:
        return ServerProcess(tmp_path / f"node-{next(numbers)}", extra_args=flags, environment=same_key)

    servers = [node(), node()]
    try:
        _start_together(servers)
        ecr = ecr_client(servers[0])
        first = _wait(
            lambda: all(_last_evaluated(ecr, n) for n in expected) and {n: _last_evaluated(ecr, n) for n in expected},
            30,
            "the sweep at start",
        )
        sweep_time = max(first.values())
        assert sweep_time - min(first.values()) < timedelta(seconds=SWEEP_INTERVAL)  # one sweep did them all
        for name, digests in expected.items():
            one_line_each([server.data_dir for server in servers], name, "EXPIRE", digests)
        for server in servers:
            assert "could not expire" not in server.log() and "Traceback" not in server.log(), server.log()

        # New untagged images: the next sweep would expire two more in sweep/r0.
        target = "sweep/r0"
        new = [put_api_image(ecr, target, seed=fresh_seed(), tag=None).digest for _ in range(2)]
        present = listed(ecr, target)
        assert len(present) == 3

        # A server started inside the interval sweeps at its start only if the interval has passed: not yet.
        late = node().start()
        servers.append(late)
        window_end = sweep_time + timedelta(seconds=SWEEP_INTERVAL - 1)
        assert datetime.now(UTC) < window_end - timedelta(seconds=2), "the third server started too late to observe"
        while datetime.now(UTC) < window_end:
            assert _last_evaluated(ecr, target) == first[target]
            assert listed(ecr, target) == present
            time.sleep(0.5)  # watching that nothing happens for the rest of the interval

        # After the interval, a server starting sweeps at once (the running ones would at their next tick).
        servers.append(node().start())
        second = _wait(lambda: (t := _last_evaluated(ecr, target)) != first[target] and t, 60, "the next sweep")
        assert second - sweep_time >= timedelta(seconds=SWEEP_INTERVAL)
        survivor = _wait(lambda: len(listed(ecr, target)) == 1 and listed(ecr, target), 10, "the second expiry")
        assert survivor == {new[-1]}
        logs = [server.data_dir for server in servers]

        def expiries() -> list[dict[str, Any]]:
            return [d for d in image_actions(logs, "events.log", target) if d["action-type"] == "EXPIRE"]

        events = _wait(lambda: len(expiries()) >= 4 and expiries(), 10, "the EXPIRE lines (written off the loop)")
        assert len(events) == 4 and len({d["image-digest"] for d in events}) == 4, events
    finally:
        for server in servers:
            server.stop()
