"""How jobs look in Discord: progress text and result embeds (cogs/delivery.py shows them)."""

from __future__ import annotations

import time

import discord

from bot.catalogue import CATALOGUE
from bot.jobs.failover import failover_note
from bot.jobs.models import Job, JobState
from bot.providers.base import OutputImage
from bot.text import message_link, truncate

PROMPT_PREVIEW_CHARS = 1000
PROMPT_REMOVED_LABEL = "*(prompt no longer kept)*"
# Prompt text is user input: progress and errors never ping anyone.
NO_PINGS = discord.AllowedMentions.none()


def inert(text: str) -> str:
    """A member's text shown by the bot: its markdown (masked links, headings) and mentions
    made inert, since it may be written to look like the bot's own words."""
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def quoted_prompt(text: str, limit: int) -> str:
    """A member's prompt quoted on one line in the bot's own text: shortened and inert."""
    return inert(truncate(" ".join(text.split()), limit))


def shown_prompt(job: Job, limit: int) -> str:
    """The job's prompt on one line, or why it is not there any more (docs/privacy.md)."""
    return PROMPT_REMOVED_LABEL if job.prompt_removed else quoted_prompt(job.prompt, limit)


def variant_label(job: Job) -> str:
    """The model, and the server LoRA it used (results, progress, /history)."""
    variant = CATALOGUE.get(job.variant)
    label = variant.label if variant else job.variant
    lora = job.params.lora
    return f"{label} + LoRA “{inert(lora.name)}”" if lora is not None else label


def job_link(job: Job) -> str | None:
    message_id = job.result_message_id or job.status_message_id
    if message_id is None or job.unpublished_private:  # only its member sees it (ephemeral/DM)
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


_ICONS = {JobState.MODERATED: "🛡️", JobState.CANCELLED: "🚫"}


def failure_text(job: Job) -> str:
    icon = _ICONS.get(job.state, "❌")
    return f"{icon} <@{job.user_id}> {job.error or 'This image could not be made.'}"


def result_embed(job: Job, image: OutputImage, filename: str, parent: Job | None) -> discord.Embed:
    embed = discord.Embed(description=truncate(inert(job.prompt), PROMPT_PREVIEW_CHARS))
    embed.set_image(url=f"attachment://{filename}")
    embed.add_field(name="Model", value=variant_label(job))
    embed.add_field(name="Size", value=f"{image.width}×{image.height}")
    embed.add_field(name="Seed", value=str(_seed(job)))
    if job.cost is not None:
        embed.add_field(name="Cost", value=f"{job.cost:g} credits")
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
    if (backup := failover_note(job)) is not None:
        embed.add_field(name="Backup provider", value=backup, inline=False)
    if parent is not None:
        link = job_link(parent)
        embed.add_field(name="Edit of", value=f"[this image]({link})" if link else parent.id)
    if job.params.notes:  # where the member's /prefer defaults gave way to the server's rules
        embed.add_field(name="Note", value="\n".join(job.params.notes), inline=False)
    embed.set_footer(text=f"Job {job.id}")
    return embed


def message_nonce(job: Job) -> int:
    """A stable nonce per job: with enforce_nonce Discord returns the first message on a repeat."""
    return int(job.id, 16) & (2**63 - 1)


def batch_progress_text(jobs: list[Job], queue_position: int | None) -> str:
    """One line for a batch (several images per prompt): in line, or how many are made. No
    elapsed time: the line changes only when an image does, so each change is one edit."""
    lead = jobs[0]
    size = lead.batch_size
    if all(job.state is JobState.QUEUED for job in jobs):
        return f"{queued_text(lead.user_id, variant_label(lead), queue_position)} · {size} images"
    made = sum(job.state in (JobState.READY, JobState.DELIVERED) for job in jobs)
    failed = sum(job.state.is_terminal and job.state is not JobState.DELIVERED for job in jobs)
    waiting = sum(job.state is JobState.QUEUED for job in jobs)
    not_made = f" · {failed} not made" if failed else ""
    # Said, so the line (and its Cancel button) changes when the last one leaves the line.
    in_line = f" · {waiting} in line" if waiting else ""
    return (
        f"🎨 <@{lead.user_id}> · Generating {size} images with {variant_label(lead)}"
        f" · {made} of {size} ready{not_made}{in_line}"
    )


def batch_failure_lines(jobs: list[Job]) -> list[str]:
    """One line per image of a batch that was not made, saying why (its error says it was
    not charged)."""
    return [
        f"{_ICONS.get(job.state, '❌')} Image {job.batch_index + 1}: "
        f"{job.error or 'This image could not be made.'}"
        for job in jobs
        if job.state.is_terminal and job.state is not JobState.DELIVERED
    ]


def grid_embed(
    jobs: list[Job], first: OutputImage, filename: str, parent: Job | None
) -> discord.Embed:
    """A grid's embed: its prompt, the contact sheet (or its one image), each image's seed."""
    lead = jobs[0]
    made = [job for job in jobs if job.state in (JobState.READY, JobState.DELIVERED)]
    embed = discord.Embed(description=truncate(inert(lead.prompt), PROMPT_PREVIEW_CHARS))
    embed.set_image(url=f"attachment://{filename}")
    embed.add_field(name="Model", value=variant_label(lead))
    embed.add_field(name="Size", value=f"{first.width}×{first.height}")
    seeds = " · ".join(f"{job.batch_index + 1}: {_seed(job)}" for job in made)
    embed.add_field(name="Seeds", value=seeds or "none")
    costs = [job.cost for job in made if job.cost is not None]
    if costs:
        embed.add_field(name="Cost", value=f"{sum(costs):g} credits")
    embed.add_field(name="Requested by", value=f"<@{lead.user_id}>")
    if parent is not None:
        link = job_link(parent)
        embed.add_field(name="Edit of", value=f"[this image]({link})" if link else parent.id)
    embed.set_footer(text=f"Jobs {' '.join(job.id for job in jobs)}")
    return embed


def _seed(job: Job) -> int:
    return job.result_seed if job.result_seed is not None else job.params.seed
