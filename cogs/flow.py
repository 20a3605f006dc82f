"""The one path every generation request takes from Discord into the core.

Interactions: quick checks first (a refusal is an ephemeral reply that costs nothing); the
job is then accepted at once, and the interaction's own answer shows its status and result
(cogs/delivery.py). Replies to a message: the same, shown in a reply in the channel.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord

from bot.community.policy import Requester
from bot.drafts import Draft, Held
from bot.errors import INTERNAL_ERROR_TEXT, InvalidRequest
from bot.jobs.models import GenerationRequest
from bot.jobs.store import new_job_id
from bot.references import ReferenceCandidate
from cogs.checks import may_review_requests
from cogs.job_message import token_for
from cogs.render import NO_PINGS, waiting_text

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

log = logging.getLogger(__name__)

# Refusals in reply to a plain message can't be private; they clean themselves up.
PUBLIC_ERROR_SECONDS = 60

# Discord gives an interaction 3 s for its first answer. One already this old when its
# handler starts, or any while the event loop lags this much, answers "thinking…" before
# its checks and the accept, which may not fit in what is left.
BEHIND_AGE_SECONDS = 1.5
BEHIND_LAG_SECONDS = 0.25


def is_behind(interaction: discord.Interaction[Any], loop_lag: float) -> bool:
    age = (discord.utils.utcnow() - interaction.created_at).total_seconds()
    return age > BEHIND_AGE_SECONDS or loop_lag > BEHIND_LAG_SECONDS


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


def is_image_of(attachment: discord.Attachment, job_id: str) -> bool:
    """Whether the attachment is the job's (first) image: cogs/delivery.py names it after the
    job, so it is found among a grid's other images and contact sheet."""
    return attachment.filename.rsplit(".", 1)[0] == f"flux-{job_id}-1"


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
        is_moderator=permissions is not None and may_review_requests(permissions),
        age_restricted=bool(nsfw()) if callable(nsfw) else False,
    )


async def reply_privately(interaction: discord.Interaction[Any], text: str) -> None:
    """A refusal only the member sees, whatever state the interaction is in."""
    if not interaction.response.is_done():
        await interaction.response.send_message(text, ephemeral=True)
        return
    original = await interaction.original_response()
    if original.flags.ephemeral:
        await interaction.edit_original_response(content=text)
        return
    if original.flags.loading:
        # A public "thinking…" answer: remove it first, since Discord turns the first followup
        # of a deferral into the deferred message, public like it.
        await interaction.delete_original_response()
    bot: FluxcordBot = interaction.client
    bot.services.metrics.refusal_followup()  # counts against Discord's shared channel limit
    await interaction.followup.send(text, ephemeral=True)


async def generate_from_interaction(
    bot: FluxcordBot, interaction: discord.Interaction[Any], draft: Draft
) -> None:
    """Checks first (a refusal is private and costs nothing); then the job is accepted and
    handed to the scheduler, and its status shows in the interaction's own answer."""
    who = requester(interaction)
    try:
        await _generate_from_interaction(bot, interaction, draft, who)
    except InvalidRequest as exc:
        await reply_privately(interaction, str(exc))
    except Exception:
        # Before a job was accepted (after that nothing raises: see start_interaction), so
        # "nothing was charged" is true; a public "thinking…" answer is removed with it.
        log.exception("request by %s failed before it became a job", who.user_id)
        await reply_privately(interaction, INTERNAL_ERROR_TEXT)


async def _generate_from_interaction(
    bot: FluxcordBot, interaction: discord.Interaction[Any], draft: Draft, who: Requester
) -> None:
    message_id: int | None = None
    # Decided before any answer: a private result's "thinking…" must be ephemeral already.
    private = await bot.services.generation.private_result(who)

    async def acknowledge() -> None:
        # Slow work ahead (downloads, a direct message's membership lookup) can outlast
        # Discord's 3 seconds: answer "thinking…" now (ephemeral for a private result),
        # since that message becomes the job's.
        nonlocal message_id
        if not interaction.response.is_done():
            deferred = await interaction.response.defer(thinking=True, ephemeral=private)
            message_id = deferred.message_id if deferred is not None else None

    if is_behind(interaction, bot.services.loop_lag.recent()):
        bot.services.metrics.answered_before_checks_now()
        await acknowledge()
    # Every check that needs no download (the allowance and studio budget included).
    checked = await bot.services.generation.precheck(draft, who, acknowledge=acknowledge)
    if not isinstance(interaction.channel, discord.abc.Messageable):
        raise InvalidRequest("I can't post images here.")
    if draft.references or draft.stored:
        await acknowledge()
    request = await bot.services.generation.prepare(checked)
    await start_interaction(bot, who, replace(request, private=private), interaction, message_id)


