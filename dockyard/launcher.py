"""The server's supervisor process: starts Granian workers that build the app from the environment.

`dockyard serve` prepares the data directory, then replaces itself with this module (exec), so the
long-lived supervisor holds only Granian, not the whole application; each worker imports the app itself.

Granian's own supervisor loop (2.8) does two things a registry cannot live with, so `Supervisor` replaces
that loop and keeps the rest of Granian (its worker processes, sockets and signal handling):

* A worker that dies (an OOM kill) stops the whole server unless `respawn_failed_workers` is set, and even
  then a worker that dies again within 5.5 s of its respawn ends the server ("crash loop detected").
  Here a dead worker is replaced at once, and one that keeps dying is replaced after a growing pause
  (1 s, 2 s, 4 s ... at most 30 s), so a crash loop neither spins hot nor stops the server.
* On SIGTERM it sends SIGTERM to every worker at once, and each stops accepting connections, so nothing
  answers 503 in the meantime and a load balancer cannot tell. Here the supervisor first asks the workers
  to drain (SIGUSR1, see `dockyard.http.drain`): they refuse new work with 503 + Retry-After and answer
  /readyz not ready, finish what is in flight, and leave when idle. Whatever is still running when the
  grace period ends gets Granian's stop (SIGTERM, then SIGKILL after `KILL_TIMEOUT_SECONDS`); an upload
  cut off then stays resumable from what reached the disk. A second SIGTERM/SIGINT ends the drain early.

Granian would also bind one socket per worker with SO_REUSEPORT, so a second server on a busy port started
silently and took a share of the connections. Here every worker accepts from the one socket `dockyard serve`
bound (`dockyard.exclusive`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from granian._granian import SocketHolder
from granian.constants import Interfaces, SSLProtocols
from granian.log import logger
from granian.server.mp import MPServer

from dockyard.config import Settings
from dockyard.exclusive import Refused, claim, taken_over

if TYPE_CHECKING:
    from dockyard.server import Dockyard

DRAIN_SIGNAL: Final = signal.SIGUSR1
KILL_TIMEOUT_SECONDS: Final = 5  # after the grace period: a worker's own stop, before SIGKILL
STABLE_SECONDS: Final = 30.0  # a worker that lived this long died by accident, not in a crash loop
MAX_BACKOFF_SECONDS: Final = 30.0
DRAIN_POLL_SECONDS: Final = 0.5  # how often the drain looks for workers that left (and repeats its signal)


def backoff(failures: int) -> float:
    """Seconds before replacing a worker that died `failures` times in a row without living long."""
    return 0.0 if failures <= 1 else min(MAX_BACKOFF_SECONDS, 2.0 ** (failures - 2))


class Supervisor(MPServer):
    """Granian's multi-process server with Dockyard's policy for dead workers and for stopping."""

    def __init__(self, *args: Any, listener: socket.socket, shutdown_grace: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listener = listener
        self.shutdown_grace = shutdown_grace
        self._failures: dict[int, int] = {}  # worker index -> deaths in a row, each soon after its start
        self._respawn_at: dict[int, float] = {}  # worker index -> when to replace it (monotonic)

    def _init_shared_socket(self) -> None:
        # Granian's way on platforms without SO_REUSEPORT: no spec for each worker to bind, the one socket's
        # holder instead (workers are forked: each inherits the descriptor); Granian closes it at shutdown.
        server: Any = self  # Granian's servers carry no type hints (these attributes are typed None)
        holder: Any = SocketHolder  # its stub lacks the constructor: (fd, uds, backlog)
        server._ssp = None
        server._shd = holder(self.listener.fileno(), False, self.backlog)
        server._sfd = self.listener.fileno()
        server._sso = self.listener

    def _serve_loop(self, spawn_target: Any, target_loader: Any) -> None:
        while True:
            now = time.monotonic()
            timeout = max(0.0, min(self._respawn_at.values()) - now) if self._respawn_at else None
            self.main_loop_interrupt.wait(timeout)
            self.main_loop_interrupt.clear()  # before looking at the flags, so no later event is lost
            if self.interrupt_signal:
                break
            while self.interrupt_children:
                self._schedule_respawn(self.interrupt_children.pop(0))
            now = time.monotonic()
            for idx, when in sorted(self._respawn_at.items()):
                if when <= now:
                    del self._respawn_at[idx]
                    self._respawn(idx, spawn_target, target_loader)
            if self.reload_signal:
                reload: Any = self._reload  # Granian's servers carry no type hints
                reload(spawn_target, target_loader)
        self._drain()

    def _schedule_respawn(self, idx: int) -> None:
        lived = time.monotonic() - self.wrks[idx].birth
        failures = 1 if lived >= STABLE_SECONDS else self._failures.get(idx, 0) + 1
        self._failures[idx] = failures
        delay = backoff(failures)
        self._respawn_at[idx] = time.monotonic() + delay
        logger.error(f"worker-{idx + 1} died after {lived:.1f} s; replacing it in {delay:.0f} s")

    def _respawn(self, idx: int, spawn_target: Any, target_loader: Any) -> None:
        dead: Any = self.wrks[idx]  # Granian's workers carry no type hints
        dead.join()  # already reaped by its watcher thread
        worker: Any = self._spawn_worker(idx=idx, target=spawn_target, callback_loader=target_loader)
        worker.start()
        self.wrks[idx] = worker
        self._metrics.incr_respawn_err(1)

    def _drain(self) -> None:
        """Let the workers finish what is in flight and leave, for at most the grace period."""
        deadline = time.monotonic() + self.shutdown_grace
        logger.info(f"draining: requests in flight get up to {self.shutdown_grace:g} s to finish")
        workers: list[Any] = list(self.wrks)  # Granian's workers carry no type hints
        for worker in workers:
            worker.interrupt_by_parent = True  # its exit now is the drain's doing, not a failure
        self.interrupt_children.clear()
        self.interrupt_signal = False
        while not self.interrupt_signal:
            alive = [worker for worker in workers if worker.is_alive()]
            remaining = deadline - time.monotonic()
            if not alive or remaining <= 0:
                break
            for worker in alive:  # repeated: a worker still starting ignores the signal until it can drain
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.inner.pid, DRAIN_SIGNAL)
            self.main_loop_interrupt.wait(min(DRAIN_POLL_SECONDS, remaining))
            self.main_loop_interrupt.clear()
        left = sum(worker.is_alive() for worker in workers)
        logger.info(f"drain over: {left} worker(s) still busy are stopped" if left else "drain over")


def worker_app() -> Dockyard:
    """The factory each worker calls: the app, and the drain signal wired to it."""
    from dockyard.server import create_app  # here, so the supervisor itself never loads the application

    app = create_app()

    def leave() -> None:
        signal.signal(DRAIN_SIGNAL, signal.SIG_IGN)  # the supervisor repeats it; it must not kill us now
        os.kill(os.getpid(), signal.SIGTERM)  # Granian's own stop: closes the socket, runs the lifespan end

    app.drain.on_idle = leave
    signal.signal(DRAIN_SIGNAL, lambda _signum, _frame: app.drain.begin())
    return app


def main() -> None:
    settings = Settings.from_environment()
    # Workers inherit this: one still starting ignores the drain signal (instead of dying of it) until
    # `worker_app` installs its handler.
    signal.signal(DRAIN_SIGNAL, signal.SIG_IGN)
    held = taken_over()
    if held is None:  # started directly, not exec'd by `dockyard serve`
        try:
            held = claim(settings.data_dir, settings.host, settings.port)
        except Refused as refused:
            print(f"dockyard: {refused}", file=sys.stderr)  # the one line, before any logging
            sys.exit(refused.exit_code)
    Supervisor(
        "dockyard.launcher:worker_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        log_access=False,
        workers_kill_timeout=KILL_TIMEOUT_SECONDS,
        shutdown_grace=settings.shutdown_grace,
        **tls_options(settings),
        listener=held.listener,
    ).serve()


def tls_options(settings: Settings) -> dict[str, Any]:
    """Granian's HTTPS options. Its minimum is TLS 1.3 unless told; Dockyard's is 1.2 (as AWS's endpoints):
    older Java, .NET and proxy stacks still stop there, and 1.2 with rustls offers only AEAD ECDHE suites."""
    if settings.tls_cert is None or settings.tls_key is None:
        return {}
    minimum = SSLProtocols.tls13 if settings.tls_min_version == "1.3" else SSLProtocols.tls12
    return {"ssl_cert": Path(settings.tls_cert), "ssl_key": Path(settings.tls_key), "ssl_protocol_min": minimum}


if __name__ == "__main__":
    main()
