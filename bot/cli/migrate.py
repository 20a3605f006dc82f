"""`fluxcord migrate`: apply the database migrations and exit (safe to run twice)."""

from __future__ import annotations

import argparse

from bot.settings import Settings, load_settings

NAME = "migrate"
HELP = "apply the database migrations and exit (safe to run twice)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def load(args: argparse.Namespace) -> Settings:
    return load_settings(discord_token="not-needed-for-migrate")


async def execute(settings: Settings, args: argparse.Namespace) -> int:
    from bot.storage.db import open_database
    from bot.storage.migrations import apply_migrations

    db = await open_database(settings.database_target, migrate=False)
    try:
        applied = await apply_migrations(db)
    finally:
        await db.close()
    print(
        f"{len(applied)} migration(s) applied to {settings.database_name}"
        + (f": {', '.join(applied)}" if applied else " (already up to date)")
    )
    return 0
