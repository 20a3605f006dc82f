"""What stops a start-up early with one clear line: another instance on the same database,
or an address the web server can't listen on."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path
from typing import ClassVar

from filelock import FileLock, Timeout

from bot.errors import AnotherInstanceRunning, StartupError


class InstanceLock:
    """An exclusive lock on ``<database>.lock``, held for the life of the process.

    Two bots on one database would each take the other's running jobs for interrupted ones
    and fail them. `filelock` takes an OS lock (flock on Linux and macOS, LockFileEx through
    msvcrt on Windows) that is dropped when the process ends, however it ends, so a crash
    never leaves a stale lock behind.
    """

    # filelock releases a lock whose object is garbage collected: the locks held are kept
    # here, so that `InstanceLock(path).acquire()` holds until release() or the process ends.
    _held: ClassVar[set[InstanceLock]] = set()

    def __init__(self, database_path: Path) -> None:
        self.database_path = database_path
        self.path = database_path.with_name(database_path.name + ".lock")
        self._lock = FileLock(
            self.path,
            blocking=False,  # a second instance is refused at once, never left waiting
            thread_local=False,
            on_acquired=_write_holder_pid,
        )

    def acquire(self) -> None:
        """Take the lock, or raise `AnotherInstanceRunning`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise AnotherInstanceRunning(
                f"Another Fluxcord instance is already running on the database "
                f"{self.database_path} (it holds {self.path}): stop it first, or give this "
                "one its own DATABASE_PATH."
            ) from None
        InstanceLock._held.add(self)

    def release(self) -> None:
        InstanceLock._held.discard(self)
        if self._lock.is_locked:
            self._lock.release()

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _write_holder_pid(fd: int) -> None:
    """The holder's process id in the lock file, for an operator who wonders which one it is
    (filelock hands over the locked descriptor; it stays open and locked). A courtesy only:
    a file system that refuses the write does not stop the start."""
    with contextlib.suppress(OSError):
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())


def address_in_use_message(host: str, port: int, exc: OSError) -> str:
    """One line for a web server that can't listen: which address, and what to change."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        problem = "is already in use by another program"
    else:
        problem = f"can't be listened on ({exc.strerror or type(exc).__name__})"
    return (
        f"The web server's address {shown} {problem}: set WEB_PORT (or WEB_HOST) to "
        "another address, or stop what is using it."
    )


def check_web_address(host: str, port: int) -> None:
    """Raise `StartupError` now if the web server could not listen on `host:port`.

    Checked before connecting to Discord, so a busy port is reported as such (the bot
    re-checks when it really listens: the address can be taken in between).
    """
    if port == 0:
        return  # any free port
    try:
        try_binding(host, port)
    except OSError as exc:
        raise StartupError(address_in_use_message(host, port, exc)) from None


def try_binding(host: str, port: int) -> None:
    """Bind `host:port` and let go at once; raises the OSError a listener would meet."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as probe:
        # As the web server itself binds: a port left in TIME_WAIT is free to reuse.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
