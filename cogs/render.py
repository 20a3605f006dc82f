"""How jobs look in Discord: progress text, result embeds, and the notifier that posts them."""

from __future__ import annotations

import asyncio
import io
import logging
from collections import OrderedDict

import discord

from bot.jobs.models import Job, JobState
from bot.jobs.notifier import DeliveryImpossible
from bot.providers.base import OutputImage
from bot.variants import CATALOGUE

log = logging.getLogger(__name__)

PROMPT_PREVIEW_CHARS = 1000
# Prompt text is user input: it may mention people only as plain text, never ping.
NO_PINGS = discord.AllowedMentions.none()


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def variant_label(job: Job) -> str:
    variant = CATALOGUE.get(job.variant)
    return variant.label if variant else job.variant


def progress_text(job: Job, queue_position: int | None) -> str:
    if job.state is JobState.QUEUED:
        place = f" — position {queue_position} in line" if queue_position else ""
        return f"⏳ Queued{place} · {variant_label(job)}"
    status = job.provider_status or "Submitted"
    return f"🎨 Generating with {variant_label(job)} · {status}"


def failure_text(job: Job) -> str:
    icon = {JobState.MODERATED: "🛡️", JobState.CANCELLED: "🚫"}.get(job.state, "❌")
    return f"{icon} <@{job.user_id}> {job.error or 'This image could not be made.'}"


def result_embed(job: Job, image: OutputImage, filename: str) -> discord.Embed:
    embed = discord.Embed(description=truncate(job.prompt, PROMPT_PREVIEW_CHARS))
    embed.set_image(url=f"attachment://{filename}")
    embed.add_field(name="Model", value=variant_label(job))
    embed.add_field(name="Size", value=f"{image.width}×{image.height}")
    embed.add_field(
        name="Seed", value=str(job.result_seed if job.result_seed is not None else job.params.seed)
    )
    if job.cost is not None:
        embed.add_field(name="Cost", value=f"{job.cost:g} credits")
    embed.set_footer(text=f"Job {job.id}")
    return embed


def message_nonce(job: Job) -> int:
    """A stable nonce per job: with enforce_nonce Discord returns the first message on a repeat."""
    return int(job.id, 16) & (2**63 - 1)


class DiscordNotifier:
    """Posts job progress and outcomes. Each job has one message, edited in place; edits are
    idempotent, which is what makes re-delivery after a crash safe."""

    def __init__(self, client: discord.Client) -> None:
        self._client = client
        self._locks: OrderedDict[str, asyncio.Lock] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()

    def _lock(self, job_id: str) -> asyncio.Lock:
        lock = self._locks.get(job_id)
        if lock is None:
            lock = self._locks[job_id] = asyncio.Lock()
            while len(self._locks) > 10_000:
                self._locks.popitem(last=False)
        return lock

    def _mark_finished(self, job_id: str) -> None:
        self._finished[job_id] = None
        while len(self._finished) > 10_000:
            self._finished.popitem(last=False)

    async def job_progress(self, job: Job, *, queue_position: int | None) -> None:
        if job.status_message_id is None:
            return
        async with self._lock(job.id):
            if job.id in self._finished:
                return  # a late progress update must not overwrite the result
            channel = self._client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
            await channel.get_partial_message(job.status_message_id).edit(
                content=progress_text(job, queue_position), allowed_mentions=NO_PINGS
            )

    async def job_delivered(self, job: Job, images: list[OutputImage]) -> int:
        filenames = [f"flux-{job.id}-{i + 1}.{image.extension}" for i, image in enumerate(images)]
        embeds = [result_embed(job, images[0], filenames[0])]
        content = f"<@{job.user_id}>"
        async with self._lock(job.id):
            self._mark_finished(job.id)
            return await self._post(job, content, embeds, images, filenames)

    async def job_failed(self, job: Job) -> None:
        async with self._lock(job.id):
            self._mark_finished(job.id)
            await self._post(job, failure_text(job), [], [], [])

    async def _post(
        self,
        job: Job,
        content: str,
        embeds: list[discord.Embed],
        images: list[OutputImage],
        filenames: list[str],
    ) -> int:
        mentions = discord.AllowedMentions(
            everyone=False, roles=False, users=[discord.Object(job.user_id)]
        )
        channel = self._client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)

        def files() -> list[discord.File]:
            return [
                discord.File(io.BytesIO(image.data), filename=name)
                for image, name in zip(images, filenames, strict=True)
            ]

        try:
            if job.status_message_id is not None:
                try:
                    message = await channel.get_partial_message(job.status_message_id).edit(
                        content=content,
                        embeds=embeds,
                        attachments=files(),
                        allowed_mentions=mentions,
                    )
                    assert message is not None
                    return message.id
                except discord.NotFound:
                    log.info("job %s: its message is gone; posting a new one", job.id)
            sent = await channel.send(
                content=content,
                embeds=embeds,
                files=files(),
                allowed_mentions=mentions,
                nonce=message_nonce(job),
            )
            return sent.id
        except (discord.Forbidden, discord.NotFound) as exc:
            raise DeliveryImpossible(f"{type(exc).__name__} in channel {job.channel_id}") from None
