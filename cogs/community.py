"""Community servers in Discord: the audit channel and the moderators' commands.

`/settings …` changes how the bot behaves on a server (channels, models, limits, direct
messages, uploads, the audit channel, the approval queue, strikes, banned terms) and `/mod …`
looks after members (strikes, blocks, why a request was refused).

Like `/quota`, both groups are hidden from members without Manage Server, and also check that
permission when they run, because a server admin can unhide a command for anyone
(see `cogs.usage`). Every answer is ephemeral: banned terms and refused prompts are for
moderators' eyes only.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import InvalidRequest
from bot.moderation.strikes import Block, Strike
from bot.moderation.terms import DEFAULT_TERMS, BannedTerm
from bot.servers.audit import BOT_ACTOR, AuditEntry
from bot.servers.settings import MAX_SAFETY, ServerSettings
from bot.text import MESSAGE_LIMIT, code_excerpt, message_text, plural, truncate
from cogs.checks import may_configure_server, server_manager_group, server_managers_only
from cogs.render import NO_PINGS

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

log = logging.getLogger(__name__)

ALL = "all"
BOT_DEFAULT = "bot-default"  # `/settings variants default:` value for "the bot's own default"

TERMS_INLINE_LIMIT = 1800  # longer term lists are sent as a text file
CHOICE_LIMIT = 25  # Discord's cap on autocomplete suggestions
CHOICE_VALUE_LIMIT = 100  # and on a suggestion's name and value
EXCERPT = 90  # how much of a refused prompt /mod strikes and /mod why show per line
BUILT_IN_NOTE = (
    f"A built-in list of {len(DEFAULT_TERMS)} terms (explicit content, and anything sexualising "
    "minors) also applies on every server and can't be changed. Terms match disguised "
    "spellings too: look-alike letters, accents, leetspeak, spacing and invisible characters."
)

# Every setting, in the order /settings show lists them, with the name changes are logged under.
LABELS: dict[str, str] = {
    "enabled_channels": "Enabled channels",
    "allowed_variants": "Allowed variants",
    "default_variant": "Default variant",
    "max_megapixels": "Megapixel cap",
    "safety_cap": "Safety cap",
    "allow_dms": "Direct messages",
    "allow_upload_edits": "Editing uploaded images",
    "audit_channel_id": "Audit channel",
    "approval_enabled": "Approval queue",
    "approval_channel_id": "Approval channel",
    "trusted_roles": "Trusted roles",
    "strike_warn": "Warning at",
    "strike_temp_block": "Temporary block at",
    "strike_block": "Block at",
    "temp_block_hours": "Temporary block length",
}


# --------------------------------------------------------------------------- text


def format_hours(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:g} min"
    return f"{hours:g} h"


@dataclass(frozen=True)
class SettingsText:
    """How settings read in /settings show, in replies and in the audit log."""

    variant_order: tuple[str, ...]  # the bot's variants, in the order it offers them
    bot_default: str

    def value(self, settings: ServerSettings, name: str) -> str:
        value: Any = getattr(settings, name)
        if name == "enabled_channels":
            return ALL if value is None else ", ".join(f"<#{c}>" for c in sorted(value))
        if name == "allowed_variants":
            return ALL if value is None else ", ".join(self.ordered(value))
        if name == "default_variant":
            return f"the bot's default, {self.bot_default}" if value is None else str(value)
        if name == "max_megapixels":
            return "no cap" if value is None else f"{value:g} MP"
        if name == "safety_cap":
            return "no cap" if value is None else f"at most {value}"
        if name == "allow_dms":
            return "allowed for members" if value else "not allowed"
        if name == "allow_upload_edits":
            return "anywhere" if value else "only in age-restricted channels"
        if name in ("audit_channel_id", "approval_channel_id"):
            return (
                ("off" if name == "audit_channel_id" else "not set")
                if value is None
                else (f"<#{value}>")
            )
        if name == "approval_enabled":
            return "on" if value else "off"
        if name == "trusted_roles":
            return ", ".join(f"<@&{r}>" for r in sorted(value)) if value else "none"
        if name.startswith("strike_"):
            return plural(int(value), "refused prompt")
        if name == "temp_block_hours":
            return format_hours(float(value))
        raise KeyError(name)

    def ordered(self, keys: Collection[str]) -> list[str]:
        known = [key for key in self.variant_order if key in keys]
        return known + sorted(set(keys) - set(known))

    def changes(self, before: ServerSettings, after: ServerSettings) -> list[str]:
        """One "Label: new (was old)" per changed setting."""
        return [
            f"{label}: {self.value(after, name)} (was {self.value(before, name)})"
            for name, label in LABELS.items()
            if getattr(before, name) != getattr(after, name)
        ]

    def show(self, settings: ServerSettings, *, server_terms: int) -> list[tuple[str, str]]:
        """The /settings show embed's fields: (title, text)."""

        def lines(*names: str) -> str:
            return "\n".join(f"{LABELS[n]}: {self.value(settings, n)}" for n in names)

        approval = lines("approval_enabled", "approval_channel_id", "trusted_roles")
        return [
            ("Where", lines("enabled_channels") + " (threads follow their channel)"),
            ("Models", lines("allowed_variants", "default_variant")),
            ("Limits", lines("max_megapixels", "safety_cap")),
            ("Direct messages", self.value(settings, "allow_dms")),
            ("Editing uploaded images", self.value(settings, "allow_upload_edits")),
            ("Audit channel", self.value(settings, "audit_channel_id")),
            ("Approval queue", approval),
            (
                "Strikes",
                lines("strike_warn", "strike_temp_block", "strike_block", "temp_block_hours"),
            ),
            (
                "Banned terms",
                f"{plural(server_terms, 'server term')}, plus the built-in list of "
                f"{len(DEFAULT_TERMS)} (see /settings terms-list)",
            ),
        ]


