"""The SQLite connection: one aiosqlite connection per process, transactions serialised."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.storage.migrations import apply_migrations

# aiosqlite logs every statement with its parameters at DEBUG, and parameters include
# secrets (per-job webhook secrets): never let those records through.
logging.getLogger("aiosqlite").setLevel(logging.INFO)

T = TypeVar("T")
# A transaction body that runs on the database thread, against the plain sqlite3 connection.
TransactionBody = Callable[[sqlite3.Connection], T]
WAL_SWITCH_ATTEMPTS = 50  # 0.1 s apart


async def _finish(statement: Awaitable[T]) -> T:
    """Run a transaction-control statement to completion even if our task is cancelled.

    aiosqlite keeps executing a statement after the awaiting task is cancelled; a BEGIN or
    COMMIT that completes unseen would leave the shared connection in the wrong state.
    """
    task = asyncio.ensure_future(statement)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
        raise


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


class Database:
    """Wraps one aiosqlite connection.

    aiosqlite runs every statement on a single worker thread, so concurrency comes from
    keeping transactions short. Writers from different tasks would otherwise interleave
    inside one transaction on the shared connection, so every write goes through
    `transaction()`, which holds an asyncio lock and uses BEGIN IMMEDIATE.
    """

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._conn = connection
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str, *, migrate: bool = True) -> Database:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            conn.row_factory = aiosqlite.Row
            await conn.execute("PRAGMA busy_timeout=5000")
            await _switch_to_wal(conn)
            # FULL: in WAL mode NORMAL may lose the last commits on power failure, and losing
            # a job's queued -> submitting commit means sending (and paying for) it twice.
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA wal_autocheckpoint=4000")
            db = cls(conn)
            if migrate:
                await apply_migrations(db)
        except BaseException:
            # aiosqlite's thread is not a daemon: left open, it would keep the process alive.
            await conn.close()
            raise
        return db

    async def close(self) -> None:
        await self._conn.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            try:
                await _finish(self._conn.execute("BEGIN IMMEDIATE"))
            except asyncio.CancelledError:
                await _finish(self._conn.execute("ROLLBACK"))  # the BEGIN did complete
                raise
            try:
                yield self._conn
            except BaseException:
                await _finish(self._conn.execute("ROLLBACK"))
                raise
            else:
                await _finish(self._conn.execute("COMMIT"))

    async def run(self, body: TransactionBody[T]) -> T:
        """Run `body` as one write transaction in a single trip to the database thread.

        Each trip to aiosqlite's thread costs about as much as the SQL of a small write, so
        the hot paths (creating a job with its reservation, settling it) are synchronous
        bodies run here: BEGIN IMMEDIATE, the body and COMMIT happen back to back on the
        database thread, and an exception in the body rolls everything back.
        """

        def transaction(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        if self._write_lock.locked():
            # A multi-statement `transaction()` is open on the connection: wait for it to end.
            async with self._write_lock:
                return await self._on_database_thread(transaction)
        # Bodies need no lock among themselves: the database thread runs its queue in order
        # and each body is one whole transaction there. (Nothing awaits between the check
        # above and the enqueueing, so no `transaction()` can begin in between.)
        return await self._on_database_thread(transaction)

    async def _on_database_thread(self, function: TransactionBody[T]) -> T:
        # aiosqlite has no public way to run a function on its thread; `_execute` and `_conn`
        # are its subclass hooks (stable since 0.17, exercised by every test). A cancelled
        # caller leaves the function to finish on the thread, before anything queued later.
        result: T = await self._conn._execute(  # type: ignore[no-untyped-call]
            function, self._conn._conn
        )
        return result

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one write statement in its own transaction; returns the rows changed."""
        async with self.transaction() as conn:
            cursor = await conn.execute(sql, tuple(params))
            return cursor.rowcount

    # One round trip each: a statement left open between execute and fetch would hold a read
    # snapshot across awaits, where another connection's BEGIN IMMEDIATE could trip over it.
    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        rows = await self._conn.execute_fetchall(sql, tuple(params))
        return next(iter(rows), None)

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        return list(await self._conn.execute_fetchall(sql, tuple(params)))

    async def fetch_value(self, sql: str, params: Iterable[Any] = ()) -> Any:
        row = await self.fetch_one(sql, params)
        return None if row is None else row[0]
