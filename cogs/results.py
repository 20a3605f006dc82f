"""Buttons under every result, and /history.

Buttons are `DynamicItem`s: the action and the job id live in the custom_id and are matched by
pattern, so they keep working after a restart without any view state in memory.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.cooldown import Cooldown
from bot.errors import INTERNAL_ERROR_TEXT, InvalidRequest
from bot.generation import check_button_place
from bot.jobs.models import Job, JobState
from bot.text import message_text, plural
from cogs.buttons import COOLDOWN_TEXT, UNKNOWN_JOB_TEXT, PersistentButton
from cogs.checks import may_remove_results
from cogs.delivery import attach_delivery
from cogs.favourites import favourite_buttons
from cogs.flow import (
    candidate,
    generate_from_interaction,
    image_attachments,
    is_image_of,
    reply_privately,
)
from cogs.private import PublishButton
from cogs.render import NO_PINGS, job_link, shown_prompt, variant_label
from cogs.result_tools import add_tool_buttons, image_tool_buttons

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

log = logging.getLogger(__name__)

ACTIONS: dict[str, tuple[str, str, discord.ButtonStyle]] = {
    "reroll": ("Reroll", "🎲", discord.ButtonStyle.secondary),
    "edit": ("Edit", "✏️", discord.ButtonStyle.primary),
    "remix": ("Remix", "🎛️", discord.ButtonStyle.secondary),
    "chain": ("History", "🧬", discord.ButtonStyle.secondary),
    "delete": ("Delete", "🗑️", discord.ButtonStyle.danger),
    # Only on a request still waiting in line (see queued_view), never under a result.
    "cancel": ("Cancel", "✖️", discord.ButtonStyle.secondary),
}
RESULT_ACTIONS = ("reroll", "edit", "remix", "chain", "delete")
DELETE_REFUSED_TEXT = "Only the person who made this image or a moderator can delete it."
CANCEL_REFUSED_TEXT = "Only the person who asked for this image or a moderator can cancel it."
CANCEL_TOO_LATE_TEXT = "It's already being made, so it can't be cancelled any more."
EARLIER_STEPS_TEXT = "*Earlier steps are no longer kept, or not yours to see.*"
NOT_FOUND_TEXT = "I can't find that result. Paste a result's message link or its job id."
# The buttons that start (or open the form for) a new paid request share the cooldown (with
# the commands and replies that do: see cogs/generate.py).
COOLDOWN_ACTIONS = frozenset({"reroll", "edit", "remix"})
_MESSAGE_LINK = re.compile(r"/channels/(?:[0-9]+|@me)/[0-9]+/(?P<message_id>[0-9]+)")


def result_view(
    job: Job, image_count: int = 1, grid: Sequence[Job] = (), *, outpainting: bool = True
) -> discord.ui.View:
    """The buttons under a result. With several images, Edit becomes one button per image;
    a grid (several images per prompt: `grid`, the jobs of its images) has a row per image.
    `outpainting`: the bot has BFL's outpainting tool (zoom out, pan, Make square)."""
    view = discord.ui.View(timeout=None)
    for image_job in grid:
        for item in image_row(image_job):
            view.add_item(item)
    for action in RESULT_ACTIONS:
        if action == "delete" and job.unpublished_private:  # an ephemeral answer can't be
            if not grid:  # deleted; its member may publish it (a grid's: each image's row)
                view.add_item(PublishButton(job.id))
        elif action == "edit" and grid:
            continue  # each image of a grid has its own (image_row)
        elif action == "edit" and image_count > 1:
            for index in range(1, image_count + 1):
                view.add_item(ResultButton(action, job.id, index))
        else:
            view.add_item(ResultButton(action, job.id))
    if not grid:  # a grid's tools and ⭐ are per image (image_row)
        if image_count == 1:
            # Rows 1 and 2: zoom out, pan, square, Hi-res.
            add_tool_buttons(view, job, outpainting=outpainting)
        for item in favourite_buttons(job):  # row 3: ⭐ and Share to showcase
            view.add_item(item)
    return view


