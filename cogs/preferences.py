"""/prefer show, /prefer set and /prefer clear: a member's own defaults (core:
bot/members/preferences.py). Every answer is private; a refused change changes nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.members.preferences import (
    MAX_SUFFIX_CHARS,
    MemberPreferences,
    PreferenceField,
    size_text,
)
from bot.variants import SIZE_PRESETS
from cogs.options import OptionSet
from cogs.render import inert

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

ALL = "all"
FIELD_LABELS = {
    PreferenceField.VARIANT: "Model",
    PreferenceField.SIZE: "Size",
    PreferenceField.PROMPT_SUFFIX: "Prompt suffix",
    PreferenceField.PROMPT_UPSAMPLING: "Prompt upsampling",
    PreferenceField.PRIVATE: "Private results",
}
HEADER = (
    "**Your defaults** — the same on every server and in direct messages. An option you give "
    "in a command wins over them, and a server's rules win where they forbid one."
)


def preferences_text(preferences: MemberPreferences) -> str:
    """What /prefer show answers: each default, or what applies instead."""

    def on_off(value: bool | None, unset: str) -> str:
        return unset if value is None else ("on" if value else "off")

    values = {
        PreferenceField.VARIANT: preferences.variant or "not set (the server's default)",
        PreferenceField.SIZE: size_text(preferences.size)
        if preferences.size
        else "not set (the model's standard size)",
        PreferenceField.PROMPT_SUFFIX: f"“{inert(preferences.prompt_suffix)}”"
        if preferences.prompt_suffix
        else "none",
        PreferenceField.PROMPT_UPSAMPLING: on_off(
            preferences.prompt_upsampling, "not set (the model's default)"
        ),
        PreferenceField.PRIVATE: on_off(preferences.private, "off"),
    }
    lines = [f"• {FIELD_LABELS[name]}: {value}" for name, value in values.items()]
    return "\n".join([HEADER, *lines])


class PreferenceCommands(commands.Cog):
    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot
        self.group = app_commands.Group(name="prefer", description="Your own default options")
        self.group.add_command(
            app_commands.Command(
                name="show", description="See your default options", callback=self.show
            )
        )
        self.group.add_command(self._build_set())
        self.group.add_command(self._build_clear())

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.group)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.group.name)

    async def show(self, interaction: discord.Interaction[Any]) -> None:
        preferences = await self.bot.services.preferences.get(interaction.user.id)
        await interaction.response.send_message(preferences_text(preferences), ephemeral=True)

    def _build_set(self) -> app_commands.Command[Any, Any, None]:
        options = OptionSet()
        variants = self.bot.services.generation.variants
        choices = [app_commands.Choice(name=v.label, value=key) for key, v in variants.items()]
        options.add("variant", str, "Your default FLUX.2 model", choices=choices[:25])
        options.add("size", str, "A size preset (e.g. landscape_16_9) or WIDTHxHEIGHT")
        # No length limit on the option itself: the bot's own answer says what the limit is.
        options.add("prompt_suffix", str, f"Added to your prompts (at most {MAX_SUFFIX_CHARS})")
        options.add("prompt_upsampling", bool, "Let the model enrich your prompts (where it can)")
        options.add("private", bool, "Show your results to you alone")

        async def handle(interaction: discord.Interaction[Any], values: dict[str, Any]) -> None:
            changes = {
                PreferenceField(name): value for name, value in values.items() if value is not None
            }
            guild_id = interaction.guild_id
            preferences = await self.bot.services.preferences.set(
                interaction.user.id, changes, guild_id=guild_id
            )
            text = "Saved.\n" + preferences_text(preferences)
            await interaction.response.send_message(text, ephemeral=True)

        command = options.command("set", "Change some of your default options", handle)
        command.autocomplete("size")(size_suggestions)
        return command

    def _build_clear(self) -> app_commands.Command[Any, Any, None]:
        options = OptionSet()
        choices = [
            app_commands.Choice(name=label, value=name.value)
            for name, label in FIELD_LABELS.items()
        ]
        choices.append(app_commands.Choice(name="All of them", value=ALL))
        options.add("field", str, "Which default to forget", required=True, choices=choices)

        async def handle(interaction: discord.Interaction[Any], values: dict[str, Any]) -> None:
            field = None if values["field"] == ALL else PreferenceField(values["field"])
            preferences = await self.bot.services.preferences.clear(interaction.user.id, field)
            what = "all your defaults" if field is None else f"your default {FIELD_LABELS[field]}"
            text = f"Cleared {what.lower()}.\n" + preferences_text(preferences)
            await interaction.response.send_message(text, ephemeral=True)

        return options.command("clear", "Forget one of your default options", handle)


async def size_suggestions(
    interaction: discord.Interaction[Any], current: str
) -> list[app_commands.Choice[str]]:
    typed = current.strip().lower()
    return [
        app_commands.Choice(name=f"{name} ({width}×{height})", value=name)
        for name, (width, height) in SIZE_PRESETS.items()
        if typed in name
    ][:25]


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(PreferenceCommands(bot))
