"""`python -m bot` runs the bot; `python -m bot migrate` only applies database migrations."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from bot.errors import SettingsError, StartupError
from bot.instance import InstanceLock, check_web_address
from bot.redaction import install_redaction
from bot.settings import Settings, load_settings


def _configure_logging(settings: Settings) -> None:
    level = settings.log_level
    # Before anything logs: interaction tokens in discord.py's URLs and events, and the
    # configured secrets, are blanked in every record, whatever its level or handler.
    install_redaction(settings.secret_values())
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request URL at INFO; polling URLs carry task tokens.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Health checks and metric scrapes would fill the log.
    if level != "DEBUG":
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def _migrate(settings: Settings) -> None:
    from bot.storage.db import open_database

    db = await open_database(settings.database_target, migrate=False)
    try:
        from bot.storage.migrations import apply_migrations

        applied = await apply_migrations(db)
    finally:
        await db.close()
    print(
        f"{len(applied)} migration(s) applied to {settings.database_name}"
        + (f": {', '.join(applied)}" if applied else " (already up to date)")
    )


async def _run(settings: Settings) -> None:
    from cogs.client import FluxcordBot

    if not settings.bfl_keys() and settings.aiml_api_key is None:
        logging.getLogger("bot").warning(
            "none of BFL_API_KEY, BFL_API_KEYS and AIML_API_KEY is set: no image model is available"
        )
    if settings.database_url is None and str(settings.database_path) != ":memory:":
        # Before the bot opens the database: a second instance would fail the first's jobs.
        # Held until the process ends.
        InstanceLock(settings.database_path).acquire()
    # With PostgreSQL several processes share the store: jobs carry owners and leases, and
    # shards are leased (bot/jobs/work.py, bot/shards.py).
    check_web_address(settings.web_host, settings.web_port)
    bot = FluxcordBot(settings)
    # `docker stop` sends SIGTERM: close cleanly (unfinished jobs resume on the next start).
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
        loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(bot.close()))
    async with bot:
        await bot.start(settings.discord_token.get_secret_value())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Fluxcord Discord bot")
    parser.add_argument("command", nargs="?", choices=["run", "migrate"], default="run")
    args = parser.parse_args(argv)
    try:
        if args.command == "migrate":
            settings = load_settings(discord_token="not-needed-for-migrate")
        else:
            settings = load_settings()
    except SettingsError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings)
    try:
        if args.command == "migrate":
            asyncio.run(_migrate(settings))
        else:
            asyncio.run(_run(settings))
    except KeyboardInterrupt:
        pass
    except StartupError as exc:  # another instance, a busy port, the database: says it all
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # one clear line for start-up failures such as a bad token
        import discord

        if isinstance(exc, discord.LoginFailure):
            print("Configuration error: DISCORD_TOKEN was rejected by Discord", file=sys.stderr)
            return 2
        if isinstance(exc, discord.PrivilegedIntentsRequired):
            print(
                "Discord refused the Message Content intent: enable it in the developer portal "
                "or set MESSAGE_CONTENT_INTENT=false (see the README)",
                file=sys.stderr,
            )
            return 2
        if isinstance(exc, OSError):  # DNS, refused connection, TLS: aiohttp's errors are OSErrors
            print(f"Cannot reach Discord: {type(exc).__name__}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
