"""The store's two engines behave alike where the code relies on it, and each keeps the
promises of its own: SQLite bodies run in one trip, PostgreSQL migrates and runs one bot at
a time, whoever starts together."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.errors import SettingsError
from bot.settings import load_settings
from bot.storage.db import Database, Tx, open_database
from bot.storage.migrations import discover
from bot.storage.postgres import to_numbered_placeholders
from bot.storage.sqlite import BodyAwaitedElsewhere
from tests.postgres_fixtures import DsnFactory


def test_placeholders_are_numbered_outside_literals_and_comments() -> None:
    sql = "SELECT '?', \"a?b\", x FROM t WHERE a = ? AND b = ? -- why?\nAND c = 'it''s ?' OR d = ?"
    assert to_numbered_placeholders(sql) == (
        "SELECT '?', \"a?b\", x FROM t WHERE a = $1 AND b = $2 -- why?\nAND c = 'it''s ?' OR d = $3"
    )


async def test_a_body_that_rolls_back_leaves_nothing(db: Database) -> None:
    async def body(tx: Tx) -> None:
        await tx.execute("INSERT INTO app_state (key, value) VALUES (?, ?)", ("k", "v"))
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        await db.run(body)
    assert await db.fetch_value("SELECT count(*) FROM app_state WHERE key = 'k'") == 0


async def test_sums_of_integers_stay_integers(db: Database) -> None:
    await db.execute("INSERT INTO app_state (key, value) VALUES ('a', '1'), ('b', '2')")
    total = await db.fetch_value("SELECT SUM(length(value)) FROM app_state")
    assert total == 2 and isinstance(total, int)  # not a Decimal on PostgreSQL


async def test_an_sqlite_body_may_not_await_anything_but_its_transaction(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "x.sqlite3")
    try:

        async def body(tx: Tx) -> None:
            await tx.execute("INSERT INTO app_state (key, value) VALUES ('k', 'v')")
            await asyncio.sleep(0)  # would hold SQLite's write lock across the event loop

        with pytest.raises(BodyAwaitedElsewhere):
            await db.run(body)
        assert await db.fetch_value("SELECT count(*) FROM app_state") == 0
    finally:
        await db.close()


async def test_processes_starting_together_on_postgresql_migrate_once(
    postgres_dsn_factory: DsnFactory,
) -> None:
    dsn = postgres_dsn_factory(migrated=False)
    stores = await asyncio.gather(*(open_database(dsn) for _ in range(4)))
    try:
        rows = await stores[0].fetch_all("SELECT version FROM schema_migrations ORDER BY 1")
        assert [row[0] for row in rows] == [m.version for m in discover()]
    finally:
        for store in stores:
            await store.close()


def test_database_url_must_be_postgresql_and_never_shows_its_password() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(discord_token="t", database_url="mysql://u:hunter2@db/x")
    assert "DATABASE_URL" in str(refused.value) and "hunter2" not in str(refused.value)
    settings = load_settings(discord_token="t", database_url="postgresql://u:hunter2@db/x")
    assert settings.database_target == "postgresql://u:hunter2@db/x"
    assert "hunter2" not in settings.database_name and "hunter2" not in repr(settings)
