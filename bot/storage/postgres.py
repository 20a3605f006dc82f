"""PostgreSQL through asyncpg: a pool of connections shared by the process's tasks.

Several processes share one database; PostgreSQL does the coordinating (row locks,
advisory locks, `FOR UPDATE SKIP LOCKED`), so no home-made coordinator is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, TypeVar

import asyncpg

from bot.storage.base import Database, Listener, Row, TransactionBody, Tx
from bot.storage.outage import OutageLog

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_POOL_SIZE = 10
# Every lock a process can hold has a timeout, so a frozen process (SIGSTOP, a paused VM, a
# half-open connection) cannot stall the fleet: its transaction left idle is ended by the
# server, which frees its locks; a claim waiting behind it gives up and tries again; a lost
# peer is noticed by TCP keepalives in under a minute instead of two hours.
SESSION_SETTINGS = {
    # Our transactions never wait on anything between statements. A process frozen inside
    # a claim holds the queue's lock this long: kept within a short lease (LEASE_SECONDS 3
    # plus a few seconds; at 10 s the other processes' deliveries stopped for 9 s).
    "idle_in_transaction_session_timeout": "5s",
    "lock_timeout": "5s",
    "statement_timeout": "60s",
    "tcp_keepalives_idle": "15",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}
# A process frozen in the middle of a statement (between asyncpg's prepare and its execute)
# leaves its session "active", waiting for the client: no server timeout applies there (not
# idle in a transaction; statement_timeout does not run between the protocol's messages), so
# a lock it holds stays held until it wakes. Other processes end such a session once it has
# waited this long (`cut_off_frozen_lock_holders`); a live process never leaves one waiting.
FROZEN_HOLDER_SECONDS = 5.0
_CUT_OFF_FROZEN_HOLDERS = (
    "SELECT COUNT(pg_terminate_backend(activity.pid)) FROM pg_stat_activity AS activity"
    " WHERE activity.datname = current_database() AND activity.pid <> pg_backend_pid()"
    " AND activity.state = 'active' AND activity.wait_event = 'ClientRead'"
    " AND activity.state_change < clock_timestamp() - make_interval(secs => $1)"
    " AND EXISTS (SELECT 1 FROM pg_locks AS held WHERE held.pid = activity.pid"
    " AND held.locktype = 'advisory' AND held.granted)"
)
# The client side of the same promise: a server that stops answering (paused, or the network
# dropped) fails the call instead of hanging it.
COMMAND_TIMEOUT = 75.0
CONNECT_TIMEOUT = 10.0
# Shared by every Fluxcord process: who holds it is migrating the schema.
MIGRATION_LOCK_KEY = 0x466C7578  # "Flux"


@functools.lru_cache(maxsize=2048)
def to_numbered_placeholders(sql: str) -> str:
    """`?` placeholders (written once for both engines) as PostgreSQL's `$1, $2, …`.

    Question marks inside string literals, quoted identifiers and comments are left alone.
    """
    out: list[str] = []
    number = 0
    index = 0
    length = len(sql)
    while index < length:
        char = sql[index]
        if char in "'\"":
            end = sql.find(char, index + 1)
            while end != -1 and end + 1 < length and sql[end + 1] == char:  # '' escapes '
                end = sql.find(char, end + 2)
            end = length - 1 if end == -1 else end
            out.append(sql[index : end + 1])
            index = end + 1
            continue
        if sql.startswith("--", index):
            end = sql.find("\n", index)
            end = length if end == -1 else end
            out.append(sql[index:end])
            index = end
            continue
        if char == "?":
            number += 1
            out.append(f"${number}")
        else:
            out.append(char)
        index += 1
    return "".join(out)


def _rows_changed(status: str) -> int:
    # asyncpg returns the command tag: "UPDATE 3", "INSERT 0 1", "DELETE 0", "SELECT 2".
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def _number(text: str) -> int | float:
    # The schema stores no NUMERIC columns: numerics only come from SUM() over integers,
    # which SQLite returns as int. Keep it so; arithmetic mixing Decimal and float fails.
    return int(text) if text.lstrip("-").isdigit() else float(text)


async def _prepare_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "numeric", encoder=str, decoder=_number, schema="pg_catalog", format="text"
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What the pool does to a connection given back: nothing. By default asyncpg resets
    the session (advisory unlocks, CLOSE ALL, UNLISTEN *, RESET ALL) with a round trip and
    a transaction of the server's on every release, doubling the cost of a short
    transaction. Ours leave no session state: locks are transaction locks, LISTEN has its
    own connection, and `migrating` undoes its session lock and setting itself. (An open
    transaction is still rolled back: asyncpg does that before calling this.)"""


class PostgresTx(Tx):
    backend = "postgres"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        if not params:  # a script (a migration) may hold several statements
            return _rows_changed(await self._conn.execute(sql))
        return _rows_changed(await self._conn.execute(to_numbered_placeholders(sql), *params))

    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = [tuple(row) for row in rows]
        if batch:
            await self._conn.executemany(to_numbered_placeholders(sql), batch)

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        rows: list[Row] = await self._conn.fetch(to_numbered_placeholders(sql), *params)
        return rows

    async def lock(self, key: str) -> None:
        # Released by COMMIT or ROLLBACK: a crashed body can never leave it held.
        await self._conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)

    async def notify(self, channel: str, payload: str) -> None:
        # PostgreSQL delivers it at COMMIT, and drops it on ROLLBACK.
        await self._conn.execute("SELECT pg_notify($1, $2)", channel, payload)


class ListenConnection:
    """The one connection a process LISTENs on, outside the pool (a pooled connection would
    go back to the pool and stop listening). Reconnects after it is lost, with back-off;
    notifications sent while it was down are gone, which is why listeners also poll."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._listeners: dict[str, list[Listener]] = {}
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self.reconnects = 0

    @property
    def backend_pid(self) -> int | None:
        """The server process of the listening connection (tests terminate it)."""
        return None if self._conn is None or self._conn.is_closed() else self._conn.get_server_pid()

    async def listen(self, channel: str, listener: Listener) -> None:
        first = channel not in self._listeners
        self._listeners.setdefault(channel, []).append(listener)
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep_connected(), name="postgres-listen")
        elif first and self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                await self._conn.add_listener(channel, self._deliver)

    def _deliver(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        for listener in self._listeners.get(channel, ()):
            try:
                listener(payload)
            except Exception:
                log.exception("a listener on %s failed", channel)

    async def _keep_connected(self) -> None:
        delay = 0.2
        while True:
            try:
                conn = await asyncpg.connect(
                    self._url, timeout=CONNECT_TIMEOUT, server_settings=SESSION_SETTINGS
                )
                conn.add_termination_listener(lambda _conn: self._lost.set())
                # Until `self._conn` is set, `listen` leaves new channels to this loop: one
                # added while an earlier one was being registered is picked up here too.
                registered: set[str] = set()
                while pending := [c for c in self._listeners if c not in registered]:
                    for channel in pending:
                        await conn.add_listener(channel, self._deliver)
                        registered.add(channel)
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                # The store's own calls report the outage (once); listeners poll meanwhile.
                log.debug("cannot LISTEN on PostgreSQL (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)
                continue
            self._conn, delay = conn, 0.2
            self._lost.clear()
            await self._lost.wait()
            self.reconnects += 1
            log.info("the PostgreSQL LISTEN connection was lost; reconnecting")
            with contextlib.suppress(Exception):
                await conn.close(timeout=1)
            self._conn = None

    async def close(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=1)


class PostgresDatabase(Database):
    backend = "postgres"

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self.listener = ListenConnection(url)
        self.outage = OutageLog("PostgreSQL")

    @classmethod
    async def connect(
        cls, url: str, *, migrate: bool = True, pool_size: int = DEFAULT_POOL_SIZE
    ) -> PostgresDatabase:
        # min_size=0: a pool that keeps a floor of connections reconnects it in the background
        # during an outage, logging a traceback per attempt; ours connect when they are needed.
        pool = await asyncpg.create_pool(
            url,
            min_size=0,
            max_size=pool_size,
            init=_prepare_connection,
            reset=_keep_session,
            server_settings=SESSION_SETTINGS,
            command_timeout=COMMAND_TIMEOUT,
            timeout=CONNECT_TIMEOUT,
        )
        db = cls(pool, url)
        try:
            if migrate:
                from bot.storage.migrations import apply_migrations

                await apply_migrations(db)
        except BaseException:
            await pool.close()
            raise
        return db

    async def close(self) -> None:
        await self.listener.close()
        await self._pool.close()

    async def listen(self, channel: str, listener: Listener) -> None:
        await self.listener.listen(channel, listener)

    async def _run(self, body: TransactionBody[T]) -> T:
        async with self._pool.acquire() as conn, conn.transaction():
            return await body(PostgresTx(conn))

    async def _fetch_all(self, sql: str, params: Sequence[Any]) -> list[Row]:
        rows: list[Row] = await self._pool.fetch(to_numbered_placeholders(sql), *params)
        return rows

    async def cut_off_frozen_lock_holders(self, *, older_than: float | None = None) -> int:
        """See FROZEN_HOLDER_SECONDS. The session ends, its transaction rolls back, and its
        process, when it wakes, meets a lost connection: an outage it retries through."""
        waited = FROZEN_HOLDER_SECONDS if older_than is None else older_than
        value = await self._pool.fetchval(_CUT_OFF_FROZEN_HOLDERS, waited)
        cut = int(value or 0)
        if cut:
            log.warning(
                "ended %d database session(s) frozen mid-statement while holding a fleet-wide"
                " lock (a paused process?); its work goes on elsewhere",
                cut,
            )
        return cut

    @contextlib.asynccontextmanager
    async def migrating(self) -> AsyncIterator[None]:
        """Hold the fleet-wide migration lock: processes starting together migrate in turn."""
        async with self._pool.acquire() as conn:
            restored = False
            try:
                # Another process's migration may take longer than the session's lock_timeout.
                await conn.execute("SET lock_timeout = 0")
                await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
                try:
                    yield
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
                    await conn.execute("RESET lock_timeout")
                    restored = True
            finally:
                if not restored:
                    # The pool does not reset sessions (`_keep_session`): a connection that
                    # may still hold the lock or the setting is closed, not given back.
                    conn.terminate()
