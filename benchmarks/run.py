"""Benchmark Dockyard against CNCF Distribution on loopback and print a side-by-side table.

Usage: python benchmarks/run.py [--size-mib N] [--duration S] [--repeat N] [--only NAME] [--skip-4g]
                               [--json PATH]

Both registries are started from scratch in temporary directories, measured one after the other with the
same client code (so neither competes with the other for the CPU), stopped, and their data deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import loadgen
import servers
import transfer

MIB = 1024 * 1024
MB = 1_000_000  # throughput is reported in MB/s (10^6 bytes per second)
CHUNK_SIZE = 16 * MIB
STREAM_SIZE = 4 * 1024 * MIB
CONCURRENT_PULLS = 8
CONNECTIONS = 64
MAX_ERROR_SHARE = 0.01
REGISTRIES = ("dockyard", "distribution")
TITLES = {"dockyard": "Dockyard", "distribution": "Distribution"}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

Results = dict[str, float]


# --- metrics ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    label: str  # may contain {size}, the human-readable blob size
    digits: int
    higher_is_better: bool


METRICS = (
    Metric("push_monolithic_mbps", "push {size} monolithic (MB/s)", 0, True),
    Metric("push_chunked_mbps", "push {size} chunked 16 MiB (MB/s)", 0, True),
    Metric("pull_mbps", "pull {size} single stream (MB/s)", 0, True),
    Metric("pull_concurrent_mbps", f"pull {{size}} x{CONCURRENT_PULLS} concurrent (MB/s)", 0, True),
    Metric("head_rps", f"HEAD blob, {CONNECTIONS} conns (req/s)", 0, True),
    Metric("head_p50_ms", "HEAD blob p50 (ms)", 2, False),
    Metric("head_p99_ms", "HEAD blob p99 (ms)", 2, False),
    Metric("manifest_rps", f"GET manifest, {CONNECTIONS} conns (req/s)", 0, True),
    Metric("manifest_p50_ms", "GET manifest p50 (ms)", 2, False),
    Metric("manifest_p99_ms", "GET manifest p99 (ms)", 2, False),
    Metric("peak_rss_mib", "server peak RSS, whole run (MiB)", 0, False),
    Metric("push_4g_mbps", "push 4 GiB streamed (MB/s)", 0, True),
    Metric("push_4g_peak_rss_mib", "server peak RSS during 4 GiB push (MiB)", 0, False),
)


def human_size(size: int) -> str:
    return f"{size // (1024 * MIB)} GiB" if size % (1024 * MIB) == 0 else f"{size // MIB} MiB"


def mbps(size: int, seconds: float) -> float:
    return size / seconds / MB


def log(message: str) -> None:
    # Progress goes to stderr so stdout carries only the result table.
    print(message, file=sys.stderr, flush=True)


# --- client-side preparation ----------------------------------------------------------------------------


def sha256_throughput(total: int = 256 * MIB, block: int = MIB) -> float:
    """One core's hashlib sha256 speed: the ceiling for any push that verifies the digest on one core."""
    view = memoryview(os.urandom(total))
    hasher = hashlib.sha256()
    start = time.perf_counter()
    for offset in range(0, total, block):
        hasher.update(view[offset : offset + block])
    return mbps(total, time.perf_counter() - start)


def make_random_file(path: Path, size: int, block: int = 16 * MIB) -> str:
    """Write `size` random bytes once (incompressible, so no layer can cheat) and return their digest."""
    hasher = hashlib.sha256()
    with path.open("wb") as f:
        for offset in range(0, size, block):
            data = os.urandom(min(block, size - offset))
            hasher.update(data)
            f.write(data)
    return f"sha256:{hasher.hexdigest()}"


def repeated_blocks(size: int, block: int = MIB) -> Iterator[bytes]:
    """`size` bytes from one random block repeated: unbounded data without unbounded client memory."""
    data = os.urandom(block)
    full, rest = divmod(size, block)
    for _ in range(full):
        yield data
    if rest:
        yield data[:rest]


