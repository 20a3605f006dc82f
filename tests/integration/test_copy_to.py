"""`fluxcord copy-to`: every table of an SQLite database arrives in PostgreSQL as it was
(blobs, JSON, flags, times, a job's parent, identity numbering), checked and printed; a
target that is not empty, a running bot or a failure midway leave nothing behind.

Needs PostgreSQL: skipped when it is not installed (FLUXCORD_REQUIRE_POSTGRES=1 fails).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.storage.copy import BATCH_ROWS, CopyFailed, CopyRefused, copy_sqlite_to_postgres
from bot.storage.db import open_database
from tests.postgres_fixtures import DsnFactory
from tests.postgres_server import PostgresServer
from tests.unit.test_startup import ENV_PREFIXES, ROOT

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40  # with NUL bytes and every byte value
T0 = 1_765_000_000.123456  # a time with a fraction: REAL to DOUBLE PRECISION exactly
JOBS = BATCH_ROWS + 7  # more than one batch


def fill(path: Path) -> None:
    """At least one row in every table, as the bot writes them (flags 0/1, JSON in TEXT,
    image blobs, a remix pointing at its parent, ledger rows whose triggers fill the
    window totals)."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA foreign_keys=ON")
        jobs = []
        for n in range(JOBS):
            closed = 1 if n % 3 else 0
            state = "delivered" if closed else "submitted"
            parent = f"job-{n - 1}" if n % 10 == 9 else None  # a remix of the one before
            jobs.append(
                (
                    f"job-{n}",
                    T0 + n,
                    T0 + n,
                    42,
                    4242,
                    1000 + n % 4,
                    "pro",
                    "bfl",
                    f"prompt {n} ✨ 'quoted'",
                    f'{{"width": 1024, "seed": {n}}}',
                    parent,
                    state,
                    closed,
                    0.03 * (n % 5),
                )
            )
        conn.executemany(
            "INSERT INTO jobs (id, created_at, updated_at, guild_id, channel_id, user_id,"
            " variant, provider, prompt, params, parent_job_id, state, closed, estimated_cost)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            jobs,
        )
        conn.execute(
            "UPDATE jobs SET polling_url = 'https://api.bfl.ai/v1/poll?id=1', owner = 'p-old',"
            " slot = 0, provider_key = 'key#1', claim_seq = 1 WHERE id = 'job-0'"
        )
        for table in ("job_inputs", "job_outputs"):
            conn.execute(
                f"INSERT INTO {table} (job_id, position, content_type, width, height, data)"
                " VALUES ('job-1', 0, 'image/png', 32, 32, ?)",
                (PNG,),
            )
        for n in range(JOBS):
            mc = 3000 + n
            conn.execute(
                "INSERT INTO ledger (job_id, guild_id, user_id, variant, reserved_at, day_start,"
                " week_start, month_start, reserved_mc, reserved_images, credits_mc, images)"
                " VALUES (?, 42, ?, 'pro', ?, 1764979200, 1764547200, 1764547200, ?, 1, ?, 1)",
                (f"job-{n}", 1000 + n % 4, T0 + n, mc, mc),
            )
            if n % 3:
                conn.execute(
                    "UPDATE ledger SET status = 'charged', charged_mc = ?, charged_images = 1,"
                    " credits_mc = ?, settled_at = ?, settled_by = 'delivered' WHERE job_id = ?",
                    (mc - 7, mc - 7, T0 + n + 1, f"job-{n}"),
                )
        conn.executescript(
            f"""
            INSERT INTO app_state (key, value) VALUES ('command_tree', 'abc123');
            INSERT INTO quota_limits VALUES (42, 'user', 1001, 'day', 'images', 5, {T0}, 7);
            INSERT INTO quota_limits VALUES (42, 'guild', 42, 'month', 'credits', NULL, {T0}, 7);
            INSERT INTO quota_grants (id, guild_id, user_id, period, period_start, metric,
                amount, granted_at, granted_by) VALUES (5, 42, 1001, 'day', 1764979200,
                'images', 2, {T0}, 7);
            INSERT INTO quota_audit (id, at, guild_id, actor_id, action, scope, target_id,
                summary) VALUES (9, {T0}, 42, 7, 'grant', 'user', 1001, 'gave 2 images');
            INSERT INTO guild_settings (guild_id, enabled_channels, allowed_variants,
                allow_dms, approval_enabled, temp_block_hours, updated_at, updated_by)
                VALUES (42, '[4242, 4343]', '["pro", "klein-4b"]', 1, 1, 1.5, {T0}, 7);
            INSERT INTO banned_terms (id, guild_id, pattern, is_regex, added_by, added_at)
                VALUES (3, 42, 'bad\\s+word', 1, 7, {T0});
            INSERT INTO strikes (id, guild_id, user_id, at, term, prompt, cleared)
                VALUES (11, 42, 1002, {T0}, 'bad', 'a bad word', 1);
            INSERT INTO blocks VALUES (42, 1003, NULL, 'three strikes', 0, {T0});
            INSERT INTO audit_log (id, at, guild_id, actor_id, action, target_id, job_id,
                detail) VALUES (17, {T0}, 42, 0, 'block', 1003, 'job-2', 'blocked');
            INSERT INTO approvals (id, created_at, guild_id, channel_id, user_id, request)
                VALUES ('ap-1', {T0}, 42, 4242, 1001, '{{"prompt": "a cat"}}');
            INSERT INTO approval_inputs VALUES ('ap-1', 0, 'image/png', 8, 8, x'00ff00ff');
            INSERT INTO studios (thread_id, guild_id, parent_channel_id, starter_id, theme,
                required_words, ends_at, created_at) VALUES (77, 42, 4242, 1001, 'sea',
                '["wave"]', {T0 + 3600}, {T0});
            INSERT INTO processes VALUES ('p-old', {T0}, {T0 + 20}, 'host pid 1');
            INSERT INTO provider_keys VALUES ('key#1', 0, 2, 24, 1);
            INSERT INTO shard_leases VALUES (0, 1, 'p-old', {T0 + 20});
            INSERT INTO bot_budget_alerts VALUES (1764547200, 80, 80000, 100000, {T0});
            INSERT INTO server_members VALUES (42, 1001, {T0});
            INSERT INTO server_departures VALUES (77, {T0});
            INSERT INTO global_blocks VALUES (1002, 'spam everywhere', 1, {T0});
            INSERT INTO bot_defaults VALUES ('default_variant', 'max', 1, {T0});
            INSERT INTO server_loras VALUES (42, 'ink wash', 'Ink Wash', 'org-1/ink', 'klein-4b',
                0.8, 'sumi-e', {T0});
            INSERT INTO guild_welcomes VALUES (42, {T0}, 5);
            INSERT INTO favourites VALUES (1002, 'job-1', {T0});
            INSERT INTO showcase_posts VALUES ('job-1', 42, 4444, 1001, {T0}, 99, {T0 + 1});
            """
        )


