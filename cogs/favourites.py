"""Favourites and the showcase in Discord: the ⭐ and Share to showcase buttons under a
result (row 3 of `cogs.results.result_view`; under a grid, on each image's row), and
/favourites with its Prev/Next pages.

Every button is a `DynamicItem` whose custom_id carries what it acts on (a job id, a page),
so each keeps working after a restart. The rules (who sees which favourite, sharing once)
live in `bot.community.favourites`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.community.favourites import AlreadyShared, FavouritePage, Scope
from bot.errors import InvalidRequest
from bot.generation import GenerationService, check_button_place
from bot.jobs.models import Job
from bot.text import message_link, plural
from cogs.buttons import UNKNOWN_JOB_TEXT, PersistentButton
from cogs.checks import may_remove_results
from cogs.flow import image_attachments, is_image_of
from cogs.render import NO_PINGS, job_link, message_nonce, shown_prompt, variant_label

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

log = logging.getLogger(__name__)

BUTTON_ROW = 3  # row 0 holds Reroll … Delete (cogs/results.py)
# How long one showcase post may wait for its channel's turn and Discord: well within
# bot.community.favourites.CLAIM_SECONDS, after which another click may take the claim over.
SHOWCASE_POST_SECONDS = 120.0
ADDED_TEXT = "⭐ Kept in your favourites. See them all with /favourites."
REMOVED_TEXT = "Removed from your favourites."
SHARE_REFUSED_TEXT = "Only the person who made this image or a moderator can share it."
NO_SHOWCASE_TEXT = (
    "This server has no showcase channel, so there is nowhere to share to. "
    "A moderator can choose one with /settings showcase."
)
NO_IMAGE_TEXT = "This message has no image left to share."
ALREADY_SHARED_TEXT = "This image is already shared in the showcase: {link}"
BEING_SHARED_TEXT = "This image is being shared to the showcase right now."
SHARED_TEXT = "Shared in <#{channel}>: {link}"
CANNOT_POST_TEXT = (
    "I can't post in the showcase channel <#{channel}>. A moderator can let me send messages "
    "and attach files there, or choose another channel with /settings showcase."
)
POST_FAILED_TEXT = "Discord didn't take the showcase post. Try again in a few minutes."
NO_FAVOURITES_TEXT = "You have no favourites {where}yet. Press ⭐ under a result to keep it."
_SHOWCASE_NONCE_BIT = 1 << 62  # a showcase post's nonce differs from its result's (same channel)


def favourite_buttons(job: Job, number: int | None = None) -> list[discord.ui.Item[Any]]:
    """The buttons `result_view` adds under a result: ⭐ always; Share for a server's result
    that is public (a private one is published first: Publish). `number`: image N of a grid
    (labelled with it; the job id already tells the images apart)."""
    items: list[discord.ui.Item[Any]] = [FavouriteButton(job.id, number)]
    if job.guild_id is not None and not job.unpublished_private:
        items.append(ShowcaseButton(job.id, number))
    return items


async def _clicked_job(bot: FluxcordBot, interaction: discord.Interaction[Any], job_id: str) -> Job:
    """The job a result button acts on, checked to be clicked where it lives (InvalidRequest
    otherwise: PersistentButton answers it privately)."""
    job = await bot.services.generation.job(job_id)
    user_id, guild_id = interaction.user.id, interaction.guild_id
    if job is None or not GenerationService.visible_to(job, user_id, guild_id):
        raise InvalidRequest(UNKNOWN_JOB_TEXT)
    check_button_place(
        job,
        guild_id=guild_id,
        channel_id=interaction.channel_id,
        message_id=interaction.message.id if interaction.message else None,
    )
    return job


class FavouriteButton(PersistentButton, template=r"flux:fav:(?P<job_id>[0-9a-f]{16})"):
    """⭐: anyone who sees the result may keep it (a second click removes it)."""

    def __init__(self, job_id: str, number: int | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                label=str(number) if number else "Favourite",
                emoji="⭐",
                style=discord.ButtonStyle.secondary,
                custom_id=f"flux:fav:{job_id}",
                row=BUTTON_ROW,
            )
        )
        self.job_id = job_id

    async def _run(self, interaction: discord.Interaction[Any]) -> None:
        bot: FluxcordBot = interaction.client
        job = await _clicked_job(bot, interaction, self.job_id)
        kept = await bot.services.favourites.toggle(interaction.user.id, job)
        await interaction.response.send_message(
            ADDED_TEXT if kept else REMOVED_TEXT, ephemeral=True
        )


class ShowcaseButton(PersistentButton, template=r"flux:share:(?P<job_id>[0-9a-f]{16})"):
    """Share to showcase: the creator or a moderator (Manage Messages, as for Delete) posts
    the result once in the server's showcase channel."""

    def __init__(self, job_id: str, number: int | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"Share {number}" if number else "Share to showcase",
                emoji="📣",
                style=discord.ButtonStyle.secondary,
                custom_id=f"flux:share:{job_id}",
                row=BUTTON_ROW,
            )
        )
        self.job_id = job_id

    async def _run(self, interaction: discord.Interaction[Any]) -> None:
        bot: FluxcordBot = interaction.client
        job = await _clicked_job(bot, interaction, self.job_id)
        is_moderator = may_remove_results(interaction.permissions)
        if not bot.services.generation.may_manage(
            job, interaction.user.id, is_moderator=is_moderator
        ):
            raise InvalidRequest(SHARE_REFUSED_TEXT)
        channel_id = (
            None
            if job.guild_id is None
            else bot.services.server_settings.get(job.guild_id).showcase_channel_id
        )
        if channel_id is None:
            raise InvalidRequest(NO_SHOWCASE_TEXT)
        message = interaction.message
        images = image_attachments(message) if message is not None else []
        if job.in_batch:  # one image of a grid: its own file, not its neighbours or the sheet
            images = [image for image in images if is_image_of(image, job.id)]
        if message is None or not images:
            raise InvalidRequest(NO_IMAGE_TEXT)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.edit_original_response(
            content=await share(bot, job, message, images, channel_id, interaction.user.id)
        )


