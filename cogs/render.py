"""How jobs look in Discord: progress text, result embeds and buttons, and the notifier that
posts them. Each job has one message, edited in place."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import discord

from bot.jobs.models import Job, JobState
from bot.jobs.notifier import DeliveryImpossible
from bot.providers.base import OutputImage
from bot.variants import CATALOGUE

log = logging.getLogger(__name__)

PROMPT_PREVIEW_CHARS = 1000
# Prompt text is user input: progress and errors never ping anyone.
NO_PINGS = discord.AllowedMentions.none()
JobLookup = Callable[[str], Awaitable[Job | None]]


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def variant_label(job: Job) -> str:
    variant = CATALOGUE.get(job.variant)
    return variant.label if variant else job.variant


def message_link(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def job_link(job: Job) -> str | None:
    message_id = job.result_message_id or job.status_message_id
    if message_id is None:
        return None
    return message_link(job.guild_id, job.channel_id, message_id)


def queued_text(user_id: int, label: str, queue_position: int | None = None) -> str:
    place = f" — position {queue_position} in line" if queue_position else ""
    return f"⏳ <@{user_id}> · Queued{place} · {label}"


def waiting_text(user_id: int, label: str) -> str:
    return f"⏳ <@{user_id}> · Waiting for a moderator's approval · {label}"


def progress_text(job: Job, queue_position: int | None, *, now: float | None = None) -> str:
    who = f"<@{job.user_id}>"
    if job.state is JobState.QUEUED:
        return queued_text(job.user_id, variant_label(job), queue_position)
    status = job.provider_status or "Submitted"
    elapsed = ""
    if job.submitted_at is not None:
        elapsed = f" · {max(0, int((now or time.time()) - job.submitted_at))}s"
    return f"🎨 {who} · Generating with {variant_label(job)} · {status}{elapsed}"


def failure_text(job: Job) -> str:
    icon = {JobState.MODERATED: "🛡️", JobState.CANCELLED: "🚫"}.get(job.state, "❌")
    return f"{icon} <@{job.user_id}> {job.error or 'This image could not be made.'}"


def result_embed(job: Job, image: OutputImage, filename: str, parent: Job | None) -> discord.Embed:
    embed = discord.Embed(description=truncate(job.prompt, PROMPT_PREVIEW_CHARS))
    embed.set_image(url=f"attachment://{filename}")
    embed.add_field(name="Model", value=variant_label(job))
    embed.add_field(name="Size", value=f"{image.width}×{image.height}")
    seed = job.result_seed if job.result_seed is not None else job.params.seed
    embed.add_field(name="Seed", value=str(seed))
    if job.cost is not None:
        embed.add_field(name="Cost", value=f"{job.cost:g} credits")
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
    if parent is not None:
        link = job_link(parent)
        embed.add_field(name="Edit of", value=f"[this image]({link})" if link else parent.id)
    embed.set_footer(text=f"Job {job.id}")
    return embed


def message_nonce(job: Job) -> int:
    """A stable nonce per job: with enforce_nonce Discord returns the first message on a repeat."""
    return int(job.id, 16) & (2**63 - 1)


ResultViewFactory = Callable[[Job, int], discord.ui.View]
QueuedViewFactory = Callable[[Job], discord.ui.View]


class DiscordNotifier:
    """Posts job progress and outcomes by editing the job's own message. Edits are idempotent,
    which is what makes re-delivery after a crash safe."""

    def __init__(
        self,
        client: discord.Client,
        *,
        lookup: JobLookup,
        result_view: ResultViewFactory | None = None,
        queued_view: QueuedViewFactory | None = None,
    ) -> None:
        self._client = client
        self._lookup = lookup
        self._result_view = result_view
        self._queued_view = queued_view
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
            # While it waits in line the request can be cancelled; once running, it can't.
            queued = job.state is JobState.QUEUED
            view = self._queued_view(job) if queued and self._queued_view else None
            await channel.get_partial_message(job.status_message_id).edit(
                content=progress_text(job, queue_position), allowed_mentions=NO_PINGS, view=view
            )

    async def job_delivered(self, job: Job, images: list[OutputImage]) -> int:
        filenames = [f"flux-{job.id}-{i + 1}.{image.extension}" for i, image in enumerate(images)]
        parent = await self._lookup(job.parent_job_id) if job.parent_job_id else None
        embeds = [result_embed(job, images[0], filenames[0], parent)]
        # Further images of a multi-image result: one embed each, so all are shown together.
        embeds += [discord.Embed().set_image(url=f"attachment://{name}") for name in filenames[1:]]
        view = self._result_view(job, len(images)) if self._result_view else None
        async with self._lock(job.id):
            self._mark_finished(job.id)
            return await self._post(job, f"<@{job.user_id}>", embeds, images, filenames, view)

    async def job_failed(self, job: Job) -> None:
        async with self._lock(job.id):
            self._mark_finished(job.id)
            await self._post(job, failure_text(job), [], [], [], None)

    async def _post(
        self,
        job: Job,
        content: str,
        embeds: list[discord.Embed],
        images: list[OutputImage],
        filenames: list[str],
        view: discord.ui.View | None,
    ) -> int:
        # Only the requester may be pinged, whatever the prompt says.
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
                        view=view,
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
                view=view,  # type: ignore[arg-type]
            )
            return sent.id
        except (discord.Forbidden, discord.NotFound) as exc:
            raise DeliveryImpossible(f"{type(exc).__name__} in channel {job.channel_id}") from None
