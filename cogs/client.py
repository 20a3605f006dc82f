"""The Discord client: holds the core's services (`bot.services`), loads the cogs, syncs
the command tree and turns any command failure into a private, friendly message."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import INTERNAL_ERROR_TEXT, FluxcordError, InvalidRequest
from bot.ledger import BudgetAlert
from bot.ledger.spending import public_bot_warning
from bot.services import Services, build_services
from bot.settings import Settings
from bot.shards import ShardFleet, shard_for
from cogs.permissions import invite_url
from cogs.shared_limit import SharedLimitWatch

if TYPE_CHECKING:
    from cogs.delivery import DiscordNotifier
    from cogs.posting import ChannelPoster

log = logging.getLogger(__name__)

EXTENSIONS = (
    "cogs.generate",
    "cogs.results",
    "cogs.result_tools",
    "cogs.favourites",
    "cogs.private",
    "cogs.usage",
    "cogs.settings",
    "cogs.moderation",
    "cogs.approvals",
    "cogs.studio",
    "cogs.privacy",
    "cogs.preferences",
    "cogs.about",
    "cogs.owner",
)


class FluxcordTree(app_commands.CommandTree["FluxcordBot"]):
    async def on_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        """One place that turns any command failure into a friendly, private message."""
        original = getattr(error, "original", error)
        if isinstance(original, InvalidRequest):
            text = original.user_message
        elif isinstance(original, FluxcordError):
            # One of ours that is not the member's doing: its text is safe, the detail logged.
            log.warning(
                "command %s failed: %s", interaction.command and interaction.command.name, original
            )
            text = original.user_message
        elif isinstance(error, app_commands.MissingPermissions):
            text = str(error)  # "You are missing Manage Server permission(s) to run this …"
        elif isinstance(error, app_commands.CommandOnCooldown):
            text = f"Slow down a little: try again in {error.retry_after:.0f}s."
        elif isinstance(error, app_commands.CheckFailure):
            text = "You can't use this command here."
        else:
            log.error(
                "command %s failed",
                interaction.command and interaction.command.name,
                exc_info=original,
            )
            text = INTERNAL_ERROR_TEXT
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell the user about an error", exc_info=True)


# The bot never joins voice: don't warn admins about voice libraries it doesn't need.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False


def _sharding(settings: Settings) -> dict[str, Any]:
    """Unset: as many shards as Discord recommends, all in this process."""
    options: dict[str, Any] = {"shard_count": settings.shard_count}
    if settings.process_shard_ids is not None:
        options["shard_ids"] = settings.process_shard_ids
    return options


class FluxcordBot(commands.AutoShardedBot):
    services: Services
    # Attached by the results cog (cogs/delivery.py `attach_delivery`).
    notifier: DiscordNotifier
    poster: ChannelPoster

    def __init__(self, settings: Settings, **client_options: Any) -> None:
        intents = discord.Intents.default()
        # Needed to read images in a message someone replies to (not just the reply itself).
        intents.message_content = settings.message_content_intent
        # Sees Discord's shared per-channel limit for the delivery code (cogs/shared_limit.py).
        shared_limits = SharedLimitWatch()
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            tree_cls=FluxcordTree,
            # Prompts are user text: they must never ping @everyone, @here or roles.
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
            **_sharding(settings),
            http_trace=shared_limits.trace,
            **client_options,
        )
        self.shared_limits = shared_limits
        self.settings = settings
        self.fleet: ShardFleet | None = None
        self._invite_logged = False

    async def setup_hook(self) -> None:
        self.services = await build_services(
            self.settings, member_lookup=self.is_member, discord_connected=self.discord_connected
        )
        if self.application is not None:
            warning = public_bot_warning(self.application.bot_public, self.services.ledger.policy)
            if warning is not None:
                log.warning("%s", warning)
        self.services.ledger.budget.on_alert(self.tell_owner)
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.sync_commands()
        if self.services.db.shared:
            await self._join_fleet()
        await self.services.start()

    async def _join_fleet(self) -> None:
        """With a shared store other processes may run other shards: agree on the shard
        count, take this process's shards (never connected twice) and IDENTIFY in turn."""
        shard_count, _, limits = await self.http.get_bot_gateway()
        if self.shard_count is None:
            self.shard_count = shard_count
        shard_ids = list(self.shard_ids or range(self.shard_count))
        self.fleet = ShardFleet(
            self.services.db,
            shard_ids,
            self.shard_count,
            lease_seconds=self.settings.lease_seconds,
        )
        self.fleet.gate.max_concurrency = int(limits.get("max_concurrency", 1))
        await self.fleet.join(
            on_lost=self._shard_lease_lost, on_regained=self._shard_lease_regained
        )
        count, mine = self.shard_count, frozenset(shard_ids)

        def on_my_shards(guild_id: int) -> bool:
            return shard_for(guild_id, count) in mine

        # Background work about one server runs in the process that has its shard.
        self.services.studios.handles_guild = on_my_shards
        self.services.approvals.handles_guild = on_my_shards
        log.info("running shards %s of %d", shard_ids, self.shard_count)

    async def _shard_lease_lost(self) -> None:
        # Another process may connect these shards now: never keep a second session open.
        log.warning(
            "this process's shard lease ran out (was the database unreachable?); disconnecting"
            " its shards until it holds them again"
        )
        for shard in self.shards.values():
            await shard.disconnect()

    async def _shard_lease_regained(self) -> None:
        for shard in self.shards.values():
            await shard.connect()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        if self.fleet is None:
            await super().before_identify_hook(shard_id, initial=initial)
        else:
            await self.fleet.gate.wait_turn(shard_id or 0)

    async def is_member(self, guild_id: int, user_id: int) -> bool | None:
        """Whether the user is in the server (None: Discord could not say). Asked over REST,
        which works from any process, whichever shard the server is on."""
        guild = self.get_guild(guild_id)
        if guild is not None and guild.get_member(user_id) is not None:
            return True
        try:
            await self.http.get_member(guild_id, user_id)
        except (discord.NotFound, discord.Forbidden):  # not a member, or the bot left
            return False
        except discord.HTTPException:
            log.warning("could not check membership in %s", guild_id, exc_info=True)
            return None
        return True

    async def tell_owner(self, alert: BudgetAlert) -> None:
        """The owner's warning about the bot-wide budget: in OWNER_ALERT_CHANNEL_ID if set,
        else a direct message to the application's owner (a team's owner)."""
        quiet = discord.AllowedMentions.none()
        channel_id = self.settings.owner_alert_channel_id
        if channel_id is not None:
            await self.poster.send(channel_id, content=alert.text, allowed_mentions=quiet)
            return
        application = self.application
        if application is None:
            return
        owner = application.team.owner if application.team else application.owner
        if owner is None:
            log.warning("the application has no owner to warn about the budget")
            return
        channel = await self.create_dm(owner)
        await channel.send(alert.text, allowed_mentions=quiet)

    async def on_guild_join(self, guild: discord.Guild) -> None:
        # Back within the grace period: nothing of the server's is erased.
        await self.services.privacy.servers_present([guild.id])
        log.info("joined server %s (%s) with %s members", guild.id, guild.name, guild.member_count)

    async def on_guild_remove(self, guild: discord.Guild) -> None:
        try:
            # Its data is erased after DEPARTED_SERVER_GRACE_DAYS unless the bot is back.
            await self.services.privacy.server_left(guild.id)
        finally:
            try:
                await self.services.direct_messages.server_left(guild.id)
            finally:
                log.info(
                    "left server %s (%s) with %s members", guild.id, guild.name, guild.member_count
                )

    # Members joining and leaving arrive only with the Server Members intent; without it,
    # sightings age out instead (bot/community/direct.py).
    async def on_member_join(self, member: discord.Member) -> None:
        await self.services.direct_messages.seen(member.guild.id, member.id)

    async def on_raw_member_remove(self, payload: discord.RawMemberRemoveEvent) -> None:
        await self.services.direct_messages.left(payload.guild_id, payload.user.id)

    def discord_connected(self) -> bool:
        return (
            self.is_ready()
            and not self.is_closed()
            and bool(self.shards)
            and all(not shard.is_closed() for shard in self.shards.values())
        )

    async def sync_commands(self) -> None:
        """Sync slash commands only when they changed: global syncs are rate limited."""
        guild = discord.Object(self.settings.dev_guild_id) if self.settings.dev_guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        payload = [command.to_dict(self.tree) for command in self.tree.get_commands(guild=guild)]
        digest = hashlib.sha256(
            json.dumps([payload, guild and guild.id], sort_keys=True).encode()
        ).hexdigest()
        key = "command_tree_hash"
        if (
            await self.services.db.fetch_value("SELECT value FROM app_state WHERE key = ?", (key,))
            == digest
        ):
            return
        await self.tree.sync(guild=guild)
        await self.services.db.execute(
            "INSERT INTO app_state (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, digest),
        )
        log.info("slash commands synced (%s)", f"guild {guild.id}" if guild else "global")

    async def on_message(self, message: discord.Message, /) -> None:
        """No text commands: replies that mention the bot are handled by the generate cog."""

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info("connected as %s (%s) to %d servers", self.user, self.user.id, len(self.guilds))
        if not self._invite_logged:  # on_ready comes again after a full reconnect
            self._invite_logged = True
            self.log_invite()
        # The purge first marks the servers this process is in as present: one the bot left
        # and came back to while this process was away keeps its data.
        self.services.privacy.start(lambda: [guild.id for guild in self.guilds])

    def log_invite(self) -> None:
        """The invite URL with exactly the permissions the bot needs; said louder when the
        bot is in no server. With several processes this one may hold only empty shards, so
        the application's server count (from the login) decides."""
        if self.application_id is None:
            return
        url = invite_url(self.application_id)
        elsewhere = self.application.approximate_guild_count if self.application else 0
        if not self.guilds and not elsewhere:
            log.warning("Fluxcord is in no server yet: invite it with %s", url)
        else:
            log.info("invite Fluxcord to another server with %s", url)

    async def close(self) -> None:
        poster = getattr(self, "poster", None)
        if poster is not None:
            await poster.drain()
        await self._leave_fleet()
        services = getattr(self, "services", None)
        if services is not None:
            await services.close()
        await super().close()

    async def _leave_fleet(self) -> None:
        """Disconnect the shards, then give their leases up (in that order: another process
        may connect them the moment the leases go)."""
        fleet, self.fleet = self.fleet, None
        if fleet is None:
            return
        for shard in self.shards.values():
            await shard.disconnect()
        await fleet.leave()
