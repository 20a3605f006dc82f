"""`fluxcord copy-to [postgresql://…]`: move from SQLite to PostgreSQL, with the bot stopped."""

from __future__ import annotations

import argparse

from bot.errors import StartupError
from bot.operations.instance import InstanceLock
from bot.settings import Settings, load_settings

NAME = "copy-to"
HELP = (
    "copy every table of the SQLite database (DATABASE_PATH) into an empty PostgreSQL "
    "database (the URL, or DATABASE_URL), then compare row counts and ledger sums; "
    "stop the bot first"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url",
        nargs="?",
        metavar="POSTGRESQL_URL",
        help="postgresql://user:password@host/database (default: DATABASE_URL, which keeps "
        "the password out of the process list and shell history)",
    )


def load(args: argparse.Namespace) -> Settings:
    # As DATABASE_URL: validated alike, and its password blanked in every log line.
    overrides: dict[str, object] = {"discord_token": "not-needed-for-copy-to"}
    if args.url is not None:
        overrides["database_url"] = args.url
    return load_settings(**overrides)


async def execute(settings: Settings, args: argparse.Namespace) -> int:
    from bot.storage.copy import CopyFailed, copy_sqlite_to_postgres, describe_target

    if settings.database_url is None:
        raise StartupError(
            "Name the PostgreSQL database: fluxcord copy-to postgresql://user:password@host/db"
            " (or set DATABASE_URL)",
            exit_code=2,
        )
    url = settings.database_url.get_secret_value()
    source = settings.database_path
    if not source.is_file():
        raise StartupError(
            f"There is no SQLite database at {source}: check DATABASE_PATH", exit_code=2
        )
    # A bot still running would keep writing what is no longer copied: it must be stopped
    # (it holds this lock while it runs), and none may start until the copy is done.
    with InstanceLock(source):
        print(f"Copying {source} to PostgreSQL {describe_target(url)}")
        try:
            report = await copy_sqlite_to_postgres(source, url)
        except CopyFailed as exc:
            if exc.report is not None:
                print("\n".join(exc.report.lines()))
            raise
    print("\n".join(report.lines()))
    print(
        f"Copied {len(report.rows)} tables, {report.total_rows} rows: every count and sum "
        "matches. Set DATABASE_URL to this database and start the bot."
    )
    return 0


def explain(exc: Exception) -> tuple[str, int] | None:
    """The failures around the copy (a connection lost midway, an unreadable file): one line.
    PostgreSQL rolls the copy back when its connection goes, so nothing was kept."""
    import sqlite3

    import asyncpg

    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return f"The copy failed ({type(exc).__name__}): nothing was kept", 1
    if isinstance(exc, sqlite3.DatabaseError):
        return f"The SQLite database cannot be read ({exc}): nothing was copied", 1
    return None
