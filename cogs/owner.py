"""The bot owner's commands, `/owner …`: the servers and their spend, leaving a server,
blocking a user everywhere, and bot-wide defaults without a restart.

Discord has no owner-only scope, so the group is global and hidden from members without
Administrator (`default_permissions` of nothing), and every command checks the caller
against the application's owner or team (`bot.operator.Owners`) before anything else: a
server admin who is not the owner gets a private refusal. The rules live in `bot.operator`;
this cog renders them. Every answer is private and pings nobody.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import InvalidRequest
from bot.ledger import format_credits
from bot.ledger.quotas import guild_key
from bot.ledger.reports import month_spend_by_server
from bot.moderation.strikes import check_may_block
from bot.operator import (
    EDITABLE_DEFAULTS,
    DefaultValue,
    Owners,
    ServerSpend,
    owner_ids,
    servers_by_spend,
)
from bot.text import plural
from cogs.moderation import fit
from cogs.moderator import Interaction, answer

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

log = logging.getLogger(__name__)

SERVERS_PER_PAGE = 20
CONFIRM_SECONDS = 120.0
DEFAULT_CHOICES = [app_commands.Choice(name=n.upper(), value=n) for n in EDITABLE_DEFAULTS]


# --------------------------------------------------------------------------- text
def server_line(rank: int, server: ServerSpend) -> str:
    name = discord.utils.escape_markdown(server.name)
    spend = f"{format_credits(server.credits_mc)} credits, {plural(server.images, 'image')}"
    return f"{rank}. **{name}** (`{server.guild_id}`): {spend}"


def servers_text(servers: list[ServerSpend], page: int, direct_mc: int) -> str:
    pages = max(1, -(-len(servers) // SERVERS_PER_PAGE))
    page = min(max(page, 1), pages)
    first = (page - 1) * SERVERS_PER_PAGE
    shown = servers[first : first + SERVERS_PER_PAGE]
    total = sum(server.credits_mc for server in servers) + direct_mc
    lines = [
        f"**{plural(len(servers), 'server')}**, biggest spender first: this month's spend "
        f"(charged, plus held by running jobs). All together: {format_credits(total)} credits."
    ]
    lines += [server_line(first + index, s) for index, s in enumerate(shown, start=1)]
    if direct_mc:
        lines.append(f"Direct messages: {format_credits(direct_mc)} credits.")
    if pages > 1:
        lines.append(f"Page {page} of {pages}: `/owner servers page:{page % pages + 1}`.")
    return fit(lines)


def default_line(value: DefaultValue) -> str:
    where = value.source
    if value.set_by is not None and value.set_at is not None:
        where += f" (<@{value.set_by}>, <t:{int(value.set_at)}:R>)"
    return f"`{value.name.upper()}` = **{value.shown}** · {where}"


def defaults_text(values: list[DefaultValue]) -> str:
    lines = ["**Bot-wide defaults** (servers' own /quota settings still come first)"]
    lines += [default_line(value) for value in values]
    lines.append(
        "Change one with `/owner defaults name:… value:…` (a number, `unlimited`, or `reset` "
        "for the environment's)."
    )
    return fit(lines)


class ConfirmLeave(discord.ui.View):
    """Leave / Cancel, for the owner who asked (the message is private to them anyway)."""

    def __init__(self, cog: OwnerCommands, question: Interaction, guild_id: int, name: str) -> None:
        super().__init__(timeout=CONFIRM_SECONDS)
        self.cog, self.question, self.guild_id, self.name = cog, question, guild_id, name

    async def on_timeout(self) -> None:
        # Unanswered: the buttons would do nothing any more, so they go.
        try:
            await self.question.edit_original_response(
                content="Nothing changed (no answer within two minutes).", view=None
            )
        except discord.HTTPException:
            log.debug("could not close the unanswered leave question", exc_info=True)

    @discord.ui.button(label="Leave", style=discord.ButtonStyle.danger)
    async def leave(self, interaction: Interaction, _button: discord.ui.Button[Any]) -> None:
        await self.cog.owners.check(interaction.user.id)
        self.stop()
        try:
            await self.cog.bot.http.leave_guild(self.guild_id)
        except discord.NotFound:
            text = f"I'm no longer in **{self.name}**: nothing to leave."
        else:
            log.info("owner %s made the bot leave server %s", interaction.user.id, self.guild_id)
            text = f"Left **{self.name}** (`{self.guild_id}`)."
        await interaction.response.edit_message(content=text, view=None)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: Interaction, _button: discord.ui.Button[Any]) -> None:
        self.stop()
        await interaction.response.edit_message(content="Nothing changed.", view=None)


# --------------------------------------------------------------------------- the cog
class OwnerCommands(commands.Cog):
    owner = app_commands.Group(
        name="owner",
        description="The bot owner's commands (owner only)",
        default_permissions=discord.Permissions.none(),  # hidden from non-administrators
    )

    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot
        self.owners = Owners(self._read_owners)

    async def _read_owners(self) -> frozenset[int]:
        app = await self.bot.application_info()
        team = app.team
        return owner_ids(
            app.owner.id if app.owner else None,
            team.owner_id if team else None,
            (
                (m.id, m.role.value, m.membership_state is discord.TeamMembershipState.accepted)
                for m in (team.members if team else [])
            ),
        )

    @owner.command(name="servers", description="The servers I'm in, with this month's spend")
    @app_commands.describe(page="Which page (20 servers a page)")
    async def servers(
        self, interaction: Interaction, page: app_commands.Range[int, 1, 10_000] = 1
    ) -> None:
        await self.owners.check(interaction.user.id)  # NotOwner: the private refusal
        await interaction.response.defer(ephemeral=True, thinking=True)
        # Asked of Discord, not this process's cache: other processes may run other shards.
        guilds = [(g.id, g.name) async for g in self.bot.fetch_guilds(limit=None)]
        spend = await month_spend_by_server(self.bot.services.ledger)
        ranked = servers_by_spend(guilds, spend)
        direct = spend.get(guild_key(None))
        await interaction.followup.send(
            servers_text(ranked, page, direct.credits_mc if direct else 0),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @owner.command(name="leave", description="Make me leave a server (asks to confirm)")
    @app_commands.describe(server_id="The server's id (see /owner servers)")
    async def leave(self, interaction: Interaction, server_id: str) -> None:
        await self.owners.check(interaction.user.id)  # NotOwner: the private refusal
        if not (server_id.strip().isdigit() and 0 < int(server_id) < 2**63):
            raise InvalidRequest("That isn't a server id (a number like 1234567890123456789).")
        guild_id = int(server_id)
        try:
            guild = await self.bot.fetch_guild(guild_id)
        except (discord.NotFound, discord.Forbidden):
            raise InvalidRequest(f"I'm not in a server with the id `{guild_id}`.") from None
        view = ConfirmLeave(self, interaction, guild_id, guild.name)
        await answer(
            interaction,
            f"Leave **{discord.utils.escape_markdown(guild.name)}** (`{guild_id}`)? Its members "
            "can't use me there any more until someone adds me again.",
            view=view,
        )

    @owner.command(name="block", description="Block a user from using me anywhere")
    @app_commands.describe(user="The user", reason="Why (kept with the block)")
    async def block(
        self,
        interaction: Interaction,
        user: discord.User,
        reason: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        await self.owners.check(interaction.user.id)  # NotOwner: the private refusal
        me = self.bot.user
        check_may_block(
            interaction.user.id,
            user.id,
            target_is_bot=user.bot,
            bot_user_id=None if me is None else me.id,
        )
        block = await self.bot.services.global_blocks.block(
            interaction.user.id, user.id, reason or ""
        )
        await answer(
            interaction,
            f"Blocked {user.mention} everywhere (every server and direct messages): "
            f"{block.reason}. Their requests are refused and charged nothing.",
        )

    @owner.command(name="unblock", description="Lift a block everywhere")
    @app_commands.describe(user="The user")
    async def unblock(self, interaction: Interaction, user: discord.User) -> None:
        await self.owners.check(interaction.user.id)  # NotOwner: the private refusal
        if await self.bot.services.global_blocks.unblock(interaction.user.id, user.id):
            text = f"Unblocked {user.mention} everywhere. Servers' own blocks still apply."
        else:
            text = f"{user.mention} wasn't blocked everywhere: nothing to do."
        await answer(interaction, text)

    @owner.command(name="defaults", description="Show or change bot-wide defaults, no restart")
    @app_commands.describe(
        name="The setting (leave empty to see them all)",
        value='A number, "unlimited", or "reset" for the environment\'s value',
    )
    @app_commands.choices(name=DEFAULT_CHOICES)
    async def defaults(
        self,
        interaction: Interaction,
        name: app_commands.Choice[str] | None = None,
        value: app_commands.Range[str, 1, 40] | None = None,
    ) -> None:
        await self.owners.check(interaction.user.id)  # NotOwner: the private refusal
        defaults = self.bot.services.defaults
        if name is None:
            if value is not None:
                raise InvalidRequest("Choose which default to change (name), then its value.")
            await answer(interaction, defaults_text(defaults.shown()))
            return
        if value is None:
            shown = next(v for v in defaults.shown() if v.name == name.value)
            await answer(interaction, default_line(shown))
            return
        changed = await defaults.set(interaction.user.id, name.value, value)
        await answer(interaction, f"Done, from the next request on: {default_line(changed)}")


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(OwnerCommands(bot))
