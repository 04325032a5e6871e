"""Scale-out mode for end-to-end tests: several `dockyard serve` nodes sharing one PostgreSQL database and one
S3 bucket (Ceph radosgw in CI), each node with a data directory of its own (logs, audit, events).

The backing services come from the environment, as `.ci/run` provides them:

    DOCKYARD_TEST_DATABASE_URL    (.ci/services/postgres.sh)   a fresh database is created per cluster
    DOCKYARD_TEST_S3_ENDPOINT     DOCKYARD_TEST_S3_ACCESS_KEY  DOCKYARD_TEST_S3_SECRET_KEY  (.ci/services/radosgw.sh)

Without them the tests are skipped with the reason, except under CI (`CI=true`), where they fail. Every node
gets the same master key (`DOCKYARD_MASTER_KEY`) and the S3 credentials through the environment, exactly as
docs/deploy.md tells operators; `cluster_environment` sets them for as long as the cluster lives.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from botocore.config import Config
from sqlalchemy import Engine, create_engine, text

from tests.support.databases import postgres_url
from tests.support.server import ServerProcess

T = TypeVar("T")
S3_REGION = "us-east-1"
S3_PREFIX = "registry"
_S3_CONFIG = Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=60, retries={"mode": "standard"})


@dataclass(frozen=True)
class S3Backend:
    endpoint: str
    access_key: str
    secret_key: str
    region: str = S3_REGION

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=_S3_CONFIG,
        )


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in {"true", "1"}:
        pytest.fail(f"{reason}; CI=true requires the scale-out tests to run", pytrace=False)
    pytest.skip(reason)


def s3_backend() -> S3Backend:
    """The test S3 server from the environment; skips (fails under CI) when there is none."""
    endpoint = os.environ.get("DOCKYARD_TEST_S3_ENDPOINT")
    if not endpoint:
        _missing('DOCKYARD_TEST_S3_ENDPOINT is not set: no S3 to test against (eval "$(.ci/services/radosgw.sh)")')
    access_key = os.environ.get("DOCKYARD_TEST_S3_ACCESS_KEY")
    secret_key = os.environ.get("DOCKYARD_TEST_S3_SECRET_KEY")
    if not access_key or not secret_key:
        pytest.fail("DOCKYARD_TEST_S3_ENDPOINT is set but its access key or secret key is not", pytrace=False)
    assert endpoint is not None
    return S3Backend(endpoint, access_key, secret_key, os.environ.get("DOCKYARD_TEST_S3_REGION", S3_REGION))


@contextlib.contextmanager
def fresh_bucket(client: Any) -> Iterator[str]:
    """A new, empty bucket; emptied (multipart uploads aborted too) and deleted afterwards."""
    bucket = f"dockyard-scale-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=bucket)
    try:
        yield bucket
    finally:
        for uploads in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            for pending in uploads.get("Uploads", []):
                client.abort_multipart_upload(Bucket=bucket, Key=pending["Key"], UploadId=pending["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            if keys := [{"Key": item["Key"]} for item in page.get("Contents", [])]:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)


@contextlib.contextmanager
def cluster_environment(s3: S3Backend, master_key: bytes) -> Iterator[None]:
    """What every node's environment carries: one master key, the S3 credentials, no host AWS configuration."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(("AWS_", "BOTO_")):
                patch.delenv(name)
        patch.setenv("DOCKYARD_MASTER_KEY", base64.b64encode(master_key).decode())
        patch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
        patch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@dataclass
