"""Server settings in Discord: the `/settings …` commands, which change how the bot behaves
on a server (channels, models, limits, direct messages, uploads, the audit and showcase
channels, the approval queue, strikes, banned terms, private results).

The rules live in `bot.servers.settings` (what a valid change is) and `bot.moderation`
(banned terms); this cog turns commands into changes and renders the result with
`cogs.settings_text` (and `cogs.moderation` for banned terms). Every command opens with
`moderator_command` (see `cogs.moderator`): hidden from members without Manage Server,
checked again when it runs, answered privately. The terms-* commands are here because they
are `/settings` commands, and a command group belongs to one cog.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import InvalidRequest
from bot.servers.settings import MAX_SAFETY, ServerSettings
from bot.text import EMBED_FIELD_LIMIT
from cogs.checks import may_configure_server, server_manager_group
from cogs.loras import base_choices, describe, listing, name_choices
from cogs.moderation import term_choices, terms_listing
from cogs.moderator import CHOICE_LIMIT, Interaction, answer, moderator_command, server_of
from cogs.settings_text import (
    BOT_DEFAULT,
    LABELS,
    SettingsText,
    parse_variants,
    variant_list_choices,
)

if TYPE_CHECKING:
    from cogs.client import FluxcordBot


# --------------------------------------------------------------------------- the cog
class ServerSettingsCommands(commands.Cog):
    settings = server_manager_group("settings", "How Fluxcord works on this server (moderators)")

    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot

    # ----------------------------------------------------------------- helpers
    def variant_keys(self) -> list[str]:
        return list(self.bot.services.generation.variants)

    def bot_default(self) -> str:
        """The variant /imagine uses on a server without its own default, as the generation
        service picks it (a bot with no variant at all names the one it is configured with)."""
        generation = self.bot.services.generation
        if not generation.variants:
            return generation.default_variant
        return generation.offered_name(generation.pick_variant(None))

    def current(self, interaction: Interaction) -> ServerSettings:
        """The settings of the server the command runs on, before the change."""
        return self.bot.services.server_settings.get(server_of(interaction))

    def text(self) -> SettingsText:
        return SettingsText(tuple(self.variant_keys()), self.bot_default())

    async def _change(self, interaction: Interaction, note: str = "", **changes: Any) -> None:
        """Validate, audit and confirm a settings change; a change to nothing is not logged."""
        guild_id = server_of(interaction)
        store = self.bot.services.server_settings
        before = store.get(guild_id)
        after = store.validate(before, changes)  # InvalidRequest before anything is written
        text = self.text()
        lines = text.changes(before, after)
        if not lines:
            current = "; ".join(f"{LABELS[n]}: {text.value(before, n)}" for n in changes)
            await answer(interaction, f"Nothing changed ({current}).")
            return
        summary = "; ".join(lines)
        await store.update(guild_id, interaction.user.id, summary, **changes)
        await answer(interaction, f"{summary}.{f' {note}' if note else ''}")

    # ----------------------------------------------------------------- /settings
    @moderator_command(settings, "show", "Every setting of this server")
    async def settings_show(self, interaction: Interaction) -> None:
        guild_id = server_of(interaction)
        current = self.bot.services.server_settings.get(guild_id)
        terms = len(self.bot.services.moderation.server_terms(guild_id))
        embed = discord.Embed(title="Fluxcord settings", colour=discord.Colour.blurple())
        for title, value in self.text().show(current, server_terms=terms):
            embed.add_field(name=title, value=value[:EMBED_FIELD_LIMIT], inline=False)
        embed.set_footer(text="Change them with /settings …; every change is in the audit log.")
        await answer(interaction, "", embed=embed)

    @moderator_command(
        settings,
        "channel-add",
        "Allow images in a channel (only there)",
        channel="A channel where members may make images",
    )
    async def settings_channel_add(
        self, interaction: Interaction, channel: discord.TextChannel
    ) -> None:
        enabled = self.current(interaction).enabled_channels
        await self._change(
            interaction,
            "Requests in other channels are refused; threads follow their channel.",
            enabled_channels=(enabled or frozenset()) | {channel.id},
        )

    @moderator_command(
        settings,
        "channel-remove",
        "Stop allowing images in a channel",
        channel="One of the enabled channels",
    )
    async def settings_channel_remove(
        self, interaction: Interaction, channel: discord.TextChannel
    ) -> None:
        enabled = self.current(interaction).enabled_channels
        if enabled is None:
            # "All but these" is not a setting: the server lists the channels it enables.
            raise InvalidRequest(
                "Every channel is enabled now. Choose the channels to keep with "
                "/settings channel-add; the others are then off."
            )
        if channel.id not in enabled:
            raise InvalidRequest(f"{channel.mention} isn't one of the enabled channels.")
        await self._change(interaction, enabled_channels=enabled - {channel.id})

    @moderator_command(settings, "channel-all", "Allow images in every channel again")
    async def settings_channel_all(self, interaction: Interaction) -> None:
        await self._change(interaction, enabled_channels=None)

    @moderator_command(
        settings,
        "variants",
        "Which FLUX.2 models members may use",
        allowed='Comma-separated variants, e.g. "pro, flex", or "all"',
        default="The model /imagine uses when a member doesn't choose one",
    )
    async def settings_variants(
        self, interaction: Interaction, allowed: str | None = None, default: str | None = None
    ) -> None:
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
        completed = self.bot.services.server_settings.with_usable_default(
            self.current(interaction), changes, bot_default=self.bot_default()
        )
        await self._change(interaction, **completed)  # the reply names a default chosen here

    @settings_variants.autocomplete("allowed")
    async def _allowed_autocomplete(
        self, interaction: Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        if not may_configure_server(interaction):
            return []
        return variant_list_choices(current, self.variant_keys())

    @settings_variants.autocomplete("default")
    async def _default_autocomplete(
        self, interaction: Interaction, current: str
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

    @moderator_command(
        settings,
        "limits",
        "Cap image size and the safety tolerance",
        max_megapixels="Largest image members may ask for, in megapixels (0: no cap)",
        safety_cap=f"Most lenient safety tolerance members may use, 0–{MAX_SAFETY} (-1: no cap)",
    )
    async def settings_limits(
        self,
        interaction: Interaction,
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

    @moderator_command(
        settings,
        "outpaint",
        "How Zoom out, pan and Make square extend images",
        mode="high: best fidelity (default); fast: much faster, good for backgrounds",
    )
    async def settings_outpaint(
        self, interaction: Interaction, mode: Literal["high", "fast"]
    ) -> None:
        await self._change(interaction, outpaint_mode=mode)

    @moderator_command(
        settings,
        "dms",
        "Whether members may use Fluxcord in direct messages",
        allowed="Members of this server may make images in DMs with the bot",
    )
    async def settings_dms(self, interaction: Interaction, allowed: bool) -> None:
        await self._change(interaction, allow_dms=allowed)

    @moderator_command(
        settings,
        "uploads",
        "Where uploaded images may be edited",
        allow_outside_age_restricted="Off: uploads can only be edited in age-restricted channels",
    )
    async def settings_uploads(
        self, interaction: Interaction, allow_outside_age_restricted: bool
    ) -> None:
        await self._change(interaction, allow_upload_edits=allow_outside_age_restricted)

    @moderator_command(
        settings,
        "private-results",
        "Show results only to the member who asked, with a Publish button",
        private="On: results are private (a member can still publish theirs once)",
        channel="Only this channel (and its threads); leave empty for the whole server",
    )
    async def settings_private_results(
        self, interaction: Interaction, private: bool, channel: discord.TextChannel | None = None
    ) -> None:
        note = "Studios and requests held for approval stay public."
        if channel is None:
            await self._change(interaction, note, private_everywhere=private)
            return
        chosen = self.current(interaction).private_channels
        changed = chosen | {channel.id} if private else chosen - {channel.id}
        await self._change(interaction, note, private_channels=changed)

    @moderator_command(
        settings,
        "audit-channel",
        "Where moderation entries are posted",
        channel="The moderators' channel; leave empty to stop posting",
    )
    async def settings_audit_channel(
        self, interaction: Interaction, channel: discord.TextChannel | None = None
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

    @moderator_command(
        settings,
        "showcase",
        "Where members' Share to showcase posts go",
        channel="The showcase channel; leave empty to turn sharing off",
    )
    async def settings_showcase(
        self, interaction: Interaction, channel: discord.TextChannel | None = None
    ) -> None:
        if channel is not None:
            me = channel.guild.me
            allowed = channel.permissions_for(me) if me is not None else None
            if allowed is not None and not (allowed.send_messages and allowed.attach_files):
                raise InvalidRequest(
                    f"I can't post images in {channel.mention}: let me send messages and "
                    "attach files there."
                )
        await self._change(
            interaction,
            "Results are shared with their Share to showcase button."
            if channel is not None
            else "",
            showcase_channel_id=None if channel is None else channel.id,
        )

    @moderator_command(
        settings,
        "approval",
        "Hold requests for a moderator's approval",
        enabled="Requests wait until a moderator approves them",
        channel="The moderators' channel where requests wait",
        trusted_role="Members with this role skip the queue (adds to the trusted roles)",
    )
    async def settings_approval(
        self,
        interaction: Interaction,
        enabled: bool,
        channel: discord.TextChannel | None = None,
        trusted_role: discord.Role | None = None,
    ) -> None:
        changes: dict[str, Any] = {"approval_enabled": enabled}
        if channel is not None:
            changes["approval_channel_id"] = channel.id
        if trusted_role is not None:
            if trusted_role.is_default():
                raise InvalidRequest("Everyone has @everyone: turn the queue off instead.")
            trusted = self.current(interaction).trusted_roles
            changes["trusted_roles"] = trusted | {trusted_role.id}
        await self._change(interaction, **changes)

    @moderator_command(
        settings,
        "trusted-remove",
        "A role no longer skips the approvals",
        role="One of the trusted roles",
    )
    async def settings_trusted_remove(self, interaction: Interaction, role: discord.Role) -> None:
        trusted = self.current(interaction).trusted_roles
        if role.id not in trusted:
            raise InvalidRequest(f"{role.mention} isn't a trusted role.")
        await self._change(interaction, trusted_roles=trusted - {role.id})

    @moderator_command(
        settings,
        "strikes",
        "When refused prompts lead to blocks",
        warn="Refused prompts before the warning",
        temp_block="Refused prompts before a temporary block",
        block="Refused prompts before a block until a moderator lifts it",
        temp_block_hours="How long a temporary block lasts, in hours",
    )
    async def settings_strikes(
        self,
        interaction: Interaction,
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

    @moderator_command(
        settings,
        "terms-add",
        "Refuse prompts containing a term",
        term="A word or phrase (disguised spellings match too)",
        regex="Treat the term as a regular expression (RE2: no backreferences or lookaround)",
    )
    async def settings_terms_add(
        self,
        interaction: Interaction,
        term: app_commands.Range[str, 1, 200],
        regex: bool = False,
    ) -> None:
        added = await self.bot.services.moderation.add_term(
            server_of(interaction), interaction.user.id, term, is_regex=regex
        )
        kind = "regular expression" if regex else "term"
        await answer(
            interaction,
            f"Added the {kind} `{added}`. Prompts that contain it are refused with a neutral "
            "message and count as a strike.",
        )

    @moderator_command(
        settings, "terms-remove", "Stop refusing a term", term="One of this server's terms"
    )
    async def settings_terms_remove(self, interaction: Interaction, term: str) -> None:
        await self.bot.services.moderation.remove_term(
            server_of(interaction), interaction.user.id, term
        )
        await answer(interaction, f"Removed `{term.strip()}` from this server's banned terms.")

    @settings_terms_remove.autocomplete("term")
    async def _term_autocomplete(
        self, interaction: Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        # Autocomplete runs no command checks, and terms are for moderators only.
        if not may_configure_server(interaction) or interaction.guild_id is None:
            return []
        return term_choices(
            self.bot.services.moderation.server_terms(interaction.guild_id), current
        )

    @moderator_command(settings, "terms-list", "This server's banned terms")
    async def settings_terms_list(self, interaction: Interaction) -> None:
        text, listing = terms_listing(
            self.bot.services.moderation.server_terms(server_of(interaction))
        )
        if listing is None:
            await answer(interaction, text)
        else:
            await answer(interaction, text, file=listing)

    # ----------------------------------------------------------------- LoRAs (bot/servers/loras.py)
    @moderator_command(
        settings,
        "lora-add",
        "Offer a LoRA uploaded to the BFL account on the klein commands",
        lora_name="What members see and pick",
        finetune_id="Its name on BFL (lowercase letters, digits, - and _; or org_id/name)",
        base="The klein model it was uploaded for",
        strength="finetune_strength, 0.1 to 2 (default 1; 0.7–0.9 if it overpowers prompts)",
        trigger="A phrase added to prompts that lack it",
    )
    @app_commands.choices(base=base_choices())
    @app_commands.rename(lora_name="name")
    async def settings_lora_add(
        self,
        interaction: Interaction,
        lora_name: app_commands.Range[str, 1, 40],
        finetune_id: app_commands.Range[str, 1, 128],
        base: str,
        strength: float | None = None,
        trigger: app_commands.Range[str, 1, 100] | None = None,
    ) -> None:
        lora = await self.bot.services.loras.add(
            server_of(interaction),
            interaction.user.id,
            name=lora_name,
            finetune_id=finetune_id,
            base=base,
            strength=strength,
            trigger=trigger,
        )
        size = lora.base_model.size
        await answer(
            interaction,
            f"Added {describe(lora)}. Members can pick it on the klein {size.upper()} commands.",
        )

    @moderator_command(
        settings, "lora-remove", "Stop offering a LoRA", lora_name="One of this server's LoRAs"
    )
    @app_commands.rename(lora_name="name")
    async def settings_lora_remove(self, interaction: Interaction, lora_name: str) -> None:
        lora = await self.bot.services.loras.remove(
            server_of(interaction), interaction.user.id, lora_name
        )
        await answer(
            interaction,
            f"Removed {describe(lora)}. Images made with it stay; rerolling them is refused.",
        )

    @settings_lora_remove.autocomplete("lora_name")
    async def _lora_name_autocomplete(
        self, interaction: Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        if not may_configure_server(interaction) or interaction.guild_id is None:
            return []
        return name_choices(self.bot.services.loras.server_loras(interaction.guild_id), current)

    @moderator_command(settings, "loras", "This server's LoRAs for the klein models")
    async def settings_loras(self, interaction: Interaction) -> None:
        await answer(
            interaction, listing(self.bot.services.loras.server_loras(server_of(interaction)))
        )


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(ServerSettingsCommands(bot))
