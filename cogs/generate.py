"""`/imagine`: the quick path from a prompt to an image."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs.models import GenerationRequest
from bot.variants import InvalidRequest

if TYPE_CHECKING:
    from bot.app import FluxcordBot

log = logging.getLogger(__name__)


class Generate(commands.Cog):
    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Create an image with FLUX.2")
    @app_commands.describe(prompt="What the image should show")
    async def imagine(
        self, interaction: discord.Interaction, prompt: app_commands.Range[str, 1, 4000]
    ) -> None:
        try:
            variant = self.bot.default_variant()
            params = variant.validate(prompt)
        except InvalidRequest as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        await interaction.response.send_message(
            f"⏳ Queued · {variant.label}", allowed_mentions=discord.AllowedMentions.none()
        )
        message = await interaction.original_response()
        request = GenerationRequest(
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=message.channel.id,
            variant=variant,
            params=params,
            status_message_id=message.id,
        )
        await self.bot.engine.accept(request)


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(Generate(bot))
