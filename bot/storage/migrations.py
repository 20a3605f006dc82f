"""Numbered SQL migrations, one folder per engine with the same numbers
(`migrations/sqlite/`, `migrations/postgres/`), applied in order and recorded.

The folders are package data of the top-level `migrations` package, read through
`importlib.resources`, so a wheel, pipx or a Docker image carry them like the checkout does.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING

from bot.errors import MigrationsMissing, SchemaNewerThanRelease
from bot.version import __version__

if TYPE_CHECKING:
    from bot.storage.base import Backend, Database, Tx

log = logging.getLogger(__name__)

_BROKEN = "No migrations shipped in {where}: this installation of Fluxcord is broken, reinstall it."
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


def migrations_dir(backend: Backend) -> Traversable:
    """The folder of one engine's migrations, wherever the package is installed."""
    try:
        return resources.files("migrations") / backend
    except ModuleNotFoundError:
        raise MigrationsMissing(_BROKEN.format(where="the package 'migrations'")) from None


def discover(directory: Traversable | None = None) -> list[Migration]:
    # (The default is either folder: both hold the same numbers and names.)
    folder = directory if directory is not None else migrations_dir("sqlite")
    if not folder.is_dir():
        raise MigrationsMissing(_BROKEN.format(where=folder))
    files = [entry for entry in folder.iterdir() if entry.name.endswith(".sql")]
    migrations = []
    for entry in sorted(files, key=lambda entry: entry.name):
        match = _NAME.match(entry.name)
        if match is None:
            raise RuntimeError(f"migration file {entry.name} must be named NNNN_description.sql")
        migrations.append(
            Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8"))
        )
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise RuntimeError("two migration files share a number")
    if not migrations:
        # A wheel or image built without the package data: without this, `migrate` would say
        # "already up to date" and the bot would die on its first query.
        raise MigrationsMissing(_BROKEN.format(where=folder))
    return migrations


async def schema_version(db: Database) -> int | None:
    """The highest migration applied to this database, or None before the first one."""
    if db.backend == "postgres":
        exists = "SELECT to_regclass('schema_migrations') IS NOT NULL"
    else:
        exists = "SELECT count(*) FROM sqlite_master WHERE name = 'schema_migrations'"
    if not await db.fetch_value(exists):
        return None
    value = await db.fetch_value("SELECT max(version) FROM schema_migrations")
    return None if value is None else int(value)


def refuse_newer_schema(database_version: int | None, shipped: list[Migration]) -> None:
    """Stop an older release on a database a newer one has migrated: its code would misread
    the new schema (or fail on it mid-job), and migrating backwards is not possible."""
    known = max(m.version for m in shipped)
    if database_version is not None and database_version > known:
        raise SchemaNewerThanRelease(
            f"This database's schema is version {database_version}, newer than this release of"
            f" Fluxcord ({__version__}) knows ({known}): upgrade Fluxcord, or restore the backup"
            " taken before the upgrade."
        )


async def check_schema_is_known(db: Database) -> None:
    """For a command that opens the database without migrating it: refuse a newer schema."""
    refuse_newer_schema(await schema_version(db), discover(migrations_dir(db.backend)))


async def apply_migrations(db: Database, directory: Traversable | None = None) -> list[str]:
    """Apply every migration not yet recorded; each one in its own transaction. Refuses a
    database whose schema is newer than these migrations (`SchemaNewerThanRelease`)."""
    folder = directory if directory is not None else migrations_dir(db.backend)
    done = []
    async with db.migrating():
        await db.execute(_CREATE_RECORD[db.backend])
        applied = {row[0] for row in await db.fetch_all("SELECT version FROM schema_migrations")}
        shipped = discover(folder)
        refuse_newer_schema(max(applied, default=None), shipped)
        for migration in shipped:
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
