"""`/studio start|lock|end`: shared creation threads in Discord.

The rules and the state are in bot/community/studios/; this cog creates the thread, answers
the commands, renders every text posted about a studio (its intro, announcement, lock notice,
galleries), and is the `StudioView` the core posts galleries and locks threads through.
Refusals are ephemeral. Lock and end are for the studio's starter and moderators, checked when
the command runs (the command itself is offered to everyone, for the starter's sake).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import discord
from discord import app_commands
from discord.ext import commands

from bot.community.studios import (
    DEFAULT_HOURS,
    MAX_BUDGET_CREDITS,
    MAX_HOURS,
    MAX_THEME_CHARS,
    MIN_HOURS,
    GalleryItem,
    Studio,
    budget_text,
    words_text,
)
from bot.errors import InvalidRequest
from bot.text import MESSAGE_LIMIT, code_excerpt, message_link, one_line, plural, truncate
from cogs.background import BackgroundLoop
from cogs.checks import may_run_studios
from cogs.flow import image_attachments, requester
from cogs.render import NO_PINGS

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

log = logging.getLogger(__name__)

# Discord's longest auto-archive delay (minutes): a quiet studio stays in the channel list.
AUTO_ARCHIVE_MINUTES: Final = 10080
MAX_READ_BYTES = 25 * 1024 * 1024  # a result image is far smaller; never read more
GALLERY_FILENAME = "studio-gallery.png"


# --------------------------------------------------------------------------- texts
def intro_text(studio: Studio) -> str:
    """The studio's first message in its thread: the rules and how to take part."""
    lines = [
        f"🎨 **Studio: {studio.theme}** — opened by <@{studio.starter_id}>",
        f"Every image made here gets the theme added to its prompt (“…{studio.suffix}”).",
    ]
    if studio.required_words:
        lines.append(f"Every prompt must include: {words_text(studio.required_words)}.")
    if studio.budget_mc is not None:
        lines.append(
            f"Budget: {budget_text(studio.budget_mc)} for this thread "
            "(the server's allowances apply too)."
        )
    lines += [
        f"Ends <t:{int(studio.ends_at)}:f> (<t:{int(studio.ends_at)}:R>); then a gallery of "
        "everything made here is posted.",
        "Use `/imagine` here, or reply to any image in this thread with what to change — "
        "no need to mention me.",
    ]
    return "\n".join(lines)


def announcement_text(studio: Studio) -> str:
    """What the parent channel sees when a studio opens."""
    return (
        f"🎨 <@{studio.starter_id}> opened a studio: <#{studio.thread_id}> — “{studio.theme}”. "
        f"Everyone's welcome until <t:{int(studio.ends_at)}:f>."
    )


def ending_text(studio: Studio, running_jobs: int) -> str:
    """The answer to `/studio end`."""
    where = f"here and in <#{studio.parent_channel_id}>"
    if not running_jobs:
        return f"Ending the studio: its gallery is being posted {where}."
    images = "image is" if running_jobs == 1 else "images are"
    return (
        f"Ending the studio: no new requests. {running_jobs} {images} still being made; "
        f"the gallery is posted {where} once they are done."
    )


def lock_notice(studio: Studio, actor_id: int) -> str:
    return (
        f"🔒 <@{actor_id}> locked this studio: no new images. Its gallery is posted "
        f"<t:{int(studio.ends_at)}:R>, or earlier with `/studio end`."
    )


def gallery_line(studio: Studio, item: GalleryItem) -> str:
    link = message_link(studio.guild_id, studio.thread_id, item.message_id)
    edit = f" (edit of #{item.edit_of})" if item.edit_of is not None else ""
    prompt = code_excerpt(one_line(item.prompt), 60)
    return f"**#{item.number}** <@{item.user_id}>{edit} · {prompt} · [view]({link})"


def gallery_text(studio: Studio, items: Sequence[GalleryItem], *, in_thread: bool) -> str:
    """Who made what, numbered like the contact sheet, within one message."""
    where = "" if in_thread else f" from <#{studio.thread_id}>"
    lines = [f"🖼️ **Studio gallery: {truncate(studio.theme, 120)}**{where}"]
    if not items:
        lines.append("No images were made in this studio.")
        return "\n".join(lines)
    makers = len({item.user_id for item in items})
    lines.append(
        f"{plural(len(items), 'image')} by {plural(makers, 'member')}, "
        f"in a studio opened by <@{studio.starter_id}>."
    )
    reserve = 60  # room for the "and N more" line
    used = sum(len(line) + 1 for line in lines)
    for index, item in enumerate(items):
        line = gallery_line(studio, item)
        if used + len(line) + 1 > MESSAGE_LIMIT - reserve:
            lines.append(f"…and {len(items) - index} more in <#{studio.thread_id}>.")
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


class DiscordStudioView:
    """Implements bot.community.studios.StudioView."""

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

    async def post_gallery(
        self, studio: Studio, items: Sequence[GalleryItem], sheet: bytes | None, *, in_thread: bool
    ) -> int | None:
        channel_id = studio.thread_id if in_thread else studio.parent_channel_id
        return await self._post(channel_id, gallery_text(studio, items, in_thread=in_thread), sheet)

    async def _post(self, channel_id: int, text: str, sheet: bytes | None) -> int | None:
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

    async def lock_thread(self, studio: Studio, actor_id: int) -> None:
        await self._post(studio.thread_id, lock_notice(studio, actor_id), None)
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
        self._sweeper = BackgroundLoop()

    async def cog_load(self) -> None:
        self.bot.services.studios.view = DiscordStudioView(self.bot)
        # Ends studios whose time is up, also those that ended while the bot was offline.
        self._sweeper.start(self.bot.services.studios.run(self.bot.wait_until_ready))

    async def cog_unload(self) -> None:
        await self._sweeper.stop()
        self.bot.services.studios.view = None

    @staticmethod
    async def _manage(
        interaction: discord.Interaction[Any], change: Callable[..., Awaitable[Studio]]
    ) -> Studio:
        """Lock or end the studio of this thread, as the member who asked (the core checks
        that they started it or are a moderator)."""
        return await change(
            interaction.channel_id,
            interaction.user.id,
            is_moderator=may_run_studios(interaction.permissions),
        )

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
        budget: app_commands.Range[float, 0.001, MAX_BUDGET_CREDITS] | None = None,
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
        studio = await self._manage(interaction, self.bot.services.studios.lock)
        await interaction.response.send_message(
            f"Locked. The gallery is posted <t:{int(studio.ends_at)}:R>, or now with "
            "`/studio end`.",
            ephemeral=True,
        )

    @studio.command(name="end", description="End this studio and post its gallery (starter, mods)")
    async def end(self, interaction: discord.Interaction[Any]) -> None:
        studio = await self._manage(interaction, self.bot.services.studios.end)
        running = await self.bot.services.studios.running_jobs(studio.thread_id)
        # Answer before the thread is archived: nothing can be sent there afterwards.
        await interaction.response.send_message(ending_text(studio, running), ephemeral=True)
        await self.bot.services.studios.finish(studio.thread_id)


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(StudioCog(bot))