def image_row(job: Job) -> list[discord.ui.Item[Any]]:
    """The buttons of one image of a grid, on that image's row (1–4, under the row of the
    whole result), each acting on that image's own job: Edit N, Hi-res N, Zoom N (a private
    menu of its zoom and pan moves), ⭐ N and, where the result may be shared, Share N."""
    number = job.batch_index + 1
    items = [
        ResultButton("edit", job.id, number),
        *image_tool_buttons(job, number),
        *favourite_buttons(job, number),  # Share N on a public grid
    ]
    if job.unpublished_private:  # each image of a private grid is published on its own
        items.append(PublishButton(job.id, number))
    for item in items:
        item.row = number
    return items


def queued_view(job: Job) -> discord.ui.View:
    """The button on a request still waiting in line."""
    view = discord.ui.View(timeout=None)
    view.add_item(ResultButton("cancel", job.id))
    return view


class ResultButton(
    PersistentButton,
    template=(
        r"flux:(?P<action>reroll|edit|remix|chain|delete|cancel):(?P<job_id>[0-9a-f]{16})"
        r"(?::(?P<index>[1-9]))?"
    ),
):
    def __init__(self, action: str, job_id: str, index: int | None = None) -> None:
        label, emoji, style = ACTIONS[action]
        suffix = f":{index}" if index else ""
        super().__init__(
            discord.ui.Button(
                label=f"{label} {index}" if index else label,
                emoji=emoji,
                style=style,
                custom_id=f"flux:{action}:{job_id}{suffix}",
            )
        )
        self.action = action
        self.job_id = job_id
        self.index = index

    @classmethod
    def from_match(cls, match: re.Match[str]) -> ResultButton:
        index = match["index"]
        return cls(match["action"], match["job_id"], int(index) if index else None)

    async def _run(self, interaction: discord.Interaction[Any]) -> None:
        bot: FluxcordBot = interaction.client
        job = await bot.services.generation.job(self.job_id)
        if job is None:
            await interaction.response.send_message(UNKNOWN_JOB_TEXT, ephemeral=True)
            return
        try:
            check_button_place(
                job,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                message_id=interaction.message.id if interaction.message else None,
            )
        except InvalidRequest as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        # Only a click that would act counts toward (and is slowed by) the cooldown.
        if self.action in COOLDOWN_ACTIONS:
            wait = button_cooldown(bot).wait_seconds(interaction.user.id)
            if wait:
                text = COOLDOWN_TEXT.format(seconds=wait)
                await interaction.response.send_message(text, ephemeral=True)
                return
        if self.action == "reroll":
            try:
                draft = await bot.services.generation.reroll_draft(job)
            except InvalidRequest as exc:
                await reply_privately(interaction, str(exc))
                return
            await generate_from_interaction(bot, interaction, draft)
        elif self.action == "edit":
            await interaction.response.send_modal(EditModal(interaction.message, job, self.index))
        elif self.action == "remix":
            await interaction.response.send_modal(RemixModal(job))
        elif self.action == "chain":
            lineage = await bot.services.generation.lineage(
                job, viewer_id=interaction.user.id, guild_id=interaction.guild_id
            )
            await interaction.response.send_message(
                render_lineage(lineage), ephemeral=True, allowed_mentions=NO_PINGS
            )
        elif self.action == "cancel":
            await cancel_request(bot, interaction, job)
        else:
            await delete_result(bot, interaction, job)


def button_cooldown(bot: FluxcordBot) -> Cooldown:
    # By name: load_extension imports this module afresh, so the class may be another copy.
    cooldown = getattr(bot.get_cog(Results.__cog_name__), "cooldown", None)
    assert isinstance(cooldown, Cooldown)
    return cooldown


def may_manage(bot: FluxcordBot, interaction: discord.Interaction[Any], job: Job) -> bool:
    is_moderator = may_remove_results(interaction.permissions)
    return bot.services.generation.may_manage(job, interaction.user.id, is_moderator=is_moderator)


