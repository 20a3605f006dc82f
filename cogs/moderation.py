"""Moderation in Discord: the `/mod …` commands that look after members (strikes, blocks, why
a request was refused), the audit channel, and how banned terms, strikes, blocks and audit
entries read for moderators.

The rules live in `bot.moderation` (strikes, blocks, who may be blocked) and
`bot.servers.audit` (the log); this cog renders them. `ChannelAuditSink` is the Discord side
of the audit log's port, attached in `cog_load`. Every command opens with
`moderator_command` (see `cogs.moderator`) and answers privately.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.moderation.strikes import Block, Strike, check_may_block
from bot.moderation.terms import DEFAULT_TERMS, BannedTerm
from bot.servers.audit import BOT_ACTOR, AuditEntry
from bot.text import MESSAGE_LIMIT, code_excerpt, message_text, plural, truncate
from cogs.checks import server_manager_group
from cogs.moderator import (
    CHOICE_LIMIT,
    CHOICE_VALUE_LIMIT,
    Interaction,
    answer,
    moderator_command,
    server_of,
)
from cogs.render import NO_PINGS

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

EXCERPT = 90  # how much of a refused prompt /mod strikes and /mod why show per line
TERMS_INLINE_LIMIT = 1800  # longer term lists are sent as a text file
BUILT_IN_NOTE = (
    f"A built-in list of {len(DEFAULT_TERMS)} terms (explicit content, and anything sexualising "
    "minors) also applies on every server and can't be changed. Terms match disguised "
    "spellings too: look-alike letters, accents, leetspeak, spacing and invisible characters."
)


# --------------------------------------------------------------------------- text
def term_choices(terms: Sequence[BannedTerm], current: str) -> list[app_commands.Choice[str]]:
    """A server's terms containing what the moderator typed (patterns over 100 characters
    can't be suggestion values; they can still be typed in full)."""
    needle = current.strip().lower()
    choices = []
    for term in terms:
        if needle in term.pattern.lower() and len(term.pattern) <= CHOICE_VALUE_LIMIT:
            name = f"{term.pattern} (regex)" if term.is_regex else term.pattern
            choices.append(
                app_commands.Choice(name=truncate(name, CHOICE_VALUE_LIMIT), value=term.pattern)
            )
    return choices[:CHOICE_LIMIT]


def terms_text(terms: Sequence[BannedTerm]) -> str:
    if not terms:
        return f"This server has added no banned terms.\n{BUILT_IN_NOTE}"
    lines = [f"**This server's banned terms** ({len(terms)})"]
    lines += [f"- `{t.pattern}`" + (" (regular expression)" if t.is_regex else "") for t in terms]
    return "\n".join([*lines, "", BUILT_IN_NOTE])


def terms_listing(terms: Sequence[BannedTerm]) -> tuple[str, discord.File | None]:
    """/settings terms-list: the terms in the message, or in a text file when they don't fit
    (one a line: the pattern, a tab, "regex" or "term")."""
    text = terms_text(terms)
    if len(text) <= TERMS_INLINE_LIMIT:
        return text, None
    listing = "\n".join(f"{t.pattern}\t{'regex' if t.is_regex else 'term'}" for t in terms)
    return (
        f"This server has {plural(len(terms), 'banned term')}: see the file.\n{BUILT_IN_NOTE}",
        discord.File(io.BytesIO(listing.encode()), filename="banned-terms.txt"),
    )


def block_until(block: Block) -> str:
    if block.until is None:
        return "until a moderator unblocks them"
    return f"until <t:{int(block.until)}:f> (<t:{int(block.until)}:R>)"


def block_text(block: Block | None, mention: str) -> str:
    if block is None:
        return f"{mention} is not blocked."
    by = "Fluxcord" if block.blocked_by == BOT_ACTOR else f"<@{block.blocked_by}>"
    return (
        f"{mention} is blocked {block_until(block)}, by {by} <t:{int(block.at)}:R>: {block.reason}"
    )


def strike_line(strike: Strike) -> str:
    line = f"<t:{int(strike.at)}:R> · `{strike.term}` · {code_excerpt(strike.prompt, EXCERPT)}"
    return f"~~{line}~~ (cleared)" if strike.cleared else line


def audit_entry_text(entry: AuditEntry) -> str:
    """One entry as the audit channel shows it; mentions render as names and never ping."""
    actor = "Fluxcord" if entry.actor_id == BOT_ACTOR else f"<@{entry.actor_id}>"
    return f"**{entry.action}** · {actor} · {entry.detail}"


def audit_line(entry: AuditEntry) -> str:
    return f"<t:{int(entry.at)}:R> {audit_entry_text(entry)}"


