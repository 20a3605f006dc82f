"""`python -m bot`: settings errors are one clear line; `migrate` is safe to run twice."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.errors import SettingsError
from bot.instance import InstanceLock
from bot.settings import load_settings
from bot.storage import migrations
from bot.storage.db import open_database
from bot.storage.migrations import apply_migrations, discover

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-very-secret-value-123"


def run_bot(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("DISCORD_", "BFL_", "DATABASE_", "PROVIDER_", "LOG_"))}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=tmp_path,  # no stray .env from the developer's checkout
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True, text=True, timeout=60,
    )


def test_missing_token_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = run_bot(tmp_path, BFL_API_KEY=SECRET)
    assert result.returncode == 2
    assert result.stderr.strip() == "Configuration error: DISCORD_TOKEN is required"
    assert SECRET not in result.stderr + result.stdout


def test_malformed_settings_are_named_and_secrets_never_shown(tmp_path: Path) -> None:
    result = run_bot(
        tmp_path, DISCORD_TOKEN=SECRET, BFL_API_KEY=SECRET,
        PROVIDER_MAX_ACTIVE="lots", BFL_API_BASE="ftp://example",
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
                [sys.executable, "-m", "bot", "migrate"], cwd=tmp_path, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
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
    "import sys, time; from pathlib import Path; from bot.instance import InstanceLock; "
    "InstanceLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)"
)


def test_a_second_instance_on_the_same_database_stops_with_one_line(tmp_path: Path) -> None:
    database = tmp_path / "data" / "bot.sqlite3"
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(database)], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert first.stdout is not None and first.stdout.readline() == "locked\n"
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
            tmp_path, DISCORD_TOKEN=SECRET, BFL_API_KEY=SECRET, WEB_HOST="127.0.0.1",
            WEB_PORT=str(port),
            DATABASE_PATH=str(tmp_path / "bot.sqlite3"),
        )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"The web server's address 127.0.0.1:{port} is already in use by another program: "
        "set WEB_PORT (or WEB_HOST) to another address, or stop what is using it."
    )
    assert "Cannot reach Discord" not in result.stderr