def tiny_layer() -> tuple[bytes, str]:
    """A real gzipped tar with one file, and its diff_id, so the test image is a valid OCI image."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        payload = b"hello from the dockyard benchmark\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    diff_id = f"sha256:{hashlib.sha256(raw.getvalue()).hexdigest()}"
    return gzip.compress(raw.getvalue(), mtime=0), diff_id


def push_small_image(target: transfer.Target, tag: str) -> str:
    """Push config + one layer + an OCI manifest under `tag`; returns the layer digest."""
    layer, diff_id = tiny_layer()
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    ).encode()
    layer_digest = transfer.push_bytes(target, layer)
    config_digest = transfer.push_bytes(target, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": len(layer),
            }
        ],
    }
    transfer.put_manifest(target, tag, json.dumps(manifest).encode(), OCI_MANIFEST)
    return layer_digest


# --- wrk ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests: int  # completed, whatever their status
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk_latency_ms(output: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no {percentile}% latency in wrk output:\n{output}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in", output, re.MULTILINE)
    if not rps or not total:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(int(n) for n in sock.groups()) if sock else 0
    p50, p99 = _wrk_latency_ms(output, "50"), _wrk_latency_ms(output, "99")
    return WrkResult(int(total.group(1)), float(rps.group(1)), p50, p99, errors)


def run_wrk(url: str, headers: dict[str, str], duration: float) -> WrkResult:
    cmd = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{max(1, round(duration))}s", "--latency"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    done = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode:
        # Report wrk's own words, not the command line (which carries the credentials).
        raise RuntimeError(f"wrk exited {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}")
    return parse_wrk(done.stdout)


# --- one registry ---------------------------------------------------------------------------------------


@dataclass
class Bench:
    """Everything the steps for one registry share."""

    server: servers.Server
    target: transfer.Target
    blob: Path
    digest: str
    duration: float
    repeat: int
    results: Results = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    layer_digest: str = ""

    @property
    def size(self) -> int:
        return self.blob.stat().st_size


def step_push_monolithic(b: Bench) -> Results:
    return {"push_monolithic_mbps": mbps(b.size, transfer.push_monolithic(b.target, b.blob, b.digest))}


def step_push_chunked(b: Bench) -> Results:
    return {"push_chunked_mbps": mbps(b.size, transfer.push_chunked(b.target, b.blob, b.digest, CHUNK_SIZE))}


def step_pull(b: Bench) -> Results:
    start = time.perf_counter()
    got = transfer.pull(b.target, b.digest)
    seconds = time.perf_counter() - start
    if got != b.size:
        raise RuntimeError(f"pulled {got} bytes, expected {b.size}")
    return {"pull_mbps": mbps(got, seconds)}


def step_pull_concurrent(b: Bench) -> Results:
    got, seconds = transfer.pull_concurrently(b.target, b.digest, CONCURRENT_PULLS)
    if got != b.size * CONCURRENT_PULLS:
        raise RuntimeError(f"pulled {got} bytes, expected {b.size * CONCURRENT_PULLS}")
    return {"pull_concurrent_mbps": mbps(got, seconds)}


def check_errors(what: str, succeeded: int, failed: int) -> None:
    """Warn about a few failed requests; refuse to report a rate when more than 1% failed."""
    if failed > MAX_ERROR_SHARE * (succeeded + failed):
        raise RuntimeError(f"{failed} of {succeeded + failed} {what} requests failed")
    if failed:
        log(f"    warning: {failed} {what} requests failed")


def step_small_image(b: Bench) -> Results:
    b.layer_digest = push_small_image(b.target, "small")
    return {}


def step_head(b: Bench) -> Results:
    if not b.layer_digest:
        raise RuntimeError("small image was not pushed")
    url = b.target.url(f"/v2/{b.target.repo}/blobs/{b.layer_digest}")
    res = loadgen.run_head_load(url, {"Authorization": b.target.authorization}, CONNECTIONS, b.duration)
    check_errors("HEAD", res.requests, res.errors)
    return {"head_rps": res.rps, "head_p50_ms": res.p50_ms, "head_p99_ms": res.p99_ms}


def step_manifest(b: Bench) -> Results:
    if not b.layer_digest:
        raise RuntimeError("small image was not pushed")
    url = b.target.url(f"/v2/{b.target.repo}/manifests/small")
    headers = {"Authorization": b.target.authorization, "Accept": OCI_MANIFEST}
    res = run_wrk(url, headers, b.duration)
    check_errors("manifest GET", max(res.requests - res.errors, 0), res.errors)
    return {"manifest_rps": res.rps, "manifest_p50_ms": res.p50_ms, "manifest_p99_ms": res.p99_ms}


def step_peak_rss(b: Bench) -> Results:
    return {"peak_rss_mib": servers.peak_rss_bytes(b.server.pid) / MIB}


def step_push_4g(b: Bench) -> Results:
    # Reset the high-water mark so the reading covers this push alone, not the pulls before it.
    if not servers.reset_peak_rss(b.server.pid):
        log("    warning: could not reset VmHWM; the reading includes earlier steps")
    _, seconds = transfer.push_stream(b.target, repeated_blocks(STREAM_SIZE), STREAM_SIZE)
    rss = servers.peak_rss_bytes(b.server.pid) / MIB
    return {"push_4g_mbps": mbps(STREAM_SIZE, seconds), "push_4g_peak_rss_mib": rss}


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Bench], Results]
    repeat: bool = True  # setup and bookkeeping steps run once whatever --repeat says


STEPS = (
    Step("monolithic push", step_push_monolithic),
    Step("chunked push", step_push_chunked),
    Step("single pull", step_pull),
    Step(f"{CONCURRENT_PULLS} concurrent pulls", step_pull_concurrent),
    Step("small image push", step_small_image, repeat=False),
    Step("HEAD load", step_head),
    Step("manifest GET load (wrk)", step_manifest),
    Step("peak RSS", step_peak_rss, repeat=False),
)
STEP_4G = Step("4 GiB streamed push", step_push_4g)


@dataclass
class Outcome:
    """What one registry's run produced: the numbers, and why any are missing."""

    results: Results = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class ServerDown(RuntimeError):
    pass


