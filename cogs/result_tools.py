"""The result tools' buttons: Zoom out 1.5×, Zoom out 2×, Make square and Hi-res (row 1),
and ⬅ ➡ ⬆ ⬇ (row 2), under a single-image result; under a grid, Hi-res N and Zoom N on each
image's row (Zoom N answers privately with that image's moves). The rules are
bot/tools/result_tools.py.

Each is a `DynamicItem` with the job id in its custom id, so it works after a restart. It
acts on the result's image as Discord shows it (taken from the clicked message, as Edit
does: in a grid, the file named after the image's job). Hi-res first answers privately with
what it will do and cost; only its Confirm button (which names the result's message, the
size and the model) sends anything. The buttons of such a private answer (Confirm, the Zoom
N menu) fetch the result's message, or, when the result is itself private (ephemeral: it
can't be fetched), take the copy of the image their answer carries.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.cooldown import Cooldown
from bot.errors import InvalidRequest
from bot.generation import check_button_place
from bot.jobs.models import Job
from bot.tools.canvas import Move
from bot.tools.result_tools import NO_IMAGE_TEXT, ResultTools
from cogs.buttons import COOLDOWN_TEXT, UNKNOWN_JOB_TEXT, PersistentButton
from cogs.flow import (
    candidate,
    generate_from_interaction,
    image_attachments,
    is_image_of,
    requester,
)

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

log = logging.getLogger(__name__)

# (label, emoji, row) of each outpainting move under a result; on the Zoom N menu, a row up.
MOVES: dict[Move, tuple[str | None, str | None, int]] = {
    Move.ZOOM_1_5: ("Zoom out 1.5×", "🔍", 1),
    Move.ZOOM_2: ("Zoom out 2×", "🔍", 1),
    Move.SQUARE: ("Make square", "⏹️", 1),
    Move.LEFT: (None, "⬅️", 2),
    Move.RIGHT: (None, "➡️", 2),
    Move.UP: (None, "⬆️", 2),
    Move.DOWN: (None, "⬇️", 2),
}
_JOB = r"(?P<job_id>[0-9a-f]{16})"
_MESSAGE = r"(?P<message_id>[0-9]{1,20})"
ZOOM_MENU_TEXT = (
    "Image {number}: zoom out, pan (⬅ ➡ ⬆ ⬇ add half the image on that side) or make it square."
)


def add_tool_buttons(view: discord.ui.View, job: Job, *, outpainting: bool = True) -> None:
    """Rows 1 and 2 under a single-image result. `outpainting`: the bot has BFL's
    outpainting tool (without BFL only Hi-res is offered)."""
    if outpainting:
        for move in (Move.ZOOM_1_5, Move.ZOOM_2, Move.SQUARE):
            view.add_item(OutpaintButton(move.value, job.id))
    view.add_item(HiresButton(job.id))
    if outpainting:
        for move in (Move.LEFT, Move.RIGHT, Move.UP, Move.DOWN):
            view.add_item(OutpaintButton(move.value, job.id))


def image_tool_buttons(job: Job, number: int) -> list[discord.ui.Item[Any]]:
    """Hi-res N and Zoom N, for image `number` of a grid (cogs/results.py `image_row`):
    grids are BFL's, so outpainting is there."""
    return [HiresButton(job.id, number), ZoomMenuButton(job.id, number)]


def _tools(bot: FluxcordBot) -> ResultTools:
    # By name: load_extension imports this module afresh, so the class may be another copy.
    tools = getattr(bot.get_cog(ResultToolsCog.__cog_name__), "tools", None)
    assert isinstance(tools, ResultTools)
    return tools


def _cooldown(bot: FluxcordBot) -> Cooldown:
    """The cooldown the paid result buttons share (cogs/results.py's)."""
    cooldown = getattr(bot.get_cog("Results"), "cooldown", None)
    assert isinstance(cooldown, Cooldown)
    return cooldown


