"""Scale-out: manifest GET requests/s of two Dockyard nodes against one, on PostgreSQL and S3 (Ceph radosgw).

Usage: python benchmarks/scale_out.py [--duration S] [--connections N] [--workers 2,1] [--repeat N]
                                      [--profile S] [--json PATH]

PostgreSQL (.ci/services/postgres.sh) and radosgw (.ci/services/radosgw.sh) are started unless the environment
already names them (DOCKYARD_TEST_DATABASE_URL; DOCKYARD_TEST_S3_ENDPOINT with its keys), with state files of
their own (/tmp/bench-postgres.state, /tmp/bench-radosgw.state), and stopped at the end. A fresh database and a
fresh bucket are made for the run and deleted afterwards.

For each --workers value two `dockyard serve` nodes start on free ports, sharing the database, the bucket, the
master key, the root credentials and the default account. A small OCI image is pushed through node 1. Then
wrk (with `--connections` keep-alive connections) GETs the manifest by tag from node 1 alone, and from both
nodes with the connections dealt round-robin over the two ports (wrk's threads, one per node), `--repeat`
times each in alternating order; the median is reported. CPU time is read from /proc during each run (the
nodes' process trees, wrk, and the rest of the machine: PostgreSQL, radosgw, anything else running), because
on a small machine the client and the backing services compete with the nodes for the same cores.

--profile S also samples one single-worker node under load with py-spy (`pip install py-spy`) for S seconds
and prints where its time goes.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import boto3
import httpx
import servers
import transfer
from botocore.config import Config
from run import OCI_MANIFEST, parse_wrk, push_small_image
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES = REPO_ROOT / ".ci" / "services"
STATE_FILES = {"postgres": "/tmp/bench-postgres.state", "radosgw": "/tmp/bench-radosgw.state"}
STATE_ENV = {"postgres": "DOCKYARD_POSTGRES_STATE", "radosgw": "DOCKYARD_RADOSGW_STATE"}
ACCOUNT = "123456789012"
REPO = "bench/scale-out"
TAG = "small"
S3_PREFIX = "registry"
TARGET_RATIO = 1.6
MAX_ERROR_SHARE = 0.01
WARMUP_S = 3.0
BUSY_MACHINE = 0.9  # warn when less than this share of the cores was idle before measuring
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WRK_SCRIPT = """\
-- Deal wrk's threads (and so their connections) round-robin over the nodes' ports.
local ports = {%s}
local dealt = 0
function setup(thread)
  dealt = dealt + 1
  thread.addr = wrk.lookup("127.0.0.1", tostring(ports[(dealt - 1) %% #ports + 1]))[1]
end
"""


def log(message: str) -> None:
    print(f"[scale-out] {message}", file=sys.stderr, flush=True)


# --- backing services ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backends:
    database_url: str  # the server's maintenance database; the run makes a database of its own
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_region: str
    service_pids: tuple[int, ...] = ()  # PostgreSQL's postmaster and Ceph's daemons, when started here


@dataclass(frozen=True)
class Started:
    exports: dict[str, str]
    pids: tuple[int, ...]


@contextlib.contextmanager
def service(name: str) -> Iterator[Started]:
    """Start one CI service script with a state file of our own; yield what it exports and its PIDs; stop it."""
    script = SERVICES / f"{name}.sh"
    env = {**os.environ, STATE_ENV[name]: STATE_FILES[name]}
    log(f"starting {name} ({script.name}, state {STATE_FILES[name]}) ...")
    started = subprocess.run([str(script)], env=env, stdout=subprocess.PIPE, text=True, timeout=900, check=False)
    if started.returncode:
        raise RuntimeError(
            f"{script.name} failed (exit {started.returncode}); if {STATE_FILES[name]} is left from an earlier run, "
            f"stop it with: {STATE_ENV[name]}={STATE_FILES[name]} {script} stop"
        )
    try:
        state = Path(STATE_FILES[name]).read_text()
        pids = tuple(int(pid) for line in re.findall(r'^PIDS?="([^"]*)"', state, re.MULTILINE) for pid in line.split())
        yield Started(dict(re.findall(r"^export (\w+)=(\S+)$", started.stdout, re.MULTILINE)), pids)
    finally:
        log(f"stopping {name} ...")
        subprocess.run([str(script), "stop"], env=env, timeout=120, check=False)


@contextlib.contextmanager
def backends() -> Iterator[Backends]:
    """PostgreSQL and S3 from the environment when it names them, else started here (and stopped after)."""
    with contextlib.ExitStack() as stack:
        found = dict(os.environ)
        pids: tuple[int, ...] = ()
        for name, variable in (("postgres", "DOCKYARD_TEST_DATABASE_URL"), ("radosgw", "DOCKYARD_TEST_S3_ENDPOINT")):
            if found.get(variable):
                log(f"{name} from {variable} (its CPU time counts under 'rest')")
                continue
            started = stack.enter_context(service(name))
            found |= started.exports
            pids += started.pids
        yield Backends(
            found["DOCKYARD_TEST_DATABASE_URL"],
            found["DOCKYARD_TEST_S3_ENDPOINT"],
            found["DOCKYARD_TEST_S3_ACCESS_KEY"],
            found["DOCKYARD_TEST_S3_SECRET_KEY"],
            found.get("DOCKYARD_TEST_S3_REGION", "us-east-1"),
            pids,
        )


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    name = f"dockyard_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextlib.contextmanager
def fresh_bucket(found: Backends) -> Iterator[str]:
    client = boto3.client(
        "s3",
        endpoint_url=found.s3_endpoint,
        region_name=found.s3_region,
        aws_access_key_id=found.s3_access_key,
        aws_secret_access_key=found.s3_secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
    )
    bucket = f"dockyard-bench-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    try:
        yield bucket
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            if keys := [{"Key": item["Key"]} for item in page.get("Contents", [])]:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})  # type: ignore[typeddict-item]
        client.delete_bucket(Bucket=bucket)


# --- nodes ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    """What every node shares."""

    found: Backends
    database_url: str
    bucket: str
    creds: servers.Credentials
    master_key: str  # base64


def node_environment(fleet: Fleet) -> dict[str, str]:
    """As docs/deploy.md asks: one master key, the S3 credentials, no host AWS configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BOTO_", "DOCKYARD_TEST_"))}
    env.update(
        {
            "DOCKYARD_ROOT_ACCESS_KEY_ID": fleet.creds.key_id,
            "DOCKYARD_ROOT_SECRET_ACCESS_KEY": fleet.creds.secret,
            "DOCKYARD_MASTER_KEY": fleet.master_key,
            "AWS_ACCESS_KEY_ID": fleet.found.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": fleet.found.s3_secret_key,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return env


def start_node(fleet: Fleet, workdir: Path, workers: int) -> servers.Server:
    workdir.mkdir(parents=True)
    flags = [
        "--default-account", ACCOUNT,
        "--database", fleet.database_url,
        "--blob-store", f"s3://{fleet.bucket}/{S3_PREFIX}",
        "--s3-endpoint-url", fleet.found.s3_endpoint,
        "--s3-region", fleet.found.s3_region,
    ]  # fmt: skip
    environment: dict[str, str | None] = {**node_environment(fleet)}
    cleared = {key: None for key in os.environ if key not in environment}  # the node sees exactly `environment`
    return servers.start_dockyard(workdir, None, workers, flags, cleared | environment, f"dockyard {workdir.name}")


@contextlib.contextmanager
def two_nodes(fleet: Fleet, workdir: Path, workers: int) -> Iterator[list[servers.Server]]:
    """Node 1 first (it migrates the database and registers the root key), then node 2."""
    started: list[servers.Server] = []
    try:
        for number in (1, 2):
            node = start_node(fleet, workdir / f"node-{number}", workers)
            started.append(node)
            servers.wait_ready(node, fleet.creds.authorization)
        yield started
    finally:
        for node in started:
            node.stop()


# --- CPU accounting ------------------------------------------------------------------------------------


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants (those alive now)."""
    total = 0
    for member in servers.process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS, sum(values[:8]) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- load ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    seconds: float
    nodes_cpu: list[float]  # cores used by each loaded node's process tree
    client_cpu: float  # cores used by wrk
    services_cpu: float  # cores used by PostgreSQL and Ceph (mon, OSD, radosgw) when started here
    rest_cpu: float  # cores used by everything else: this script, services not started here, other work
    idle_cpu: float  # cores left idle


def wrk_script(workdir: Path, nodes: list[servers.Server]) -> Path:
    path = workdir / f"round-robin-{len(nodes)}.lua"
    path.write_text(WRK_SCRIPT % ", ".join(str(node.port) for node in nodes))
    return path


def load(nodes: list[servers.Server], workdir: Path, fleet: Fleet, connections: int, seconds: float) -> Run:
    """wrk GETs the manifest from `nodes`, its two threads dealt round-robin over them."""
    url = f"{nodes[0].base_url}/v2/{REPO}/manifests/{TAG}"
    headers = {"Authorization": fleet.creds.authorization, "Accept": OCI_MANIFEST}
    command = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    command += ["-s", str(wrk_script(workdir, nodes))]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    before_nodes = [tree_cpu_seconds(node.pid) for node in nodes]
    before_services = sum(tree_cpu_seconds(pid) for pid in fleet.found.service_pids)
    before_client = children_cpu_seconds()
    busy_before, total_before = machine_cpu_seconds()
    started = time.perf_counter()
    done = subprocess.run([*command, url], capture_output=True, text=True, timeout=seconds + 60, check=False)
    elapsed = time.perf_counter() - started
    busy_after, total_after = machine_cpu_seconds()
    services_cpu = (sum(tree_cpu_seconds(pid) for pid in fleet.found.service_pids) - before_services) / elapsed
    nodes_cpu = [(tree_cpu_seconds(n.pid) - b) / elapsed for n, b in zip(nodes, before_nodes, strict=True)]
    client_cpu = (children_cpu_seconds() - before_client) / elapsed
    if done.returncode:  # wrk's own words, not the command line (it carries the credentials)
        raise RuntimeError(f"wrk exited {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}")
    result = parse_wrk(done.stdout)
    if result.errors > MAX_ERROR_SHARE * max(result.requests, 1):
        sample = httpx.get(url, headers=headers, timeout=30)
        raise RuntimeError(
            f"{result.errors} of {result.requests} manifest GETs failed; one now answers "
            f"HTTP {sample.status_code} {sample.text[:300]!r}\n{done.stdout}"
        )
    cores = (total_after - total_before) / elapsed
    busy = (busy_after - busy_before) / elapsed
    rest = max(busy - sum(nodes_cpu) - client_cpu - services_cpu, 0.0)
    return Run(
        result.rps,
        result.p50_ms,
        result.p99_ms,
        result.errors,
        elapsed,
        nodes_cpu,
        client_cpu,
        services_cpu,
        rest,
        max(cores - busy, 0.0),
    )


def median_run(runs: list[Run]) -> Run:
    """The run with the median requests/s (its latencies and CPU shares belong to that same run)."""
    return sorted(runs, key=lambda r: r.rps)[(len(runs) - 1) // 2]


# --- profile -------------------------------------------------------------------------------------------


def profile(node: servers.Server, workdir: Path, fleet: Fleet, connections: int, seconds: float) -> str:
    """Sample `node` (all its processes) with py-spy while wrk loads it; the hottest frames as text."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return "py-spy not found (pip install py-spy): no profile"
    raw = workdir / f"profile-{node.port}.txt"
    record = [spy, "record", "--pid", str(node.pid), "--subprocesses", "--format", "raw", "--rate", "200"]
    record += ["--full-filenames"]
    record += ["--duration", str(round(seconds)), "--output", str(raw), "--nonblocking"]
    with subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as sampler:
        time.sleep(1.0)  # py-spy attaches before the load starts
        during = load([node], workdir, fleet, connections, seconds)
        _, problems = sampler.communicate(timeout=seconds + 60)
    if not raw.exists():
        return f"py-spy wrote no profile: {problems.strip()[-500:]}"
    return f"while sampled: {during.rps:.0f} req/s\n" + summarise_profile(raw.read_text())


PROFILE_GROUPS = {
    "S3 calls (boto3/botocore/urllib3)": ("/botocore/", "/boto3/", "/urllib3/"),
    "SQL (SQLAlchemy + psycopg)": ("/sqlalchemy/", "/psycopg/", "/psycopg_pool/"),
    "  of which waiting for PostgreSQL": ("psycopg/connection.py", "psycopg/waiting.py"),
    "authentication + IAM (dockyard/domain/iam.py, http/auth.py)": (
        "/dockyard/domain/iam.py",
        "/dockyard/http/auth.py",
    ),
    "thread-pool hops (anyio)": ("/anyio/",),
}


def short_frame(frame: str) -> str:
    """`func (/…/site-packages/pkg/mod.py:12)` as `func (pkg/mod.py:12)`, and the same for Dockyard's files."""
    head, _, tail = frame.partition("(")
    if "site-packages/" in tail:
        return f"{head}({tail.split('site-packages/', 1)[1]}"
    if "/dockyard/" in tail:
        return f"{head}(dockyard/{tail.split('/dockyard/', 1)[1]}"
    return frame


def summarise_profile(folded: str) -> str:
    """Where the samples of py-spy's raw (folded) output fall: by library, by Dockyard function, by leaf frame.
    A sample may fall in several groups (SQL called from IAM, say)."""
    own: collections.Counter[str] = collections.Counter()
    groups: collections.Counter[str] = collections.Counter()
    dockyard: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[short_frame(frames[-1])] += count
        for group, markers in PROFILE_GROUPS.items():
            if any(marker in frame for frame in frames for marker in markers):
                groups[group] += count
        for frame in {short_frame(f) for f in frames if "/dockyard/" in f}:
            dockyard[frame] += count
    if not total:
        return "(no samples)"
    lines = [f"{total} samples of the node's Python threads (py-spy, idle threads excluded)", "time under:"]
    lines += [f"  {100 * groups[group] / total:5.1f}%  {group}" for group in PROFILE_GROUPS]
    lines += ["Dockyard functions, inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in dockyard.most_common(15)]
    lines += ["hottest leaf frames (self time):"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(12)]
    return "\n".join(lines)


# --- the run -------------------------------------------------------------------------------------------


def measure(fleet: Fleet, workroot: Path, workers: int, args: argparse.Namespace, pushed: list[bool]) -> dict[str, Any]:
    workdir = workroot / f"workers-{workers}"
    with two_nodes(fleet, workdir, workers) as nodes:
        if not pushed:
            push_small_image(transfer.Target(nodes[0].base_url, fleet.creds.authorization, REPO), TAG)
            pushed.append(True)
        setups = {"one": nodes[:1], "two": nodes}
        idle_before = idle_cores()
        log(f"{idle_before:.2f} of {os.cpu_count()} cores idle with the nodes up and unloaded")
        for name, group in setups.items():
            log(f"--workers {workers}: warming up {name} node(s) for {WARMUP_S:.0f} s")
            load(group, workdir, fleet, args.connections, WARMUP_S)
        runs: dict[str, list[Run]] = {"one": [], "two": []}
        for round_number in range(args.repeat):
            order = ["one", "two"] if round_number % 2 == 0 else ["two", "one"]
            for name in order:
                run = load(setups[name], workdir, fleet, args.connections, args.duration)
                log(
                    f"--workers {workers}, {name} node(s), round {round_number + 1}: {run.rps:.0f} req/s, "
                    f"p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, nodes {sum(run.nodes_cpu):.2f} cores, "
                    f"wrk {run.client_cpu:.2f}, PostgreSQL+Ceph {run.services_cpu:.2f}, rest {run.rest_cpu:.2f}, "
                    f"idle {run.idle_cpu:.2f}"
                )
                runs[name].append(run)
        result: dict[str, Any] = {name: median_run(samples) for name, samples in runs.items()}
        result["all"] = runs
        result["idle_before"] = idle_before
        if args.profile and workers == 1:
            log(f"profiling node 1 under load for {args.profile:.0f} s (py-spy)")
            result["profile"] = profile(nodes[0], workdir, fleet, args.connections, args.profile)
        return result


def render(results: dict[int, dict[str, Any]], cores: int, connections: int) -> str:
    lines = [
        f"Manifest GET by tag, wrk -t2 -c{connections}, {cores} cores. CPU columns: cores busy during the run in the "
        "nodes' process trees, wrk, PostgreSQL + Ceph (when started here), the rest of the machine, and idle.",
        "",
        "| workers/node | nodes | req/s | p50 ms | p99 ms | 2 nodes / 1 | CPU nodes | wrk | PG + Ceph | rest | idle |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for workers, result in results.items():
        one, two = result["one"], result["two"]
        for name, run in (("1", one), ("2", two)):
            ratio = f"{two.rps / one.rps:.2f}x" if name == "2" else ""
            per_node = " + ".join(f"{c:.2f}" for c in run.nodes_cpu)
            lines.append(
                f"| {workers} | {name} | {run.rps:.0f} | {run.p50_ms:.1f} | {run.p99_ms:.1f} | {ratio} | {per_node} "
                f"| {run.client_cpu:.2f} | {run.services_cpu:.2f} | {run.rest_cpu:.2f} | {run.idle_cpu:.2f} |"
            )
    lines.append("")
    for workers, result in results.items():
        ratio = result["two"].rps / result["one"].rps
        verdict = "meets" if ratio >= TARGET_RATIO else "misses"
        rounds = ", ".join(
            f"{t.rps / o.rps:.2f}" for o, t in zip(result["all"]["one"], result["all"]["two"], strict=True)
        )
        lines.append(
            f"--workers {workers}: two nodes / one node = {ratio:.2f}x ({verdict} the {TARGET_RATIO}x target; "
            f"round by round: {rounds})"
        )
        if result["idle_before"] < BUSY_MACHINE * cores:
            lines.append(
                f"  WARNING: only {result['idle_before']:.2f} of {cores} cores were idle just before (other work on "
                "the machine): these numbers are not comparable"
            )
    for workers, result in results.items():
        if 2 * workers in results:  # as many worker processes (event loops) on one node as on two
            doubled = results[2 * workers]["one"].rps
            lines.append(
                f"Same process count: 1 node x {2 * workers} workers {doubled:.0f} req/s, 2 nodes x {workers} "
                f"{result['two'].rps:.0f} req/s ({result['two'].rps / doubled:.2f}x)"
            )
    for workers, result in results.items():
        if "profile" in result:
            lines += ["", f"Profile of one node, --workers {workers}, under load:", "```", result["profile"], "```"]
    return "\n".join(lines)


def idle_cores(seconds: float = 2.0) -> float:
    busy_before, total_before = machine_cpu_seconds()
    time.sleep(seconds)
    busy_after, total_after = machine_cpu_seconds()
    return ((total_after - total_before) - (busy_after - busy_before)) / seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk keep-alive connections (default 64)")
    parser.add_argument("--workers", default="2,1", help="comma-separated --workers per node to measure (default 2,1)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per setup; the median is reported (default 3)")
    parser.add_argument("--profile", type=float, default=0.0, help="seconds of py-spy on a --workers 1 node")
    parser.add_argument("--json", type=Path, help="also write every number as JSON")
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",")]
    if args.duration <= 0 or args.repeat < 1 or args.connections < 2 or min(args.workers) < 1:
        parser.error("--duration, --repeat and --workers must be positive, --connections at least 2")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # the finally blocks stop nodes and services, delete the database and bucket


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        log("wrk is not installed (apt-get install wrk)")
        return 1
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    cores = os.cpu_count() or 1
    workroot = Path(tempfile.mkdtemp(prefix="dockyard-scale-out-"))
    try:
        with backends() as found, fresh_database(found.database_url) as database, fresh_bucket(found) as bucket:
            key = base64.b64encode(secrets.token_bytes(32)).decode()
            fleet = Fleet(found, database, bucket, servers.Credentials.generate(), key)
            pushed: list[bool] = []
            results = {workers: measure(fleet, workroot, workers, args, pushed) for workers in args.workers}
        print(render(results, cores, args.connections))
        if args.json:
            summary = {
                str(workers): {
                    "ratio": result["two"].rps / result["one"].rps,
                    "idle_before": result["idle_before"],
                    **{name: [asdict(run) for run in result["all"][name]] for name in ("one", "two")},
                    "profile": result.get("profile"),
                }
                for workers, result in results.items()
            }
            args.json.write_text(json.dumps({"cores": cores, **summary}, indent=2) + "\n")
        return 0
    finally:
        shutil.rmtree(workroot, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
