"""`fluxcord backup`: a sound, complete copy of a database the bot has open, under a name
that never replaces an earlier backup; refusals are one line."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

import bot.storage.backup as backup_module
from bot.storage.backup import backup_database, describe_size
from bot.storage.db import Database, open_database
from tests.unit.test_startup import one_line, run_bot

AT = dt.datetime(2026, 12, 7, 18, 35, 1, tzinfo=dt.UTC)


async def live_database(path: Path, rows: int = 50, size: int = 500) -> Database:
    """A database as the running bot holds it, with recent writes only in the -wal file."""
    db = await open_database(path)
    await db.execute("PRAGMA wal_autocheckpoint=100000")
    await db.run(
        lambda tx: tx.execute_many(
            "INSERT INTO app_state (key, value) VALUES (?, ?)",
            [(f"key{n}", "x" * size) for n in range(rows)],
        )
    )
    assert path.with_name(path.name + "-wal").stat().st_size > 0
    return db


def read(path: Path, sql: str) -> object:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchone()[0]


def test_the_command_copies_a_live_database_into_a_new_file_each_time(tmp_path: Path) -> None:
    live = tmp_path / "data" / "fluxcord.sqlite3"

    async def open_live() -> Database:
        return await live_database(live)

    # The bot's connection stays open (and its writes in the WAL) while the command runs.
    loop = asyncio.new_event_loop()
    db = loop.run_until_complete(open_live())
    try:
        first = run_bot(tmp_path, "backup", DATABASE_PATH=str(live))
        second = run_bot(tmp_path, "backup", DATABASE_PATH=str(live))
        assert loop.run_until_complete(db.fetch_value("SELECT count(*) FROM app_state")) == 50
    finally:
        loop.run_until_complete(db.close())
        loop.close()

    written = []
    for result in (first, second):
        assert result.returncode == 0, result.stderr
        found = re.fullmatch(
            r"Backup written: (\S+) \((\d+\.\d) KB, schema (\d+), integrity ok\)\n", result.stdout
        )
        assert found is not None, result.stdout
        written.append(Path(found.group(1)))
    # Beside the database by default, timestamped, never the same name twice.
    assert written[0] != written[1]
    for path in written:
        assert path.parent == live.parent / "backups"
        assert re.fullmatch(r"fluxcord-\d{8}-\d{6}Z(-\d+)?\.sqlite3", path.name)
        assert read(path, "PRAGMA integrity_check") == "ok"
        assert read(path, "SELECT count(*) FROM app_state") == 50  # the WAL-only writes too
        assert read(path, "PRAGMA journal_mode") == "delete"  # one file, nothing beside it
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the bot's secrets
    assert sorted(p.name for p in written[0].parent.iterdir()) == sorted(p.name for p in written)


async def test_backups_in_the_same_second_get_their_own_names(tmp_path: Path) -> None:
    live = tmp_path / "fluxcord.sqlite3"
    db = await live_database(live, rows=3)
    try:
        folder = tmp_path / "kept"
        made = [await backup_database(live, folder, now=AT) for _ in range(3)]
        named = await backup_database(live, tmp_path / "mine.sqlite3", now=AT)
        again = await backup_database(live, tmp_path / "mine.sqlite3", now=AT)
    finally:
        await db.close()
    assert [r.path.name for r in made] == [
        "fluxcord-20261207-183501Z.sqlite3",
        "fluxcord-20261207-183501Z-2.sqlite3",
        "fluxcord-20261207-183501Z-3.sqlite3",
    ]
    assert (named.path.name, again.path.name) == ("mine.sqlite3", "mine-2.sqlite3")
    for result in [*made, named, again]:
        assert result.size == result.path.stat().st_size
        assert result.schema_version == read(live, "SELECT max(version) FROM schema_migrations")
        assert read(result.path, "SELECT count(*) FROM app_state") == 3


async def test_the_bot_keeps_writing_during_a_backup_which_is_one_instant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Midway through the copy another connection (the bot) writes, without waiting for
    any lock; the copy is the database as it was when the backup began."""
    monkeypatch.setattr(backup_module, "PAGES_PER_STEP", 8)
    live = tmp_path / "fluxcord.sqlite3"
    db = await live_database(live, rows=400, size=2000)  # a few hundred pages
    written_midway: list[int] = []

    def midway(remaining: int, total: int) -> None:
        if written_midway or remaining > total // 2:
            return
        bot = sqlite3.connect(live, isolation_level=None, timeout=0)  # no waiting for a lock
        try:
            bot.execute("INSERT INTO app_state (key, value) VALUES ('during', 'backup')")
            bot.execute("UPDATE app_state SET value = 'changed' WHERE key = 'key0'")
        finally:
            bot.close()
        written_midway.append(remaining)

    try:
        result = await backup_database(live, tmp_path / "copy.sqlite3", progress=midway)
        assert await db.fetch_value("SELECT count(*) FROM app_state") == 401
    finally:
        await db.close()
    assert written_midway, "the progress callback never ran halfway"
    assert read(result.path, "PRAGMA integrity_check") == "ok"
    assert read(result.path, "SELECT count(*) FROM app_state") == 400
    assert read(result.path, "SELECT value FROM app_state WHERE key = 'key0'") == "x" * 2000