class Cluster:
    """Nodes on one database and one bucket. `nodes` are started by `start`; `stop` stops every one."""

    root: Path
    database_url: str
    s3: S3Backend
    bucket: str
    s3_client: Any
    prefix: str = S3_PREFIX
    nodes: list[ServerProcess] = field(default_factory=list)
    _engine: Engine | None = None

    def node_args(self) -> list[str]:
        return [
            "--database", self.database_url,
            "--blob-store", f"s3://{self.bucket}/{self.prefix}",
            "--s3-endpoint-url", self.s3.endpoint,
            "--s3-region", self.s3.region,
        ]  # fmt: skip

    def add_nodes(self, count: int, extra_args: tuple[str, ...] = ()) -> list[ServerProcess]:
        """New nodes (not started yet), each with its own data directory."""
        added = []
        for _ in range(count):
            data_dir = self.root / f"node-{len(self.nodes) + 1}" / "data"
            data_dir.parent.mkdir(parents=True)
            node = ServerProcess(data_dir, extra_args=[*self.node_args(), *extra_args])
            self.nodes.append(node)
            added.append(node)
        return added

    def start(self, nodes: list[ServerProcess] | None = None) -> None:
        """Start nodes at the same moment (as an operator's orchestrator would), waiting until each is ready."""
        waiting = nodes if nodes is not None else self.nodes
        with ThreadPoolExecutor(len(waiting)) as pool:
            list(pool.map(ServerProcess.start, waiting))

    def stop(self) -> None:
        with ThreadPoolExecutor(max(len(self.nodes), 1)) as pool:
            list(pool.map(ServerProcess.stop, self.nodes))
        if self._engine is not None:
            self._engine.dispose()

    def logs(self) -> str:
        return "\n".join(f"--- node {n} ({node.url})\n{node.log()[-6000:]}" for n, node in enumerate(self.nodes, 1))

    # ------------------------------------------------------------------------------------ the shared stores

    @property
    def engine(self) -> Engine:
        """The test's own connection to the nodes' database (psycopg, as the nodes use)."""
        if self._engine is None:
            self._engine = create_engine(self.database_url, pool_size=2)
        return self._engine

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as connection:
            return list(connection.execute(text(sql), params))

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(text(sql), params)

    def object_keys(self, under: str) -> list[str]:
        """Keys in the bucket under `<prefix>/<under>`."""
        keys: list[str] = []
        paginator = self.s3_client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/{under}"):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def stored_blob_digests(self) -> list[str]:
        """The digest each object under `blobs/` stands for (`blobs/sha256/ab/abcd…` is `sha256:abcd…`)."""
        digests = []
        for key in self.object_keys("blobs/"):
            algorithm, _fanout, encoded = key.removeprefix(f"{self.prefix}/blobs/").split("/")
            digests.append(f"{algorithm}:{encoded}")
        return digests


@contextlib.contextmanager
def cluster(root: Path, nodes: int = 3, extra_args: tuple[str, ...] = (), start: bool = True) -> Iterator[Cluster]:
    """`nodes` nodes on a fresh PostgreSQL database and a fresh bucket, started together unless `start` is
    False (then the caller adds nodes and starts them)."""
    s3 = s3_backend()
    database_url = postgres_url(root)
    client = s3.client()
    with fresh_bucket(client) as bucket, cluster_environment(s3, secrets.token_bytes(32)):
        group = Cluster(root, database_url, s3, bucket, client)
        try:
            group.add_nodes(nodes, extra_args)
            if start:
                group.start()
            yield group
        finally:
            group.stop()


# ---------------------------------------------------------------------------------------- job history