async def share(
    bot: FluxcordBot,
    job: Job,
    message: discord.Message,
    images: list[discord.Attachment],
    channel_id: int,
    actor_id: int,
) -> str:
    """Post the result in the showcase once, and say how it went."""
    showcase = bot.services.showcase
    claim = await showcase.claim(job, channel_id, actor_id)
    if isinstance(claim, AlreadyShared):
        if claim.message_id is None:
            return BEING_SHARED_TEXT
        link = message_link(job.guild_id, claim.channel_id, claim.message_id)
        return ALREADY_SHARED_TEXT.format(link=link)
    original = job_link(job) or message.jump_url
    posted: discord.Message | None = None
    try:
        async with asyncio.timeout(SHOWCASE_POST_SECONDS):
            # Our own result's images: the stored outputs are gone once it was delivered.
            files = [
                discord.File(io.BytesIO(await image.read()), filename=image.filename)
                for image in images
            ]
            posted = await bot.poster.send(
                channel_id,
                guild_id=job.guild_id,
                content=showcase_text(job, original),
                files=files,
                allowed_mentions=NO_PINGS,
                # With a nonce Discord returns the first post on a repeat (a retry after a
                # timeout that did post).
                nonce=message_nonce(job) ^ _SHOWCASE_NONCE_BIT,
            )
    except (discord.Forbidden, discord.NotFound):
        return CANNOT_POST_TEXT.format(channel=channel_id)
    except (discord.HTTPException, OSError, TimeoutError):
        log.warning("job %s: the showcase post failed", job.id, exc_info=True)
        return POST_FAILED_TEXT
    finally:
        if posted is None:  # nothing is up: whoever clicks next may share it
            await showcase.release(claim)
    await showcase.posted(claim, job, actor_id, posted.id)
    log.info("job %s: shared to the showcase by %s", job.id, actor_id)
    return SHARED_TEXT.format(channel=channel_id, link=posted.jump_url)


def showcase_text(job: Job, original: str) -> str:
    """The showcase post: the credit (no ping: NO_PINGS), the model, the prompt (inert) and
    the way back to the original."""
    return (
        f"🌟 by <@{job.user_id}> · {variant_label(job)}\n"
        f"> {shown_prompt(job, 1500)}\n"
        f"Original: {original}"
    )


# --------------------------------------------------------------------------- /favourites
def _scope(interaction: discord.Interaction[Any]) -> Scope:
    return Scope(interaction.user.id, interaction.guild_id)


def favourites_embed(page: FavouritePage, scope: Scope) -> discord.Embed:
    where = "here " if scope.guild_id is not None else ""
    if not page.jobs:
        return discord.Embed(
            title="Your favourites", description=NO_FAVOURITES_TEXT.format(where=where)
        )
    lines = []
    for job in page.jobs:
        link = job_link(job)
        shown = f"[view]({link})" if link else "deleted"
        lines.append(f"• {shown_prompt(job, 90)} — {variant_label(job)} · {shown}")
    embed = discord.Embed(title="Your favourites", description="\n".join(lines))
    embed.set_footer(
        text=f"Page {page.page + 1} of {page.pages} · {plural(page.total, 'favourite')}"
    )
    return embed


def favourites_view(page: FavouritePage) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    if page.pages > 1:
        view.add_item(FavouritesPageButton("prev", page.page - 1, disabled=page.page == 0))
        view.add_item(
            FavouritesPageButton("next", page.page + 1, disabled=page.page + 1 >= page.pages)
        )
    return view


class FavouritesPageButton(
    PersistentButton, template=r"flux:favpage:(?P<direction>prev|next):(?P<page>[0-9]{1,5})"
):
    """Prev/Next under /favourites: the page is in the custom_id, the member is whoever
    clicks (the listing is private), so it works after a restart."""

    def __init__(self, direction: str, page: int | str, *, disabled: bool = False) -> None:
        target = max(0, int(page))
        super().__init__(
            discord.ui.Button(
                label="Prev" if direction == "prev" else "Next",
                emoji="◀️" if direction == "prev" else "▶️",
                style=discord.ButtonStyle.secondary,
                custom_id=f"flux:favpage:{direction}:{target}",
                disabled=disabled,
            )
        )
        self.page = target

    async def _run(self, interaction: discord.Interaction[Any]) -> None:
        bot: FluxcordBot = interaction.client
        scope = _scope(interaction)
        page = await bot.services.favourites.page(scope, self.page)
        await interaction.response.edit_message(
            embed=favourites_embed(page, scope),
            view=favourites_view(page),
            allowed_mentions=NO_PINGS,
        )

    @classmethod
    def from_match(cls, match: re.Match[str]) -> FavouritesPageButton:
        return cls(match["direction"], match["page"])


class Favourites(commands.Cog):
    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(FavouriteButton, ShowcaseButton, FavouritesPageButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(FavouriteButton, ShowcaseButton, FavouritesPageButton)

    @app_commands.command(
        name="favourites", description="Your favourite results (in DMs: from everywhere)"
    )
    async def favourites(self, interaction: discord.Interaction[Any]) -> None:
        scope = _scope(interaction)
        page = await self.bot.services.favourites.page(scope, 0)
        await interaction.response.send_message(
            embed=favourites_embed(page, scope),
            view=favourites_view(page),
            ephemeral=True,
            allowed_mentions=NO_PINGS,
        )


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(Favourites(bot))
