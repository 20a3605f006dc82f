"""The SQLite and PostgreSQL migrations build the same schema.

Both folders are applied to a fresh store each (through ``open_database``), then read back
from the engines' catalogues (SQLite's PRAGMAs and ``sqlite_master``; PostgreSQL's
``information_schema`` and ``pg_catalog``) and compared table by table, after normalising
what legitimately differs between the engines: type spellings, cast decorations, default
and predicate formatting, index names of constraints.

Deliberate equivalences (see ``_sqlite_table`` / ``_postgres_schema``):
* A primary key column counts as NOT NULL on both sides. PostgreSQL enforces it; SQLite does
  for ``INTEGER PRIMARY KEY`` and WITHOUT ROWID tables, but a legacy quirk lets other
  primary key columns of rowid tables hold NULL unless they say NOT NULL.
* SQLite's ``INTEGER PRIMARY KEY`` (a rowid alias, numbered automatically) and PostgreSQL's
  identity or ``nextval`` columns share the default ``<auto-increment>``.
* Indexes backing PRIMARY KEY constraints are not compared as indexes (primary keys are,
  separately); indexes backing UNIQUE constraints are compared by columns, not by name
  (each engine names them itself).
* ``schema_migrations`` is compared by name only (the engines record times differently).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.storage.db import Backend, open_database
from bot.storage.migrations import apply_migrations, discover, migrations_dir
from tests.postgres_fixtures import DsnFactory
from tests.postgres_server import PostgresServer

RECORD_TABLE = "schema_migrations"
AUTO_INCREMENT = "<auto-increment>"
# Known, accepted: Discord ids declared INTEGER PRIMARY KEY on SQLite (a rowid alias, which
# SQLite would number if an INSERT left it out) and a plain BIGINT PRIMARY KEY on PostgreSQL
# (which would refuse such an INSERT). The bot always supplies these ids, so both behave
# alike; a new auto-numbered key must match for real (identity on PostgreSQL).
SUPPLIED_ROWID_ALIASES: frozenset[tuple[str, str]] = frozenset(
    {("guild_settings", "guild_id"), ("studios", "thread_id")}
)


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # normalised: integer, real, text, blob, boolean, numeric, ...
    not_null: bool
    default: str | None  # normalised


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    on_delete: str
    on_update: str

    def describe(self) -> str:
        return (
            f"({', '.join(self.columns)}) -> {self.ref_table} ({', '.join(self.ref_columns)}) "
            f"ON DELETE {self.on_delete} ON UPDATE {self.on_update}"
        )


@dataclass(frozen=True)
class Index:
    columns: tuple[str, ...]  # " DESC" appended to descending keys
    unique: bool
    predicate: str | None  # normalised WHERE text of a partial index


@dataclass
class Table:
    name: str
    columns: list[Column] = field(default_factory=list)
    primary_key: tuple[str, ...] = ()
    foreign_keys: frozenset[ForeignKey] = frozenset()
    # Named indexes by name; indexes of UNIQUE constraints by "UNIQUE (a, b)".
    indexes: dict[str, Index] = field(default_factory=dict)
    triggers: frozenset[str] = frozenset()


Schema = dict[str, Table]


# --------------------------------------------------------------------------- normalising

_TYPE_NAMES = {
    "smallint": "integer",
    "integer": "integer",
    "int": "integer",
    "bigint": "integer",
    "int2": "integer",
    "int4": "integer",
    "int8": "integer",
    "real": "real",
    "double precision": "real",
    "double": "real",
    "float": "real",
    "float4": "real",
    "float8": "real",
    "text": "text",
    "character varying": "text",
    "varchar": "text",
    "character": "text",
    "char": "text",
    "clob": "text",
    "blob": "blob",
    "bytea": "blob",
    "": "blob",  # SQLite: no declared type has BLOB affinity
    "boolean": "boolean",
    "bool": "boolean",
    "numeric": "numeric",
    "decimal": "numeric",
    "json": "json",
    "jsonb": "json",
    "timestamp with time zone": "timestamp",
    "timestamp without time zone": "timestamp",
    "timestamp": "timestamp",
    "timestamptz": "timestamp",
    "datetime": "timestamp",
}


def normalise_type(declared: str) -> str:
    """One name per family of types, from a SQLite declaration or a PostgreSQL data_type."""
    base = re.sub(r"\(.*\)", "", declared).strip().lower()  # varchar(20) -> varchar
    base = " ".join(base.split())
    if base in _TYPE_NAMES:
        return _TYPE_NAMES[base]
    # SQLite's affinity rules (https://sqlite.org/datatype3.html#determination_of_column_affinity)
    if "int" in base:
        return "integer"
    if any(part in base for part in ("char", "clob", "text")):
        return "text"
    if "blob" in base:
        return "blob"
    if any(part in base for part in ("real", "floa", "doub")):
        return "real"
    return base


# A cast: the multi-word type names first, or else one word (so "::text AND x" keeps "AND x").
_CAST = re.compile(
    r"::\s*(double precision|character varying|timestamp with(out)? time zone"
    r"|[a-z_][a-z0-9_]*)(\[\])?",
    re.IGNORECASE,
)
_NUMERIC_CAST = re.compile(
    r"::\s*(smallint|integer|bigint|numeric|real|double precision)\b", re.IGNORECASE
)
_NOW_FORMS = {"now()", "current_timestamp", "transaction_timestamp()", "localtimestamp"}


def _lower_outside_literals(text: str) -> str:
    parts = re.split(r"('(?:[^']|'')*')", text)
    return "".join(part if part.startswith("'") else part.lower() for part in parts)


def _strip_outer_parentheses(text: str) -> str:
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    return text


def _balanced(text: str) -> bool:
    depth = 0
    for char in re.sub(r"'(?:[^']|'')*'", "''", text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def normalise_default(default: str | None) -> str | None:
    """``0`` == ``0.0`` == ``(0)::bigint``; ``'x'::text`` == ``'x'``; now() == CURRENT_TIMESTAMP."""
    if default is None:
        return None
    text = _lower_outside_literals(" ".join(default.split()))
    if text.startswith("nextval("):
        return AUTO_INCREMENT
    numeric_cast = _NUMERIC_CAST.search(text) is not None
    text = _strip_outer_parentheses(_CAST.sub("", text).strip())
    # PostgreSQL may show a number as a quoted literal cast to a number: '-1'::integer.
    literal = re.fullmatch(r"'(-?[0-9.e+]+)'", text)
    if literal and numeric_cast:
        text = literal.group(1)
    try:
        return repr(float(text))
    except ValueError:
        pass
    if text in _NOW_FORMS:
        return "current_timestamp"
    if text in ("true", "false"):
        return text
    return text


def normalise_predicate(predicate: str | None) -> str | None:
    """Loosely: no casts, no parentheses, one space, lower case, ``!=`` as ``<>``."""
    if predicate is None:
        return None
    text = _CAST.sub("", predicate)
    text = text.replace("!=", "<>").replace("(", " ").replace(")", " ")
    return " ".join(_lower_outside_literals(text).split())


# --------------------------------------------------------------------------- SQLite


def _sqlite_rows(conn: sqlite3.Connection, sql: str) -> list[sqlite3.Row]:
    return conn.execute(sql).fetchall()


def _sqlite_table(conn: sqlite3.Connection, name: str, sql: str) -> Table:
    quoted = '"' + name.replace('"', '""') + '"'
    infos = _sqlite_rows(conn, f"PRAGMA table_info({quoted})")
    without_rowid = re.search(r"\)\s*WITHOUT\s+ROWID\s*;?\s*$", sql, re.IGNORECASE) is not None
    pk = tuple(row["name"] for row in sorted(infos, key=lambda r: r["pk"]) if row["pk"])
    rowid_alias = (
        pk[0]
        if len(pk) == 1
        and not without_rowid
        and next(r["type"] for r in infos if r["name"] == pk[0]).upper() == "INTEGER"
        else None
    )
    columns = [
        Column(
            name=row["name"],
            type=normalise_type(row["type"]),
            not_null=bool(row["notnull"]) or row["name"] in pk,
            default=AUTO_INCREMENT
            if row["name"] == rowid_alias
            else normalise_default(row["dflt_value"]),
        )
        for row in infos
    ]

    by_id: dict[int, list[sqlite3.Row]] = {}
    for row in _sqlite_rows(conn, f"PRAGMA foreign_key_list({quoted})"):
        by_id.setdefault(row["id"], []).append(row)
    foreign_keys = set()
    for rows in by_id.values():
        rows.sort(key=lambda r: r["seq"])
        ref_table = rows[0]["table"]
        ref_columns = tuple(r["to"] for r in rows)
        if any(column is None for column in ref_columns):  # REFERENCES t: its primary key
            ref_infos = _sqlite_rows(conn, f'PRAGMA table_info("{ref_table}")')
            ref_columns = tuple(
                r["name"] for r in sorted(ref_infos, key=lambda r: r["pk"]) if r["pk"]
            )
        foreign_keys.add(
            ForeignKey(
                columns=tuple(r["from"] for r in rows),
                ref_table=ref_table,
                ref_columns=ref_columns,
                on_delete=rows[0]["on_delete"].upper(),
                on_update=rows[0]["on_update"].upper(),
            )
        )

    indexes: dict[str, Index] = {}
    for row in _sqlite_rows(conn, f"PRAGMA index_list({quoted})"):
        if row["origin"] == "pk":
            continue
        keys = [r for r in _sqlite_rows(conn, f'PRAGMA index_xinfo("{row["name"]}")') if r["key"]]
        index_columns = tuple(
            (r["name"] if r["name"] is not None else "<expression>")
            + (" DESC" if r["desc"] else "")
            for r in sorted(keys, key=lambda r: r["seqno"])
        )
        predicate = None
        if row["partial"]:
            (index_sql,) = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (row["name"],)
            ).fetchone()
            match = re.search(r"\bWHERE\b(.*)$", index_sql, re.IGNORECASE | re.DOTALL)
            assert match, index_sql
            predicate = normalise_predicate(match.group(1))
        index = Index(index_columns, bool(row["unique"]), predicate)
        key = row["name"] if row["origin"] == "c" else f"UNIQUE ({', '.join(index_columns)})"
        indexes[key] = index

    triggers = frozenset(
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (name,)
        )
    )
    return Table(name, columns, pk, frozenset(foreign_keys), indexes, triggers)


def read_sqlite_schema(path: Path) -> Schema:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        tables = _sqlite_rows(
            conn,
            "SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'view')"
            " AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        return {row["name"]: _sqlite_table(conn, row["name"], row["sql"]) for row in tables}
    finally:
        conn.close()


# --------------------------------------------------------------------------- PostgreSQL

_PG_ACTIONS = {
    "a": "NO ACTION",
    "r": "RESTRICT",
    "c": "CASCADE",
    "n": "SET NULL",
    "d": "SET DEFAULT",
}


async def read_postgres_schema(dsn: str) -> Schema:
    conn = await asyncpg.connect(dsn)
    try:
        return await _postgres_schema(conn)
    finally:
        await conn.close()


async def _postgres_schema(conn: Any) -> Schema:
    schema: Schema = {}
    for row in await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v')"
    ):
        schema[row["relname"]] = Table(row["relname"])

    for row in await conn.fetch(
        "SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity"
        " FROM information_schema.columns WHERE table_schema = current_schema()"
        " ORDER BY table_name, ordinal_position"
    ):
        default = (
            AUTO_INCREMENT
            if row["is_identity"] == "YES"
            else normalise_default(row["column_default"])
        )
        schema[row["table_name"]].columns.append(
            Column(
                name=row["column_name"],
                type=normalise_type(row["data_type"]),
                not_null=row["is_nullable"] == "NO",
                default=default,
            )
        )

    constraints = await conn.fetch(
        """
        SELECT k.contype::text AS kind, t.relname AS table_name, r.relname AS ref_table,
               k.confdeltype::text AS on_delete, k.confupdtype::text AS on_update,
               ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY AS u(num, pos)
                     JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.num
                     ORDER BY u.pos)::text[] AS columns,
               ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY AS u(num, pos)
                     JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.num
                     ORDER BY u.pos)::text[] AS ref_columns
        FROM pg_constraint k
        JOIN pg_class t ON t.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        LEFT JOIN pg_class r ON r.oid = k.confrelid
        WHERE n.nspname = current_schema() AND k.contype IN ('p', 'f')
        """
    )
    foreign_keys: dict[str, set[ForeignKey]] = {}
    for row in constraints:
        table = schema[row["table_name"]]
        if row["kind"] == "p":
            table.primary_key = tuple(row["columns"])
        else:
            foreign_keys.setdefault(table.name, set()).add(
                ForeignKey(
                    columns=tuple(row["columns"]),
                    ref_table=row["ref_table"],
                    ref_columns=tuple(row["ref_columns"]),
                    on_delete=_PG_ACTIONS[row["on_delete"]],
                    on_update=_PG_ACTIONS[row["on_update"]],
                )
            )
    for name, keys in foreign_keys.items():
        schema[name].foreign_keys = frozenset(keys)

    for row in await conn.fetch(
        """
        SELECT i.relname AS index_name, t.relname AS table_name, x.indisunique,
               pg_get_expr(x.indpred, x.indrelid) AS predicate,
               EXISTS (SELECT 1 FROM pg_constraint k
                       WHERE k.conindid = x.indexrelid AND k.conrelid = x.indrelid
                         AND k.contype = 'u') AS from_unique_constraint,
               ARRAY(SELECT pg_get_indexdef(x.indexrelid, k, true)
                     FROM generate_series(1, x.indnkeyatts) AS k ORDER BY k)::text[] AS keys,
               (x.indoption::int2[])[0:x.indnkeyatts - 1] AS options
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = current_schema() AND NOT x.indisprimary
        """
    ):
        index_columns = tuple(
            (key if re.fullmatch(r"[a-z_][a-z0-9_]*", key) else "<expression>")
            + (" DESC" if option & 1 else "")
            for key, option in zip(row["keys"], row["options"], strict=True)
        )
        index = Index(index_columns, row["indisunique"], normalise_predicate(row["predicate"]))
        key = (
            f"UNIQUE ({', '.join(index_columns)})"
            if row["from_unique_constraint"]
            else row["index_name"]
        )
        schema[row["table_name"]].indexes[key] = index

    triggers: dict[str, set[str]] = {}
    for row in await conn.fetch(
        "SELECT c.relname, t.tgname FROM pg_trigger t"
        " JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND NOT t.tgisinternal"
    ):
        triggers.setdefault(row["relname"], set()).add(row["tgname"])
    for name, names in triggers.items():
        schema[name].triggers = frozenset(names)
    return schema


# --------------------------------------------------------------------------- comparing


def _compared_tables(sqlite: Schema, postgres: Schema) -> list[tuple[Table, Table]]:
    """The tables both sides have, except the migrations record (compared by name only)."""
    names = sorted((set(sqlite) & set(postgres)) - {RECORD_TABLE})
    return [(sqlite[name], postgres[name]) for name in names]


def table_differences(sqlite: Schema, postgres: Schema) -> list[str]:
    return [f"table {name}: only in SQLite" for name in sorted(set(sqlite) - set(postgres))] + [
        f"table {name}: only in PostgreSQL" for name in sorted(set(postgres) - set(sqlite))
    ]


def column_differences(
    sqlite: Schema,
    postgres: Schema,
    supplied_rowid_aliases: frozenset[tuple[str, str]] = frozenset(),
) -> list[str]:
    problems: list[str] = []
    for lite, pg in _compared_tables(sqlite, postgres):
        lite_names = [c.name for c in lite.columns]
        pg_names = [c.name for c in pg.columns]
        if lite_names != pg_names:
            problems.append(
                f"table {lite.name}: columns differ: SQLite {lite_names} / PostgreSQL {pg_names}"
            )
        pg_by_name = {c.name: c for c in pg.columns}
        for column in lite.columns:
            other = pg_by_name.get(column.name)
            if other is None:
                continue
            for attribute in ("type", "not_null", "default"):
                mine, theirs = getattr(column, attribute), getattr(other, attribute)
                accepted = (
                    attribute == "default"
                    and (lite.name, column.name) in supplied_rowid_aliases
                    and (mine, theirs) == (AUTO_INCREMENT, None)
                )
                if mine != theirs and not accepted:
                    problems.append(
                        f"table {lite.name}, column {column.name}: {attribute} "
                        f"SQLite {mine!r} / PostgreSQL {theirs!r}"
                    )
    return problems


def primary_key_differences(sqlite: Schema, postgres: Schema) -> list[str]:
    return [
        f"table {lite.name}: primary key SQLite {lite.primary_key} / PostgreSQL {pg.primary_key}"
        for lite, pg in _compared_tables(sqlite, postgres)
        if lite.primary_key != pg.primary_key
    ]


def foreign_key_differences(sqlite: Schema, postgres: Schema) -> list[str]:
    problems: list[str] = []
    for lite, pg in _compared_tables(sqlite, postgres):
        for key in sorted(lite.foreign_keys - pg.foreign_keys, key=ForeignKey.describe):
            problems.append(f"table {lite.name}: foreign key only in SQLite: {key.describe()}")
        for key in sorted(pg.foreign_keys - lite.foreign_keys, key=ForeignKey.describe):
            problems.append(f"table {pg.name}: foreign key only in PostgreSQL: {key.describe()}")
    return problems


def index_differences(sqlite: Schema, postgres: Schema) -> list[str]:
    problems: list[str] = []
    for lite, pg in _compared_tables(sqlite, postgres):
        for name in sorted(set(lite.indexes) | set(pg.indexes)):
            mine, theirs = lite.indexes.get(name), pg.indexes.get(name)
            where = f"table {lite.name}, index {name}"
            if mine is None or theirs is None:
                side = "SQLite" if theirs is None else "PostgreSQL"
                problems.append(f"{where}: only in {side}")
                continue
            if mine.columns != theirs.columns:
                problems.append(
                    f"{where}: columns SQLite {mine.columns} / PostgreSQL {theirs.columns}"
                )
            if mine.unique != theirs.unique:
                problems.append(
                    f"{where}: unique SQLite {mine.unique} / PostgreSQL {theirs.unique}"
                )
            if mine.predicate != theirs.predicate:
                problems.append(
                    f"{where}: partial WHERE SQLite {mine.predicate!r} / "
                    f"PostgreSQL {theirs.predicate!r}"
                )
    return problems


def trigger_differences(sqlite: Schema, postgres: Schema) -> list[str]:
    problems: list[str] = []
    for lite, pg in _compared_tables(sqlite, postgres):
        for name in sorted(lite.triggers - pg.triggers):
            problems.append(f"table {lite.name}: trigger {name} only in SQLite")
        for name in sorted(pg.triggers - lite.triggers):
            problems.append(f"table {pg.name}: trigger {name} only in PostgreSQL")
    return problems


def all_differences(
    sqlite: Schema,
    postgres: Schema,
    supplied_rowid_aliases: frozenset[tuple[str, str]] = SUPPLIED_ROWID_ALIASES,
) -> list[str]:
    return [
        *table_differences(sqlite, postgres),
        *column_differences(sqlite, postgres, supplied_rowid_aliases),
        *primary_key_differences(sqlite, postgres),
        *foreign_key_differences(sqlite, postgres),
        *index_differences(sqlite, postgres),
        *trigger_differences(sqlite, postgres),
    ]


def _report(problems: list[str]) -> str:
    return f"{len(problems)} difference(s) between the migrated schemas:\n" + "\n".join(problems)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def schemas(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Schema, Schema]]:
    """(SQLite schema, PostgreSQL schema), each from a fresh store migrated from scratch."""
    sqlite_path = tmp_path_factory.mktemp("parity") / "fluxcord.sqlite3"
    database = f"parity_{os.getpid()}"
    dsn = postgres_server.fresh_database(database)  # empty: we migrate it ourselves

    async def migrate_and_read() -> tuple[Schema, Schema]:
        for target in (sqlite_path, dsn):
            db = await open_database(target)
            await db.close()
        return read_sqlite_schema(sqlite_path), await read_postgres_schema(dsn)

    try:
        yield asyncio.run(migrate_and_read())
    finally:
        postgres_server.admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


# --------------------------------------------------------------------------- tests


def test_both_folders_hold_the_same_migrations() -> None:
    sqlite = {m.version: m.name for m in discover(migrations_dir("sqlite"))}
    postgres = {m.version: m.name for m in discover(migrations_dir("postgres"))}
    assert sorted(sqlite) == sorted(postgres), (
        f"migration numbers only in sqlite/: {sorted(set(sqlite) - set(postgres))}, "
        f"only in postgres/: {sorted(set(postgres) - set(sqlite))}"
    )
    assert sqlite == postgres, "same numbers, different file names"
    assert sorted(sqlite) == list(range(1, len(sqlite) + 1)), "numbers have a gap"


def test_same_tables(schemas: tuple[Schema, Schema]) -> None:
    sqlite, postgres = schemas
    assert RECORD_TABLE in sqlite and RECORD_TABLE in postgres
    assert len(sqlite) > 5  # the reader found the schema at all
    problems = table_differences(sqlite, postgres)
    assert not problems, _report(problems)


def test_same_columns_in_order_with_types_nullability_and_defaults(
    schemas: tuple[Schema, Schema],
) -> None:
    problems = column_differences(*schemas, SUPPLIED_ROWID_ALIASES)
    assert not problems, _report(problems)


def test_accepted_exceptions_are_current(schemas: tuple[Schema, Schema]) -> None:
    """Each accepted exception still exists, and they are the only column differences."""
    sqlite, postgres = schemas
    for table, column in sorted(SUPPLIED_ROWID_ALIASES):
        lite = next(c for c in sqlite[table].columns if c.name == column)
        pg = next(c for c in postgres[table].columns if c.name == column)
        assert (lite.default, pg.default) == (AUTO_INCREMENT, None), (table, column)
    assert column_differences(sqlite, postgres) == [  # without the exceptions: exactly those
        f"table {table}, column {column}: default SQLite '{AUTO_INCREMENT}' / PostgreSQL None"
        for table, column in sorted(SUPPLIED_ROWID_ALIASES)
    ]


def test_same_primary_keys(schemas: tuple[Schema, Schema]) -> None:
    problems = primary_key_differences(*schemas)
    assert not problems, _report(problems)


def test_same_foreign_keys(schemas: tuple[Schema, Schema]) -> None:
    assert any(table.foreign_keys for table in schemas[0].values())
    problems = foreign_key_differences(*schemas)
    assert not problems, _report(problems)


def test_same_indexes(schemas: tuple[Schema, Schema]) -> None:
    assert any(index.predicate for t in schemas[1].values() for index in t.indexes.values())
    problems = index_differences(*schemas)
    assert not problems, _report(problems)


def test_same_triggers(schemas: tuple[Schema, Schema]) -> None:
    assert any(table.triggers for table in schemas[0].values())
    problems = trigger_differences(*schemas)
    assert not problems, _report(problems)


# ------------------------------------------------------------------ the comparison can fail


@pytest.mark.parametrize(
    ("sqlite_form", "postgres_form"),
    [
        ("0", "0"),
        ("0", "(0)::bigint"),
        ("0.0", "0"),
        ("24", "'24'::double precision"),
        ("-1", "'-1'::integer"),
        ("'pending'", "'pending'::text"),
        ("CURRENT_TIMESTAMP", "now()"),
        ("(CURRENT_TIMESTAMP)", "CURRENT_TIMESTAMP"),
    ],
)
def test_equivalent_defaults_normalise_alike(sqlite_form: str, postgres_form: str) -> None:
    assert normalise_default(sqlite_form) == normalise_default(postgres_form)


@pytest.mark.parametrize(("one", "other"), [("0", "1"), ("'pending'", "'Pending'"), ("0", "'0'")])
def test_different_defaults_stay_different(one: str, other: str) -> None:
    assert normalise_default(one) != normalise_default(other)


def test_equivalent_predicates_and_types_normalise_alike() -> None:
    assert normalise_predicate("state != 'ended'") == normalise_predicate(
        "(state <> 'ended'::text)"
    )
    assert normalise_predicate(" provider_task_id IS NOT NULL\n") == normalise_predicate(
        "(provider_task_id IS NOT NULL)"
    )
    assert normalise_predicate("closed = 0") != normalise_predicate("closed = 1")
    assert [normalise_type(t) for t in ("BIGINT", "double precision", "bytea", "TEXT")] == [
        "integer",
        "real",
        "blob",
        "text",
    ]
    assert normalise_type("INTEGER") != normalise_type("TEXT")


def test_every_kind_of_difference_is_named_precisely() -> None:
    jobs = Table(
        "jobs",
        columns=[Column("id", "text", True, None), Column("closed", "integer", True, "0.0")],
        primary_key=("id",),
        foreign_keys=frozenset({ForeignKey(("parent",), "jobs", ("id",), "CASCADE", "NO ACTION")}),
        indexes={"jobs_open": Index(("closed",), False, "closed = 0")},
        triggers=frozenset({"jobs_touch"}),
    )
    changed = replace(
        jobs,
        columns=[Column("id", "text", True, None), Column("closed", "text", False, "'0'")],
        primary_key=("id", "closed"),
        foreign_keys=frozenset({ForeignKey(("parent",), "jobs", ("id",), "SET NULL", "NO ACTION")}),
        indexes={"jobs_open": Index(("closed",), True, "closed = 1")},
        triggers=frozenset(),
    )
    sqlite = {"jobs": jobs, "only_here": Table("only_here")}
    postgres = {"jobs": changed}
    assert table_differences(sqlite, postgres) == ["table only_here: only in SQLite"]
    assert column_differences(sqlite, postgres) == [
        "table jobs, column closed: type SQLite 'integer' / PostgreSQL 'text'",
        "table jobs, column closed: not_null SQLite True / PostgreSQL False",
        "table jobs, column closed: default SQLite '0.0' / PostgreSQL \"'0'\"",
    ]
    assert primary_key_differences(sqlite, postgres) == [
        "table jobs: primary key SQLite ('id',) / PostgreSQL ('id', 'closed')"
    ]
    assert foreign_key_differences(sqlite, postgres) == [
        "table jobs: foreign key only in SQLite: (parent) -> jobs (id) "
        "ON DELETE CASCADE ON UPDATE NO ACTION",
        "table jobs: foreign key only in PostgreSQL: (parent) -> jobs (id) "
        "ON DELETE SET NULL ON UPDATE NO ACTION",
    ]
    assert index_differences(sqlite, postgres) == [
        "table jobs, index jobs_open: unique SQLite False / PostgreSQL True",
        "table jobs, index jobs_open: partial WHERE SQLite 'closed = 0' / PostgreSQL 'closed = 1'",
    ]
    assert trigger_differences(sqlite, postgres) == [
        "table jobs: trigger jobs_touch only in SQLite"
    ]
    reordered = replace(jobs, columns=list(reversed(jobs.columns)))
    assert column_differences({"jobs": jobs}, {"jobs": reordered}) == [
        "table jobs: columns differ: SQLite ['id', 'closed'] / PostgreSQL ['closed', 'id']"
    ]


def _migrations_plus(backend: Backend, extra_sql: str, folder: Path) -> Path:
    """A copy of one engine's migrations with one more (0999) at the end."""
    shutil.copytree(migrations_dir(backend), folder)
    (folder / "0999_divergence.sql").write_text(extra_sql, "utf-8")
    return folder