def parse_variants(text: str, known: Sequence[str]) -> frozenset[str] | None:
    """`/settings variants allowed:` — "pro, flex" or "all" (None). Raises InvalidRequest."""
    names = [name for name in re.split(r"[\s,;]+", text.strip().lower()) if name]
    if not names:
        raise InvalidRequest(f"List at least one variant, or write {ALL}.")
    if ALL in names:
        return None
    strangers = sorted(set(names) - set(known))
    if strangers:
        raise InvalidRequest(
            f"There is no variant called {', '.join(strangers)}. Choose from: {', '.join(known)}."
        )
    return frozenset(names)


def variant_list_choices(current: str, known: Sequence[str]) -> list[app_commands.Choice[str]]:
    """Suggestions for a comma-separated list: complete the last name, keep the others."""
    parts = [p.strip().lower() for p in current.split(",")]
    done, last = [p for p in parts[:-1] if p in known], parts[-1]
    prefix = ", ".join(done)
    options = [key for key in known if key not in done and key.startswith(last)]
    values = [f"{prefix}, {key}" if prefix else key for key in options]
    if not done and ALL.startswith(last):
        values.insert(0, ALL)
    return [app_commands.Choice(name=v, value=v) for v in values if len(v) <= CHOICE_VALUE_LIMIT][
        :CHOICE_LIMIT
    ]


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


def block_text(block: Block | None, mention: str) -> str:
    if block is None:
        return f"{mention} is not blocked."
    by = "Fluxcord" if block.blocked_by == BOT_ACTOR else f"<@{block.blocked_by}>"
    until = (
        "until a moderator unblocks them"
        if block.until is None
        else f"until <t:{int(block.until)}:f> (<t:{int(block.until)}:R>)"
    )
    return f"{mention} is blocked {until}, by {by} <t:{int(block.at)}:R>: {block.reason}"


def strike_line(strike: Strike) -> str:
    line = f"<t:{int(strike.at)}:R> · `{strike.term}` · {code_excerpt(strike.prompt, EXCERPT)}"
    return f"~~{line}~~ (cleared)" if strike.cleared else line


def audit_line(entry: AuditEntry) -> str:
    return f"<t:{int(entry.at)}:R> {entry.line()}"


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
            content=message_text(entry.line()),
            allowed_mentions=NO_PINGS,
            silent=True,
        )


async def reply(interaction: discord.Interaction[Any], text: str, **extra: Any) -> None:
    await interaction.response.send_message(
        text[:MESSAGE_LIMIT], ephemeral=True, allowed_mentions=NO_PINGS, **extra
    )


