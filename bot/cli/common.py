"""What every subcommand shares: logging with secrets blanked, and one-line failures."""

from __future__ import annotations

import logging
import sys

from bot.redaction import install_redaction
from bot.settings import DISCORD_API_BASE, Settings

DEFAULT_COMMAND = "run"


def configure_logging(settings: Settings) -> None:
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


def point_discord_at(settings: Settings) -> None:
    """Send discord.py's REST calls to DISCORD_API_BASE when it is not Discord's own address
    (a REST proxy). discord.py reads the base from one class attribute. Only REST moves: the
    gateway's address is the one the REST answer names (Discord's, through a proxy)."""
    if settings.discord_api_base == DISCORD_API_BASE:
        return
    from discord.http import Route

    Route.BASE = f"{settings.discord_api_base}/api/v10"
