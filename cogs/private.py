"""Private results in Discord: the Publish button under a private result.

A private result (see `GenerationService.private_for`) is the ephemeral answer to its
requester's interaction, or a DM once that interaction's token has expired (cogs/delivery.py).
Publish posts it once in the job's channel with the usual result buttons, at no extra cost:
the image is the one the member sees (the clicked message's attachment), and the rules of
"once" are the core's (bot/community/publications.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.community.publications import AlreadyPublished
from bot.errors import InvalidRequest
from bot.jobs.models import Job
from bot.providers.base import OutputImage
from bot.text import message_link
from cogs.buttons import PersistentButton
from cogs.flow import is_image_of

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

log = logging.getLogger(__name__)

UNKNOWN_JOB_TEXT = "I don't know this image any more, so I can't publish it."
IMAGE_GONE_TEXT = "I can't read this image's file any more, so it can't be published."
ALREADY_PUBLISHED_TEXT = "It's already published: {link}"
PUBLISHED_TEXT = "Published: {link}"
# A result has at most this many images (the providers' most per request); each file at most
# Discord's largest upload limit.
MAX_FILES = 4
MAX_FILE_BYTES = 500 * 1024 * 1024
_CONTENT_TYPES = {"png": "image/png", "webp": "image/webp", "jpg": "image/jpeg"}


class PublishButton(
    PersistentButton,
    template=r"flux:publish:(?P<job_id>[0-9a-f]{16})",
):
    """Posts a private result publicly, once. Works in the member's DMs too (the job id says
    where it goes), so a result sent there keeps it."""

    works_in_dms = True  # cogs/delivery.py keeps only such buttons on a DM

    def __init__(self, job_id: str, number: int | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                # `number`: image N of a grid, published on its own.
                label=f"Publish {number}" if number else "Publish",
                emoji="📣",
                style=discord.ButtonStyle.success,
                custom_id=f"flux:publish:{job_id}",
            )
        )
        self.job_id = job_id

    async def _run(self, interaction: discord.Interaction[Any]) -> None:
        bot: FluxcordBot = interaction.client
        # Reading the file and posting it can outlast Discord's 3 seconds.
        await interaction.response.defer(ephemeral=True, thinking=True)
        job = await bot.services.generation.job(self.job_id)
        if job is None:
            raise InvalidRequest(UNKNOWN_JOB_TEXT)
        publications = bot.services.generation.publications
        try:
            claimed = await publications.claim(job, interaction.user.id)
        except AlreadyPublished as exc:
            await interaction.edit_original_response(
                content=ALREADY_PUBLISHED_TEXT.format(link=public_link(exc.job))
            )
            return
        try:
            images = await shown_images(interaction.message, claimed)
            message_id = await bot.notifier.post_published(claimed, images)
        except BaseException:
            await publications.release(claimed)  # nothing was posted: they may try again
            raise
        published = await publications.published(claimed, message_id)
        log.info("job %s: private result published by %s", job.id, interaction.user.id)
        await interaction.edit_original_response(
            content=PUBLISHED_TEXT.format(link=public_link(published))
        )


def public_link(job: Job) -> str:
    assert job.published_message_id is not None
    return message_link(job.guild_id, job.channel_id, job.published_message_id)


async def shown_images(message: discord.Message | None, job: Job) -> list[OutputImage]:
    """The result's images as the member sees them: the files of the clicked message (the
    stored images were dropped once it was shown). Raises InvalidRequest without them."""
    prefix = f"flux-{job.id}-"
    files = [
        attachment
        for attachment in (message.attachments if message is not None else [])
        # An image of a grid is its one file, never the grid's contact sheet.
        if (
            is_image_of(attachment, job.id)
            if job.in_batch
            else attachment.filename.startswith(prefix)
        )
        and attachment.size <= MAX_FILE_BYTES
    ][:MAX_FILES]
    if not files:
        raise InvalidRequest(IMAGE_GONE_TEXT)
    images = []
    for attachment in files:
        try:
            data = await attachment.read()
        except discord.HTTPException:
            raise InvalidRequest(IMAGE_GONE_TEXT) from None
        extension = attachment.filename.rsplit(".", 1)[-1].lower()
        images.append(
            OutputImage(
                content_type=attachment.content_type or _CONTENT_TYPES.get(extension, "image/jpeg"),
                width=attachment.width or job.result_width or 0,
                height=attachment.height or job.result_height or 0,
                data=data,
            )
        )
    return images


class PrivateResults(commands.Cog):
    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(PublishButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(PublishButton)


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(PrivateResults(bot))
