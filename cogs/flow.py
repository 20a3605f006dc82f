"""The one path every generation request takes from Discord into the core.

Interactions: quick checks first (a refusal is an ephemeral reply that costs nothing), then
an ephemeral "thinking" while references download, then a public status message in the
channel that the job edits in place until it shows the image. That status message is a plain
channel message, so it can be edited after the interaction token expires or the bot restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord

from bot.community.policy import Requester
from bot.generation import Draft
from bot.jobs.models import GenerationRequest
from bot.references import ReferenceCandidate
from bot.variants import InvalidRequest
from cogs.render import NO_PINGS, queued_text, waiting_text

if TYPE_CHECKING:
    from bot.app import FluxcordBot

log = logging.getLogger(__name__)

# Refusals in reply to a plain message can't be private; they clean themselves up.
PUBLIC_ERROR_SECONDS = 60


def candidate(attachment: discord.Attachment, *, uploaded: bool = True) -> ReferenceCandidate:
    return ReferenceCandidate(
        filename=attachment.filename,
        content_type=attachment.content_type,
        size=attachment.size,
        width=attachment.width,
        height=attachment.height,
        fetch=attachment.read,
        uploaded=uploaded,
    )


def image_attachments(message: discord.Message) -> list[discord.Attachment]:
    """The attachments of a message that look like images (any type: the checks come later)."""
    return [a for a in message.attachments if candidate(a).looks_like_image]


def requester(interaction: discord.Interaction[Any]) -> Requester:
    return requester_for(interaction.user, interaction.channel, interaction.channel_id or 0)


def requester_for(user: discord.User | discord.Member, channel: Any, channel_id: int) -> Requester:
    """Who asks and where, as the server's rules need it."""
    roles = getattr(user, "roles", ())
    permissions = getattr(user, "guild_permissions", None)
    is_thread = isinstance(channel, discord.Thread)
    nsfw = getattr(channel, "is_nsfw", None)
    guild = getattr(user, "guild", None)
    return Requester(
        user_id=user.id,
        guild_id=guild.id if guild is not None else getattr(channel, "guild_id", None),
        channel_id=channel_id,
        parent_channel_id=channel.parent_id if is_thread else None,
        role_ids=tuple(role.id for role in roles if not role.is_default()),
        # Whoever may review requests (see cogs/approvals.py) needs no review of their own.
        is_moderator=bool(
            permissions and (permissions.manage_guild or permissions.manage_messages)
        ),
        age_restricted=bool(nsfw()) if callable(nsfw) else False,
    )


async def reply_privately(interaction: discord.Interaction[Any], text: str) -> None:
    if interaction.response.is_done():
        await interaction.edit_original_response(content=text)
    else:
        await interaction.response.send_message(text, ephemeral=True)


async def start(
    bot: FluxcordBot,
    who: Requester,
    request: GenerationRequest,
    post_status: Callable[[str], Awaitable[discord.Message]],
) -> None:
    """Post the public status message, then submit the request, or hold it for a moderator
    when the server's approval queue applies to this member."""
    label = request.variant.label
    review_channel = bot.generation.review_channel(who)
    if review_channel is None:
        status = await post_status(queued_text(who.user_id, label))
        await bot.generation.submit(request, status_message_id=status.id)
        return
    status = await post_status(waiting_text(who.user_id, label))
    await bot.approvals.hold(
        request,
        variant_name=bot.generation.offered_name(request.variant),
        status_message_id=status.id,
        review_channel_id=review_channel,
    )


async def generate_from_interaction(
    bot: FluxcordBot, interaction: discord.Interaction[Any], draft: Draft
) -> None:
    who = requester(interaction)
    try:
        await bot.generation.precheck(draft, who)
    except InvalidRequest as exc:
        await reply_privately(interaction, str(exc))
        return
    channel = interaction.channel
    if not isinstance(channel, discord.abc.Messageable):
        await reply_privately(interaction, "I can't post images here.")
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    status: discord.Message | None = None

    async def post_status(text: str) -> discord.Message:
        nonlocal status
        status = await channel.send(text, allowed_mentions=NO_PINGS)
        return status

    try:
        request = await bot.generation.prepare(draft, who)
        await start(bot, who, request, post_status)
    except InvalidRequest as exc:
        if status is not None:
            await status.delete()
        await interaction.edit_original_response(content=str(exc))
        return
    await interaction.delete_original_response()


async def generate_from_message(bot: FluxcordBot, message: discord.Message, draft: Draft) -> None:
    """Reply-to-edit: the status message is a reply to the member's message."""
    who = requester_for(message.author, message.channel, message.channel.id)
    status: discord.Message | None = None

    async def post_status(text: str) -> discord.Message:
        nonlocal status
        status = await message.reply(text, allowed_mentions=NO_PINGS, mention_author=False)
        return status

    try:
        await bot.generation.precheck(draft, who)
        request = await bot.generation.prepare(draft, who)
        await start(bot, who, request, post_status)
    except InvalidRequest as exc:
        if status is not None:
            await status.delete()
        await message.reply(
            str(exc),
            allowed_mentions=NO_PINGS,
            mention_author=False,
            delete_after=PUBLIC_ERROR_SECONDS,
        )
