"""`fluxcord backup [PATH]`: a consistent copy of the SQLite database, while the bot runs."""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from bot.errors import StartupError
from bot.settings import Settings, load_settings

NAME = "backup"
HELP = (
    "copy the SQLite database to a new timestamped file, safely while the bot runs "
    "(PATH: a folder or a file name; default BACKUP_DIR, or backups/ beside the database)"
)
DOCS = "docs/backups.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", type=Path, metavar="PATH")


def load(args: argparse.Namespace) -> Settings:
    return load_settings(discord_token="not-needed-for-backup")


async def execute(settings: Settings, args: argparse.Namespace) -> int:
    from bot.storage.backup import backup_database, describe_size

    if settings.database_url is not None:
        raise StartupError(
            "DATABASE_URL is set: back up PostgreSQL with pg_dump -Fc (see " + DOCS + ")",
            exit_code=2,
        )
    # No instance lock: the point is to copy while the bot runs.
    destination: Path | None = args.path if args.path is not None else settings.backup_dir
    result = await backup_database(settings.database_path, destination)
    version = "" if result.schema_version is None else f", schema {result.schema_version}"
    print(f"Backup written: {result.path} ({describe_size(result.size)}{version}, integrity ok)")
    return 0


def explain(exc: Exception) -> tuple[str, int] | None:
    if isinstance(exc, sqlite3.DatabaseError | OSError):
        return f"The backup failed: {exc}", 1
    return None
