"""`fluxcord run` (the default): connect to Discord and serve until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from bot.operations.instance import InstanceLock, check_web_address
from bot.services import check_failover
from bot.settings import Settings, load_settings
from bot.version import __version__

NAME = "run"
HELP = "run the bot (the default)"

log = logging.getLogger("bot")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def load(args: argparse.Namespace) -> Settings:
    return load_settings()


async def execute(settings: Settings, args: argparse.Namespace) -> int:
    from cogs.client import FluxcordBot

    if not settings.bfl_keys() and settings.aiml_api_key is None:
        log.warning(
            "none of BFL_API_KEY, BFL_API_KEYS and AIML_API_KEY is set: no image model is available"
        )
    check_failover(settings)  # before anything connects: one line for the admin
    if settings.database_url is None and str(settings.database_path) != ":memory:":
        # Before the bot opens the database: a second instance would fail the first's jobs.
        # Held until the process ends.
        InstanceLock(settings.database_path).acquire()
    # With PostgreSQL several processes share the store: jobs carry owners and leases, and
    # shards are leased (bot/jobs/work.py, bot/shards.py).
    check_web_address(settings.web_host, settings.web_port)
    # After the checks above, so that a start-up refused for them stays one line.
    log.info("Fluxcord %s starting", __version__)
    bot = FluxcordBot(settings)
    # `docker stop` sends SIGTERM: close cleanly (unfinished jobs resume on the next start).
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
        loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(bot.close()))
    async with bot:
        await bot.start(settings.discord_token.get_secret_value())
    return 0


def explain(exc: Exception) -> tuple[str, int] | None:
    """One clear line for the start-up failures an admin meets, such as a bad token."""
    import discord

    if isinstance(exc, discord.LoginFailure):
        return "Configuration error: DISCORD_TOKEN was rejected by Discord", 2
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return (
            "Discord refused the Message Content intent: enable it in the developer portal "
            "or set MESSAGE_CONTENT_INTENT=false (see the README)",
            2,
        )
    if isinstance(exc, OSError):  # DNS, refused connection, TLS: aiohttp's errors are OSErrors
        return f"Cannot reach Discord: {type(exc).__name__}", 1
    return None