async def test_a_cancelled_backup_stops_its_thread_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backup_module, "PAGES_PER_STEP", 8)
    stops: list[threading.Event] = []

    class RecordedEvent(threading.Event):
        def __init__(self) -> None:
            super().__init__()
            stops.append(self)

    monkeypatch.setattr(backup_module, "Event", RecordedEvent)
    live = tmp_path / "fluxcord.sqlite3"
    db = await live_database(live, rows=400, size=2000)
    loop = asyncio.get_running_loop()
    steps: list[bool] = []

    def cancel_at_first_step(remaining: int, total: int) -> None:
        if not steps:
            loop.call_soon_threadsafe(task.cancel)
            steps.append(stops[0].wait(10))  # until the cancelled caller asks it to stop
        else:
            steps.append(True)

    folder = tmp_path / "kept"
    task = asyncio.create_task(backup_database(live, folder, progress=cancel_at_first_step))
    try:
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await db.close()
    assert steps == [True]  # the thread stopped at the step after it was asked to
    assert list(folder.iterdir()) == []


def test_postgresql_and_a_missing_database_are_refused_in_one_line(tmp_path: Path) -> None:
    password = "pg-password-123456"
    on_postgres = run_bot(
        tmp_path, "backup", DATABASE_URL=f"postgresql://fluxcord:{password}@db.example/fluxcord"
    )
    assert on_postgres.returncode == 2
    assert one_line(on_postgres) == (
        "DATABASE_URL is set: back up PostgreSQL with pg_dump -Fc (see docs/backups.md)"
    )
    assert password not in on_postgres.stderr + on_postgres.stdout

    missing = run_bot(tmp_path, "backup", DATABASE_PATH=str(tmp_path / "nope.sqlite3"))
    assert missing.returncode == 2
    assert one_line(missing) == (
        f"There is no SQLite database at {tmp_path / 'nope.sqlite3'}: check DATABASE_PATH"
    )
    assert not (tmp_path / "nope.sqlite3").exists()  # not created empty either

    (tmp_path / "notes.txt").write_text("not a database, but long enough to be read " * 100)
    garbage = run_bot(tmp_path, "backup", DATABASE_PATH=str(tmp_path / "notes.txt"))
    assert garbage.returncode == 1
    assert one_line(garbage) == "The backup failed: file is not a database"
    assert not (tmp_path / "backups").exists() or list((tmp_path / "backups").iterdir()) == []


def test_sizes_read_as_people_write_them() -> None:
    assert [describe_size(n) for n in (0, 999, 1000, 278_528, 12_345_678, 9 * 10**12)] == [
        "0 bytes",
        "999 bytes",
        "1.0 KB",
        "278.5 KB",
        "12.3 MB",
        "9000.0 GB",
    ]
