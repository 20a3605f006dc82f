"""Moving from SQLite to PostgreSQL (`fluxcord copy-to`): every table, row for row, into an
empty PostgreSQL database, checked before it is kept.

- One PostgreSQL transaction holds the whole copy: it either commits complete and checked,
  or leaves the target as empty as it found it (run it again after fixing the cause).
- The SQLite side is read in one read transaction (one snapshot), streamed in batches: no
  table is ever held in memory whole.
- Values are copied as they are; only their Python types are fitted to PostgreSQL's columns
  (SQLite's INTEGER flags and REAL times to BIGINT and DOUBLE PRECISION, BLOB to BYTEA;
  JSON lives in TEXT on both). Derived rows are copied too, so the user triggers that would
  derive them again (the ledger's window totals) are off during the copy.
- A table that refers to itself (a job's parent job) gets those references once all its
  rows are in; identity sequences continue after the largest id copied.
- Before COMMIT, every table's row count and the ledger's sums are compared on both sides.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiosqlite

from bot.errors import StartupError
from bot.storage.db import open_database, postgres_location, without_password
from bot.storage.migrations import discover, migrations_dir

BATCH_ROWS = 500
# Rows with images (BYTEA) are read a few at a time: a batch of 500 reference images could
# be hundreds of MB.
BLOB_BATCH_ROWS = 4
RECORD_TABLE = "schema_migrations"  # each side keeps its own (compared, not copied)
# What the figures check: the money journal and the window totals derived from it.
SUMMED: dict[str, tuple[str, ...]] = {
    "ledger": ("reserved_mc", "charged_mc", "credits_mc", "images"),
    "usage_totals": ("credits_mc", "images"),
}


class CopyRefused(StartupError):
    """The copy cannot start (the target is not empty, the schemas differ); nothing was
    written. The message is one line for the admin."""

    exit_code = 2


class CopyFailed(StartupError):
    """The copy failed midway or its figures did not match: rolled back, nothing kept."""

    def __init__(self, detail: str, report: CopyReport | None = None) -> None:
        super().__init__(detail)
        self.report = report


@dataclass(frozen=True)
class Figure:
    """One compared figure: a table's rows, or a sum of one of its columns."""

    name: str
    sqlite: int
    postgres: int

    @property
    def ok(self) -> bool:
        return self.sqlite == self.postgres