def _median_of(samples: list[Results]) -> Results:
    return {key: statistics.median(sample[key] for sample in samples) for key in samples[0]}


def _describe(results: Results) -> str:
    return ", ".join(f"{key} {value:,.2f}" for key, value in results.items())


def run_step(b: Bench, step: Step) -> None:
    """Run one measurement (`repeat` times, keeping the median).

    A failure is recorded and the next steps still run, unless the server is gone.
    """
    log(f"  {step.name} ...")
    try:
        samples = [step.run(b) for _ in range(b.repeat if step.repeat else 1)]
        if samples[0]:
            b.results.update(_median_of(samples))
            log(f"    {_describe(_median_of(samples))}")
    except Exception as exc:
        b.errors[step.name] = f"{type(exc).__name__}: {exc}"
        log(f"    FAILED: {b.errors[step.name]}")
        if not servers.is_answering(b.server, b.target.authorization):
            raise ServerDown(f"{b.server.name} stopped answering; log tail:\n{b.server.log_tail()}") from exc


def bench_registry(name: str, args: argparse.Namespace, workroot: Path, blob: Path, digest: str) -> Outcome:
    creds = servers.Credentials.generate()
    workdir = workroot / name
    steps = STEPS + (() if args.skip_4g else (STEP_4G,))
    log(f"[{TITLES[name]}] starting")
    bench: Bench | None = None
    try:
        with servers.running(name, workdir, creds, args.dockyard_workers) as server:
            target = transfer.Target(server.base_url, creds.authorization, "bench/blobs")
            bench = Bench(server, target, blob, digest, args.duration, args.repeat)
            log(f"[{TITLES[name]}] ready on {server.base_url} (pid {server.pid})")
            for step in steps:
                run_step(bench, step)
    except (RuntimeError, OSError) as exc:
        # Keep going so the other registry is still measured and the partial table still printed.
        log(f"[{TITLES[name]}] aborted: {exc}")
        outcome = Outcome(bench.results, bench.errors) if bench else Outcome()
        outcome.errors["aborted"] = str(exc).splitlines()[0]
        return outcome
    finally:
        # Free the disk before the next registry writes its own copies.
        shutil.rmtree(workdir, ignore_errors=True)
    assert bench is not None
    return Outcome(bench.results, bench.errors)


