"""The server LoRA catalogue in Discord: the choices and text of `/settings lora-*`, and the
`lora` option's autocomplete on the klein commands. The rules are in bot/servers/loras.py."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import discord
from discord import app_commands

from bot.providers.bfl_options import LORA_BASES
from bot.servers.loras import LoraCatalogue, ServerLora
from bot.variants import Variant
from cogs.moderator import CHOICE_LIMIT, CHOICE_VALUE_LIMIT
from cogs.render import inert

LORA_OPTION = "lora"
Suggest = Callable[
    [discord.Interaction[Any], str], Coroutine[Any, Any, list[app_commands.Choice[str]]]
]


def base_choices() -> list[app_commands.Choice[str]]:
    """The klein base models a LoRA may be uploaded for (their `-finetuned` endpoints)."""
    return [
        app_commands.Choice(name=f"{base.label} ({key})", value=key)
        for key, base in LORA_BASES.items()
    ]


def describe(lora: ServerLora) -> str:
    trigger = f" · trigger “{inert(lora.trigger)}”" if lora.trigger else ""
    return (
        f"**{inert(lora.name)}** — `{lora.finetune_id}` on {lora.base_model.label}, "
        f"strength {lora.strength:g}{trigger}"
    )


def listing(loras: list[ServerLora]) -> str:
    if not loras:
        return (
            "This server has no LoRAs yet. Register one uploaded to the bot's BFL account with "
            "/settings lora-add."
        )
    lines = [f"**This server's LoRAs** ({len(loras)}):"]
    lines += [f"• {describe(lora)}" for lora in loras]
    return "\n".join(lines)


def name_choices(loras: list[ServerLora], current: str) -> list[app_commands.Choice[str]]:
    """Suggestions for a LoRA name: those containing what was typed, at most 25."""
    needle = current.strip().casefold()
    return [
        app_commands.Choice(name=lora.name[:CHOICE_VALUE_LIMIT], value=lora.name)
        for lora in loras
        if needle in lora.name.casefold()
    ][:CHOICE_LIMIT]


def lora_autocomplete(catalogue: LoraCatalogue, variant: Variant) -> Suggest:
    """The `lora` option's suggestions on a klein command: this server's LoRAs that model
    takes, never another server's."""

    async def suggest(
        interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        return name_choices(catalogue.compatible(interaction.guild_id, variant), current)

    return suggest