@pytest.fixture
async def source(tmp_path: Path) -> Path:
    path = tmp_path / "fluxcord.sqlite3"
    db = await open_database(path)
    await db.close()
    fill(path)
    return path


def every_row(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    return sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)


async def test_every_table_arrives_as_it_was(
    source: Path, postgres_dsn_factory: DsnFactory
) -> None:
    target = postgres_dsn_factory(migrated=False)  # copy-to migrates an empty database
    report = await copy_sqlite_to_postgres(source, target)

    with sqlite3.connect(source) as sqlite:
        tables = [
            name
            for (name,) in sqlite.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                " AND name <> 'schema_migrations' ORDER BY name"
            )
        ]
        empty = [t for t in tables if not sqlite.execute(f"SELECT 1 FROM {t}").fetchone()]
        assert empty == [], "fill() must put rows in every table (a new one was added?)"
        expected = {table: every_row(sqlite, table) for table in tables}
        columns = {
            table: [row[1] for row in sqlite.execute(f"PRAGMA table_info({table})")]
            for table in tables
        }

    conn = await asyncpg.connect(target)
    try:
        for table in tables:
            selected = ", ".join(columns[table])
            rows = [tuple(r) for r in await conn.fetch(f"SELECT {selected} FROM {table}")]
            assert sorted(rows, key=repr) == expected[table], table
        # Identity columns number on after the copied ids, so the next row does not collide.
        next_grant = await conn.fetchval(
            "INSERT INTO quota_grants (guild_id, user_id, period, period_start, metric, amount,"
            " granted_at, granted_by) VALUES (42, 1, 'day', 0, 'images', 1, 0, 7) RETURNING id"
        )
        assert next_grant == 6
        assert (
            await conn.fetchval(
                "INSERT INTO audit_log (at, guild_id, actor_id, action, detail)"
                " VALUES (0, 42, 0, 'x', 'y') RETURNING id"
            )
            == 18
        )
        # The ledger's triggers are back on: a new reservation counts in the window totals.
        before = await conn.fetchval(
            "SELECT credits_mc FROM usage_totals WHERE user_id = 0 AND period = 'month'"
        )
        await conn.execute(
            "INSERT INTO ledger (job_id, guild_id, user_id, variant, reserved_at, day_start,"
            " week_start, month_start, reserved_mc, reserved_images, credits_mc, images)"
            " VALUES ('new', 42, 1001, 'pro', 0, 1764979200, 1764547200, 1764547200,"
            " 3000, 1, 3000, 1)"
        )
        assert (
            await conn.fetchval(
                "SELECT credits_mc FROM usage_totals WHERE user_id = 0 AND period = 'month'"
            )
            == before + 3000
        )
    finally:
        await conn.close()

    figures = {f.name: (f.sqlite, f.postgres) for f in report.rows}
    assert set(figures) == set(tables)
    assert figures["jobs"] == (JOBS, JOBS)
    assert report.ok
    charged = sum(3000 + n - (7 if n % 3 else 0) for n in range(JOBS))
    sums = {f.name: (f.sqlite, f.postgres) for f in report.sums}
    assert sums["ledger.credits_mc"] == (charged, charged)
    assert sums["usage_totals.credits_mc"] == (6 * charged, 6 * charged)  # six windows each


