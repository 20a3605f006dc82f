"""The result tools' buttons: Zoom out 1.5×, Zoom out 2×, Make square and Hi-res (row 1),
and ⬅ ➡ ⬆ ⬇ (row 2), under a single-image result. The rules are bot/result_tools.py.

Each is a `DynamicItem` with the job id in its custom id, so it works after a restart. It
acts on the result's image as Discord shows it (taken from the clicked message, as Edit
does). Hi-res first answers privately with what it will do and cost; only its Confirm
button (which names the result's message, the size and the model) sends anything.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.canvas import Move
from bot.cooldown import Cooldown
from bot.errors import InvalidRequest
from bot.generation import check_button_place
from bot.jobs.models import Job
from bot.result_tools import NO_IMAGE_TEXT, ResultTools
from cogs.buttons import UNKNOWN_JOB_TEXT, PersistentButton
from cogs.flow import candidate, generate_from_interaction, image_attachments, requester

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

log = logging.getLogger(__name__)

# As cogs/results.py says it (that module imports this one, so it can't be imported here).
COOLDOWN_TEXT = "Slow down a little: you can use these buttons again in {seconds} s."
# (label, emoji, row) of each outpainting move.
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


def add_tool_buttons(view: discord.ui.View, job: Job) -> None:
    """Rows 1 and 2 under a single-image result."""
    for move in (Move.ZOOM_1_5, Move.ZOOM_2, Move.SQUARE):
        view.add_item(OutpaintButton(move.value, job.id))
    view.add_item(HiresButton(job.id))
    for move in (Move.LEFT, Move.RIGHT, Move.UP, Move.DOWN):
        view.add_item(OutpaintButton(move.value, job.id))


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


def _result_image(message: discord.Message | None) -> discord.Attachment:
    images = image_attachments(message) if message is not None else []
    if len(images) != 1:
        raise InvalidRequest(NO_IMAGE_TEXT)
    return images[0]


class OutpaintButton(
    PersistentButton,
    template=r"flux:out:(?P<move>zoom15|zoom2|square|left|right|up|down):" + _JOB,
):
    def __init__(self, move: str, job_id: str) -> None:
        label, emoji, row = MOVES[Move(move)]
        super().__init__(
            discord.ui.Button(
                label=label,
                emoji=emoji,
                style=discord.ButtonStyle.secondary,
                custom_id=f"flux:out:{move}:{job_id}",
            ),
            row=row,
        )
        self.move = Move(move)
        self.job_id = job_id

    async def _run(self, interaction: discord.Interaction[Any]) -> None:
        message = interaction.message
        job = await _job_here(interaction, self.job_id, message.id if message else None, paid=True)
        if job is None:
            return
        image = candidate(_result_image(message), uploaded=False)
        bot: FluxcordBot = interaction.client
        draft = _tools(bot).outpaint_draft(job, requester(interaction), self.move, image)
        await generate_from_interaction(bot, interaction, draft)


class HiresButton(PersistentButton, template=r"flux:hires:" + _JOB):
    def __init__(self, job_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Hi-res",
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
        image = candidate(_result_image(message), uploaded=False)
        bot: FluxcordBot = interaction.client
        offer = _tools(bot).hires_offer(job, requester(interaction), image)
        view = discord.ui.View(timeout=None)
        view.add_item(
            HiresConfirmButton(job.id, message.id, offer.width, offer.height, offer.offered_name)
        )
        await interaction.response.send_message(offer.text(), ephemeral=True, view=view)


class HiresConfirmButton(
    PersistentButton,
    template=(
        r"flux:hiresgo:" + _JOB + r":(?P<message_id>[0-9]{1,20}):"
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
        # Only the result's own message: a copied custom id can't point at another image.
        if self.message_id not in (job.result_message_id, job.status_message_id):
            raise InvalidRequest(NO_IMAGE_TEXT)
        channel = interaction.channel
        if not isinstance(channel, discord.abc.Messageable):
            raise InvalidRequest(NO_IMAGE_TEXT)
        try:
            message = await channel.fetch_message(self.message_id)
        except discord.NotFound:
            raise InvalidRequest(NO_IMAGE_TEXT) from None
        image = candidate(_result_image(message), uploaded=False)
        bot: FluxcordBot = interaction.client
        draft = _tools(bot).hires_draft(
            job, image, variant=self.variant, width=self.size[0], height=self.size[1]
        )
        await generate_from_interaction(bot, interaction, draft)


_ITEMS = (OutpaintButton, HiresButton, HiresConfirmButton)


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
