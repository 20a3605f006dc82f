"""`python -m bot`: settings errors are one clear line; `migrate` is safe to run twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.errors import SettingsError
from bot.operations.instance import InstanceLock
from bot.settings import load_settings, parse_shard_ids
from bot.storage import migrations
from bot.storage.db import open_database
from bot.storage.migrations import apply_migrations, discover
from tests.fakes.discord_server import FakeDiscord
from tests.postgres_server import PostgresServer

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-very-secret-value-123"
# Settings from the developer's environment that would change what the bot does.
ENV_PREFIXES = ("DISCORD_", "BFL_", "DATABASE_", "PROVIDER_", "LOG_", "DEFAULT_", "SHARD_")


def run_bot(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=tmp_path,  # no stray .env from the developer's checkout
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_token_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = run_bot(tmp_path, BFL_API_KEY=SECRET)
    assert result.returncode == 2
    assert result.stderr.strip() == "Configuration error: DISCORD_TOKEN is required"
    assert SECRET not in result.stderr + result.stdout


def test_malformed_settings_are_named_and_secrets_never_shown(tmp_path: Path) -> None:
    result = run_bot(
        tmp_path,
        DISCORD_TOKEN=SECRET,
        BFL_API_KEY=SECRET,
        PROVIDER_MAX_ACTIVE="lots",
        BFL_API_BASE="ftp://example",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "PROVIDER_MAX_ACTIVE" in lines[0] and "BFL_API_BASE" in lines[0]
    assert SECRET not in result.stderr + result.stdout


def test_settings_come_from_a_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("DISCORD_TOKEN=abc\nPROVIDER_MAX_ACTIVE=7\nDEV_GUILD_ID=\n")
    monkeypatch.chdir(tmp_path)
    for name in ("DISCORD_TOKEN", "PROVIDER_MAX_ACTIVE", "DEV_GUILD_ID"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.discord_token.get_secret_value() == "abc"
    assert settings.provider_max_active == 7
    assert settings.dev_guild_id is None  # blank means default
    assert "abc" not in repr(settings)


def test_load_settings_reports_every_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLL_INITIAL_INTERVAL", "-1")
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    with pytest.raises(SettingsError) as caught:
        load_settings(discord_token="x")
    assert "POLL_INITIAL_INTERVAL" in str(caught.value)
    assert "LOG_LEVEL" in str(caught.value)


def test_migrate_command_applies_once_then_reports_up_to_date(tmp_path: Path) -> None:
    env = {"DATABASE_PATH": str(tmp_path / "db" / "bot.sqlite3")}
    first = run_bot(tmp_path, "migrate", **env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"{len(discover())} migration(s) applied")
    second = run_bot(tmp_path, "migrate", **env)
    assert second.returncode == 0
    assert "already up to date" in second.stdout


async def test_migrations_are_recorded_and_wal_is_on(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "x.sqlite3")
    try:
        assert await db.fetch_value("PRAGMA journal_mode") == "wal"
        # FULL (2): a commit survives power loss, so a job is never submitted twice.
        assert await db.fetch_value("PRAGMA synchronous") == 2
        versions = [r[0] for r in await db.fetch_all("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in discover()]
        assert await apply_migrations(db) == []  # running again changes nothing
    finally:
        await db.close()


async def test_a_broken_migration_leaves_nothing_half_applied(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_ok.sql").write_text("CREATE TABLE a (x INTEGER);")
    (folder / "0002_broken.sql").write_text("CREATE TABLE b (x INTEGER);\nNOT SQL AT ALL;")
    db = await open_database(tmp_path / "y.sqlite3", migrate=False)
    try:
        with pytest.raises(Exception, match="syntax error"):
            await apply_migrations(db, folder)
        tables = {r[0] for r in await db.fetch_all("SELECT name FROM sqlite_master")}
        assert "a" in tables and "b" not in tables
        assert await db.fetch_value("SELECT max(version) FROM schema_migrations") == 1
    finally:
        await db.close()


# --------------------------------------------------------------------------- two processes
async def test_a_migration_applied_meanwhile_by_another_process_is_not_applied_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "shared.sqlite3"
    db = await open_database(path, migrate=False)
    real_discover = migrations.discover

    def discover_after_another_process_migrated(*args: Any) -> list[migrations.Migration]:
        # This migrator has read what is applied (nothing); now a second process applies
        # everything before this one gets to its first transaction.
        other = run_bot(tmp_path, "migrate", DATABASE_PATH=str(path))
        assert other.returncode == 0, other.stderr
        return real_discover(*args)

    monkeypatch.setattr(migrations, "discover", discover_after_another_process_migrated)
    try:
        assert await apply_migrations(db) == []  # nothing left to do, and no error
        versions = [r[0] for r in await db.fetch_all("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in real_discover()]  # each once
    finally:
        await db.close()


def test_two_migrators_started_together_both_succeed(tmp_path: Path) -> None:
    # Racing on a new file: switching it to WAL, then the migrations themselves. A few rounds,
    # since the race is not always lost.
    for round_ in range(3):
        database = tmp_path / f"x{round_}.sqlite3"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_PATH": str(database)}
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "bot", "migrate"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [run.communicate(timeout=60) for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        applied = [int(out.split(" ", 1)[0]) for out, _ in outputs]
        assert sum(applied) == len(discover())  # between them, each migration exactly once
        with contextlib.closing(sqlite3.connect(database)) as conn:
            rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version")
            assert [row[0] for row in rows] == [m.version for m in discover()]


HOLD_LOCK = (
    "import sys, time; from pathlib import Path; from bot.operations.instance import InstanceLock; "
    "InstanceLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)"
)


def test_a_second_instance_on_the_same_database_stops_with_one_line(tmp_path: Path) -> None:
    database = tmp_path / "data" / "bot.sqlite3"
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(database)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout is not None and first.stdout.readline() == "locked\n"
        # The holder's pid, for an operator who wonders which process it is.
        assert Path(f"{database}.lock").read_text() == f"{first.pid}\n"
        second = run_bot(
            tmp_path, DISCORD_TOKEN=SECRET, BFL_API_KEY=SECRET, DATABASE_PATH=str(database)
        )
        assert second.returncode == 1
        assert second.stderr.strip() == (
            f"Another Fluxcord instance is already running on the database {database} "
            f"(it holds {database}.lock): stop it first, or give this one its own "
            "DATABASE_PATH."
        )
        assert not database.exists()  # refused before touching the database
        assert SECRET not in second.stderr + second.stdout
    finally:
        first.kill()
        first.wait()
    # The kernel dropped the lock with the process: the next instance may start.
    with InstanceLock(database):
        pass


def test_a_busy_web_port_is_named_with_the_setting_that_moves_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_bot(
            tmp_path,
            DISCORD_TOKEN=SECRET,
            BFL_API_KEY=SECRET,
            WEB_HOST="127.0.0.1",
            WEB_PORT=str(port),
            DATABASE_PATH=str(tmp_path / "bot.sqlite3"),
        )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"The web server's address 127.0.0.1:{port} is already in use by another program: "
        "set WEB_PORT (or WEB_HOST) to another address, or stop what is using it."
    )
    assert "Cannot reach Discord" not in result.stderr


# --------------------------------------------------------------------------- the real cause
PASSWORD = "pg-secret-password-42"


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The whole of stderr, which must be one line (no traceback), and no secret anywhere."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for secret in (SECRET, PASSWORD):
        assert secret not in result.stderr + result.stdout
    return lines[0]


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, never listening)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def test_an_unknown_default_variant_is_refused_not_replaced(tmp_path: Path) -> None:
    result = run_bot(tmp_path, DISCORD_TOKEN=SECRET, BFL_API_KEY=SECRET, DEFAULT_VARIANT="bogus")
    assert result.returncode == 2
    assert one_line(result) == (
        "Configuration error: DEFAULT_VARIANT=bogus is not a model; choose one of pro, max, "
        "flex, klein-4b, klein-9b, pro-preview, dev, lora, klein-9b-preview"
    )


def test_a_default_variant_whose_key_is_not_set_is_refused(tmp_path: Path) -> None:
    result = run_bot(tmp_path, DISCORD_TOKEN=SECRET, BFL_API_KEY=SECRET, DEFAULT_VARIANT="dev")
    assert result.returncode == 2
    assert one_line(result) == (
        "Configuration error: DEFAULT_VARIANT=dev needs AIML_API_KEY, which is not set: set it, "
        "or choose one of pro, max, flex, klein-4b, klein-9b"
    )
    preview = run_bot(
        tmp_path, DISCORD_TOKEN=SECRET, BFL_API_KEY=SECRET, DEFAULT_VARIANT="pro-preview"
    )
    assert preview.returncode == 2
    assert "set BFL_ENABLE_PREVIEW=true" in one_line(preview)


def test_a_default_variant_the_keys_serve_is_taken() -> None:
    assert (
        load_settings(discord_token="x", aiml_api_key="k", default_variant="Pro ").default_variant
        == "pro"
    )
    with pytest.raises(SettingsError, match="DEFAULT_VARIANT=max needs BFL_API_KEY"):
        load_settings(discord_token="x", aiml_api_key="k", default_variant="max")


def test_a_huge_shard_range_is_refused_before_it_is_built(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="0-99999999 goes past the shards of SHARD_COUNT=4"):
            parse_shard_ids("0-99999999", 4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024  # not the 1.2 GB a set of 10^8 shard numbers takes
    result = run_bot(
        tmp_path,
        DISCORD_TOKEN=SECRET,
        SHARD_COUNT="4",
        SHARD_IDS="0-99999999",
        DATABASE_URL=f"postgresql://fluxcord:{PASSWORD}@127.0.0.1/fluxcord",
    )
    assert result.returncode == 2
    assert one_line(result) == (
        "Configuration error: SHARD_IDS 0-99999999 goes past the shards of SHARD_COUNT=4 (0 to 3)"
    )


def test_migrate_names_an_unreachable_postgresql(tmp_path: Path) -> None:
    with closed_port() as port:
        result = run_bot(
            tmp_path,
            "migrate",
            DATABASE_URL=f"postgresql://fluxcord:{PASSWORD}@127.0.0.1:{port}/fluxcord",
        )
    assert result.returncode == 1
    assert (
        one_line(result) == f"Cannot reach PostgreSQL at 127.0.0.1:{port} (ConnectionRefusedError)"
    )


async def test_run_names_an_unreachable_postgresql_not_discord(tmp_path: Path) -> None:
    """Discord is there (the stand-in); the database is not: the line says which."""
    async with FakeDiscord() as discord_fake:
        with closed_port() as port:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)},
                "PYTHONPATH": str(ROOT),
                "FLUXCORD_TEST_DISCORD": discord_fake.base_url,
                "DISCORD_TOKEN": discord_fake.token,
                "BFL_API_KEY": SECRET,
                "DATABASE_URL": f"postgresql://fluxcord:{PASSWORD}@127.0.0.1:{port}/fluxcord",
                "WEB_HOST": "127.0.0.1",
                "WEB_PORT": "0",
                "LOG_LEVEL": "WARNING",
            }
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.multiprocess.run_bot", cwd=tmp_path, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(process.communicate(), 60)
    result = subprocess.CompletedProcess([], process.returncode or 0, out.decode(), err.decode())
    assert result.returncode == 1
    assert (
        one_line(result) == f"Cannot reach PostgreSQL at 127.0.0.1:{port} (ConnectionRefusedError)"
    )


async def test_a_wrong_password_is_one_line_without_the_password(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    role = "fluxcord_password_test"
    postgres_server.admin(f"DROP ROLE IF EXISTS {role}")
    postgres_server.admin(f"CREATE ROLE {role} LOGIN PASSWORD 'the-right-one'")
    # This role alone must give a password (the server trusts everyone else).
    hba = postgres_server.folder / "data" / "pg_hba.conf"
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    postgres_server.admin("SELECT pg_reload_conf()")
    url = f"postgresql://{role}:{PASSWORD}@127.0.0.1:{postgres_server.port}/postgres"
    with postgres_server.expect_error(f'password authentication failed for user "{role}"'):
        await until_the_server_asks_for_a_password(url)
        result = run_bot(tmp_path, "migrate", DATABASE_URL=url)
    assert result.returncode == 2
    assert one_line(result) == (
        f"PostgreSQL at 127.0.0.1:{postgres_server.port} refused the login (InvalidPasswordError:"
        f' password authentication failed for user "{role}"): check DATABASE_URL'
    )


async def until_the_server_asks_for_a_password(url: str) -> None:
    """pg_reload_conf() only signals the server: wait until the new rule is in force."""
    import asyncpg

    for _ in range(200):
        try:
            connection = await asyncpg.connect(url)
        except asyncpg.InvalidPasswordError:
            return
        await connection.close()
        await asyncio.sleep(0.025)
    raise AssertionError("the server never asked for a password")


def test_a_missing_database_is_one_line(tmp_path: Path, postgres_server: PostgresServer) -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{postgres_server.port}/fluxcord_missing"
    with postgres_server.expect_error('database "fluxcord_missing" does not exist'):
        result = run_bot(tmp_path, "migrate", DATABASE_URL=url)
    assert result.returncode == 2
    assert one_line(result) == (
        f"PostgreSQL at 127.0.0.1:{postgres_server.port} has no database 'fluxcord_missing'"
        " (InvalidCatalogNameError): create it, or fix the database name in DATABASE_URL"
    )


def test_failover_to_aiml_without_its_key_refuses_to_start(tmp_path: Path) -> None:
    result = run_bot(tmp_path, DISCORD_TOKEN=SECRET, BFL_API_KEY=SECRET, FAILOVER="aiml")
    assert result.returncode == 2
    assert one_line(result) == (
        "FAILOVER=aiml needs AIML_API_KEY (the backup provider's key): set it, or set FAILOVER=off"
    )
    assert SECRET not in result.stderr + result.stdout


def test_failover_accepts_only_off_or_aiml(tmp_path: Path) -> None:
    result = run_bot(tmp_path, DISCORD_TOKEN=SECRET, BFL_API_KEY=SECRET, FAILOVER="fal")
    assert result.returncode == 2
    assert one_line(result) == "Configuration error: FAILOVER Input should be 'off' or 'aiml'"