async def cancel_request(bot: FluxcordBot, interaction: discord.Interaction[Any], job: Job) -> None:
    if not may_manage(bot, interaction, job):
        await interaction.response.send_message(CANCEL_REFUSED_TEXT, ephemeral=True)
        return
    # Answer first: the cancellation then edits the request's own message.
    await interaction.response.defer(ephemeral=True, thinking=True)
    if await bot.services.generation.cancel(job, interaction.user.id):
        await interaction.delete_original_response()
    else:
        await interaction.edit_original_response(content=CANCEL_TOO_LATE_TEXT)


async def delete_result(bot: FluxcordBot, interaction: discord.Interaction[Any], job: Job) -> None:
    if not may_manage(bot, interaction, job):
        await interaction.response.send_message(DELETE_REFUSED_TEXT, ephemeral=True)
        return
    if interaction.message is not None:
        await interaction.message.delete()
    await bot.services.generation.mark_deleted(job, interaction.user.id)
    log.info("job %s: result deleted by %s", job.id, interaction.user.id)
    await interaction.response.send_message("Deleted.", ephemeral=True)


class FriendlyModal(discord.ui.Modal):
    """A modal whose unexpected failures still get a private answer, not "interaction failed"."""

    # discord.py's own Modal.on_error has this signature; mypy compares it with BaseView's.
    async def on_error(  # type: ignore[override]
        self, interaction: discord.Interaction[Any], error: Exception, /
    ) -> None:
        log.error("modal %s failed", self.custom_id, exc_info=error)
        await reply_privately(interaction, INTERNAL_ERROR_TEXT)


class EditModal(FriendlyModal, title="Edit with FLUX"):
    """Asks how to change a message's images; those images become the references. When the
    message is one of our results (`job`), the new image records it as its parent."""

    prompt: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
        label="How should the image change?",
        style=discord.TextStyle.paragraph,
        max_length=4000,
        custom_id="prompt",
    )

    def __init__(
        self, message: discord.Message | None, job: Job | None, index: int | None = None
    ) -> None:
        target = job.id if job else (message.id if message else 0)
        super().__init__(custom_id=f"flux:editmodal:{target}:{index or 0}")
        self.job = job
        self.message = message
        self.index = index

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        bot: FluxcordBot = interaction.client
        images = image_attachments(self.message) if self.message else []
        if self.job is not None and self.job.in_batch:  # a grid: this job's image, never the
            images = [image for image in images if is_image_of(image, self.job.id)]  # sheet
        elif self.index is not None:  # one image of a multi-image result
            images = images[self.index - 1 : self.index]
        ours = _ours(bot, self.message)
        draft = bot.services.generation.edit_draft(
            self.prompt.value, [candidate(image, uploaded=not ours) for image in images], self.job
        )
        await generate_from_interaction(bot, interaction, draft)


def _ours(bot: FluxcordBot, message: discord.Message | None) -> bool:
    return message is not None and bot.user is not None and message.author.id == bot.user.id


class RemixModal(FriendlyModal, title="Remix"):
    def __init__(self, job: Job) -> None:
        super().__init__(custom_id=f"flux:remixmodal:{job.id}")
        self.job = job
        params = job.params
        self.prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Prompt",
            style=discord.TextStyle.paragraph,
            max_length=4000,
            default=params.prompt,
            custom_id="prompt",
        )
        self.variant: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Model", default=job.variant, max_length=32, custom_id="variant"
        )
        size = f"{params.width}x{params.height}" if params.width and params.height else ""
        self.size: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Size (WIDTHxHEIGHT, empty for automatic)",
            default=size,
            required=False,
            max_length=11,
            custom_id="size",
        )
        self.seed: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Seed (empty for a new one)",
            default=str(params.seed),
            required=False,
            max_length=10,
            custom_id="seed",
        )
        for item in (self.prompt, self.variant, self.size, self.seed):
            self.add_item(item)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        bot: FluxcordBot = interaction.client
        try:
            draft = await bot.services.generation.remix_draft(
                self.job,
                prompt=self.prompt.value,
                variant=self.variant.value,
                size=self.size.value,
                seed=self.seed.value,
            )
        except InvalidRequest as exc:
            await reply_privately(interaction, str(exc))
            return
        await generate_from_interaction(bot, interaction, draft)


