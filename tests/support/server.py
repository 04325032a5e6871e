"""Starts a real `dockyard serve` process for end-to-end tests and stops what it started."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ACCESS_KEY_ID = "AKIAE2ETESTROOT00001"
SECRET_ACCESS_KEY = "e2e/Secret+Key/For/Dockyard/Tests/000001"
ACCOUNT_ID = "123456789012"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    data_dir: Path
    port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)  # more environment variables for the server
    default_account: str | None = ACCOUNT_ID  # None: no --default-account (the registry's database decides)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    # HTTPS: the server is started with TLS flags (in extra_args) and this directory holds the CA to trust as
    # ca.crt (what skopeo's --cert-dir takes); with `--tls self-signed` it is the server's own <data-dir>/tls.
    cert_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.cert_dir else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path | None:
        return self.cert_dir / "ca.crt" if self.cert_dir else None

    def verify(self) -> ssl.SSLContext | bool:
        """What httpx needs to verify this server: its CA over HTTPS (so nothing else is trusted)."""
        return True if self.ca is None else ssl.create_default_context(cafile=self.ca)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def creds(self) -> str:
        return f"{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}"

    @property
    def auth_header(self) -> dict[str, str]:
        token = base64.b64encode(self.creds.encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.auth_header, timeout=60, verify=self.verify())

    def start(self) -> ServerProcess:
        env = dict(os.environ)
        env.update({"DOCKYARD_ROOT_ACCESS_KEY_ID": ACCESS_KEY_ID, "DOCKYARD_ROOT_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY})
        env.update(self.environment)
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        command = [
            sys.executable,
            "-m",
            "dockyard",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *(["--default-account", self.default_account] if self.default_account else []),
            *self.extra_args,
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:
            # The caller never gets a server to stop when the start fails: stop it here, or it outlives the suite.
            self.kill()
            raise
        return self

    # A loaded 2-core CI machine can take well over 30 s to start a server while other tests run beside it.
    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"dockyard serve exited early (code {self.process.returncode}):\n{self.log()}")
            if self.ca is not None and not self.ca.exists():  # `--tls self-signed` has not made it yet
                time.sleep(0.05)
                continue
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1, verify=self.verify()).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling for readiness, not dodging a race
        raise RuntimeError(f"dockyard serve did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole server (Granian's main process and its workers)."""
        if self.process is not None and self.process.poll() is None:
            killed = _kill_tree(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            # A worker in the middle of a write may take a moment to die; until then it holds the data
            # directory's lock, and a server started next on that directory would be refused.
            deadline = time.monotonic() + 10
            while any(_alive(pid) for pid in killed) and time.monotonic() < deadline:
                time.sleep(0.01)  # polling for the exits the kill brings, not dodging a race

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


def _kill_tree(pid: int, sig: signal.Signals) -> list[int]:
    """Signal `pid` and its descendants (children first); the PIDs signalled."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    child_pids = children.read_text().split() if children.exists() else []
    signalled = [descendant for child in child_pids for descendant in _kill_tree(int(child), sig)]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    return [*signalled, pid]


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie has already let go of its files)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")
