"""/privacy export and /privacy delete: a member's own data (core: bot/privacy/members.py).

Both answer only the member, in servers and in direct messages. Erasing asks first: the
answer carries a button whose custom_id names the member and when it was offered, so it
works after a restart and for no one else, and not for ever.
"""

from __future__ import annotations

import io
import logging
import time
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import InvalidRequest
from cogs.buttons import PersistentButton

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

log = logging.getLogger(__name__)

CONFIRM_SECONDS = 600
CONFIRM_TEXT = (
    "This erases, in every server and in direct messages, the prompts of your finished image "
    "requests, the images the bot still stores for you, your /prefer defaults, and your prompts "
    "quoted in moderation records. Your images already posted in Discord stay (delete those "
    "messages yourself), and what you spent stays in the servers' accounts, without your prompts. "
    "It can't be undone. Erase?"
)
CANCELLED_TEXT = "Nothing was erased."
EXPIRED_TEXT = "This confirmation has expired. Run /privacy delete again."
NOT_YOURS_TEXT = "Only the member who asked can confirm this."


class EraseButton(
    PersistentButton,
    template=r"flux:privacy:(?P<answer>erase|keep):(?P<user_id>[0-9]{1,20}):(?P<offered>[0-9]{1,12})",
):
    def __init__(self, answer: str, user_id: str, offered: str) -> None:
        erase = answer == "erase"
        super().__init__(
            discord.ui.Button(
                label="Erase my data" if erase else "Cancel",
                style=discord.ButtonStyle.danger if erase else discord.ButtonStyle.secondary,
                custom_id=f"flux:privacy:{answer}:{user_id}:{offered}",
            )
        )
        self.erase = erase
        self.user_id = int(user_id)
        self.offered = int(offered)

    async def _run(self, interaction: discord.Interaction[Any]) -> None:
        if interaction.user.id != self.user_id:
            raise InvalidRequest(NOT_YOURS_TEXT)
        if not self.erase:
            await interaction.response.edit_message(content=CANCELLED_TEXT, view=None)
            return
        if time.time() - self.offered > CONFIRM_SECONDS:
            await interaction.response.edit_message(content=EXPIRED_TEXT, view=None)
            return
        await interaction.response.edit_message(content="Erasing…", view=None)
        bot: FluxcordBot = interaction.client
        erasure = await bot.services.privacy.erase(self.user_id)
        await interaction.edit_original_response(content=erasure.summary)


def confirm_view(user_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    offered = str(int(time.time()))
    for answer in ("erase", "keep"):
        view.add_item(EraseButton(answer, str(user_id), offered))
    return view


class Privacy(
    commands.GroupCog,
    group_name="privacy",
    group_description="See or erase what the bot stores about you",
):
    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(EraseButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(EraseButton)

    @app_commands.command(
        name="export", description="Get everything the bot stores about you, as a private file"
    )
    async def export(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        export = await self.bot.services.privacy.export(interaction.user.id)
        await interaction.followup.send(
            export.summary,
            file=discord.File(io.BytesIO(export.data), filename=export.filename),
            ephemeral=True,
        )

    @app_commands.command(
        name="delete", description="Erase your prompts and the images the bot keeps for you"
    )
    async def delete(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.send_message(
            CONFIRM_TEXT, view=confirm_view(interaction.user.id), ephemeral=True
        )


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(Privacy(bot))
