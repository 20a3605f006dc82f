"""`/studio start|lock|end`: shared creation threads in Discord.

The rules and the state are in bot/community/studio.py; this cog creates the thread, answers
the commands, and is the `StudioView` the core posts galleries and locks threads through.
Refusals are ephemeral. Lock and end are for the studio's starter and moderators, checked when
the command runs (the command itself is offered to everyone, for the starter's sake).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from typing import TYPE_CHECKING, Any, Final

import discord
from discord import app_commands
from discord.ext import commands

from bot.community.studio import (
    DEFAULT_HOURS,
    GALLERY_FILENAME,
    MAX_HOURS,
    MAX_THEME_CHARS,
    MIN_HOURS,
    Studio,
    announcement_text,
    ending_text,
    intro_text,
)
from bot.errors import InvalidRequest
from cogs.checks import may_run_studios
from cogs.flow import image_attachments, requester
from cogs.render import NO_PINGS

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

log = logging.getLogger(__name__)

# Discord's longest auto-archive delay (minutes): a quiet studio stays in the channel list.
AUTO_ARCHIVE_MINUTES: Final = 10080
MAX_READ_BYTES = 25 * 1024 * 1024  # a result image is far smaller; never read more


class DiscordStudioView:
    """Implements bot.community.studio.StudioView."""

    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot

    async def _channel(self, channel_id: int) -> discord.TextChannel | discord.Thread | None:
        # Archived threads are not cached: fetch them.
        channel: Any = self.bot.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self.bot.fetch_channel(channel_id)
            except (discord.NotFound, discord.Forbidden):
                return None
        return channel if isinstance(channel, discord.TextChannel | discord.Thread) else None

    async def _thread(self, studio: Studio) -> discord.Thread | None:
        channel = await self._channel(studio.thread_id)
        return channel if isinstance(channel, discord.Thread) else None

    async def read_image(self, studio: Studio, message_id: int) -> bytes | None:
        thread = await self._thread(studio)
        if thread is None:
            return None
        try:
            message = await thread.fetch_message(message_id)
            images = [a for a in image_attachments(message) if a.size <= MAX_READ_BYTES]
            return await images[0].read() if images else None
        except discord.HTTPException:
            return None  # deleted meanwhile: the contact sheet shows an empty tile

    async def post(self, channel_id: int, text: str, sheet: bytes | None) -> int | None:
        channel = await self._channel(channel_id)
        if channel is None:
            return None
        file = discord.File(io.BytesIO(sheet), filename=GALLERY_FILENAME) if sheet else None
        try:
            if isinstance(channel, discord.Thread) and channel.archived:
                # An archived thread takes no message while it is locked: reopen it first.
                channel = await channel.edit(archived=False)
            if file is None:
                message = await channel.send(text, allowed_mentions=NO_PINGS)
            else:
                message = await channel.send(text, file=file, allowed_mentions=NO_PINGS)
        except discord.Forbidden:
            return None
        return message.id

    async def lock_thread(self, studio: Studio) -> None:
        thread = await self._thread(studio)
        if thread is not None and not thread.locked:
            await thread.edit(locked=True, archived=False)

    async def close_thread(self, studio: Studio) -> None:
        thread = await self._thread(studio)
        if thread is None or (thread.archived and thread.locked):
            return
        try:
            if thread.archived:  # Discord takes no other change to an archived thread
                thread = await thread.edit(archived=False)
            await thread.edit(archived=True, locked=True)
        except discord.Forbidden:  # not retried for ever: the galleries are what matters
            log.warning("not allowed to archive and lock studio thread %s", studio.thread_id)


class StudioCog(commands.Cog):
    studio = app_commands.Group(
        name="studio", description="Shared creation threads with a theme", guild_only=True
    )

    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot
        self._sweeper: asyncio.Task[None] | None = None

    async def cog_load(self) -> None:
        self.bot.services.studios.view = DiscordStudioView(self.bot)
        # Ends studios whose time is up, also those that ended while the bot was offline.
        self._sweeper = asyncio.create_task(
            self.bot.services.studios.run(self.bot.wait_until_ready)
        )

    async def cog_unload(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self.bot.services.studios.view = None

    @studio.command(name="start", description="Open a shared creation thread with a theme")
    @app_commands.describe(
        theme="A style added to every prompt made in the thread",
        required_words="Words every prompt must contain, comma-separated",
        duration=f"How long it stays open, in hours (default {DEFAULT_HOURS:g}, at most a week)",
        budget="The most credits the whole thread may spend (the server's allowances apply too)",
    )
    async def start(
        self,
        interaction: discord.Interaction[Any],
        theme: app_commands.Range[str, 1, MAX_THEME_CHARS],
        required_words: app_commands.Range[str, 1, 500] | None = None,
        duration: app_commands.Range[float, MIN_HOURS, MAX_HOURS] = DEFAULT_HOURS,
        budget: app_commands.Range[float, 0.001, 1_000_000.0] | None = None,
    ) -> None:
        channel = interaction.channel
        if not isinstance(channel, discord.TextChannel):
            raise InvalidRequest("Start a studio from a text channel (not inside a thread).")
        if not interaction.permissions.create_public_threads:
            raise InvalidRequest("You need permission to create threads here to start a studio.")
        plan = await self.bot.services.studios.plan(
            requester(interaction), theme, required_words, duration, budget
        )
        await interaction.response.defer(thinking=True)
        try:
            thread = await channel.create_thread(
                name=plan.thread_name,
                type=discord.ChannelType.public_thread,
                auto_archive_duration=AUTO_ARCHIVE_MINUTES,
                reason=f"Studio started by {interaction.user}",
            )
        except discord.Forbidden:
            raise InvalidRequest("I'm not allowed to create threads in this channel.") from None
        studio = await self.bot.services.studios.start(
            plan,
            thread_id=thread.id,
            guild_id=channel.guild.id,
            parent_channel_id=channel.id,
            starter_id=interaction.user.id,
        )
        await thread.send(intro_text(studio), allowed_mentions=NO_PINGS)
        await interaction.followup.send(announcement_text(studio), allowed_mentions=NO_PINGS)

    @studio.command(name="lock", description="Stop new images in this studio (starter, moderators)")
    async def lock(self, interaction: discord.Interaction[Any]) -> None:
        studio = await self.bot.services.studios.lock(
            interaction.channel_id,
            interaction.user.id,
            is_moderator=may_run_studios(interaction.permissions),
        )
        await interaction.response.send_message(
            f"Locked. The gallery is posted <t:{int(studio.ends_at)}:R>, or now with "
            "`/studio end`.",
            ephemeral=True,
        )

    @studio.command(name="end", description="End this studio and post its gallery (starter, mods)")
    async def end(self, interaction: discord.Interaction[Any]) -> None:
        studio = await self.bot.services.studios.end(
            interaction.channel_id,
            interaction.user.id,
            is_moderator=may_run_studios(interaction.permissions),
        )
        running = await self.bot.services.studios.running_jobs(studio.thread_id)
        # Answer before the thread is archived: nothing can be sent there afterwards.
        await interaction.response.send_message(ending_text(studio, running), ephemeral=True)
        await self.bot.services.studios.finish(studio.thread_id)


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(StudioCog(bot))
