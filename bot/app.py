"""Wires settings, storage, providers and the job engine into the discord.py bot."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.community.approvals import ApprovalQueue
from bot.community.audit import AuditLog
from bot.community.policy import CommunityPolicy
from bot.community.settings import SettingsStore
from bot.community.studio import Studios
from bot.generation import INTERNAL_ERROR_TEXT, GenerationService
from bot.instance import StartupError, address_in_use_message
from bot.jobs.engine import JobEngine, PollingPolicy, WebhookConfig
from bot.jobs.models import Job
from bot.jobs.notifier import JobNotifier
from bot.ledger import Ledger, QuotaPolicy
from bot.metrics import Metrics
from bot.moderation.strikes import Moderation
from bot.providers.aiml import AIMLClient
from bot.providers.base import Provider
from bot.providers.bfl import BFLClient
from bot.references import ByteBudget, ReferenceLimits
from bot.settings import Settings
from bot.storage.db import Database
from bot.variants import MEGAPIXEL, InvalidRequest, Variant, available_variants
from bot.web import HealthChecks, WebServer, create_app

if TYPE_CHECKING:
    from cogs.delivery import ChannelPoster, DiscordNotifier

log = logging.getLogger(__name__)

EXTENSIONS = (
    "cogs.generate",
    "cogs.results",
    "cogs.usage",
    "cogs.community",
    "cogs.approvals",
    "cogs.studio",
)


def build_providers(settings: Settings) -> dict[str, Provider]:
    """One client (one shared HTTP connection pool) per configured provider."""
    providers: dict[str, Provider] = {}
    if settings.bfl_api_key is not None:
        providers["bfl"] = BFLClient(
            settings.bfl_api_key.get_secret_value(),
            settings.bfl_api_base,
            max_result_bytes=settings.max_result_bytes,
            max_connections=settings.provider_max_active * 2 + 8,
            allow_loopback=settings.allow_loopback_provider_urls,
        )
    if settings.aiml_api_key is not None:
        providers["aiml"] = AIMLClient(
            settings.aiml_api_key.get_secret_value(),
            settings.aiml_api_base,
            read_timeout=settings.aiml_read_timeout,
            max_result_bytes=settings.max_result_bytes,
            max_connections=settings.aiml_max_active * 2 + 8,
            units_per_credit=settings.aiml_units_per_credit,
            allow_loopback=settings.allow_loopback_provider_urls,
        )
    return providers


class FluxcordTree(app_commands.CommandTree["FluxcordBot"]):
    async def on_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        """One place that turns any command failure into a friendly, private message."""
        original = getattr(error, "original", error)
        if isinstance(original, InvalidRequest):
            text = str(original)
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


class FluxcordBot(commands.Bot):
    approvals: ApprovalQueue
    notifier: DiscordNotifier
    poster: ChannelPoster
    audit: AuditLog
    server_settings: SettingsStore
    moderation: Moderation
    studios: Studios
    db: Database
    engine: JobEngine
    generation: GenerationService
    ledger: Ledger
    metrics: Metrics
    web: WebServer

    def __init__(
        self, settings: Settings, *, notifier: JobNotifier | None = None, **client_options: Any
    ) -> None:
        intents = discord.Intents.default()
        # Needed to read images in a message someone replies to (not just the reply itself).
        intents.message_content = settings.message_content_intent
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            tree_cls=FluxcordTree,
            # Prompts are user text: they must never ping @everyone, @here or roles.
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
            **client_options,
        )
        self.settings = settings
        self._notifier = notifier
        self.providers: dict[str, Provider] = {}
        self.variants: dict[str, Variant] = {}

    async def setup_hook(self) -> None:
        from bot.outbox import ChannelTurns
        from cogs.delivery import ChannelPoster, DiscordNotifier
        from cogs.results import queued_view, result_view

        self.db = await Database.open(self.settings.database_path)
        self.providers = build_providers(self.settings)
        self.variants = available_variants(
            include_preview=self.settings.bfl_enable_preview,
            providers=list(self.providers),
            prefer_aiml=self.settings.prefer_aiml_pro,
        )
        public_url = self.settings.webhook_public_url
        self.metrics = Metrics()
        self.ledger = Ledger(self.db, QuotaPolicy.from_settings(self.settings))
        # One queue of senders per channel, shared by job messages and side posts.
        turns = ChannelTurns()
        self.poster = ChannelPoster(self, turns)
        self.notifier = DiscordNotifier(
            self,
            lookup=self._lookup_job,
            shown_in=lambda job_id, message_id, left: self.generation.shown_in(
                job_id, message_id, left_interaction=left
            ),
            turns=turns,
            result_view=result_view,
            queued_view=queued_view,
        )
        self.engine = JobEngine(
            self.db,
            self.providers,
            self._notifier or self.notifier,
            max_active={
                "bfl": self.settings.provider_max_active,
                "aiml": self.settings.aiml_max_active,
            },
            polling=PollingPolicy(
                initial=self.settings.poll_initial_interval,
                maximum=self.settings.poll_max_interval,
                deadline=self.settings.job_deadline_seconds,
            ),
            ledger=self.ledger,
            metrics=self.metrics,
            reference_retention=self.settings.reference_retention_days * 86400,
            max_reported_cost=self.settings.max_reported_cost_credits,
            provider_moderation_strikes=self.settings.provider_moderation_strikes,
            webhooks=(
                WebhookConfig(public_url, self.settings.webhook_grace_seconds)
                if public_url
                else None
            ),
        )
        self.web = WebServer(
            create_app(
                metrics=self.metrics,
                health=HealthChecks(
                    ping_database=lambda: self.db.fetch_value("SELECT 1"),
                    discord_connected=self.discord_connected,
                    queue_depth=self.engine.queue_depth,
                ),
                webhook_target=self.engine if public_url else None,
            ),
            self.settings.web_host,
            self.settings.web_port,
        )
        try:
            await self.web.start()
        except OSError as exc:
            # Not "Cannot reach Discord": say which address and which setting moves it.
            host, port = self.settings.web_host, self.settings.web_port
            raise StartupError(address_in_use_message(host, port, exc)) from exc
        self.audit = AuditLog(
            self.db, audit_channel=lambda guild: self.server_settings.get(guild).audit_channel_id
        )
        self.server_settings = SettingsStore(
            self.db, self.audit, known_variants=lambda: self.variants
        )
        self.moderation = Moderation(self.db, self.audit, settings=self.server_settings.get)
        await self.server_settings.load()
        await self.moderation.load()
        policy = CommunityPolicy(self.server_settings, self.moderation, dm_allowed=self.dm_allowed)
        self.studios = Studios(self.db, self.audit, policy=policy)
        await self.studios.load()
        # An ended studio posts its gallery once the jobs still running in it are done.
        self.engine.on_job_closed(self.studios.job_closed)
        self.generation = GenerationService(
            self.engine,
            self.variants,
            default_variant=self.settings.default_variant,
            limits=ReferenceLimits(
                max_bytes=self.settings.max_reference_bytes,
                max_pixels=self.settings.max_reference_megapixels * MEGAPIXEL,
            ),
            policy=policy,
            audit=self.audit,
            studios=self.studios,
            provider_moderation_strikes=self.settings.provider_moderation_strikes,
            downloads=ByteBudget(self.settings.reference_download_budget_bytes),
            max_in_flight=self.settings.max_jobs_in_flight_per_member,
        )
        self.approvals = ApprovalQueue(
            self.db,
            self.audit,
            variant_for=lambda name: self.generation.pick_variant(name),
            submit=self.generation.submit,
            job_exists=self.engine.store.get,
            ledger=self.ledger,
            max_pending_per_member=self.settings.max_pending_approvals_per_member,
            expiry_hours=self.settings.approval_expiry_hours,
        )
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.sync_commands()
        await self.engine.start()
        await self.approvals.resume()

    async def dm_allowed(self, user_id: int) -> bool:
        """Direct messages work for members of a server that allows them."""
        for guild_id in self.server_settings.guilds_allowing_dms():
            guild = self.get_guild(guild_id)
            if guild is None:
                continue
            if guild.get_member(user_id) is not None:
                return True
            try:
                await guild.fetch_member(user_id)
            except discord.NotFound:
                continue
            except discord.HTTPException:
                log.warning("could not check membership in %s", guild_id, exc_info=True)
                continue
            return True
        return False

    def discord_connected(self) -> bool:
        return self.is_ready() and not self.is_closed() and self.ws is not None and self.ws.open

    async def _lookup_job(self, job_id: str) -> Job | None:
        return await self.engine.store.get(job_id)

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
        if await self.db.fetch_value("SELECT value FROM app_state WHERE key = ?", (key,)) == digest:
            return
        await self.tree.sync(guild=guild)
        await self.db.execute(
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

    async def close(self) -> None:
        poster = getattr(self, "poster", None)
        if poster is not None:
            await poster.drain()
        web = getattr(self, "web", None)
        if web is not None:
            await web.stop()
        engine = getattr(self, "engine", None)
        if engine is not None:
            await engine.stop()
        for provider in self.providers.values():
            await provider.aclose()
        db = getattr(self, "db", None)
        if db is not None:
            await db.close()
        await super().close()
