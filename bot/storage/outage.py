"""Riding out a database outage: a PostgreSQL restart, a full disk, a lock held past SQLite's
busy timeout, a connection cut by a timeout of our own.

- `is_outage(exc)` tells such a passing failure from a real error (bad SQL, a constraint).
- `OutageLog` turns a stream of failures into two log lines: one WARNING when the database
  stops answering, one when it answers again (every store has one, fed by its every call).
- `retry_through_outage` retries a call with backoff, up to a generous deadline; `Patient`
  (bot/storage/patient.py) is a store whose every call does. A job's path uses it, so a
  job waits for the database and continues where it was instead of failing
  (bot/jobs/store.py). Interactive paths keep the plain store and answer at once.

Retrying a transaction is safe because a body that failed was rolled back. The one doubt,
a COMMIT whose answer was lost, is harmless for job changes: they are compare-and-set, so
the retry finds the job moved on and says so, and the owner's sweep (bot/jobs/work.py)
resumes the job from the state that was committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger("bot.storage")

T = TypeVar("T")

# How long a job's write waits for the database before giving up (the job is then left to
# the owner's sweep, which resumes it when the database is back).
DEFAULT_PATIENCE = 300.0
FIRST_RETRY_DELAY = 0.2
MAX_RETRY_DELAY = 5.0

# SQLite's passing failures: another connection holds the lock past the busy timeout, or the
# disk is full or failing. Anything else (bad SQL, a constraint) is a real error.
_SQLITE_PASSING = (
    "database is locked",
    "database table is locked",
    "database or disk is full",
    "disk i/o error",
    "unable to open database file",
)
# PostgreSQL SQLSTATEs that pass: connection exceptions (08), operator intervention such as
# a restart or shutdown (57P01-57P05), out of connections or resources (53), a lock or
# statement timeout of ours (55P03, 57014), an idle transaction cut off (25P03), and the
# conflicts a retry resolves (40001, 40P01).
_POSTGRES_PASSING_CLASSES = ("08", "53", "57P")
_POSTGRES_PASSING_STATES = frozenset({"55P03", "57014", "25P03", "40001", "40P01"})


def is_lock_timeout(exc: BaseException) -> bool:
    """PostgreSQL gave up waiting for a lock (`lock_timeout`): its holder may be frozen."""
    return str(getattr(exc, "sqlstate", "") or "") == "55P03"


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` is the database being unreachable or stuck for a while, so the same
    call may well succeed later."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return any(passing in text for passing in _SQLITE_PASSING)
    if isinstance(exc, (OSError, TimeoutError)):  # refused, reset, unreachable, timed out
        return True
    asyncpg = sys.modules.get("asyncpg")  # an optional extra: only there when it is used
    if asyncpg is None:
        return False
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state in _POSTGRES_PASSING_STATES or state.startswith(_POSTGRES_PASSING_CLASSES)
    # A connection cut under asyncpg's feet can surface as its protocol's confusion ("cannot
    # switch to state 15; another operation is in progress"); the pool replaces it.
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        return True
    # "connection is closed": it broke between two queries. (A closed pool is not passing:
    # the bot is stopping.)
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


_MET_BY_THE_STORE = "_fluxcord_database_outage"


def mark_database_outage(exc: BaseException) -> None:
    """Note on `exc` that a store call met it as an outage (see `is_database_outage`)."""
    with contextlib.suppress(AttributeError):  # a type without attributes: left unmarked
        setattr(exc, _MET_BY_THE_STORE, True)


def is_database_outage(exc: BaseException) -> bool:
    """`is_outage`, and raised by a store call: where database and network work mix (a
    periodic chore that also posts to Discord), a refused connection to Discord is not the
    database being down, and must still be logged as the error it is."""
    return bool(getattr(exc, _MET_BY_THE_STORE, False))


class OutageLog:
    """One WARNING when the database stops answering and one when it is back, however many
    calls fail in between (each would otherwise log its own traceback)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._since: float | None = None
        self.outages = 0  # how many began (tests and metrics read it)

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException) -> None:
        if self._since is None:
            self._since = time.monotonic()
            self.outages += 1
            log.warning(
                "the database (%s) is not answering (%s); requests wait and retry",
                self._name,
                _describe(exc),
            )

    def answered(self) -> None:
        if self._since is not None:
            lasted = time.monotonic() - self._since
            self._since = None
            log.warning("the database (%s) answers again after %.1f s", self._name, lasted)


def _describe(exc: BaseException) -> str:
    # The class and SQLSTATE only: messages can quote the connection string.
    state = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__} {state}" if state else type(exc).__name__


async def retry_through_outage(
    call: Callable[[], Awaitable[T]], *, patience: float, what: str = "a database call"
) -> T:
    """`call()`, retried with backoff while it fails with an outage, until `patience`
    seconds have passed; then (or on any other error) its exception is raised."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    delay = FIRST_RETRY_DELAY
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_outage(exc) or loop.time() + delay > deadline:
                raise
            log.debug("%s failed (%s); retrying in %.1f s", what, _describe(exc), delay)
        await asyncio.sleep(delay * random.uniform(0.8, 1.2))
        delay = min(MAX_RETRY_DELAY, delay * 2)
