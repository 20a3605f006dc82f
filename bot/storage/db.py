"""Opening the store: `open_database(target)` picks the engine from the target, a
`postgresql://` URL (PostgreSQL, for several processes) or a path (the SQLite file).
What a store offers, and how transaction bodies are written: `bot.storage.base`."""

from __future__ import annotations

from pathlib import Path

from bot.storage.base import Backend, Database, Row, TransactionBody, Tx, is_postgres_url
from bot.storage.sqlite import SQLiteDatabase

__all__ = [
    "Backend",
    "Database",
    "Row",
    "TransactionBody",
    "Tx",
    "is_postgres_url",
    "open_database",
]


async def open_database(target: str | Path, *, migrate: bool = True) -> Database:
    if is_postgres_url(target):
        # asyncpg is an optional extra: imported only by those who use PostgreSQL.
        from bot.storage.postgres import PostgresDatabase

        return await PostgresDatabase.connect(str(target), migrate=migrate)
    return await SQLiteDatabase.connect(target, migrate=migrate)