def render_lineage(chain: list[Job]) -> str:
    lines = [f"**This image's history** ({plural(len(chain), 'step')}):"]
    if chain and (chain[0].parent_purged or chain[0].parent_job_id):
        # Its earlier steps were purged (FINISHED_JOB_RETENTION_DAYS), or are not the viewer's.
        lines.append(EARLIER_STEPS_TEXT)
    for index, job in enumerate(chain, start=1):
        link = job_link(job)
        prompt = shown_prompt(job, 80)
        where = f"[view]({link})" if link else ("private" if job.unpublished_private else "deleted")
        lines.append(f"{index}. {prompt} — {variant_label(job)} · {where}")
    return message_text("\n".join(lines))


def render_history(jobs: list[Job]) -> str:
    if not jobs:
        return "You haven't made any images here yet."
    lines = ["**Your recent images:**"]
    for job in jobs:
        link = job_link(job)
        prompt = shown_prompt(job, 70)
        gone = "deleted" if job.state is JobState.DELIVERED else job.state.value
        gone = "private" if job.unpublished_private else gone  # only its member sees it
        where = f"[view]({link})" if link else gone
        lines.append(f"• <t:{int(job.created_at)}:R> {prompt} — {variant_label(job)} · {where}")
    return message_text("\n".join(lines))


class Results(commands.Cog):
    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot
        self.cooldown = Cooldown(bot.settings.button_cooldown_seconds)

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ResultButton)
        # Zoom out, pan and Make square only where BFL's outpainting tool is configured.
        outpainting = bool(self.bot.services.generation.tools)
        attach_delivery(
            self.bot,
            result_view=functools.partial(result_view, outpainting=outpainting),
            queued_view=queued_view,
        )

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(ResultButton)

    @app_commands.command(name="history", description="Your recent images, or one image's chain")
    @app_commands.describe(result="A result's message link or job id, to show its chain")
    async def history(
        self, interaction: discord.Interaction[Any], result: str | None = None
    ) -> None:
        service = self.bot.services.generation
        user_id, guild_id = interaction.user.id, interaction.guild_id
        if result is None:
            jobs = await service.history(user_id, guild_id)
            await interaction.response.send_message(
                render_history(jobs), ephemeral=True, allowed_mentions=NO_PINGS
            )
            return
        job = await self._find(result.strip())
        # Someone else's direct-message job answers exactly like one that doesn't exist.
        if job is None or not service.visible_to(job, user_id, guild_id):
            await interaction.response.send_message(NOT_FOUND_TEXT, ephemeral=True)
            return
        lineage = await service.lineage(job, viewer_id=user_id, guild_id=guild_id)
        await interaction.response.send_message(
            render_lineage(lineage), ephemeral=True, allowed_mentions=NO_PINGS
        )

    async def _find(self, reference: str) -> Job | None:
        match = _MESSAGE_LINK.search(reference)
        message_id = _snowflake(match["message_id"] if match else reference)
        if message_id is not None:
            job = await self.bot.services.generation.job_for_message(message_id)
            if job is not None or match:
                return job
        if match or not re.fullmatch(r"[0-9a-fA-F]{16}", reference):
            return None  # neither a message of ours nor a job id
        return await self.bot.services.generation.job(reference.lower())


def _snowflake(text: str) -> int | None:
    """A Discord id (ASCII digits that fit SQLite's integers), else None."""
    if not re.fullmatch(r"[0-9]{1,19}", text) or int(text) >= 2**63:
        return None
    return int(text)


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(Results(bot))