# --- output -------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio(results: dict[str, Results], key: str) -> float | None:
    ours, theirs = results.get("dockyard", {}).get(key), results.get("distribution", {}).get(key)
    if ours is None or not theirs:
        return None
    return ours / theirs


def render_table(results: dict[str, Results], size: int) -> str:
    """A Markdown table, aligned for the terminal and ready to paste into the README."""
    header = ["metric", "Dockyard", "Distribution", "ratio"]
    rows = [header]
    for metric in METRICS:
        if not any(metric.key in r for r in results.values()):
            continue
        arrow = "↑" if metric.higher_is_better else "↓"
        value = ratio(results, metric.key)
        rows.append(
            [
                f"{metric.label.format(size=human_size(size))} {arrow}",
                _fmt(results.get("dockyard", {}).get(metric.key), metric.digits),
                _fmt(results.get("distribution", {}).get(metric.key), metric.digits),
                "n/a" if value is None else f"{value:.2f}x",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        numbers = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        padded = [cells[0].ljust(widths[0]), *numbers]
        return "| " + " | ".join(padded) + " |"

    separator = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(rows[0]), separator, *(line(r) for r in rows[1:])])


def report(sha_mbps: float, outcomes: dict[str, Outcome], args: argparse.Namespace) -> dict[str, Any]:
    results = {name: o.results for name, o in outcomes.items()}
    print(f"sha256, one core (hashlib, 1 MiB updates): {sha_mbps:,.0f} MB/s  <- push ceiling\n")
    print(render_table(results, args.size_mib * MIB))
    print("\n↑ higher is better, ↓ lower is better; ratio = Dockyard / Distribution.")
    if any(o.errors for o in outcomes.values()):
        print("\nFailures (n/a above):")
    for name, o in outcomes.items():
        for step, error in o.errors.items():
            print(f"{TITLES[name]} / {step}: {error}")
    return {
        "sha256_one_core_mbps": sha_mbps,
        "config": {
            "size_mib": args.size_mib,
            "duration_s": args.duration,
            "repeat": args.repeat,
            "skip_4g": args.skip_4g,
        },
        "results": results,
        "ratios": {m.key: ratio(results, m.key) for m in METRICS},
        "errors": {name: o.errors for name, o in outcomes.items()},
    }


# --- entry point ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the large blob (default 1024)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load test (default 10)")
    parser.add_argument("--only", choices=REGISTRIES, help="benchmark only this registry")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement, median kept (default 1)")
    parser.add_argument("--skip-4g", action="store_true", help="skip the 4 GiB streamed push")
    parser.add_argument(
        "--dockyard-workers", type=int, default=1, help="Dockyard worker processes (Distribution uses every core)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.duration <= 0 or args.repeat < 1:
        parser.error("--size-mib, --duration and --repeat must be positive")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> NoReturn:
    # Turn SIGTERM into an exception so the finally blocks stop the servers and delete the temp dirs.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    names = [args.only] if args.only else list(REGISTRIES)
    workroot = Path(tempfile.mkdtemp(prefix="dockyard-bench-"))
    try:
        log("measuring sha256 on one core ...")
        sha_mbps = sha256_throughput()
        log(f"writing {human_size(args.size_mib * MIB)} of random data ...")
        blob = workroot / "blob.bin"
        digest = make_random_file(blob, args.size_mib * MIB)
        outcomes = {name: bench_registry(name, args, workroot, blob, digest) for name in names}
        summary = report(sha_mbps, outcomes, args)
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2) + "\n")
            log(f"wrote {args.json}")
        return 1 if any(o.errors for o in outcomes.values()) else 0
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workroot)


if __name__ == "__main__":
    sys.exit(main())