async def start_interaction(
    bot: FluxcordBot,
    who: Requester,
    request: GenerationRequest,
    interaction: discord.Interaction[Any],
    message_id: int | None,
) -> None:
    """Accept the job now, shown through the interaction; or hold it for a moderator (the
    core decides). Raises only while nothing has been accepted or held."""

    async def hold_in() -> int:
        if not interaction.response.is_done():
            # The review post must succeed before the member is told to wait; until then
            # "thinking…" holds the message the request will be shown in.
            deferred = await interaction.response.defer(thinking=True)
            if deferred is not None and deferred.message_id is not None:
                return deferred.message_id
        elif message_id is not None:
            return message_id
        return (await interaction.original_response()).id

    job_id = new_job_id()
    # Registered before the job exists: the engine may report on it at once.
    bot.notifier.expect_interaction(
        job_id, interaction, message_id=message_id, private=request.private
    )
    try:
        started = await bot.services.generation.start(
            replace(
                request,
                job_id=job_id,
                interaction=token_for(interaction, bot.services.clock()),
                status_message_id=message_id,
            ),
            who,
            hold_in=hold_in,
        )
    except BaseException:
        bot.notifier.forget(job_id)  # no job was created
        raise
    if isinstance(started, Held):
        bot.notifier.forget(job_id)  # held: no job has this id
        try:
            await interaction.edit_original_response(
                content=waiting_text(who.user_id, request.variant.label),
                allowed_mentions=NO_PINGS,
            )
        except discord.HTTPException:  # held all the same: the decision edits this message
            log.warning("could not show that a request waits for review", exc_info=True)
        return
    # The engine reports progress too; this makes sure the interaction is answered at once.
    # The job exists and runs now, so a failure here must not reach the member as an error.
    try:
        await bot.notifier.job_progress(started.job, queue_position=started.position)
    except Exception:
        log.warning("job %s: its status could not be shown yet", job_id, exc_info=True)


async def generate_from_message(bot: FluxcordBot, message: discord.Message, draft: Draft) -> None:
    """Reply-to-edit: the job is accepted at once; its status and result reply to the
    member's message, posted in the channel's turn (see cogs/delivery.py)."""
    who = requester_for(message.author, message.channel, message.channel.id)
    waiting: discord.Message | None = None
    try:
        checked = await bot.services.generation.precheck(draft, who)
        request = await bot.services.generation.prepare(checked)

        async def hold_in() -> int:
            nonlocal waiting
            waiting = await bot.poster.send(
                message.channel.id,
                guild_id=who.guild_id,
                content=waiting_text(who.user_id, request.variant.label),
                allowed_mentions=NO_PINGS,
                reference=message.to_reference(fail_if_not_exists=False),
            )
            return waiting.id

        # After the job is accepted or held nothing raises (see GenerationService.submit).
        await bot.services.generation.start(
            replace(request, reply_to_message_id=message.id), who, hold_in=hold_in
        )
    except InvalidRequest as exc:
        await _remove(waiting)
        refuse_in_reply(bot, message, str(exc))
    except Exception:
        log.exception("reply request by %s failed before it became a job", who.user_id)
        await _remove(waiting)  # no "waiting for review" left behind a request that isn't
        refuse_in_reply(bot, message, INTERNAL_ERROR_TEXT)


async def _remove(message: discord.Message | None) -> None:
    if message is None:
        return
    try:
        await message.delete()
    except discord.HTTPException:
        log.warning("could not remove message %s", message.id, exc_info=True)


def refuse_in_reply(bot: FluxcordBot, message: discord.Message, text: str) -> None:
    """Refusals in reply to a plain message can't be private; they clean themselves up."""
    bot.poster.send_soon(
        message.channel.id,
        guild_id=message.guild.id if message.guild else None,
        content=text,
        allowed_mentions=NO_PINGS,
        reference=message.to_reference(fail_if_not_exists=False),
        mention_author=False,
        delete_after=PUBLIC_ERROR_SECONDS,
    )
