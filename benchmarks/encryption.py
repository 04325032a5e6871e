"""Encryption at rest against plain storage: push and pull throughput of one large blob, and their ratio.

Usage: python benchmarks/encryption.py [--size-mib N] [--repeat N] [--chunk-mib N] [--json PATH]

Two Dockyard servers run side by side on loopback, each from scratch in a temporary directory (SQLite and the
filesystem blob store): one with `--encrypt-at-rest`, one with `--no-encrypt-at-rest`. The same random blob is
pushed to both (a monolithic PUT, and chunked PATCHes then an empty PUT) and pulled back from both (a full
GET), --repeat times each. The measurements alternate between the servers, one at a time, in swapped order
from one round to the next and each after a sync of dirty pages, so background noise falls on both alike.
Each figure is the median of its samples; the table gives MB/s (10^6 bytes per second) for both, the ratio
encrypted / plain, and the CPU time the server's process tree spent per GiB (which a busy machine disturbs
less than throughput).

Outside the timings the pulled bytes of both servers are checked against the blob's digest once.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import servers
import transfer

MIB = 1024 * 1024
MB = 1_000_000
SERVERS = ("plain", "encrypted")
FLAGS = {"plain": "--no-encrypt-at-rest", "encrypted": "--encrypt-at-rest"}
REPOSITORY = "bench/encryption"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_random_file(path: Path, size: int, block: int = 16 * MIB) -> str:
    """`size` random (incompressible) bytes written once; returns their digest."""
    hasher = hashlib.sha256()
    with path.open("wb") as file:
        for offset in range(0, size, block):
            data = os.urandom(min(block, size - offset))
            hasher.update(data)
            file.write(data)
    return f"sha256:{hasher.hexdigest()}"


def start_dockyard(workdir: Path, creds: servers.Credentials, flag: str) -> servers.Server:
    """`dockyard serve` as servers.start_dockyard runs it, plus the encryption flag; each server makes its own
    master key in its data directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    return servers.start_dockyard(workdir, creds, 1, (flag,), {"DOCKYARD_MASTER_KEY": None}, f"dockyard {flag}")


@dataclass(frozen=True)
class Running:
    target: transfer.Target
    server: servers.Server

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server's whole process tree."""
        ticks = 0
        for pid in servers.process_tree(self.server.pid):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running(workroot: Path) -> Iterator[dict[str, Running]]:
    """Both servers, ready; stopped on exit whatever happened."""
    creds = servers.Credentials.generate()
    started: list[servers.Server] = []
    try:
        runs = {}
        for name in SERVERS:
            workdir = workroot / name
            workdir.mkdir()
            server = start_dockyard(workdir, creds, FLAGS[name])
            started.append(server)
            servers.wait_ready(server, creds.authorization)
            log(f"[{name}] ready on {server.base_url} (pid {server.pid})")
            runs[name] = Running(transfer.Target(server.base_url, creds.authorization, REPOSITORY), server)
        yield runs
    finally:
        for server in started:
            server.stop()


def pulled_digest(target: transfer.Target, digest: str) -> str:
    conn, response = transfer._open_blob(target, digest)
    hasher = hashlib.sha256()
    try:
        while chunk := response.read(transfer.READ_BUFFER):
            hasher.update(chunk)
    finally:
        conn.close()
    return f"sha256:{hasher.hexdigest()}"


Samples = dict[str, dict[str, list[tuple[float, float]]]]  # kind -> server -> (MB/s, server CPU s per GiB)


def measure(blob: Path, digest: str, runs: dict[str, Running], args: argparse.Namespace) -> Samples:
    size = blob.stat().st_size
    chunk = args.chunk_mib * MIB

    def pull(target: transfer.Target) -> float:
        start = time.perf_counter()
        got = transfer.pull(target, digest)
        seconds = time.perf_counter() - start
        if got != size:
            raise RuntimeError(f"pulled {got} bytes, expected {size}")
        return seconds

    kinds: dict[str, Callable[[transfer.Target], float]] = {
        "push monolithic": lambda target: transfer.push_monolithic(target, blob, digest),
        f"push chunked {args.chunk_mib} MiB": lambda target: transfer.push_chunked(target, blob, digest, chunk),
        "pull": pull,
    }
    samples: Samples = {kind: {name: [] for name in SERVERS} for kind in kinds}
    for round_ in range(args.repeat):
        order = SERVERS if round_ % 2 == 0 else tuple(reversed(SERVERS))
        for kind, run in kinds.items():
            for name in order:
                os.sync()  # the previous measurement's writes are not flushed during this one
                cpu_before = runs[name].cpu_seconds()
                mbps = size / run(runs[name].target) / MB
                cpu = (runs[name].cpu_seconds() - cpu_before) * 1024 * MIB / size
                samples[kind][name].append((mbps, cpu))
                log(f"round {round_ + 1}/{args.repeat}  {kind:<24} {name:<9} {mbps:8.0f} MB/s  {cpu:5.2f} CPU s/GiB")
    for name in SERVERS:
        if (pulled := pulled_digest(runs[name].target, digest)) != digest:
            raise RuntimeError(f"{name}: pulled {pulled}, pushed {digest}")
    return samples


def render(samples: Samples, size: int) -> tuple[str, dict[str, dict[str, float]]]:
    label = f"{size // (1024 * MIB)} GiB" if size % (1024 * MIB) == 0 else f"{size // MIB} MiB"
    lines = [
        f"| {label} blob | plain (MB/s) | encrypted (MB/s) | encrypted / plain | server CPU s/GiB, plain / encrypted |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    summary: dict[str, dict[str, float]] = {}
    for kind, by_server in samples.items():
        plain, encrypted = (statistics.median(mbps for mbps, _ in by_server[name]) for name in SERVERS)
        plain_cpu, encrypted_cpu = (statistics.median(cpu for _, cpu in by_server[name]) for name in SERVERS)
        summary[kind] = {
            "plain_mbps": plain,
            "encrypted_mbps": encrypted,
            "ratio": encrypted / plain,
            "plain_cpu_s_per_gib": plain_cpu,
            "encrypted_cpu_s_per_gib": encrypted_cpu,
        }
        cells = f"{plain:,.0f} | {encrypted:,.0f} | {encrypted / plain:.2f} | {plain_cpu:.2f} / {encrypted_cpu:.2f}"
        lines.append(f"| {kind} | {cells} |")
    return "\n".join(lines), summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the blob pushed and pulled")
    parser.add_argument("--repeat", type=int, default=4, help="samples per measurement and server (median)")
    parser.add_argument("--chunk-mib", type=int, default=16, help="PATCH size of the chunked push")
    parser.add_argument("--json", type=Path, help="also write the samples and medians as JSON")
    args = parser.parse_args(argv)
    if min(args.size_mib, args.repeat, args.chunk_mib) < 1:
        parser.error("--size-mib, --repeat and --chunk-mib must be positive")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # so the finally blocks stop the servers and delete the temporary files


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    workroot = Path(tempfile.mkdtemp(prefix="dockyard-bench-encryption-"))
    try:
        log(f"writing {args.size_mib} MiB of random data ...")
        blob = workroot / "blob.bin"
        digest = make_random_file(blob, args.size_mib * MIB)
        with running(workroot) as runs:
            samples = measure(blob, digest, runs, args)
        table, summary = render(samples, blob.stat().st_size)
        print(table)
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
