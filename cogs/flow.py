"""The one path every generation request takes from Discord into the core.

Interactions: quick checks first (a refusal is an ephemeral reply that costs nothing), then
an ephemeral "thinking" while references download, then a public status message in the
channel that the job edits in place until it shows the image. That status message is a plain
channel message, so it can be edited after the interaction token expires or the bot restarts.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord

from bot.generation import Draft, Requester
from bot.references import ReferenceCandidate, precheck
from bot.variants import InvalidRequest
from cogs.render import NO_PINGS, queued_text

if TYPE_CHECKING:
    from bot.app import FluxcordBot

log = logging.getLogger(__name__)

# Refusals in reply to a plain message can't be private; they clean themselves up.
PUBLIC_ERROR_SECONDS = 60


def candidate(attachment: discord.Attachment) -> ReferenceCandidate:
    return ReferenceCandidate(
        filename=attachment.filename,
        content_type=attachment.content_type,
        size=attachment.size,
        width=attachment.width,
        height=attachment.height,
        fetch=attachment.read,
    )


def image_attachments(message: discord.Message) -> list[discord.Attachment]:
    """The attachments of a message that look like images (any type: the checks come later)."""
    return [a for a in message.attachments if candidate(a).looks_like_image]


def requester(interaction: discord.Interaction[Any]) -> Requester:
    roles = getattr(interaction.user, "roles", ())
    return Requester(
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id or 0,
        role_ids=tuple(role.id for role in roles if not role.is_default()),
    )


def quick_check(bot: FluxcordBot, draft: Draft) -> None:
    """Everything that needs no download; raises InvalidRequest."""
    bot.generation.validate(draft)
    for reference in draft.references:
        precheck(reference, bot.generation.limits)


async def reply_privately(interaction: discord.Interaction[Any], text: str) -> None:
    if interaction.response.is_done():
        await interaction.edit_original_response(content=text)
    else:
        await interaction.response.send_message(text, ephemeral=True)


async def generate_from_interaction(
    bot: FluxcordBot, interaction: discord.Interaction[Any], draft: Draft
) -> None:
    try:
        quick_check(bot, draft)
    except InvalidRequest as exc:
        await reply_privately(interaction, str(exc))
        return
    channel = interaction.channel
    if not isinstance(channel, discord.abc.Messageable):
        await reply_privately(interaction, "I can't post images here.")
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    status: discord.Message | None = None
    try:
        request = await bot.generation.prepare(draft, requester(interaction))
        status = await channel.send(
            queued_text(interaction.user.id, request.variant.label),
            allowed_mentions=NO_PINGS,
        )
        await bot.generation.submit(request, status_message_id=status.id)
    except InvalidRequest as exc:
        if status is not None:
            await status.delete()
        await interaction.edit_original_response(content=str(exc))
        return
    await interaction.delete_original_response()


async def generate_from_message(bot: FluxcordBot, message: discord.Message, draft: Draft) -> None:
    """Reply-to-edit: the status message is a reply to the member's message."""
    who = Requester(
        user_id=message.author.id,
        guild_id=message.guild.id if message.guild else None,
        channel_id=message.channel.id,
        role_ids=tuple(r.id for r in getattr(message.author, "roles", ()) if not r.is_default()),
    )
    status: discord.Message | None = None
    try:
        quick_check(bot, draft)
        request = await bot.generation.prepare(draft, who)
        status = await message.reply(
            queued_text(message.author.id, request.variant.label),
            allowed_mentions=NO_PINGS,
            mention_author=False,
        )
        await bot.generation.submit(request, status_message_id=status.id)
    except InvalidRequest as exc:
        if status is not None:
            await status.delete()
        await message.reply(
            str(exc),
            allowed_mentions=NO_PINGS,
            mention_author=False,
            delete_after=PUBLIC_ERROR_SECONDS,
        )