def section(heading: str, rows: list[str], *, empty: str | None = None) -> list[str]:
    """A heading over its rows; with no rows, the `empty` line (or nothing)."""
    if rows:
        return [heading, *rows]
    return [] if empty is None else [empty]


def fit(lines: Sequence[str], limit: int = MESSAGE_LIMIT) -> str:
    """Join lines, dropping whole lines from the end to stay within a message."""
    kept: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > limit - 2:
            kept.append("…")
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept)


# --------------------------------------------------------------------------- audit channel
class ChannelAuditSink:
    """Posts audit entries to a server's audit channel, never pinging anyone. The post goes
    out in the background, in the channel's turn: a moderator's command is answered at once
    even when the audit channel is busy."""

    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot

    async def post(self, channel_id: int, entry: AuditEntry) -> None:
        self.bot.poster.send_soon(
            channel_id,
            guild_id=entry.guild_id,
            content=message_text(audit_entry_text(entry)),
            allowed_mentions=NO_PINGS,
            silent=True,
        )


# --------------------------------------------------------------------------- the cog
class ModerationCommands(commands.Cog):
    mod = server_manager_group("mod", "Strikes and blocks of members (moderators)")

    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.services.audit.sink = ChannelAuditSink(self.bot)

    async def cog_unload(self) -> None:
        self.bot.services.audit.sink = None

    @moderator_command(mod, "strikes", "A member's refused prompts and block", user="The member")
    async def mod_strikes(
        self, interaction: Interaction, user: discord.Member | discord.User
    ) -> None:
        guild_id = server_of(interaction)
        moderation = self.bot.services.moderation
        strikes = await moderation.strikes(guild_id, user.id)
        active = await moderation.active_strike_count(guild_id, user.id)
        current = self.bot.services.server_settings.get(guild_id)
        lines = [
            f"**Strikes of {user.mention}**: {active} active (warning at {current.strike_warn},"
            f" temporary block at {current.strike_temp_block}, block at {current.strike_block})",
            block_text(moderation.block_of(guild_id, user.id), user.mention),
        ]
        lines += section(
            "**Latest refused prompts** (newest first)",
            [strike_line(s) for s in strikes],
            empty="No refused prompts.",
        )
        await answer(interaction, fit(lines))

    @moderator_command(
        mod,
        "block",
        "Stop a member from making images here",
        user="The member",
        hours="How long (leave empty: until unblocked)",
        reason="Why (logged)",
    )
    async def mod_block(
        self,
        interaction: Interaction,
        user: discord.Member | discord.User,
        hours: app_commands.Range[float, 0.05, 8760.0] | None = None,
        reason: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        me = self.bot.user
        check_may_block(
            interaction.user.id,
            user.id,
            target_is_bot=user.bot,
            bot_user_id=None if me is None else me.id,
        )
        block = await self.bot.services.moderation.block(
            server_of(interaction), interaction.user.id, user.id, hours=hours, reason=reason or ""
        )
        await answer(interaction, f"Blocked {user.mention} {block_until(block)}: {block.reason}.")

    @moderator_command(
        mod, "unblock", "Lift a member's block and clear their strikes", user="The member"
    )
    async def mod_unblock(
        self, interaction: Interaction, user: discord.Member | discord.User
    ) -> None:
        changed = await self.bot.services.moderation.unblock(
            server_of(interaction), interaction.user.id, user.id
        )
        if changed:
            text = f"Unblocked {user.mention} and cleared their strikes: they start from zero."
        else:
            text = f"{user.mention} wasn't blocked and has no strikes: nothing to do."
        await answer(interaction, text)

    @moderator_command(mod, "why", "Why a member is blocked or was refused", user="The member")
    async def mod_why(self, interaction: Interaction, user: discord.Member | discord.User) -> None:
        guild_id = server_of(interaction)
        moderation = self.bot.services.moderation
        strikes = await moderation.strikes(guild_id, user.id, limit=3)
        entries = await self.bot.services.audit.recent(guild_id, limit=5, target_id=user.id)
        active = await moderation.active_strike_count(guild_id, user.id)
        lines = [
            f"**About {user.mention}**",
            block_text(moderation.block_of(guild_id, user.id), user.mention),
            f"Active strikes: {active}.",
        ]
        lines += section("**Latest refused prompts**", [strike_line(s) for s in strikes])
        lines += section(
            "**Latest audit entries about them**",
            [audit_line(e) for e in entries],
            empty="No audit entries about them.",
        )
        await answer(interaction, fit(lines))


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(ModerationCommands(bot))
