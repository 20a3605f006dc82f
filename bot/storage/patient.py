"""A store whose every call waits through a database outage (bot/storage/outage.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from bot.storage.base import Backend, Database, Reads, Row, TransactionBody
from bot.storage.outage import DEFAULT_PATIENCE, retry_through_outage

T = TypeVar("T")


class Patient(Reads):
    """The store `db`, each call retried through an outage for up to `patience` seconds."""

    def __init__(self, db: Database, *, patience: float = DEFAULT_PATIENCE) -> None:
        self.db = db
        self.patience = patience

    @property
    def backend(self) -> Backend:
        return self.db.backend

    async def run(self, body: TransactionBody[T]) -> T:
        return await retry_through_outage(lambda: self.db.run(body), patience=self.patience)

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await retry_through_outage(
            lambda: self.db.fetch_all(sql, params), patience=self.patience
        )

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self.run(lambda tx: tx.execute(sql, params))

    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = [tuple(row) for row in rows]
        await self.run(lambda tx: tx.execute_many(sql, batch))
