"""SQLite: one aiosqlite connection per process; every transaction is one trip to its thread."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.storage.base import Database, Listener, Row, TransactionBody, Tx
from bot.storage.outage import OutageLog

# aiosqlite logs every statement with its parameters at DEBUG, and parameters include
# secrets (per-job webhook secrets): never let those records through.
logging.getLogger("aiosqlite").setLevel(logging.INFO)

T = TypeVar("T")
WAL_SWITCH_ATTEMPTS = 50  # 0.1 s apart
# How long a statement waits for another connection's lock before failing with "database is
# locked" (a job's path then retries: bot/storage/outage.py).
BUSY_TIMEOUT_MS = 5000


class BodyAwaitedElsewhere(RuntimeError):
    """A transaction body awaited something other than its transaction."""


def run_to_completion(awaitable: Awaitable[T]) -> T:
    """Run a transaction body that never suspends, synchronously.

    On SQLite the `Tx` methods do their work at once and never yield to an event loop, so
    a body is a coroutine that completes on its first step: driving it by hand runs the
    whole transaction on the database thread in one trip. A body that awaits anything else
    (a network call, a sleep) would hold SQLite's write lock across it; it is refused.
    """
    steps = awaitable.__await__()
    try:
        steps.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    steps.close()
    raise BodyAwaitedElsewhere("a transaction body may only await its transaction")


class SQLiteTx(Tx):
    """The open transaction, on the database thread (the plain sqlite3 connection)."""

    backend = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.notifications: list[tuple[str, str]] = []

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, tuple(params)).rowcount

    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(self._conn.execute(sql, tuple(params)).fetchall())

    async def lock(self, key: str) -> None:
        """Nothing to take: BEGIN IMMEDIATE already serialises every writer."""

    async def notify(self, channel: str, payload: str) -> None:
        self.notifications.append((channel, payload))  # delivered after COMMIT


async def _switch_to_wal(conn: aiosqlite.Connection) -> None:
    # Switching (or checking) the journal mode needs a moment's exclusive lock, and SQLite
    # answers "locked" at once, without the busy timeout, while another process opening the
    # same new file holds it: retry for as long as the busy timeout would have waited.
    for attempt in range(WAL_SWITCH_ATTEMPTS):
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_SWITCH_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.1)


class SQLiteDatabase(Database):
    """Wraps one aiosqlite connection.

    aiosqlite runs every statement on a single worker thread, in the order they were
    queued. A transaction is one function queued there (BEGIN IMMEDIATE, the body, COMMIT
    back to back), so transactions from different tasks never interleave and need no lock
    of ours; concurrency comes from keeping them short.
    """

    backend = "sqlite"

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._conn = connection
        self.outage = OutageLog("SQLite")
        # One process per SQLite file: notifications only need to reach this one.
        self._listeners: dict[str, list[Listener]] = {}

    @classmethod
    async def connect(cls, path: Path | str, *, migrate: bool = True) -> SQLiteDatabase:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            conn.row_factory = aiosqlite.Row
            await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            await _switch_to_wal(conn)
            # FULL: in WAL mode NORMAL may lose the last commits on power failure, and losing
            # a job's queued -> submitting commit means sending (and paying for) it twice.
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA wal_autocheckpoint=4000")
            db = cls(conn)
            if migrate:
                from bot.storage.migrations import apply_migrations

                await apply_migrations(db)
        except BaseException:
            # aiosqlite's thread is not a daemon: left open, it would keep the process alive.
            await conn.close()
            raise
        return db

    async def close(self) -> None:
        await self._conn.close()

    async def _run(self, body: TransactionBody[T]) -> T:
        """Run `body` as one write transaction in a single trip to the database thread.

        Each trip to aiosqlite's thread costs about as much as the SQL of a small write, so
        BEGIN IMMEDIATE, the body and COMMIT happen back to back on the database thread. A
        cancelled caller leaves the transaction to finish there, before anything queued
        later.
        """

        def transaction(conn: sqlite3.Connection) -> tuple[T, list[tuple[str, str]]]:
            conn.execute("BEGIN IMMEDIATE")
            tx = SQLiteTx(conn)
            try:
                result = run_to_completion(body(tx))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error:
                # A COMMIT that fails (the disk is full, a reader holds the lock past the busy
                # timeout) leaves the transaction open: end it, or every later BEGIN fails.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result, tx.notifications

        # aiosqlite has no public way to run a function on its thread; `_execute` and `_conn`
        # are its subclass hooks (stable since 0.17, exercised by every test).
        result: T
        result, notifications = await self._conn._execute(  # type: ignore[no-untyped-call]
            transaction, self._conn._conn
        )
        loop = asyncio.get_running_loop()
        for channel, payload in notifications:
            for listener in self._listeners.get(channel, ()):
                loop.call_soon(listener, payload)
        return result

    async def listen(self, channel: str, listener: Listener) -> None:
        self._listeners.setdefault(channel, []).append(listener)

    # One round trip each: a statement left open between execute and fetch would hold a read
    # snapshot across awaits, where another connection's BEGIN IMMEDIATE could trip over it.
    async def _fetch_all(self, sql: str, params: Sequence[Any]) -> list[Row]:
        return list(await self._conn.execute_fetchall(sql, tuple(params)))