async def _job_here(
    interaction: discord.Interaction[Any], job_id: str, message_id: int | None, *, paid: bool
) -> Job | None:
    """The button's job if it may act here (else the clicker is told why, and None). A
    `paid` button counts toward, and is slowed by, the shared cooldown."""
    bot: FluxcordBot = interaction.client
    job = await bot.services.generation.job(job_id)
    if job is None:
        await interaction.response.send_message(UNKNOWN_JOB_TEXT, ephemeral=True)
        return None
    check_button_place(  # raises InvalidRequest: PersistentButton answers it privately
        job, guild_id=interaction.guild_id, channel_id=interaction.channel_id, message_id=message_id
    )
    if paid:
        wait = _cooldown(bot).wait_seconds(interaction.user.id)
        if wait:
            await interaction.response.send_message(
                COOLDOWN_TEXT.format(seconds=wait), ephemeral=True
            )
            return None
    return job


def _own_image(message: discord.Message | None, job: Job) -> discord.Attachment | None:
    """The job's image among the message's files (named after the job), if it is there."""
    images = image_attachments(message) if message is not None else []
    return next((image for image in images if is_image_of(image, job.id)), None)


def _result_image(message: discord.Message | None, job: Job) -> discord.Attachment:
    """The job's image in its result message: in a grid, the file named after the job
    (never another image's, nor the contact sheet)."""
    own = _own_image(message, job)
    if own is not None:
        return own
    images = image_attachments(message) if message is not None else []
    if len(images) != 1 or job.in_batch:
        raise InvalidRequest(NO_IMAGE_TEXT)
    return images[0]


async def _named_image(
    interaction: discord.Interaction[Any], job: Job, message_id: int
) -> discord.Attachment:
    """The job's image for a button of a private answer (Confirm, the Zoom N menu) that
    names the result's message: the copy that answer carries (the result was private: an
    ephemeral message can't be fetched, Discord answers Unknown Message), else the message,
    fetched."""
    # Only the result's own message: a copied custom id can't point at another image.
    if message_id not in (job.result_message_id, job.status_message_id):
        raise InvalidRequest(NO_IMAGE_TEXT)
    carried = _own_image(interaction.message, job)
    if carried is not None:
        return carried
    channel = interaction.channel
    if not isinstance(channel, discord.abc.Messageable):
        raise InvalidRequest(NO_IMAGE_TEXT)
    try:
        message = await channel.fetch_message(message_id)
    except discord.NotFound:
        raise InvalidRequest(NO_IMAGE_TEXT) from None
    return _result_image(message, job)


async def _answer_privately(
    interaction: discord.Interaction[Any],
    result: discord.Message,
    image: discord.Attachment,
    text: str,
    view: discord.ui.View,
) -> None:
    """The private offer or menu under `result`. A private (ephemeral) result can't be
    fetched when its buttons are pressed, so the answer then carries a copy of the image."""
    if not result.flags.ephemeral:
        await interaction.response.send_message(text, ephemeral=True, view=view)
        return
    # Reading and uploading the copy can outlast Discord's 3 seconds.
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        copy = await image.to_file()
    except discord.HTTPException:
        raise InvalidRequest(NO_IMAGE_TEXT) from None
    await interaction.edit_original_response(content=text, attachments=[copy], view=view)


class OutpaintButton(
    PersistentButton,
    template=(
        r"flux:out:(?P<move>zoom15|zoom2|square|left|right|up|down):" + _JOB + f"(?::{_MESSAGE})?"
    ),
):
    """A move under a single-image result (its image is the clicked message's), or on a
    grid image's Zoom N menu (`message_id`: the grid's message, see `_named_image`)."""

    def __init__(self, move: str, job_id: str, message_id: int | str | None = None) -> None:
        label, emoji, row = MOVES[Move(move)]
        suffix = f":{message_id}" if message_id is not None else ""
        super().__init__(
            discord.ui.Button(
                label=label,
                emoji=emoji,
                style=discord.ButtonStyle.secondary,
                custom_id=f"flux:out:{move}:{job_id}{suffix}",
            ),
            row=row if message_id is None else row - 1,
        )
        self.move = Move(move)
        self.job_id = job_id
        self.message_id = int(message_id) if message_id is not None else None

    async def _run(self, interaction: discord.Interaction[Any]) -> None:
        message = interaction.message
        place = self.message_id or (message.id if message else None)
        job = await _job_here(interaction, self.job_id, place, paid=True)
        if job is None:
            return
        if self.message_id is None:
            attachment = _result_image(message, job)
        else:
            attachment = await _named_image(interaction, job, self.message_id)
        image = candidate(attachment, uploaded=False)
        bot: FluxcordBot = interaction.client
        draft = _tools(bot).outpaint_draft(job, requester(interaction), self.move, image)
        await generate_from_interaction(bot, interaction, draft)


