"""The server's supervisor process: starts Granian workers that build the app from the environment.

`dockyard serve` prepares the data directory, then replaces itself with this module (exec), so the
long-lived supervisor holds only Granian, not the whole application; each worker imports the app itself.
"""

from __future__ import annotations

from granian import Granian
from granian.constants import Interfaces

from dockyard.config import Settings


def main() -> None:
    settings = Settings.from_environment()
    Granian(
        "dockyard.server:create_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        log_access=False,
        # After SIGTERM, requests in flight get this long to finish, then the workers are killed: a stalled
        # client cannot hold the shutdown open (its upload stays resumable from what reached the disk).
        workers_kill_timeout=5,
    ).serve()


if __name__ == "__main__":
    main()
