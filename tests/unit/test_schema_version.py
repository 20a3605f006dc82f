"""A release never runs on a schema it doesn't know, and an install without its migrations
says it is broken instead of "up to date". On both engines (FLUXCORD_TEST_DATABASE)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot import cli
from bot.cli import main
from bot.errors import MigrationsMissing, SchemaNewerThanRelease
from bot.storage import migrations
from bot.storage.db import open_database
from bot.storage.migrations import (
    apply_migrations,
    check_schema_is_known,
    discover,
    migrations_dir,
    schema_version,
)
from bot.version import __version__
from tests.fakes.discord_server import FakeDiscord
from tests.unit.test_startup import ENV_PREFIXES, ROOT, SECRET, one_line

SHIPPED = max(m.version for m in discover())
NEWER = SHIPPED + 1
REFUSAL = (
    f"This database's schema is version {NEWER}, newer than this release of Fluxcord "
    f"({__version__}) knows ({SHIPPED}): upgrade Fluxcord, or restore the backup taken before "
    "the upgrade."
)


def database_env(target: str | Path) -> dict[str, str]:
    if isinstance(target, Path):
        return {"DATABASE_PATH": str(target)}
    return {"DATABASE_URL": target}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


async def migrated_by_a_newer_release(target: str | Path) -> None:
    """What a newer release leaves behind: one migration this release doesn't ship."""
    db = await open_database(target)
    try:
        await db.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
            (NEWER, f"{NEWER:04d}_from_a_newer_release.sql"),
        )
    finally:
        await db.close()


async def recorded_versions(target: str | Path) -> list[int]:
    db = await open_database(target, migrate=False)
    try:
        rows = await db.fetch_all("SELECT version FROM schema_migrations ORDER BY version")
        return [int(row[0]) for row in rows]
    finally:
        await db.close()


async def test_migrate_refuses_a_newer_schema_in_one_line(
    database_target: str | Path, tmp_path: Path
) -> None:
    await migrated_by_a_newer_release(database_target)
    before = await recorded_versions(database_target)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot", "migrate"],
        cwd=tmp_path,
        env=clean_env(**database_env(database_target)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert one_line(result) == REFUSAL
    assert "up to date" not in result.stdout
    assert await recorded_versions(database_target) == before  # nothing applied, nothing lost


async def test_run_refuses_a_newer_schema_in_one_line(
    database_target: str | Path, tmp_path: Path
) -> None:
    await migrated_by_a_newer_release(database_target)
    async with FakeDiscord() as discord_fake:
        env = clean_env(
            FLUXCORD_TEST_DISCORD=discord_fake.base_url,
            DISCORD_TOKEN=discord_fake.token,
            BFL_API_KEY=SECRET,
            WEB_HOST="127.0.0.1",
            WEB_PORT="0",
            LOG_LEVEL="WARNING",
            **database_env(database_target),
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.multiprocess.run_bot", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
    result = subprocess.CompletedProcess([], process.returncode or 0, out.decode(), err.decode())
    assert result.returncode == 1
    assert one_line(result) == REFUSAL


async def test_opening_a_newer_schema_refuses_and_reports_the_versions(
    database_target: str | Path,
) -> None:
    await migrated_by_a_newer_release(database_target)
    with pytest.raises(SchemaNewerThanRelease) as refused:
        await open_database(database_target)
    assert str(refused.value) == REFUSAL
    db = await open_database(database_target, migrate=False)  # what backup or doctor do
    try:
        assert await schema_version(db) == NEWER
        with pytest.raises(SchemaNewerThanRelease):
            await check_schema_is_known(db)
    finally:
        await db.close()


async def test_the_current_schema_and_an_empty_database_are_known(
    database_target: str | Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db = await open_database(database_target)
    try:
        assert await schema_version(db) == SHIPPED
        await check_schema_is_known(db)  # no error
    finally:
        await db.close()
    empty: str | Path = tmp_path / "empty.sqlite3"
    if not isinstance(database_target, Path):
        empty = request.getfixturevalue("postgres_dsn_factory")(migrated=False)
    db = await open_database(empty, migrate=False)
    try:
        assert await schema_version(db) is None
        await check_schema_is_known(db)
    finally:
        await db.close()


async def test_an_empty_migrations_folder_is_a_broken_install(tmp_path: Path) -> None:
    folder = tmp_path / "sqlite"
    folder.mkdir()
    db = await open_database(tmp_path / "x.sqlite3", migrate=False)
    try:
        broken = r"^No migrations shipped in .*: this installation of Fluxcord is broken, reinstall"
        with pytest.raises(MigrationsMissing, match=broken):
            await apply_migrations(db, folder)
        with pytest.raises(MigrationsMissing):
            await apply_migrations(db, tmp_path / "missing")
    finally:
        await db.close()


def test_migrate_without_shipped_migrations_never_says_up_to_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a wheel built without its package data did: "already up to date" on an empty
    database, then `no such table` at the first command."""
    shipped_nothing = tmp_path / "site-packages" / "migrations"
    (shipped_nothing / "sqlite").mkdir(parents=True)
    monkeypatch.setattr(migrations, "migrations_dir", lambda backend: shipped_nothing / backend)
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_PATH", str(tmp_path / "bot.sqlite3"))
    monkeypatch.chdir(tmp_path)
    # In-process: keep the entry point's logging set-up (handlers, levels, redaction) out of
    # the tests that run after this one.
    monkeypatch.setattr(cli, "configure_logging", lambda settings: None)
    assert main(["migrate"]) == 1
    captured = capsys.readouterr()
    assert "up to date" not in captured.out
    assert captured.err.strip() == (
        f"No migrations shipped in {shipped_nothing / 'sqlite'}: this installation of Fluxcord"
        " is broken, reinstall it."
    )


def test_the_migrations_are_read_from_the_package() -> None:
    import migrations as package

    folder = migrations_dir("sqlite")
    assert Path(str(folder)).parent == Path(package.__file__).parent
    assert [m.name for m in discover(migrations_dir("postgres"))] == [
        m.name for m in discover(folder)
    ]
