"""Numbered SQL migrations, one folder per engine with the same numbers
(`migrations/sqlite/`, `migrations/postgres/`), applied in order and recorded."""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.storage.base import Backend, Database, Tx

log = logging.getLogger(__name__)

MIGRATIONS_ROOT = Path(__file__).resolve().parents[2] / "migrations"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

_CREATE_RECORD = {
    "sqlite": "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
    " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))",
    "postgres": "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version BIGINT PRIMARY KEY, name TEXT NOT NULL,"
    " applied_at TEXT NOT NULL DEFAULT"
    " (to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')))",
}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_dir(backend: Backend) -> Path:
    return MIGRATIONS_ROOT / backend


def discover(directory: Path = MIGRATIONS_ROOT / "sqlite") -> list[Migration]:
    # (The default is either folder: both hold the same numbers and names.)
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise RuntimeError(f"migration file {path.name} must be named NNNN_description.sql")
        migrations.append(Migration(int(match.group(1)), path.name, path.read_text("utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise RuntimeError("two migration files share a number")
    return migrations


async def apply_migrations(db: Database, directory: Path | None = None) -> list[str]:
    """Apply every migration not yet recorded; each one in its own transaction."""
    folder = directory or migrations_dir(db.backend)
    done = []
    async with db.migrating():
        await db.execute(_CREATE_RECORD[db.backend])
        applied = {row[0] for row in await db.fetch_all("SELECT version FROM schema_migrations")}
        for migration in discover(folder):
            if migration.version in applied:
                continue
            if await db.run(lambda tx, m=migration: _apply(tx, m)):  # type: ignore[misc]
                log.info("applied migration %s", migration.name)
                done.append(migration.name)
    return done


async def _apply(tx: Tx, migration: Migration) -> bool:
    # Read again inside the transaction: on SQLite another process may have applied it
    # since the read above (BEGIN IMMEDIATE makes this read final); running it twice would
    # fail or duplicate.
    if await tx.fetch_one(
        "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
    ):
        return False
    if tx.backend == "postgres":
        await tx.execute(migration.sql)  # one script: PostgreSQL runs several statements
    else:
        # executescript would COMMIT our transaction; run statement by statement instead.
        for statement in _split_statements(migration.sql):
            await tx.execute(statement)
    await tx.execute(
        "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
        (migration.version, migration.name),
    )
    return True


def _split_statements(script: str) -> list[str]:
    """Split a script into complete statements (sqlite3 knows where triggers and literals end)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in buffer.splitlines()
    ):
        raise RuntimeError("migration ends with an incomplete statement")
    return statements