@dataclass
class CopyReport:
    rows: list[Figure] = field(default_factory=list)
    sums: list[Figure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(figure.ok for figure in [*self.rows, *self.sums])

    @property
    def total_rows(self) -> int:
        return sum(figure.postgres for figure in self.rows)

    def lines(self) -> list[str]:
        """The figures as an aligned table (what the command prints)."""
        width = max([len("table"), *(len(f.name) for f in [*self.rows, *self.sums])])
        out = [f"{'table':<{width}}  {'rows-sqlite':>12}  {'rows-pg':>12}  ok"]
        out += [_line(f, width) for f in self.rows]
        out.append(f"{'ledger sums':<{width}}  {'sqlite':>12}  {'pg':>12}  ok")
        out += [_line(f, width) for f in self.sums]
        return out


def _line(figure: Figure, width: int) -> str:
    mark = "ok" if figure.ok else "MISMATCH"
    return f"{figure.name:<{width}}  {figure.sqlite:>12}  {figure.postgres:>12}  {mark}"


def describe_target(url: str) -> str:
    """`fluxcord on db.example:5432 as fluxcord`: the target, never its password."""
    host, user, database = postgres_location(url)
    return f"{database} on {host} as {user}"


# --------------------------------------------------------------------------- the schema
@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    postgres_types: tuple[str, ...]
    primary_key: tuple[str, ...]
    refers_to: frozenset[str]  # other tables its foreign keys name
    self_references: tuple[str, ...]  # its columns naming its own rows


Fit = Callable[[Any], Any]


def _integer(value: Any) -> Any:
    if value is None or isinstance(value, int):
        return None if value is None else int(value)  # (a bool too)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"{value!r} is not a whole number")


def _double(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    raise ValueError(f"{value!r} is not a number")


def _text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _bytes(value: Any) -> Any:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ValueError(f"{type(value).__name__} is not binary data")


def _boolean(value: Any) -> Any:
    return None if value is None else bool(value)


FITS: dict[str, Fit] = {
    "bigint": _integer,
    "integer": _integer,
    "smallint": _integer,
    "double precision": _double,
    "real": _double,
    "text": _text,
    "json": _text,
    "jsonb": _text,
    "bytea": _bytes,
    "boolean": _boolean,
}


async def _sqlite_tables(source: aiosqlite.Connection) -> dict[str, list[sqlite3.Row]]:
    names = await source.execute_fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY name"
    )
    return {
        row[0]: list(await source.execute_fetchall(f'PRAGMA table_info("{row[0]}")'))
        for row in names
    }


async def _describe(
    source: aiosqlite.Connection, target: Any, sqlite_tables: dict[str, list[sqlite3.Row]]
) -> list[Table]:
    """The tables to copy, parents before the tables that refer to them; refuses schemas
    that differ (names or columns)."""
    pg_columns: dict[str, dict[str, str]] = {}
    for row in await target.fetch(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c"
        " JOIN information_schema.tables t ON t.table_schema = c.table_schema"
        " AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE'"
        " WHERE c.table_schema = current_schema()"
    ):
        pg_columns.setdefault(row["table_name"], {})[row["column_name"]] = row["data_type"]
    wanted = set(sqlite_tables) - {RECORD_TABLE}
    present = set(pg_columns) - {RECORD_TABLE}
    if wanted != present:
        only_sqlite = ", ".join(sorted(wanted - present)) or "none"
        only_pg = ", ".join(sorted(present - wanted)) or "none"
        raise CopyRefused(
            "The two databases' tables differ (only in SQLite: "
            f"{only_sqlite}; only in PostgreSQL: {only_pg}): nothing was copied"
        )
    tables = []
    for name in sorted(wanted):
        info = sqlite_tables[name]
        columns = tuple(str(column["name"]) for column in info)
        if set(columns) != set(pg_columns[name]):
            raise CopyRefused(
                f"The table {name} has other columns in PostgreSQL: nothing was copied"
            )
        types = tuple(pg_columns[name][column] for column in columns)
        unknown = [f"{c} ({t})" for c, t in zip(columns, types, strict=True) if t not in FITS]
        if unknown:
            raise CopyRefused(f"copy-to cannot fill {name}.{unknown[0]} yet: nothing was copied")
        keys = sorted((int(c["pk"]), str(c["name"])) for c in info if int(c["pk"]) > 0)
        foreign = await source.execute_fetchall(f'PRAGMA foreign_key_list("{name}")')
        tables.append(
            Table(
                name=name,
                columns=columns,
                postgres_types=types,
                primary_key=tuple(column for _, column in keys),
                refers_to=frozenset(str(f["table"]) for f in foreign) - {name},
                self_references=tuple(str(f["from"]) for f in foreign if f["table"] == name),
            )
        )
    return _parents_first(tables)


def _parents_first(tables: list[Table]) -> list[Table]:
    ordered: list[Table] = []
    placed: set[str] = set()
    waiting = list(tables)
    while waiting:
        ready = [t for t in waiting if t.refers_to <= placed]
        if not ready:  # a cycle between tables (none today): constraints would decide
            ready = waiting[:1]
        for table in ready:
            ordered.append(table)
            placed.add(table.name)
            waiting.remove(table)
    return ordered


# --------------------------------------------------------------------------- the copy
async def _rows(
    source: aiosqlite.Connection, table: Table, batch_rows: int
) -> AsyncIterator[tuple[Any, ...]]:
    """The table's rows, fitted to PostgreSQL's types, a batch at a time; the columns that
    name rows of the same table are left empty (filled in afterwards)."""
    if "bytea" in table.postgres_types:
        batch_rows = min(batch_rows, BLOB_BATCH_ROWS)
    fits = [FITS[kind] for kind in table.postgres_types]
    later = {table.columns.index(column) for column in table.self_references}
    selected = ", ".join(f'"{c}"' for c in table.columns)
    async with source.execute(f'SELECT {selected} FROM "{table.name}"') as cursor:
        while batch := await cursor.fetchmany(batch_rows):
            for row in batch:
                try:
                    yield tuple(
                        None if index in later else fit(value)
                        for index, (fit, value) in enumerate(zip(fits, row, strict=True))
                    )
                except (ValueError, UnicodeDecodeError) as exc:
                    raise CopyFailed(
                        f"A row of {table.name} cannot go into PostgreSQL ({exc}): nothing was kept"
                    ) from None


async def _fill_self_references(
    source: aiosqlite.Connection, target: Any, table: Table, batch_rows: int
) -> None:
    for column in table.self_references:
        keys = table.primary_key
        key_fits = [FITS[table.postgres_types[table.columns.index(k)]] for k in keys]
        fit = FITS[table.postgres_types[table.columns.index(column)]]
        where = " AND ".join(f'"{k}" = ${n}' for n, k in enumerate(keys, start=2))
        update = f'UPDATE "{table.name}" SET "{column}" = $1 WHERE {where}'
        selected = ", ".join(f'"{k}"' for k in (column, *keys))
        async with source.execute(
            f'SELECT {selected} FROM "{table.name}" WHERE "{column}" IS NOT NULL'
        ) as cursor:
            while batch := await cursor.fetchmany(batch_rows):
                await target.executemany(
                    update,
                    [
                        (fit(row[0]), *(f(v) for f, v in zip(key_fits, row[1:], strict=True)))
                        for row in batch
                    ],
                )


async def _continue_sequences(target: Any) -> None:
    """Identity (and serial) columns number on from the largest id copied."""
    for row in await target.fetch(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema()"
        " AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')"
    ):
        table, column = row["table_name"], row["column_name"]
        await target.execute(
            f"SELECT setval(pg_get_serial_sequence($1, $2),"
            f' COALESCE((SELECT max("{column}") FROM "{table}"), 0) + 1, false)',
            f'"{table}"',
            column,
        )


async def _figures(source: aiosqlite.Connection, target: Any, tables: list[Table]) -> CopyReport:
    report = CopyReport()
    for table in tables:
        quoted = f'"{table.name}"'
        [[sqlite_rows]] = await source.execute_fetchall(f"SELECT count(*) FROM {quoted}")
        postgres_rows = await target.fetchval(f"SELECT count(*) FROM {quoted}")
        report.rows.append(Figure(table.name, int(sqlite_rows), int(postgres_rows)))
        for column in SUMMED.get(table.name, ()):
            summed = f'SELECT COALESCE(sum("{column}"), 0) FROM {quoted}'
            [[sqlite_sum]] = await source.execute_fetchall(summed)
            postgres_sum = await target.fetchval(summed)
            report.sums.append(Figure(f"{table.name}.{column}", int(sqlite_sum), int(postgres_sum)))
    return report


def _versions(rows: Iterable[Any]) -> set[int]:
    return {int(row[0]) for row in rows}


async def _check_sqlite_version(source: aiosqlite.Connection) -> set[int]:
    """This release's migrations, which the SQLite database must be at."""
    known = {m.version for m in discover(migrations_dir("sqlite"))}
    try:
        sqlite_versions = _versions(
            await source.execute_fetchall(f"SELECT version FROM {RECORD_TABLE}")
        )
    except sqlite3.OperationalError:
        raise CopyRefused(
            "The SQLite database has no Fluxcord schema: check DATABASE_PATH"
        ) from None
    if sqlite_versions - known:
        raise CopyRefused(
            f"The SQLite database is at schema version {max(sqlite_versions)}, newer than this"
            f" release's {max(known)}: copy with the release that wrote it"
        )
    if known - sqlite_versions:
        raise CopyRefused(
            f"The SQLite database is at schema version {max(sqlite_versions, default=0)}, this"
            f" release's is {max(known)}: run `fluxcord migrate` first (with the bot stopped)"
        )
    return known


async def _check_postgres_version(target: Any, known: set[int]) -> None:
    postgres_versions = _versions(await target.fetch(f"SELECT version FROM {RECORD_TABLE}"))
    if postgres_versions != known:
        raise CopyRefused(
            f"The PostgreSQL database is at schema version {max(postgres_versions, default=0)},"
            f" this release's is {max(known)}: copy into a new, empty database"
        )


async def _refuse_unless_empty(target: Any, tables: list[Table]) -> None:
    filled = []
    for table in tables:
        if await target.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{table.name}")'):
            count = await target.fetchval(f'SELECT count(*) FROM "{table.name}"')
            filled.append(f"{table.name} ({count} row{'' if count == 1 else 's'})")
    if filled:
        shown = ", ".join(filled[:3]) + (f" and {len(filled) - 3} more" if len(filled) > 3 else "")
        raise CopyRefused(
            f"The target database is not empty: {shown}. copy-to only fills an empty"
            " database: create a new one (or drop and re-create this one)"
        )


async def copy_sqlite_to_postgres(
    sqlite_path: Path, url: str, *, batch_rows: int = BATCH_ROWS
) -> CopyReport:
    """Copy every table; returns the compared figures (all equal, or CopyFailed is raised
    and nothing was kept). The bot must be stopped (the caller holds the instance lock), and
    the file must exist (mode=rw never creates one)."""
    import asyncpg

    password = urlsplit(url).password
    source = await aiosqlite.connect(f"file:{sqlite_path}?mode=rw", uri=True, isolation_level=None)
    try:
        source.row_factory = aiosqlite.Row
        await source.execute("BEGIN")  # one snapshot for every read below
        known = await _check_sqlite_version(source)  # before anything is done to the target
        # Migrates an empty target (and words an unreachable one in one line).
        migrated = await open_database(url)
        await migrated.close()
        target = await asyncpg.connect(url)
        try:
            await _check_postgres_version(target, known)
            tables = await _describe(source, target, await _sqlite_tables(source))
            async with target.transaction():
                for table in tables:  # also locks each table until the end of the copy
                    await target.execute(f'ALTER TABLE "{table.name}" DISABLE TRIGGER USER')
                await _refuse_unless_empty(target, tables)
                for table in tables:
                    try:
                        await target.copy_records_to_table(
                            table.name,
                            records=_rows(source, table, batch_rows),
                            columns=list(table.columns),
                        )
                        await _fill_self_references(source, target, table, batch_rows)
                    except asyncpg.PostgresError as exc:
                        raise CopyFailed(
                            f"Copying {table.name} failed ({type(exc).__name__}:"
                            f" {without_password(exc, password)}): nothing was kept"
                        ) from None
                await _continue_sequences(target)
                for table in tables:
                    await target.execute(f'ALTER TABLE "{table.name}" ENABLE TRIGGER USER')
                report = await _figures(source, target, tables)
                if not report.ok:
                    raise CopyFailed("The copied figures do not match: nothing was kept", report)
        except asyncpg.PostgresError as exc:
            raise CopyFailed(
                f"The copy failed ({type(exc).__name__}: {without_password(exc, password)}):"
                " nothing was kept"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                await target.close(timeout=5)
    finally:
        await source.close()
    return report