async def test_a_target_that_is_not_empty_is_refused_and_left_alone(
    source: Path, postgres_dsn_factory: DsnFactory
) -> None:
    target = postgres_dsn_factory()
    conn = await asyncpg.connect(target)
    try:
        await conn.execute(
            "INSERT INTO app_state (key, value) VALUES ('mine', 'keep'), ('also', 'keep')"
        )
        with pytest.raises(CopyRefused) as refused:
            await copy_sqlite_to_postgres(source, target)
        assert str(refused.value) == (
            "The target database is not empty: app_state (2 rows). copy-to only fills an empty"
            " database: create a new one (or drop and re-create this one)"
        )
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 0
        assert await conn.fetchval("SELECT count(*) FROM app_state") == 2
    finally:
        await conn.close()


async def test_a_row_postgresql_refuses_rolls_everything_back(
    source: Path, postgres_dsn_factory: DsnFactory, postgres_server: PostgresServer
) -> None:
    with sqlite3.connect(source) as conn:  # SQLite keeps a NUL in text; PostgreSQL cannot
        conn.execute("UPDATE strikes SET prompt = 'bad' || char(0) || 'word'")
    target = postgres_dsn_factory()
    with (
        postgres_server.expect_error("invalid byte sequence for encoding"),
        pytest.raises(CopyFailed) as failed,
    ):
        await copy_sqlite_to_postgres(source, target)
    assert str(failed.value).startswith("Copying strikes failed (")
    assert str(failed.value).endswith("): nothing was kept")
    conn = await asyncpg.connect(target)
    try:
        for table in ("jobs", "ledger", "usage_totals", "app_state"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    finally:
        await conn.close()
    # Fixed, it runs again into the same (still empty) database.
    with sqlite3.connect(source) as conn:
        conn.execute("UPDATE strikes SET prompt = 'bad word'")
    assert (await copy_sqlite_to_postgres(source, target)).ok


def run_command(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=tmp_path,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def with_password(dsn: str, password: str) -> str:
    return dsn.replace("postgresql://postgres@", f"postgresql://postgres:{password}@", 1)


async def test_the_command_prints_the_figures_and_never_the_password(
    source: Path, postgres_dsn_factory: DsnFactory, tmp_path: Path
) -> None:
    password = "copy-secret-password-99"
    target = with_password(postgres_dsn_factory(migrated=False), password)
    assert password in target  # (the test server trusts every login, whatever the password)
    env = {"DATABASE_PATH": str(source), "LOG_LEVEL": "DEBUG"}
    result = await asyncio.to_thread(run_command, tmp_path, "copy-to", target, **env)
    assert result.returncode == 0, result.stderr
    assert password not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"Copying {source} to PostgreSQL test_")
    assert lines[1].split() == ["table", "rows-sqlite", "rows-pg", "ok"]
    assert ["jobs", str(JOBS), str(JOBS), "ok"] in [line.split() for line in lines]
    assert "ledger sums" in result.stdout
    assert lines[-1].startswith("Copied ") and "every count and sum matches" in lines[-1]
    assert not any("MISMATCH" in line for line in lines)

    # Again: the target now holds the data, so it is refused (exit 2), and says why.
    again = await asyncio.to_thread(run_command, tmp_path, "copy-to", **env, DATABASE_URL=target)
    assert again.returncode == 2
    assert again.stderr.splitlines()[-1] == (
        "The target database is not empty: app_state (1 row), approvals (1 row),"
        f" audit_log (1 row) and {len(lines) - 10 - 3} more. copy-to only fills an"
        " empty database: create a new one (or drop and re-create this one)"
    )
    assert password not in again.stdout + again.stderr


async def test_a_running_bot_makes_it_refuse(
    source: Path, postgres_dsn_factory: DsnFactory, tmp_path: Path
) -> None:
    from bot.operations.instance import InstanceLock

    target = postgres_dsn_factory()
    with InstanceLock(source):  # what a running bot holds
        result = await asyncio.to_thread(
            run_command, tmp_path, "copy-to", target, DATABASE_PATH=str(source)
        )
    assert result.returncode == 1
    assert result.stderr.startswith("Another Fluxcord instance is already running on the database")
    assert len(result.stderr.strip().splitlines()) == 1
    conn = await asyncpg.connect(target)
    try:
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 0
    finally:
        await conn.close()


async def test_an_sqlite_database_behind_this_release_is_refused_before_the_target_is_touched(
    source: Path, postgres_dsn_factory: DsnFactory
) -> None:
    with sqlite3.connect(source) as conn:  # as if the last migration had not been applied
        latest = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
        conn.execute("DELETE FROM schema_migrations WHERE version = ?", (latest,))
        # (Numbers may have gaps while branches that each took one are merged.)
        before = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    target = postgres_dsn_factory(migrated=False)
    with pytest.raises(CopyRefused) as refused:
        await copy_sqlite_to_postgres(source, target)
    assert str(refused.value) == (
        f"The SQLite database is at schema version {before}, this release's is {latest}:"
        " run `fluxcord migrate` first (with the bot stopped)"
    )
    conn = await asyncpg.connect(target)
    try:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            )
            == 0
        )
    finally:
        await conn.close()


