"""What every moderator command shares: how it opens and how it answers.

A moderator command belongs to a `server_manager_group` (hidden from members without Manage
Server) and checks that permission again when it runs, because a server's admins can unhide a
command for anyone (see `cogs.checks`). `moderator_command` does all of that in one
decorator; `server_of` is the server the command runs on (the groups are server-only);
`answer` replies privately and never pings, since banned terms, refused prompts and settings
are for moderators' eyes only.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeAlias, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.text import message_text
from cogs.checks import server_managers_only
from cogs.render import NO_PINGS

CHOICE_LIMIT = 25  # Discord's cap on autocomplete suggestions
CHOICE_VALUE_LIMIT = 100  # and on a suggestion's name and value

Interaction: TypeAlias = discord.Interaction[Any]
P = ParamSpec("P")
CogT = TypeVar("CogT", bound=commands.Cog)
ModeratorCallback = Callable[Concatenate[CogT, Interaction, P], Coroutine[Any, Any, None]]


def moderator_command(
    group: app_commands.Group, name: str, description: str, **options: str
) -> Callable[[ModeratorCallback[CogT, P]], app_commands.Command[CogT, P, None]]:
    """`/group name`: a command of a moderators' group, its `options` described, that only
    members with Manage Server may run (`server_managers_only`)."""

    def register(callback: ModeratorCallback[CogT, P]) -> app_commands.Command[CogT, P, None]:
        if options:
            callback = app_commands.describe(**options)(callback)
        command: app_commands.Command[CogT, P, None] = group.command(
            name=name, description=description
        )(server_managers_only(callback))
        return command

    return register


def server_of(interaction: Interaction) -> int:
    """The server a moderator command runs on: its group is server-only (`guild_only`)."""
    guild_id = interaction.guild_id
    assert guild_id is not None
    return guild_id


async def answer(interaction: Interaction, text: str, **extra: Any) -> None:
    """A private reply that pings nobody, cut to one message."""
    await interaction.response.send_message(
        message_text(text), ephemeral=True, allowed_mentions=NO_PINGS, **extra
    )
