"""Numbered SQL migrations in `migrations/`, applied in order and recorded."""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.storage.db import Database

log = logging.getLogger(__name__)

MIGRATIONS_ROOT = Path(__file__).resolve().parents[2] / "migrations"
MIGRATIONS_DIR = MIGRATIONS_ROOT / "sqlite"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
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


async def apply_migrations(db: Database, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every migration not yet recorded; each one in its own transaction."""
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
    )
    applied = {row[0] for row in await db.fetch_all("SELECT version FROM schema_migrations")}
    done = []
    for migration in discover(directory):
        if migration.version in applied:
            continue
        async with db.transaction() as conn:
            # Read again under the write lock (BEGIN IMMEDIATE): another process may have
            # applied it since the read above, and running it twice would fail or duplicate.
            cursor = await conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            )
            if await cursor.fetchone() is not None:
                continue
            # executescript would COMMIT our transaction; run statement by statement instead.
            for statement in _split_statements(migration.sql):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                (migration.version, migration.name),
            )
        log.info("applied migration %s", migration.name)
        done.append(migration.name)
    return done


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
