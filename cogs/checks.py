"""Who may do what: every permission check the cogs make, each named for what it allows.

Discord's permissions are read where the command or button is used (`interaction.permissions`
resolves the channel's overwrites), so a moderator of one channel is not one everywhere.
"""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands


def may_configure_server(interaction: discord.Interaction[Any]) -> bool:
    """Server settings, quotas, banned terms, blocks and the audit log: Manage Server."""
    permissions = interaction.permissions
    return interaction.guild_id is not None and (
        permissions.manage_guild or permissions.administrator
    )


async def _require_server_manager(interaction: discord.Interaction[Any]) -> bool:
    if not may_configure_server(interaction):
        raise app_commands.MissingPermissions(["manage_guild"])
    return True


# The runtime half of the rule: Discord hides the commands of a `server_manager_group` from
# members without Manage Server, but a server's admins can change who sees a command.
server_managers_only = app_commands.check(_require_server_manager)


def server_manager_group(name: str, description: str) -> app_commands.Group:
    """A server-only command group Discord shows to Manage Server holders only (each command
    still checks with `server_managers_only`)."""
    return app_commands.Group(
        name=name,
        description=description,
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )


def may_review_requests(permissions: discord.Permissions) -> bool:
    """Approve or reject queued requests: Manage Messages or Manage Server. Whoever may
    review needs no review of their own requests."""
    return permissions.manage_messages or permissions.manage_guild


def may_remove_results(permissions: discord.Permissions) -> bool:
    """Delete or cancel someone else's image: Manage Messages."""
    return permissions.manage_messages


def may_run_studios(permissions: discord.Permissions) -> bool:
    """Extend or end any studio, not only one's own: Manage Server or Manage Threads."""
    return permissions.administrator or permissions.manage_guild or permissions.manage_threads
