"""The Discord permissions the bot needs, defined once: the invite URL it prints at start and
`fluxcord doctor`'s per-channel check both read them from here.

Generation (in every channel where members may make images): see the channel, post the
result with its image and buttons, show the approval and audit embeds, and read the message
a member replies to (its images are the references). Studios (optional): open a public
thread, post in it, and lock and archive it when the studio ends. The bot deletes only its
own messages, which needs no permission.
"""

from __future__ import annotations

import discord

GENERATION_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
)
STUDIO_PERMISSIONS = discord.Permissions(
    create_public_threads=True,
    send_messages_in_threads=True,
    manage_threads=True,
)
BOT_PERMISSIONS = GENERATION_PERMISSIONS | STUDIO_PERMISSIONS

INVITE_SCOPES = ("bot", "applications.commands")


def invite_url(application_id: int) -> str:
    """The URL that adds the bot to a server with exactly `BOT_PERMISSIONS`."""
    return discord.utils.oauth_url(
        application_id, permissions=BOT_PERMISSIONS, scopes=INVITE_SCOPES
    )


def missing(have: discord.Permissions, needed: discord.Permissions) -> list[str]:
    """The names of the `needed` permissions `have` lacks, as Discord's settings show them
    ("Attach Files"), in a stable order."""
    lacking = needed.value & ~have.value
    return [_title(name) for name, value in discord.Permissions(lacking) if value]


def _title(name: str) -> str:
    # discord.py names View Channel by its old name, read_messages.
    special = {
        "read_messages": "View Channel",
        "view_channel": "View Channel",
        "send_messages_in_threads": "Send Messages in Threads",
    }
    return special.get(name, name.replace("_", " ").title())
