"""Pushes through the S3 blob store against the filesystem store: MB/s of one large blob, and their ratio.

Usage: python benchmarks/s3_push.py [--size-mib N] [--repeat N] [--chunk-mib N] [--encrypted-repeat N]
                                    [--unsigned-payload] [--memstore-mib N] [--json PATH]

S3 is the one the environment names (DOCKYARD_TEST_S3_ENDPOINT, _ACCESS_KEY, _SECRET_KEY, optional _REGION, as
`eval "$(.ci/services/radosgw.sh)"` prints them), else a Ceph radosgw started here with .ci/services/radosgw.sh
(state file /tmp/bench-s3-push-radosgw.state, a memstore of --memstore-mib, and garbage collection of deleted
RADOS objects after 0 s instead of 2 h, so that the blob rewritten by every push does not fill the memstore)
and stopped at the end. A fresh bucket is made and deleted afterwards.

Two Dockyard servers run side by side on loopback (`dockyard serve`, one worker, SQLite in a temporary
directory), both with `--no-encrypt-at-rest` so that only the blob store differs: one keeps blobs in its data
directory, the other in the bucket (`--blob-store s3://BUCKET/registry --s3-endpoint-url ... --s3-region ...`,
the S3 keys in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY). The same random blob is pushed to both, as one
monolithic PUT and as --chunk-mib PATCHes then an empty PUT, --repeat times each, alternating between the
servers (order swapped every round, dirty pages synced before each), after one untimed 24 MiB push to each.
Each figure is the median; the ratio S3 / filesystem is the number the scale-out goal asks for (>= 0.70 for a
1 GiB push).

botocore signs the SHA-256 of every request body it sends to an http:// endpoint (to https:// with a checksum
it sends UNSIGNED-PAYLOAD), which costs the Dockyard server about a CPU-second per GiB. --unsigned-payload gives
it an AWS config file with `s3 = payload_signing_enabled = false`, as an operator could.

With --encrypted-repeat N > 0 (default 1) a third server, on the same bucket under another prefix and with
`--encrypt-at-rest`, is pushed to N times per kind as well (for information: it is not part of the ratio).

After every S3 push the blob is deleted from the bucket behind the registry's back (the next push writes it
again), so the memstore holds one copy at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import boto3
import servers
import transfer
from botocore.config import Config

REPO_ROOT = Path(__file__).resolve().parent.parent
RADOSGW = REPO_ROOT / ".ci" / "services" / "radosgw.sh"
RADOSGW_STATE = "/tmp/bench-s3-push-radosgw.state"
MIB = 1024 * 1024
MB = 1_000_000
REPOSITORY = "bench/s3-push"
TARGET_RATIO = 0.70
# botocore signs the SHA-256 of every body it sends over http:// (over https:// with a checksum it does not);
# this switch in the AWS config file turns that off without a change to the server.
AWS_CONFIG = "[default]\ns3 =\n    payload_signing_enabled = false\n"
WARMUP_BYTES = 24 * MIB  # pushed once to every server before measuring (three parts on S3)
SETTLE_S = 3.0  # after deleting a blob from radosgw, time for its garbage collector (every 2 s here) to free it


def log(message: str) -> None:
    print(f"[s3-push] {message}", file=sys.stderr, flush=True)


# --- S3 ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3:
    endpoint: str
    access_key: str
    secret_key: str
    region: str

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
        )


@contextlib.contextmanager
def s3_service(memstore_mib: int) -> Iterator[S3]:
    """S3 from the environment, or a radosgw started (and stopped) here."""
    if endpoint := os.environ.get("DOCKYARD_TEST_S3_ENDPOINT"):
        log(f"S3 from DOCKYARD_TEST_S3_ENDPOINT ({endpoint}); its garbage collector may lag behind the pushes")
        yield S3(
            endpoint,
            os.environ["DOCKYARD_TEST_S3_ACCESS_KEY"],
            os.environ["DOCKYARD_TEST_S3_SECRET_KEY"],
            os.environ.get("DOCKYARD_TEST_S3_REGION", "us-east-1"),
        )
        return
    env = {
        **os.environ,
        "DOCKYARD_RADOSGW_STATE": RADOSGW_STATE,
        "DOCKYARD_RADOSGW_MEMSTORE_BYTES": str(memstore_mib * MIB),
        # Every Ceph daemon reads CEPH_ARGS: free deleted objects at once rather than after two hours.
        "CEPH_ARGS": "--rgw_gc_obj_min_wait=0 --rgw_gc_processor_period=2 --rgw_gc_processor_max_time=2",
    }
    log(f"starting radosgw ({RADOSGW.name}, state {RADOSGW_STATE}, memstore {memstore_mib} MiB) ...")
    started = subprocess.run([str(RADOSGW)], env=env, stdout=subprocess.PIPE, text=True, timeout=900, check=False)
    if started.returncode:
        raise RuntimeError(
            f"{RADOSGW.name} failed (exit {started.returncode}); if {RADOSGW_STATE} is left from an earlier run, "
            f"stop it with: DOCKYARD_RADOSGW_STATE={RADOSGW_STATE} {RADOSGW} stop"
        )
    try:
        exports = dict(re.findall(r"^export (\w+)=(\S+)$", started.stdout, re.MULTILINE))
        yield S3(
            exports["DOCKYARD_TEST_S3_ENDPOINT"],
            exports["DOCKYARD_TEST_S3_ACCESS_KEY"],
            exports["DOCKYARD_TEST_S3_SECRET_KEY"],
            "us-east-1",
        )
    finally:
        log("stopping radosgw ...")
        subprocess.run([str(RADOSGW), "stop"], env=env, timeout=120, check=False)


@contextlib.contextmanager
def fresh_bucket(client: Any) -> Iterator[str]:
    bucket = f"dockyard-bench-{uuid.uuid4().hex[:16]}"
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


# --- servers -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    name: str
    encrypted: bool
    prefix: str | None  # None: the data directory; else the bucket under this prefix


STORES = {
    "filesystem": Store("filesystem", encrypted=False, prefix=None),
    "s3": Store("s3", encrypted=False, prefix="registry"),
    "s3 encrypted": Store("s3 encrypted", encrypted=True, prefix="encrypted"),
}


def start_dockyard(
    workdir: Path, creds: servers.Credentials, store: Store, s3: S3, bucket: str, unsigned_payload: bool
) -> servers.Server:
    flags = ["--encrypt-at-rest" if store.encrypted else "--no-encrypt-at-rest"]
    # Each server makes its own master key; no AWS setting of this shell leaks into it.
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("AWS_", "BOTO_", "DOCKYARD_TEST_"))}
    env["DOCKYARD_MASTER_KEY"] = None
    if store.prefix is not None:
        flags += ["--blob-store", f"s3://{bucket}/{store.prefix}", "--s3-endpoint-url", s3.endpoint]
        flags += ["--s3-region", s3.region]
        aws_config = workdir / "aws-config"
        workdir.mkdir(parents=True, exist_ok=True)
        aws_config.write_text(AWS_CONFIG if unsigned_payload else "")
        env |= {
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_CONFIG_FILE": str(aws_config),
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    return servers.start_dockyard(workdir, creds, 1, flags, env, f"dockyard ({store.name})")


@contextlib.contextmanager
def running(
    workroot: Path, names: list[str], s3: S3, bucket: str, unsigned_payload: bool
) -> Iterator[dict[str, transfer.Target]]:
    """The servers, ready; stopped on exit whatever happened."""
    creds = servers.Credentials.generate()
    started: list[servers.Server] = []
    try:
        targets = {}
        for name in names:
            workdir = workroot / name.replace(" ", "-")
            workdir.mkdir()
            server = start_dockyard(workdir, creds, STORES[name], s3, bucket, unsigned_payload)
            started.append(server)
            servers.wait_ready(server, creds.authorization)
            log(f"{name} ready on {server.base_url} (pid {server.pid})")
            targets[name] = transfer.Target(server.base_url, creds.authorization, REPOSITORY)
        yield targets
    finally:
        for server in started:
            server.stop()


# --- measuring -----------------------------------------------------------------------------------------


def make_random_file(path: Path, size: int, block: int = 16 * MIB) -> str:
    """`size` random (incompressible) bytes written once; returns their digest."""
    hasher = hashlib.sha256()
    with path.open("wb") as file:
        for offset in range(0, size, block):
            data = os.urandom(min(block, size - offset))
            hasher.update(data)
            file.write(data)
    return f"sha256:{hasher.hexdigest()}"


def blob_key(store: Store, digest: str) -> str:
    algorithm, _, hex_ = digest.partition(":")
    return f"{store.prefix}/blobs/{algorithm}/{hex_[:2]}/{hex_}"


def measure(
    blob: Path, digest: str, targets: dict[str, transfer.Target], client: Any, bucket: str, args: argparse.Namespace
) -> dict[str, dict[str, list[float]]]:
    size = blob.stat().st_size
    chunk = args.chunk_mib * MIB
    kinds: dict[str, Callable[[transfer.Target], float]] = {
        "push monolithic": lambda target: transfer.push_monolithic(target, blob, digest),
        f"push chunked {args.chunk_mib} MiB": lambda target: transfer.push_chunked(target, blob, digest, chunk),
    }
    for target in targets.values():  # untimed: the first write to a new radosgw creates its data pool
        transfer.push_bytes(target, os.urandom(WARMUP_BYTES))
    samples: dict[str, dict[str, list[float]]] = {kind: {name: [] for name in targets} for kind in kinds}
    compared = [name for name in ("filesystem", "s3") if name in targets]
    for round_ in range(max(args.repeat, args.encrypted_repeat)):
        order = compared if round_ % 2 == 0 else compared[::-1]
        if round_ >= args.repeat:
            order = []
        if "s3 encrypted" in targets and round_ < args.encrypted_repeat:
            order = [*order, "s3 encrypted"]
        for kind, run in kinds.items():
            for name in order:
                os.sync()  # the previous measurement's writes are not flushed during this one
                mbps = size / run(targets[name]) / MB
                samples[kind][name].append(mbps)
                log(f"round {round_ + 1}  {kind:<22} {name:<13} {mbps:7.0f} MB/s")
                if STORES[name].prefix is not None:
                    client.delete_object(Bucket=bucket, Key=blob_key(STORES[name], digest))
                    time.sleep(SETTLE_S)
    return samples


def render(samples: dict[str, dict[str, list[float]]], size: int) -> tuple[str, dict[str, dict[str, float]]]:
    label = f"{size // (1024 * MIB)} GiB" if size % (1024 * MIB) == 0 else f"{size // MIB} MiB"
    encrypted = any(by_server.get("s3 encrypted") for by_server in samples.values())
    lines = [
        f"| {label} push | filesystem (MB/s) | S3 (MB/s) | S3 / filesystem |" + (" S3 encrypted (MB/s) |" * encrypted),
        "| --- | ---: | ---: | ---: |" + (" ---: |" * encrypted),
    ]
    summary: dict[str, dict[str, float]] = {}
    for kind, by_server in samples.items():
        medians = {name: statistics.median(values) for name, values in by_server.items() if values}
        filesystem, s3 = medians["filesystem"], medians["s3"]
        summary[kind] = {"filesystem_mbps": filesystem, "s3_mbps": s3, "ratio": s3 / filesystem}
        line = f"| {kind} | {filesystem:,.0f} | {s3:,.0f} | {s3 / filesystem:.2f} |"
        if encrypted:
            summary[kind]["s3_encrypted_mbps"] = medians["s3 encrypted"]
            line += f" {medians['s3 encrypted']:,.0f} |"
        lines.append(line)
    return "\n".join(lines), summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the blob pushed")
    parser.add_argument("--repeat", type=int, default=3, help="samples per push kind and store (median)")
    parser.add_argument("--chunk-mib", type=int, default=16, help="PATCH size of the chunked push")
    parser.add_argument("--encrypted-repeat", type=int, default=1, help="pushes per kind to an encrypted S3 store")
    parser.add_argument("--memstore-mib", type=int, default=4096, help="RAM for the radosgw started here")
    parser.add_argument(
        "--unsigned-payload",
        action="store_true",
        help="S3 servers send UNSIGNED-PAYLOAD (an AWS config file with s3.payload_signing_enabled = false)",
    )
    parser.add_argument("--json", type=Path, help="also write the samples and medians as JSON")
    args = parser.parse_args(argv)
    if min(args.size_mib, args.repeat, args.chunk_mib) < 1 or args.encrypted_repeat < 0:
        parser.error("--size-mib, --repeat and --chunk-mib must be positive, --encrypted-repeat not negative")
    if args.memstore_mib < 3 * args.size_mib:
        parser.error("--memstore-mib must hold at least three copies of the blob")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # so the finally blocks stop the servers and radosgw and delete the files


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    workroot = Path(tempfile.mkdtemp(prefix="dockyard-bench-s3-push-"))
    try:
        log(f"writing {args.size_mib} MiB of random data ...")
        blob = workroot / "blob.bin"
        digest = make_random_file(blob, args.size_mib * MIB)
        names = ["filesystem", "s3", *(["s3 encrypted"] if args.encrypted_repeat else [])]
        with s3_service(args.memstore_mib) as s3:
            client = s3.client()
            with fresh_bucket(client) as bucket, running(workroot, names, s3, bucket, args.unsigned_payload) as targets:
                samples = measure(blob, digest, targets, client, bucket, args)
        table, summary = render(samples, blob.stat().st_size)
        print(table)
        worst = min(values["ratio"] for values in summary.values())
        print(f"\nS3 / filesystem, worst kind: {worst:.2f} (goal: >= {TARGET_RATIO:.2f})")
        if args.json:
            args.json.write_text(json.dumps({"samples": samples, "medians": summary}, indent=2) + "\n")
            log(f"wrote {args.json}")
        return 0
    except (RuntimeError, OSError) as error:
        log(f"failed: {error}")
        return 1
    finally:
        shutil.rmtree(workroot, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