class ZoomMenuButton(PersistentButton, template=r"flux:zoom:" + _JOB):
    """Zoom N under a grid's image N: answers privately with that image's moves (a grid has
    no room for seven buttons per image). Nothing is sent until one of them is pressed."""

    def __init__(self, job_id: str, number: int | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"Zoom {number}" if number else "Zoom",
                emoji="🔍",
                style=discord.ButtonStyle.secondary,
                custom_id=f"flux:zoom:{job_id}",
            )
        )
        self.job_id = job_id

    async def _run(self, interaction: discord.Interaction[Any]) -> None:
        message = interaction.message
        job = await _job_here(interaction, self.job_id, message.id if message else None, paid=False)
        if job is None or message is None:
            return
        image = _result_image(message, job)
        view = discord.ui.View(timeout=None)
        for move in MOVES:
            view.add_item(OutpaintButton(move.value, job.id, message.id))
        text = ZOOM_MENU_TEXT.format(number=job.batch_index + 1)
        await _answer_privately(interaction, message, image, text, view)


class HiresButton(PersistentButton, template=r"flux:hires:" + _JOB):
    def __init__(self, job_id: str, number: int | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"Hi-res {number}" if number else "Hi-res",
                emoji="🔎",
                style=discord.ButtonStyle.secondary,
                custom_id=f"flux:hires:{job_id}",
            ),
            row=1,
        )
        self.job_id = job_id

    async def _run(self, interaction: discord.Interaction[Any]) -> None:
        """Say what Hi-res will do and cost; nothing is sent yet."""
        message = interaction.message
        job = await _job_here(interaction, self.job_id, message.id if message else None, paid=False)
        if job is None or message is None:
            return
        attachment = _result_image(message, job)
        bot: FluxcordBot = interaction.client
        offer = _tools(bot).hires_offer(
            job, requester(interaction), candidate(attachment, uploaded=False)
        )
        view = discord.ui.View(timeout=None)
        view.add_item(
            HiresConfirmButton(job.id, message.id, offer.width, offer.height, offer.offered_name)
        )
        await _answer_privately(interaction, message, attachment, offer.text(), view)


class HiresConfirmButton(
    PersistentButton,
    template=(
        r"flux:hiresgo:" + _JOB + f":{_MESSAGE}:"
        r"(?P<width>[0-9]{2,5})x(?P<height>[0-9]{2,5}):(?P<variant>[a-z0-9-]{1,32})"
    ),
):
    """Confirm on the private Hi-res offer: sends exactly what the offer said."""

    def __init__(
        self, job_id: str, message_id: int | str, width: int | str, height: int | str, variant: str
    ) -> None:
        custom_id = f"flux:hiresgo:{job_id}:{message_id}:{width}x{height}:{variant}"
        super().__init__(
            discord.ui.Button(
                label="Confirm", style=discord.ButtonStyle.primary, custom_id=custom_id
            )
        )
        self.job_id = job_id
        self.message_id = int(message_id)
        self.size = (int(width), int(height))
        self.variant = variant

    async def _run(self, interaction: discord.Interaction[Any]) -> None:
        job = await _job_here(interaction, self.job_id, self.message_id, paid=True)
        if job is None:
            return
        image = candidate(await _named_image(interaction, job, self.message_id), uploaded=False)
        bot: FluxcordBot = interaction.client
        draft = _tools(bot).hires_draft(
            job, image, variant=self.variant, width=self.size[0], height=self.size[1]
        )
        await generate_from_interaction(bot, interaction, draft)


_ITEMS = (OutpaintButton, ZoomMenuButton, HiresButton, HiresConfirmButton)


class ResultToolsCog(commands.Cog, name="ResultTools"):
    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot
        self.tools = ResultTools(bot.services.generation)

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*_ITEMS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*_ITEMS)


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(ResultToolsCog(bot))