async def _migrated_with(target: str | Path, folder: Path) -> None:
    db = await open_database(target, migrate=False)
    try:
        await apply_migrations(db, folder)
    finally:
        await db.close()


async def test_readers_see_a_postgresql_side_divergence(
    schemas: tuple[Schema, Schema], postgres_dsn_factory: DsnFactory, tmp_path: Path
) -> None:
    """End to end: a migration only PostgreSQL got is reported in every aspect it touches."""
    folder = _migrations_plus(
        "postgres",
        """
        ALTER TABLE jobs ALTER COLUMN closed DROP NOT NULL;
        ALTER TABLE jobs ALTER COLUMN closed SET DEFAULT 1;
        ALTER TABLE app_state ADD COLUMN note TEXT;
        CREATE TABLE extra (id BIGINT PRIMARY KEY);
        ALTER TABLE approval_inputs DROP CONSTRAINT approval_inputs_pkey;
        ALTER TABLE job_inputs DROP CONSTRAINT job_inputs_job_id_fkey;
        ALTER TABLE job_inputs ADD FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE SET NULL;
        CREATE INDEX ledger_by_variant ON ledger (variant DESC);
        DROP INDEX jobs_open;
        CREATE INDEX jobs_open ON jobs (created_at) WHERE closed = 1;
        DROP TRIGGER ledger_counts_settlement ON ledger;
        """,
        tmp_path / "postgres",
    )
    dsn = postgres_dsn_factory(migrated=False)
    await _migrated_with(dsn, folder)
    sqlite, _ = schemas
    diverged = await read_postgres_schema(dsn)
    cascade = "(job_id) -> jobs (id) ON DELETE {} ON UPDATE NO ACTION"
    assert set(all_differences(sqlite, diverged)) == {
        "table extra: only in PostgreSQL",
        "table app_state: columns differ: SQLite ['key', 'value'] / "
        "PostgreSQL ['key', 'value', 'note']",
        "table jobs, column closed: not_null SQLite True / PostgreSQL False",
        "table jobs, column closed: default SQLite '0.0' / PostgreSQL '1.0'",
        "table approval_inputs: primary key SQLite ('approval_id', 'position') / PostgreSQL ()",
        "table job_inputs: foreign key only in SQLite: " + cascade.format("CASCADE"),
        "table job_inputs: foreign key only in PostgreSQL: " + cascade.format("SET NULL"),
        "table ledger, index ledger_by_variant: only in PostgreSQL",
        "table jobs, index jobs_open: partial WHERE SQLite 'closed = 0' / PostgreSQL 'closed = 1'",
        "table ledger: trigger ledger_counts_settlement only in SQLite",
    }


