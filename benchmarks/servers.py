"""Start, probe and stop the registries under test on loopback.

Each server runs in its own session (process group) so that stopping it also stops any worker
processes it forked, and so that its memory can be measured across the whole process tree.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

DISTRIBUTION_BIN = "/usr/bin/docker-registry"
ROOT_ACCESS_KEY_ID = "AKIABENCHMARK0000000"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Credentials:
    key_id: str
    secret: str

    @classmethod
    def generate(cls) -> Credentials:
        # token_hex(20) is exactly 40 characters, the length of an AWS-style secret key.
        return cls(ROOT_ACCESS_KEY_ID, secrets.token_hex(20))

    @property
    def authorization(self) -> str:
        token = base64.b64encode(f"{self.key_id}:{self.secret}".encode()).decode()
        return f"Basic {token}"


@dataclass
class Server:
    name: str
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM the server's process group, then SIGKILL whatever is left after a grace period."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        # Workers may outlive a parent that exited on SIGTERM, so always sweep the group.
        _signal_group(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=STOP_TIMEOUT_S)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # The server was started with start_new_session=True, so its pid is its process-group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _distribution_config(workdir: Path, port: int) -> Path:
    # Deletion is enabled so both registries run with the same capabilities switched on.
    config = f"""\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {workdir / "data"}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""
    path = workdir / "config.yml"
    path.write_text(config)
    return path


def _dockyard_command() -> list[str]:
    # Prefer the console script installed next to this interpreter; fall back to the module.
    script = Path(sys.executable).with_name("dockyard")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "dockyard"]


def _spawn(name: str, cmd: list[str], workdir: Path, port: int, env: dict[str, str]) -> Server:
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name=name, host="127.0.0.1", port=port, proc=proc, log_path=log_path)


def start_distribution(workdir: Path) -> Server:
    port = free_port()
    config = _distribution_config(workdir, port)
    return _spawn("distribution", [DISTRIBUTION_BIN, "serve", str(config)], workdir, port, dict(os.environ))


def start_dockyard(
    workdir: Path,
    creds: Credentials | None,
    workers: int = 1,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str | None] | None = None,
    name: str = "dockyard",
) -> Server:
    """`dockyard serve` on a free port with its data directory in `workdir`; `extra_args` are more serve flags,
    `env` overrides the environment (None removes a variable)."""
    port = free_port()
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    listen = ["--host", "127.0.0.1", "--port", str(port)]
    cmd = [*_dockyard_command(), "serve", *listen, "--data-dir", str(data_dir), "--workers", str(workers)]
    environment = dict(os.environ)
    if creds is not None:
        environment["DOCKYARD_ROOT_ACCESS_KEY_ID"] = creds.key_id
        environment["DOCKYARD_ROOT_SECRET_ACCESS_KEY"] = creds.secret
    for key, value in (env or {}).items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    return _spawn(name, [*cmd, *extra_args], workdir, port, environment)


def wait_ready(server: Server, authorization: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Poll GET /v2/ with credentials until it answers 200; fail fast if the process dies."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            resp = httpx.get(f"{server.base_url}/v2/", headers={"Authorization": authorization}, timeout=2.0)
            if resp.status_code == 200:
                return
            last = f"HTTP {resp.status_code}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f}s ({last}):\n{server.log_tail()}")


def is_answering(server: Server, authorization: str) -> bool:
    """Whether the server still answers HTTP at all (any status), e.g. after a failed measurement."""
    if server.proc.poll() is not None:
        return False
    try:
        httpx.get(f"{server.base_url}/v2/", headers={"Authorization": authorization}, timeout=5.0)
    except httpx.TransportError:
        return False
    return True


@contextlib.contextmanager
def running(name: str, workdir: Path, creds: Credentials, workers: int = 1) -> Iterator[Server]:
    """Start the named registry, wait for it, and stop it on exit whatever happened."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = start_dockyard(workdir, creds, workers) if name == "dockyard" else start_distribution(workdir)
    try:
        wait_ready(server, creds.authorization)
        yield server
    finally:
        server.stop()


# --- memory -------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                kids += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return kids


def process_tree(pid: int) -> list[int]:
    """The pid and all its descendants (a server may fork worker processes)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += _children(current)
    return tree


def _status_kib(pid: int, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def peak_rss_bytes(pid: int) -> int:
    """Sum of VmHWM over the process tree: exact for one process, an upper bound for several."""
    return sum(_status_kib(p, "VmHWM") for p in process_tree(pid)) * 1024


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0) so a later read covers only what follows."""
    ok = True
    for p in process_tree(pid):
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok
