"""The store, whatever holds it: SQLite (the embedded default) or PostgreSQL (several processes).

Every write is a *transaction body*: an `async def body(tx: Tx)` that only awaits `tx`.
`Database.run(body)` runs it as one transaction and rolls it back if it raises. SQL is
written once, with `?` placeholders, in the dialect both engines share; `tx.backend` says
which engine runs it where the two must differ.

- On SQLite the body runs on the connection's thread in one trip (`bot.storage.sqlite`):
  BEGIN IMMEDIATE serialises every writer, so a body sees nothing change under it.
- On PostgreSQL (`bot.storage.postgres`) bodies from many tasks and processes run at once
  under READ COMMITTED: a body that reads, decides and then writes (an allowance check, a
  cap) takes `await tx.lock(key)` first, so two writers deciding on the same thing queue.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from bot.storage.outage import OutageLog, is_outage, mark_database_outage

T = TypeVar("T")
Backend = Literal["sqlite", "postgres"]
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class Row(Protocol):
    """A result row: by column position or name (sqlite3.Row and asyncpg.Record both are)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


def is_postgres_url(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


def json_integer(backend: Backend, column: str, *path: str) -> str:
    """SQL for an integer inside a JSON text column (NULL when missing): the one place the
    two engines spell a JSON lookup differently."""
    if backend == "postgres":
        return f"(({column})::jsonb #>> '{{{','.join(path)}}}')::bigint"
    return f"json_extract({column}, '$.{'.'.join(path)}')"


# The database's own clock, in Unix seconds: leases shared by several processes are measured
# on it, so no process's clock (or its drift) decides whose lease has run out.
DATABASE_NOW: dict[Backend, str] = {
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
    "postgres": "extract(epoch FROM clock_timestamp())::double precision",
}

# Rows inserted at the same instant keep their insertion order on SQLite (its rowid); on
# PostgreSQL, which has no such column, the id breaks the tie.
INSERTION_ORDER: dict[Backend, str] = {"sqlite": "rowid", "postgres": "id"}


class Reads(ABC):
    """The reads a transaction and a store both offer, built on `fetch_all`."""

    @abstractmethod
    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = await self.fetch_one(sql, params)
        return None if row is None else row[0]


class Tx(Reads):
    """One open transaction. Its methods are the only things a transaction body awaits."""

    backend: Backend

    @abstractmethod
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the rows it changed."""

    @abstractmethod
    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    @abstractmethod
    async def lock(self, key: str) -> None:
        """Hold `key` until this transaction ends: another transaction locking the same key
        waits. Take it before reading what the body decides on."""

    @abstractmethod
    async def notify(self, channel: str, payload: str) -> None:
        """Tell every process listening on `channel` (`Database.listen`), once this
        transaction commits; nothing if it rolls back. Best effort: a listener that was
        disconnected misses it, so every listener also has a poll to fall back on."""


Listener = Callable[[str], None]


TransactionBody = Callable[[Tx], Awaitable[T]]


class Database(Reads):
    """The store; `bot.storage.db.open_database` opens one of the two engines.

    Every call goes through `run` or `fetch_all`, which keep `outage` (one WARNING when the
    database stops answering and one when it is back, bot/storage/outage.py)."""

    backend: Backend
    outage: OutageLog
    # What this store has asked of the database: transactions committed by `run`, and reads
    # outside one (on PostgreSQL each is a transaction of its own). Benches and tests read
    # them to count the database work per job.
    committed: int = 0
    reads: int = 0

    @property
    def shared(self) -> bool:
        """Whether other processes may use this store at the same time (PostgreSQL)."""
        return self.backend == "postgres"

    async def cut_off_frozen_lock_holders(self, *, older_than: float | None = None) -> int:
        """End the sessions that hold a fleet-wide lock while their process is frozen (for
        `older_than` seconds, else the backend's default); how many. Only other processes
        can be frozen (SQLite has none): PostgreSQL overrides."""
        return 0

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def listen(self, channel: str, listener: Listener) -> None:
        """Call `listener(payload)` on the event loop for each notification on `channel`."""

    async def run(self, body: TransactionBody[T]) -> T:
        """Run `body` as one write transaction; an exception in it rolls everything back."""
        try:
            result = await self._run(body)
        except Exception as exc:
            if is_outage(exc):
                mark_database_outage(exc)
                self.outage.failed(exc)
            raise
        self.committed += 1
        self.outage.answered()
        return result

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """A read outside any transaction (each statement sees the latest commits)."""
        try:
            rows = await self._fetch_all(sql, params)
        except Exception as exc:
            if is_outage(exc):
                mark_database_outage(exc)
                self.outage.failed(exc)
            raise
        self.reads += 1
        # Not the end of an outage: SQLite answers reads while another connection holds the
        # write lock. A committed transaction is (the heartbeat writes every few seconds).
        return rows

    @abstractmethod
    async def _run(self, body: TransactionBody[T]) -> T: ...

    @abstractmethod
    async def _fetch_all(self, sql: str, params: Sequence[Any]) -> list[Row]: ...

    @contextlib.asynccontextmanager
    async def migrating(self) -> AsyncIterator[None]:
        """Held while migrations are applied. SQLite needs nothing: each migration re-checks
        under BEGIN IMMEDIATE whether another process applied it meanwhile."""
        yield

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement in its own transaction; returns the rows changed."""
        return await self.run(lambda tx: tx.execute(sql, params))