async def test_images_are_streamed_a_few_at_a_time(
    tmp_path: Path, postgres_dsn_factory: DsnFactory
) -> None:
    """40 reference images of 1 MB: the copy never holds more than a few of them."""
    path = tmp_path / "images.sqlite3"
    db = await open_database(path)
    await db.close()
    image = os.urandom(1_000_000)
    with sqlite3.connect(path) as conn:
        for n in range(40):
            conn.execute(
                "INSERT INTO jobs (id, created_at, updated_at, channel_id, user_id, variant,"
                " provider, prompt, params, state) VALUES (?, 0, 0, 1, 1, 'pro', 'bfl', 'p',"
                " '{}', 'queued')",
                (f"job-{n}",),
            )
            conn.execute(
                "INSERT INTO job_inputs VALUES (?, 0, 'image/png', 1, 1, ?)",
                (f"job-{n}", image[n:] + image[:n]),
            )
    target = postgres_dsn_factory()
    tracemalloc.start()
    try:
        report = await copy_sqlite_to_postgres(path, target)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok
    assert peak < 15_000_000, f"{peak / 1e6:.1f} MB held at once"
    conn = await asyncpg.connect(target)
    try:
        copied = await conn.fetchval("SELECT data FROM job_inputs WHERE job_id = 'job-7'")
        assert copied == image[7:] + image[:7]
    finally:
        await conn.close()