# --------------------------------------------------------------------------- the cog
class Community(commands.Cog):
    settings = server_manager_group("settings", "How Fluxcord works on this server (moderators)")
    mod = server_manager_group("mod", "Strikes and blocks of members (moderators)")

    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.services.audit.sink = ChannelAuditSink(self.bot)

    async def cog_unload(self) -> None:
        self.bot.services.audit.sink = None

    # ----------------------------------------------------------------- helpers
    def variant_keys(self) -> list[str]:
        return list(self.bot.services.generation.variants)

    def bot_default(self) -> str:
        """The variant /imagine uses on a server without its own default."""
        keys = self.variant_keys()
        default = self.bot.services.generation.default_variant
        return default if default in keys or not keys else keys[0]

    def text(self) -> SettingsText:
        return SettingsText(tuple(self.variant_keys()), self.bot_default())

    async def _change(
        self, interaction: discord.Interaction[Any], note: str = "", **changes: Any
    ) -> None:
        """Validate, audit and confirm a settings change; a change to nothing is not logged."""
        assert interaction.guild_id is not None  # guild_only
        store = self.bot.services.server_settings
        before = store.get(interaction.guild_id)
        after = store.validate(before, changes)  # InvalidRequest before anything is written
        text = self.text()
        lines = text.changes(before, after)
        if not lines:
            current = "; ".join(f"{LABELS[n]}: {text.value(before, n)}" for n in changes)
            await reply(interaction, f"Nothing changed ({current}).")
            return
        summary = "; ".join(lines)
        await store.update(interaction.guild_id, interaction.user.id, summary, **changes)
        await reply(interaction, f"{summary}.{f' {note}' if note else ''}")

    # ----------------------------------------------------------------- /settings
    @settings.command(name="show", description="Every setting of this server")
    @server_managers_only
    async def settings_show(self, interaction: discord.Interaction[Any]) -> None:
        assert interaction.guild_id is not None
        current = self.bot.services.server_settings.get(interaction.guild_id)
        terms = len(self.bot.services.moderation.server_terms(interaction.guild_id))
        embed = discord.Embed(title="Fluxcord settings", colour=discord.Colour.blurple())
        for title, value in self.text().show(current, server_terms=terms):
            embed.add_field(name=title, value=value[:1024], inline=False)
        embed.set_footer(text="Change them with /settings …; every change is in the audit log.")
        await reply(interaction, "", embed=embed)

    @settings.command(name="channel-add", description="Allow images in a channel (only there)")
    @app_commands.describe(channel="A channel where members may make images")
    @server_managers_only
    async def settings_channel_add(
        self, interaction: discord.Interaction[Any], channel: discord.TextChannel
    ) -> None:
        assert interaction.guild_id is not None
        enabled = self.bot.services.server_settings.get(interaction.guild_id).enabled_channels
        await self._change(
            interaction,
            "Requests in other channels are refused; threads follow their channel.",
            enabled_channels=(enabled or frozenset()) | {channel.id},
        )

    @settings.command(name="channel-remove", description="Stop allowing images in a channel")
    @app_commands.describe(channel="One of the enabled channels")
    @server_managers_only
    async def settings_channel_remove(
        self, interaction: discord.Interaction[Any], channel: discord.TextChannel
    ) -> None:
        assert interaction.guild_id is not None
        enabled = self.bot.services.server_settings.get(interaction.guild_id).enabled_channels
        if enabled is None:
            # "All but these" is not a setting: the server lists the channels it enables.
            raise InvalidRequest(
                "Every channel is enabled now. Choose the channels to keep with "
                "/settings channel-add; the others are then off."
            )
        if channel.id not in enabled:
            raise InvalidRequest(f"{channel.mention} isn't one of the enabled channels.")
        await self._change(interaction, enabled_channels=enabled - {channel.id})

    @settings.command(name="channel-all", description="Allow images in every channel again")
    @server_managers_only
    async def settings_channel_all(self, interaction: discord.Interaction[Any]) -> None:
        await self._change(interaction, enabled_channels=None)

    @settings.command(name="variants", description="Which FLUX.2 models members may use")
    @app_commands.describe(
        allowed='Comma-separated variants, e.g. "pro, flex", or "all"',
        default="The model /imagine uses when a member doesn't choose one",
    )
    @server_managers_only
    async def settings_variants(
        self,
        interaction: discord.Interaction[Any],
        allowed: str | None = None,
        default: str | None = None,
    ) -> None:
        assert interaction.guild_id is not None
        keys = self.variant_keys()
        changes: dict[str, Any] = {}
        if allowed is not None:
            changes["allowed_variants"] = parse_variants(allowed, keys)
        if default is not None:
            key = default.strip().lower()
            if key not in (*keys, BOT_DEFAULT):
                raise InvalidRequest(
                    f"There is no variant called {default}. Choose from: {', '.join(keys)}."
                )
            changes["default_variant"] = None if key == BOT_DEFAULT else key
        if not changes:
            raise InvalidRequest("Give the allowed variants, a default, or both.")
        proposed = replace(self.bot.services.server_settings.get(interaction.guild_id), **changes)
        effective = proposed.default_variant or self.bot_default()
        if not proposed.variant_allowed(effective):
            if default is not None or proposed.allowed_variants is None:
                raise InvalidRequest(
                    f"The default ({effective}) must be one of the allowed variants."
                )
            # Otherwise /imagine without a choice would be refused: the first allowed variant
            # becomes the default, and the reply says so.
            changes["default_variant"] = self.text().ordered(proposed.allowed_variants)[0]
        await self._change(interaction, **changes)

    @settings_variants.autocomplete("allowed")
    async def _allowed_autocomplete(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        if not may_configure_server(interaction):
            return []
        return variant_list_choices(current, self.variant_keys())

    @settings_variants.autocomplete("default")
    async def _default_autocomplete(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        if not may_configure_server(interaction):
            return []
        needle = current.strip().lower()
        choices = [
            app_commands.Choice(name=f"{v.label} ({key})", value=key)
            for key, v in self.bot.services.generation.variants.items()
            if needle in key  # not the labels: every one of them contains "flux"
        ]
        choices.append(
            app_commands.Choice(name=f"The bot's default ({self.bot_default()})", value=BOT_DEFAULT)
        )
        return choices[:CHOICE_LIMIT]

    @settings.command(name="limits", description="Cap image size and the safety tolerance")
    @app_commands.describe(
        max_megapixels="Largest image members may ask for, in megapixels (0: no cap)",
        safety_cap=f"Most lenient safety tolerance members may use, 0–{MAX_SAFETY} (-1: no cap)",
    )
    @server_managers_only
    async def settings_limits(
        self,
        interaction: discord.Interaction[Any],
        max_megapixels: app_commands.Range[float, 0.0, 16.0] | None = None,
        safety_cap: app_commands.Range[int, -1, MAX_SAFETY] | None = None,
    ) -> None:
        changes: dict[str, Any] = {}
        if max_megapixels is not None:
            changes["max_megapixels"] = max_megapixels or None
        if safety_cap is not None:
            changes["safety_cap"] = None if safety_cap < 0 else safety_cap
        if not changes:
            raise InvalidRequest("Give max_megapixels, safety_cap or both.")
        await self._change(interaction, **changes)

    @settings.command(name="dms", description="Whether members may use Fluxcord in direct messages")
    @app_commands.describe(allowed="Members of this server may make images in DMs with the bot")
    @server_managers_only
    async def settings_dms(self, interaction: discord.Interaction[Any], allowed: bool) -> None:
        await self._change(interaction, allow_dms=allowed)

    @settings.command(name="uploads", description="Where uploaded images may be edited")
    @app_commands.describe(
        allow_outside_age_restricted="Off: uploads can only be edited in age-restricted channels"
    )
    @server_managers_only
    async def settings_uploads(
        self, interaction: discord.Interaction[Any], allow_outside_age_restricted: bool
    ) -> None:
        await self._change(interaction, allow_upload_edits=allow_outside_age_restricted)

    @settings.command(name="audit-channel", description="Where moderation entries are posted")
    @app_commands.describe(channel="The moderators' channel; leave empty to stop posting")
    @server_managers_only
    async def settings_audit_channel(
        self, interaction: discord.Interaction[Any], channel: discord.TextChannel | None = None
    ) -> None:
        if channel is not None:
            me = channel.guild.me
            if me is not None and not channel.permissions_for(me).send_messages:
                raise InvalidRequest(f"I can't post in {channel.mention}: let me send messages.")
        await self._change(
            interaction,
            "The log is kept either way; this only chooses where it is posted.",
            audit_channel_id=None if channel is None else channel.id,
        )

    @settings.command(name="approval", description="Hold requests for a moderator's approval")
    @app_commands.describe(
        enabled="Requests wait until a moderator approves them",
        channel="The moderators' channel where requests wait",
        trusted_role="Members with this role skip the queue (adds to the trusted roles)",
    )
    @server_managers_only
    async def settings_approval(
        self,
        interaction: discord.Interaction[Any],
        enabled: bool,
        channel: discord.TextChannel | None = None,
        trusted_role: discord.Role | None = None,
    ) -> None:
        assert interaction.guild_id is not None
        changes: dict[str, Any] = {"approval_enabled": enabled}
        if channel is not None:
            changes["approval_channel_id"] = channel.id
        if trusted_role is not None:
            if trusted_role.is_default():
                raise InvalidRequest("Everyone has @everyone: turn the queue off instead.")
            trusted = self.bot.services.server_settings.get(interaction.guild_id).trusted_roles
            changes["trusted_roles"] = trusted | {trusted_role.id}
        await self._change(interaction, **changes)

    @settings.command(name="trusted-remove", description="A role no longer skips the approvals")
    @app_commands.describe(role="One of the trusted roles")
    @server_managers_only
    async def settings_trusted_remove(
        self, interaction: discord.Interaction[Any], role: discord.Role
    ) -> None:
        assert interaction.guild_id is not None
        trusted = self.bot.services.server_settings.get(interaction.guild_id).trusted_roles
        if role.id not in trusted:
            raise InvalidRequest(f"{role.mention} isn't a trusted role.")
        await self._change(interaction, trusted_roles=trusted - {role.id})

    @settings.command(name="strikes", description="When refused prompts lead to blocks")
    @app_commands.describe(
        warn="Refused prompts before the warning",
        temp_block="Refused prompts before a temporary block",
        block="Refused prompts before a block until a moderator lifts it",
        temp_block_hours="How long a temporary block lasts, in hours",
    )
    @server_managers_only
    async def settings_strikes(
        self,
        interaction: discord.Interaction[Any],
        warn: app_commands.Range[int, 1, 100] | None = None,
        temp_block: app_commands.Range[int, 1, 100] | None = None,
        block: app_commands.Range[int, 1, 100] | None = None,
        temp_block_hours: app_commands.Range[float, 0.05, 8760.0] | None = None,
    ) -> None:
        given = {
            "strike_warn": warn,
            "strike_temp_block": temp_block,
            "strike_block": block,
            "temp_block_hours": temp_block_hours,
        }
        changes = {name: value for name, value in given.items() if value is not None}
        if not changes:
            raise InvalidRequest("Give at least one of warn, temp_block, block, temp_block_hours.")
        await self._change(
            interaction, "Strikes only count until a moderator unblocks the member.", **changes
        )

    @settings.command(name="terms-add", description="Refuse prompts containing a term")
    @app_commands.describe(
        term="A word or phrase (disguised spellings match too)",
        regex="Treat the term as a regular expression (RE2: no backreferences or lookaround)",
    )
    @server_managers_only
    async def settings_terms_add(
        self,
        interaction: discord.Interaction[Any],
        term: app_commands.Range[str, 1, 200],
        regex: bool = False,
    ) -> None:
        assert interaction.guild_id is not None
        added = await self.bot.services.moderation.add_term(
            interaction.guild_id, interaction.user.id, term, is_regex=regex
        )
        kind = "regular expression" if regex else "term"
        await reply(
            interaction,
            f"Added the {kind} `{added}`. Prompts that contain it are refused with a neutral "
            "message and count as a strike.",
        )

    @settings.command(name="terms-remove", description="Stop refusing a term")
    @app_commands.describe(term="One of this server's terms")
    @server_managers_only
    async def settings_terms_remove(self, interaction: discord.Interaction[Any], term: str) -> None:
        assert interaction.guild_id is not None
        await self.bot.services.moderation.remove_term(
            interaction.guild_id, interaction.user.id, term
        )
        await reply(interaction, f"Removed `{term.strip()}` from this server's banned terms.")

    @settings_terms_remove.autocomplete("term")
    async def _term_autocomplete(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        # Autocomplete runs no command checks, and terms are for moderators only.
        if not may_configure_server(interaction) or interaction.guild_id is None:
            return []
        return term_choices(
            self.bot.services.moderation.server_terms(interaction.guild_id), current
        )

    @settings.command(name="terms-list", description="This server's banned terms")
    @server_managers_only
    async def settings_terms_list(self, interaction: discord.Interaction[Any]) -> None:
        assert interaction.guild_id is not None
        terms = self.bot.services.moderation.server_terms(interaction.guild_id)
        text = terms_text(terms)
        if len(text) <= TERMS_INLINE_LIMIT:
            await reply(interaction, text)
            return
        listing = "\n".join(f"{t.pattern}\t{'regex' if t.is_regex else 'term'}" for t in terms)
        await reply(
            interaction,
            f"This server has {plural(len(terms), 'banned term')}: see the file.\n{BUILT_IN_NOTE}",
            file=discord.File(io.BytesIO(listing.encode()), filename="banned-terms.txt"),
        )

    # ----------------------------------------------------------------- /mod
    def _target(self, interaction: discord.Interaction[Any], user: discord.abc.User) -> None:
        """Moderators can't block themselves, Fluxcord or other bots."""
        if user.id == interaction.user.id:
            raise InvalidRequest("You can't block yourself.")
        if self.bot.user is not None and user.id == self.bot.user.id:
            raise InvalidRequest("I can't block myself: I'm the one making the images.")
        if user.bot:
            raise InvalidRequest("Bots can't make images here, so there's nothing to block.")

    @mod.command(name="strikes", description="A member's refused prompts and block")
    @app_commands.describe(user="The member")
    @server_managers_only
    async def mod_strikes(
        self, interaction: discord.Interaction[Any], user: discord.Member | discord.User
    ) -> None:
        assert interaction.guild_id is not None
        guild_id = interaction.guild_id
        moderation = self.bot.services.moderation
        strikes = await moderation.strikes(guild_id, user.id)
        active = await moderation.active_strike_count(guild_id, user.id)
        current = self.bot.services.server_settings.get(guild_id)
        lines = [
            f"**Strikes of {user.mention}**: {active} active (warning at {current.strike_warn},"
            f" temporary block at {current.strike_temp_block}, block at {current.strike_block})",
            block_text(moderation.block_of(guild_id, user.id), user.mention),
        ]
        if strikes:
            lines.append("**Latest refused prompts** (newest first)")
            lines += [strike_line(s) for s in strikes]
        else:
            lines.append("No refused prompts.")
        await reply(interaction, fit(lines))

    @mod.command(name="block", description="Stop a member from making images here")
    @app_commands.describe(
        user="The member", hours="How long (leave empty: until unblocked)", reason="Why (logged)"
    )
    @server_managers_only
    async def mod_block(
        self,
        interaction: discord.Interaction[Any],
        user: discord.Member | discord.User,
        hours: app_commands.Range[float, 0.05, 8760.0] | None = None,
        reason: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        assert interaction.guild_id is not None
        self._target(interaction, user)
        block = await self.bot.services.moderation.block(
            interaction.guild_id, interaction.user.id, user.id, hours=hours, reason=reason or ""
        )
        until = (
            "until a moderator unblocks them"
            if block.until is None
            else f"until <t:{int(block.until)}:f> (<t:{int(block.until)}:R>)"
        )
        await reply(interaction, f"Blocked {user.mention} {until}: {block.reason}.")

    @mod.command(name="unblock", description="Lift a member's block and clear their strikes")
    @app_commands.describe(user="The member")
    @server_managers_only
    async def mod_unblock(
        self, interaction: discord.Interaction[Any], user: discord.Member | discord.User
    ) -> None:
        assert interaction.guild_id is not None
        changed = await self.bot.services.moderation.unblock(
            interaction.guild_id, interaction.user.id, user.id
        )
        if changed:
            text = f"Unblocked {user.mention} and cleared their strikes: they start from zero."
        else:
            text = f"{user.mention} wasn't blocked and has no strikes: nothing to do."
        await reply(interaction, text)

    @mod.command(name="why", description="Why a member is blocked or was refused")
    @app_commands.describe(user="The member")
    @server_managers_only
    async def mod_why(
        self, interaction: discord.Interaction[Any], user: discord.Member | discord.User
    ) -> None:
        assert interaction.guild_id is not None
        guild_id = interaction.guild_id
        moderation = self.bot.services.moderation
        strikes = await moderation.strikes(guild_id, user.id, limit=3)
        entries = await self.bot.services.audit.recent(guild_id, limit=5, target_id=user.id)
        active = await moderation.active_strike_count(guild_id, user.id)
        lines = [
            f"**About {user.mention}**",
            block_text(moderation.block_of(guild_id, user.id), user.mention),
            f"Active strikes: {active}.",
        ]
        if strikes:
            lines.append("**Latest refused prompts**")
            lines += [strike_line(s) for s in strikes]
        if entries:
            lines.append("**Latest audit entries about them**")
            lines += [audit_line(e) for e in entries]
        else:
            lines.append("No audit entries about them.")
        await reply(interaction, fit(lines))


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(Community(bot))
