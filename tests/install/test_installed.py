"""The installed `fluxcord` command, from a wheel in a fresh virtual environment: the version,
and the schema that `migrate` creates from the migrations shipped inside the package."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from bot.version import __version__
from tests.install.conftest import Installed
from tests.postgres_fixtures import DsnFactory

ROOT = Path(__file__).resolve().parents[2]
CHECKOUT_MIGRATIONS = sorted(p.name for p in (ROOT / "migrations" / "sqlite").glob("*.sql"))


def query(database: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return list(conn.execute(sql).fetchall())


def test_the_console_script_and_python_m_bot_print_the_version(installed: Installed) -> None:
    result = installed.run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"fluxcord {__version__}"
    module = installed.python("-m", "bot", "--version")
    assert module.returncode == 0, module.stderr
    assert module.stdout.strip() == f"fluxcord {__version__}"


def test_the_wheel_ships_every_migration(installed: Installed) -> None:
    listed = installed.python(
        "-c",
        "from bot.storage.migrations import discover, migrations_dir; "
        "print(*(m.name for m in discover(migrations_dir('postgres'))));"
        "print(*(m.name for m in discover(migrations_dir('sqlite'))), migrations_dir('sqlite'))",
    )
    assert listed.returncode == 0, listed.stderr
    postgres, sqlite = listed.stdout.splitlines()
    *names, folder = sqlite.split()
    assert names == CHECKOUT_MIGRATIONS == postgres.split()
    assert Path(folder).is_relative_to(installed.venv)


def test_migrate_creates_the_schema_then_reports_up_to_date(
    installed: Installed, tmp_path: Path
) -> None:
    database = tmp_path / "data" / "fluxcord.sqlite3"
    env = {"DATABASE_PATH": str(database)}
    first = installed.run("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"{len(CHECKOUT_MIGRATIONS)} migration(s) applied to ")
    recorded = query(database, "SELECT name FROM schema_migrations ORDER BY version")
    assert [name for (name,) in recorded] == CHECKOUT_MIGRATIONS
    tables = {name for (name,) in query(database, "SELECT name FROM sqlite_master")}
    assert {"jobs", "guild_settings", "ledger"} <= tables, tables

    second = installed.run("migrate", env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().endswith("(already up to date)")


def test_migrate_refuses_a_schema_newer_than_the_release(
    installed: Installed, tmp_path: Path
) -> None:
    database = tmp_path / "fluxcord.sqlite3"
    env = {"DATABASE_PATH": str(database)}
    assert installed.run("migrate", env=env).returncode == 0
    newer = len(CHECKOUT_MIGRATIONS) + 1
    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
            (newer, f"{newer:04d}_from_a_newer_release.sql"),
        )
    refused = installed.run("migrate", env=env)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        f"This database's schema is version {newer}, newer than this release of Fluxcord"
        f" ({__version__}) knows ({newer - 1}): upgrade Fluxcord, or restore the backup taken"
        " before the upgrade."
    ]


def test_backup_writes_a_new_checked_copy_each_time(installed: Installed, tmp_path: Path) -> None:
    database = tmp_path / "fluxcord.sqlite3"
    env = {"DATABASE_PATH": str(database)}
    assert installed.run("migrate", env=env).returncode == 0
    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        conn.execute("INSERT INTO app_state (key, value) VALUES ('installed-test', 'kept')")
    folder = tmp_path / "backups"
    # Twice in the same second: the README's old one-liner failed on the second run.
    runs = [installed.run("backup", str(folder), env=env) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    copies = sorted(folder.iterdir())
    assert len(copies) == 2
    for copy in copies:
        assert copy.name.startswith("fluxcord-") and copy.suffix == ".sqlite3"
        assert query(copy, "PRAGMA integrity_check") == [("ok",)]
        assert query(copy, "SELECT value FROM app_state WHERE key = 'installed-test'") == [
            ("kept",)
        ]
    # Each run names the file it wrote.
    assert {c.name for c in copies} == {
        next(c.name for c in copies if c.name in run.stdout) for run in runs
    }


def test_copy_to_moves_an_sqlite_database_into_postgresql(
    installed: Installed, tmp_path: Path, postgres_dsn_factory: DsnFactory
) -> None:
    database = tmp_path / "fluxcord.sqlite3"
    env = {"DATABASE_PATH": str(database)}
    assert installed.run("migrate", env=env).returncode == 0
    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        conn.execute("INSERT INTO app_state (key, value) VALUES ('installed-test', 'moved')")
    copied = installed.run("copy-to", postgres_dsn_factory(migrated=False), env=env)
    assert copied.returncode == 0, copied.stderr
    assert "every count and sum matches" in copied.stdout.splitlines()[-1]
    assert ["app_state", "1", "1", "ok"] in [line.split() for line in copied.stdout.splitlines()]