async def test_readers_see_a_sqlite_side_divergence(
    schemas: tuple[Schema, Schema], tmp_path: Path
) -> None:
    """End to end: a migration only SQLite got is reported in every aspect it touches."""
    folder = _migrations_plus(
        "sqlite",
        """
        CREATE UNIQUE INDEX approvals_odd ON approvals (guild_id DESC) WHERE state = 'x';
        DROP INDEX audit_by_guild;
        CREATE INDEX audit_by_guild ON audit_log (at, guild_id);
        CREATE TRIGGER jobs_touch AFTER UPDATE ON jobs BEGIN SELECT 1; END;
        ALTER TABLE studios ADD COLUMN extra BLOB;
        CREATE TABLE lonely (id TEXT PRIMARY KEY, n INTEGER UNIQUE);
        """,
        tmp_path / "sqlite",
    )
    path = tmp_path / "diverged.sqlite3"
    await _migrated_with(path, folder)
    _, postgres = schemas
    diverged = read_sqlite_schema(path)
    assert diverged["lonely"].indexes == {"UNIQUE (n)": Index(("n",), True, None)}
    assert diverged["approvals"].indexes["approvals_odd"] == Index(
        ("guild_id DESC",), True, "state = 'x'"
    )
    studio_columns = [c.name for c in postgres["studios"].columns]
    assert set(all_differences(diverged, postgres)) == {
        "table lonely: only in SQLite",
        f"table studios: columns differ: SQLite {[*studio_columns, 'extra']} / "
        f"PostgreSQL {studio_columns}",
        "table approvals, index approvals_odd: only in SQLite",
        "table audit_log, index audit_by_guild: columns SQLite ('at', 'guild_id') / "
        "PostgreSQL ('guild_id', 'at')",
        "table jobs: trigger jobs_touch only in SQLite",
    }