# Test instrumentation inside the test's own throwaway database: every committed write to `leases` and
# `job_runs` is copied into `test_job_history` by a trigger, with the database's clock. The nodes' code is
# untouched; the history shows who took which lease when, and every recorded job run, not only the last.
_HISTORY_DDL = [
    """
    CREATE TABLE test_job_history (
        id bigserial PRIMARY KEY,
        recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        source text NOT NULL,
        operation text NOT NULL,
        name text NOT NULL,
        owner text,
        at timestamptz
    )
    """,
    """
    CREATE FUNCTION test_record_lease() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            INSERT INTO test_job_history (source, operation, name, owner, at)
            VALUES ('leases', TG_OP, OLD.name, OLD.owner, OLD.expires_at);
            RETURN OLD;
        END IF;
        INSERT INTO test_job_history (source, operation, name, owner, at)
        VALUES ('leases', TG_OP, NEW.name, NEW.owner, NEW.expires_at);
        RETURN NEW;
    END $$
    """,
    """
    CREATE FUNCTION test_record_job_run() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO test_job_history (source, operation, name, at)
        VALUES ('job_runs', TG_OP, NEW.name, NEW.last_run_at);
        RETURN NEW;
    END $$
    """,
    "CREATE TRIGGER test_lease_history AFTER INSERT OR UPDATE OR DELETE ON leases "
    "FOR EACH ROW EXECUTE FUNCTION test_record_lease()",
    "CREATE TRIGGER test_job_run_history AFTER INSERT OR UPDATE ON job_runs "
    "FOR EACH ROW EXECUTE FUNCTION test_record_job_run()",
]


@dataclass(frozen=True)
class HistoryRow:
    recorded_at: datetime
    source: str  # "leases" or "job_runs"
    operation: str  # INSERT, UPDATE, DELETE
    name: str
    owner: str | None
    at: datetime | None  # a lease's expires_at, or a job's last_run_at


def migrate(database_url: str) -> None:
    """Create the schema as a starting node would (same code), so instrumentation can go in before any node."""
    from dockyard.storage.metadata import make_engine
    from dockyard.storage.migrate import upgrade

    engine = make_engine(database_url, pool_size=1)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def install_job_history(group: Cluster) -> None:
    with group.engine.begin() as connection:
        for statement in _HISTORY_DDL:
            connection.execute(text(statement))


def job_history(group: Cluster) -> list[HistoryRow]:
    rows = group.query("SELECT recorded_at, source, operation, name, owner, at FROM test_job_history ORDER BY id")
    return [HistoryRow(*row) for row in rows]


# ---------------------------------------------------------------------------------------- waiting and watching


def wait_for(condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `condition` until it returns something truthy (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)  # polling with a deadline


def lock_waiters(group: Cluster, query_like: str) -> int:
    """Sessions of the cluster's database waiting for a lock, running a statement that matches `query_like`."""
    rows = group.query(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query ILIKE :pattern",
        pattern=query_like,
    )
    count: int = rows[0][0]
    return count


def json_log_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def server_errors(node: ServerProcess) -> list[str]:
    """Lines of a node's output that show a failure: ERROR-level JSON logs, tracebacks, a failed lifespan."""
    markers = ('"level": "ERROR"', '"level": "CRITICAL"', "Traceback", "Lifespan errored")
    return [line for line in node.log().splitlines() if any(marker in line for marker in markers)]


# ---------------------------------------------------------------------------------------- job history checks


def job_runs(history: list[HistoryRow], name: str) -> list[datetime]:
    """When each recorded run of job `name` finished (`job_runs.last_run_at` as each write set it)."""
    return [row.at for row in history if row.source == "job_runs" and row.name == name and row.at is not None]


def runs_closer_than(runs: list[datetime], interval: timedelta) -> list[tuple[datetime, datetime]]:
    """Consecutive runs less than `interval` apart: a job that ran twice in one interval."""
    return [(earlier, later) for earlier, later in itertools.pairwise(runs) if later - earlier < interval]


def lease_overlaps(history: list[HistoryRow]) -> list[str]:
    """Leases taken while another owner's lease on the same name was still unexpired."""
    holders: dict[str, HistoryRow] = {}
    overlaps = []
    for row in history:
        if row.source != "leases":
            continue
        if row.operation == "DELETE":
            holders.pop(row.name, None)
            continue
        held = holders.get(row.name)
        if held is not None and held.owner != row.owner and held.at is not None and held.at > row.recorded_at:
            overlaps.append(f"{row.owner} took {row.name} at {row.recorded_at}; {held.owner} held it until {held.at}")
        holders[row.name] = row
    return overlaps
