"""Community servers in Discord: the audit channel (and, below, moderators' commands)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.community.audit import AuditEntry
from cogs.render import NO_PINGS

if TYPE_CHECKING:
    from bot.app import FluxcordBot

log = logging.getLogger(__name__)


class ChannelAuditSink:
    """Posts audit entries to a server's audit channel, never pinging anyone."""

    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot

    async def post(self, channel_id: int, entry: AuditEntry) -> None:
        channel = self.bot.get_channel(channel_id) or await self.bot.fetch_channel(channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            return
        await channel.send(
            entry.line()[:2000],
            allowed_mentions=NO_PINGS,
            silent=True,
        )


class Community(commands.Cog):
    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.audit.sink = ChannelAuditSink(self.bot)

    async def cog_unload(self) -> None:
        self.bot.audit.sink = None


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(Community(bot))
