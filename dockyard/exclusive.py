"""What one `dockyard serve` holds alone for its whole life: its listening socket and its data directory.

The socket is bound once, by `serve` before it prints anything, without SO_REUSEPORT, and every worker accepts
from that one socket. (Granian would bind one socket per worker with SO_REUSEPORT, so a second server started
on a busy port came up silently and the kernel split the connections between two registries.) On Linux
SO_REUSEADDR only lets a restart bind while old connections linger in TIME_WAIT; it never lets two sockets
listen on one address.

The data directory is claimed with an exclusive `flock` on `<data-dir>/.lock` (0600, holding the PID for the
message a second server prints). The lock belongs to the open file, so it lives through the exec into the
supervisor and through the fork of each worker, and the kernel drops it when the last of them exits, even
killed. Only servers take it: the admin, gc and scan commands may run beside a server on its data directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dockyard.storage.private import FILE_MODE

LOCK_FILE: Final = ".lock"
LISTEN_FD_ENV: Final = "DOCKYARD_LISTEN_FD"  # `serve` hands its descriptors over to the supervisor it execs
LOCK_FD_ENV: Final = "DOCKYARD_LOCK_FD"
BACKLOG: Final = 1024  # Granian's default
EXIT_CANNOT_LISTEN: Final = 3  # documented in the README
EXIT_DATA_DIR_IN_USE: Final = 4


class Refused(Exception):
    """The server cannot start; `str()` is the one line to print, `exit_code` the process's exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Held:
    listener: socket.socket
    lock_fd: int

    def hand_over(self) -> None:
        """Keep both open across the exec into the supervisor, which finds them in the environment."""
        self.listener.set_inheritable(True)
        os.set_inheritable(self.lock_fd, True)
        os.environ[LISTEN_FD_ENV] = str(self.listener.fileno())
        os.environ[LOCK_FD_ENV] = str(self.lock_fd)

    def close(self) -> None:
        self.listener.close()
        os.close(self.lock_fd)  # releases the lock


def claim(data_dir: Path, host: str, port: int) -> Held:
    """The data directory locked (first: its message names who holds it) and the address bound."""
    lock_fd = lock_data_dir(data_dir)
    try:
        return Held(listen(host, port), lock_fd)
    except BaseException:
        os.close(lock_fd)
        raise


@contextlib.contextmanager
def claimed(data_dir: Path, host: str, port: int) -> Iterator[Held]:
    """`claim`, both released if the start fails before the exec."""
    held = claim(data_dir, host, port)
    try:
        yield held
    finally:  # reached only when `serve` did not exec (a failed start, or a test standing in for the exec)
        held.close()
        for name in (LISTEN_FD_ENV, LOCK_FD_ENV):
            os.environ.pop(name, None)


def taken_over() -> Held | None:
    """In the supervisor: what `serve` held before the exec (None when started some other way)."""
    listen_fd, lock_fd = os.environ.pop(LISTEN_FD_ENV, None), os.environ.pop(LOCK_FD_ENV, None)
    if listen_fd is None or lock_fd is None:
        return None
    held = Held(socket.socket(fileno=int(listen_fd)), int(lock_fd))
    # Workers are forked, not exec'd, so they keep both anyway; no program a worker runs should.
    held.listener.set_inheritable(False)
    os.set_inheritable(held.lock_fd, False)
    return held


def lock_data_dir(data_dir: Path) -> int:
    """A descriptor holding the data directory's exclusive lock, or `Refused` naming who holds it."""
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # a file left by an older version keeps its mode through O_CREAT
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _recorded_pid(fd)
            by = f"another dockyard serve (PID {holder})" if holder else "another dockyard serve"
            raise Refused(
                f"the data directory {data_dir} is in use by {by}; stop it or choose another --data-dir",
                EXIT_DATA_DIR_IN_USE,
            ) from None
        except OSError as error:  # a file system without locks: two servers could not be kept apart
            reason = f"cannot lock the data directory {data_dir}: {error.strerror}"
            raise Refused(reason, EXIT_DATA_DIR_IN_USE) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # the exec keeps the PID: it stays the server's
    except BaseException:
        os.close(fd)
        raise
    return fd


def _recorded_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdecimal() else None  # the holder may be between truncating and writing


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on `host`:`port`, or `Refused` with the reason in one line."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as error:
        reason = error.strerror if isinstance(error, socket.gaierror) else str(error)
        raise Refused(f"cannot listen on {shown}: {reason}; choose another --host", EXIT_CANNOT_LISTEN) from None
    listener = socket.socket(family, kind, protocol)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Granian's own; accepted ones inherit it
        listener.bind(address)
        listener.listen(BACKLOG)
    except OSError as error:
        listener.close()
        raise Refused(f"cannot listen on {shown}: {_reason(error)}", EXIT_CANNOT_LISTEN) from None
    return listener


def _reason(error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return "the address is already in use (another server?); choose another --port"
    if error.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges); choose another --port"
    if error.errno == errno.EADDRNOTAVAIL:
        return "the address is not one of this machine's; choose another --host"
    return f"{(error.strerror or str(error)).lower()}"
