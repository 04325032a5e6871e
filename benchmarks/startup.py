"""How fast Dockyard starts and how light it is idle, beside CNCF Distribution.

Run: `python benchmarks/startup.py [--repeat N] [--json PATH]` (needs `/usr/bin/docker-registry`). Prints, as
Markdown, the median (and best) of N runs of:

* start to the first answer: from spawning `dockyard serve` (1 worker) to the first `GET /healthz` 200, on a new
  data directory (first start: key, credentials and schema made) and on the same one again (a restart); for
  Distribution, from spawning `docker-registry serve` to the first `GET /v2/` 200 (it has no /healthz);
* idle RSS and PSS: the resident (and proportional) memory of the whole process tree (supervisor + worker),
  2 s after the first answer of the restart;
* CLI: wall time of `dockyard --help`, `dockyard lifecycle evaluate` (a tiny policy over two images),
  `dockyard admin account --help` and `python -c "import dockyard.cli"`, beside `docker-registry --help`.

Goals (issue 15): start < 1 s, CLI commands that need no server stack < 0.3 s, idle RSS < 80 MB, on an idle
machine. The load average is printed with the table: on a busy machine every number is higher.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import (
    DISTRIBUTION_BIN,
    Server,
    process_tree,
    start_distribution,
    start_dockyard,
)

IDLE_SETTLE_S = 2.0  # after the first answer: the worker's lazy start-up work (jobs, first flush) is done
POLL_S = 0.005  # between probes; small next to the numbers measured
TIMEOUT_S = 60.0
DOCKYARD = Path(sys.executable).with_name("dockyard")


def first_answer(server: Server, path: str) -> float:
    """Seconds from the spawn (just before `server` was made) until `path` answers 200."""
    deadline = time.monotonic() + TIMEOUT_S
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{server.base_url}{path}").status_code == 200:
                    return time.monotonic()
            time.sleep(POLL_S)
    raise RuntimeError(f"{server.name} did not answer {path} within {TIMEOUT_S:.0f} s:\n{server.log_tail()}")


def memory_bytes(pid: int, source: str, field: str) -> int:
    """A /proc memory field summed over the process and its descendants."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/{source}").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1]) * 1024
    return total


def start_once(start: Callable[[], Server], path: str) -> tuple[float, int, int]:
    """(seconds to the first answer, idle RSS bytes, idle PSS bytes) of one start; the server is stopped after.

    RSS sums count the pages a forked worker shares with its supervisor (the interpreter, Granian) twice; PSS
    (proportional set size) splits each shared page among its sharers, so its sum is what the tree costs."""
    began = time.monotonic()
    server = start()
    try:
        answered = first_answer(server, path)
        time.sleep(IDLE_SETTLE_S)
        rss = memory_bytes(server.pid, "status", "VmRSS")
        return answered - began, rss, memory_bytes(server.pid, "smaps_rollup", "Pss")
    finally:
        server.stop()


def dockyard_starts(repeat: int, root: Path) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"first start s": [], "restart s": [], "idle RSS MB": [], "idle PSS MB": []}
    for index in range(repeat):
        workdir = root / f"dockyard-{index}"
        workdir.mkdir()
        seconds, _, _ = start_once(lambda: start_dockyard(workdir, None), "/healthz")  # noqa: B023 (called at once)
        results["first start s"].append(seconds)
        seconds, rss, pss = start_once(lambda: start_dockyard(workdir, None), "/healthz")  # noqa: B023
        results["restart s"].append(seconds)
        results["idle RSS MB"].append(rss / 1e6)
        results["idle PSS MB"].append(pss / 1e6)
    return results


def distribution_starts(repeat: int, root: Path) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"first start s": [], "restart s": [], "idle RSS MB": [], "idle PSS MB": []}
    for index in range(repeat):
        workdir = root / f"distribution-{index}"
        workdir.mkdir()
        seconds, _, _ = start_once(lambda: start_distribution(workdir), "/v2/")  # noqa: B023 (called at once)
        results["first start s"].append(seconds)
        seconds, rss, pss = start_once(lambda: start_distribution(workdir), "/v2/")  # noqa: B023
        results["restart s"].append(seconds)
        results["idle RSS MB"].append(rss / 1e6)
        results["idle PSS MB"].append(pss / 1e6)
    return results


def command_seconds(argv: Sequence[str], repeat: int, cwd: Path) -> list[float]:
    """Wall time of each of `repeat` runs of a command that must succeed."""
    times = []
    for _ in range(repeat):
        began = time.monotonic()
        done = subprocess.run(argv, cwd=cwd, capture_output=True, check=False)
        times.append(time.monotonic() - began)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return times


def cli_times(repeat: int, root: Path) -> dict[str, list[float]]:
    policy, images = root / "policy.json", root / "images.json"
    rule = {"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}}
    policy.write_text(json.dumps({"rules": [{**rule, "action": {"type": "expire"}}]}))
    images.write_text(
        json.dumps(
            [
                {"imageDigest": "sha256:" + "a" * 64, "imageTags": ["a"], "imagePushedAt": 1_700_000_000},
                {"imageDigest": "sha256:" + "b" * 64, "imageTags": ["b"], "imagePushedAt": 1_700_000_100},
            ]
        )
    )
    dockyard = [str(DOCKYARD)] if DOCKYARD.exists() else [sys.executable, "-m", "dockyard"]
    commands = {
        "dockyard --help": [*dockyard, "--help"],
        "dockyard lifecycle evaluate": [
            *dockyard,
            "lifecycle",
            "evaluate",
            "--policy",
            str(policy),
            "--images",
            str(images),
            "--now",
            "2024-01-01T00:00:00",
        ],
        "dockyard admin account --help": [*dockyard, "admin", "account", "--help"],
        "import dockyard.cli": [sys.executable, "-c", "import dockyard.cli"],
        "python -c pass (interpreter alone)": [sys.executable, "-c", "pass"],
        "docker-registry --help": [DISTRIBUTION_BIN, "--help"],
    }
    return {name: command_seconds(argv, repeat, root) for name, argv in commands.items()}


def _cell(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} (best {min(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each measurement (median and best shown)")
    parser.add_argument("--json", type=Path, help="also write every number as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dockyard-startup-") as temp:
        root = Path(temp)
        print("measuring Dockyard starts...", file=sys.stderr)
        dockyard = dockyard_starts(args.repeat, root)
        print("measuring Distribution starts...", file=sys.stderr)
        distribution = distribution_starts(args.repeat, root)
        print("measuring CLI commands...", file=sys.stderr)
        cli = cli_times(args.repeat, root)
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs\n")
    print("| metric | Dockyard | Distribution | ratio |")
    print("| --- | --- | --- | --- |")
    for name in dockyard:
        digits = 0 if "MB" in name else 2
        ratio = statistics.median(dockyard[name]) / statistics.median(distribution[name])
        print(f"| {name} | {_cell(dockyard[name], digits)} | {_cell(distribution[name], digits)} | {ratio:.1f}x |")
    reference = cli["docker-registry --help"]
    for name, values in cli.items():
        if name == "docker-registry --help":
            continue
        ratio = statistics.median(values) / statistics.median(reference)
        print(f"| {name} s | {_cell(values, 3)} | {_cell(reference, 3)} (--help) | {ratio:.1f}x |")
    if args.json is not None:
        document = {"dockyard": dockyard, "distribution": distribution, "cli": cli, "loadavg": load}
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
