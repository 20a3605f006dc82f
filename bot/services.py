"""The core, assembled: `build_services(settings)` opens the database, makes one client per
provider and wires the stores, rules and the job engine together. It knows nothing of
Discord: the client (`cogs/client.py`) holds the services and its cogs attach the Discord
implementations of the core's ports (job notifier, audit sink, studio and approval views)
in their `cog_load`, before `start()`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import SecretStr

from bot.catalogue import available_tools, available_variants
from bot.community.approvals import ApprovalQueue
from bot.community.direct import DirectMessages, MembershipLookup
from bot.community.favourites import Favourites, Showcase
from bot.community.policy import CommunityPolicy
from bot.community.studios import Studios
from bot.errors import StartupError
from bot.generation import GenerationService
from bot.invalidation import Cache, SharedCaches
from bot.jobs.claims import ProviderKey, key_fingerprint
from bot.jobs.engine import JobEngine, WebhookConfig
from bot.jobs.following import PollingPolicy
from bot.ledger import Ledger, QuotaPolicy
from bot.members import Preferences
from bot.moderation.strikes import Moderation
from bot.operations.instance import address_in_use_message
from bot.operations.loop_lag import LoopLag
from bot.operations.metrics import Metrics
from bot.operations.web import HealthChecks, WebServer, create_app
from bot.operator import BotDefaults, GlobalBlocks, Welcomes
from bot.privacy import Privacy, RetentionPolicy
from bot.providers.accounts import AccountMonitor, account_keys
from bot.providers.aiml import AIMLClient
from bot.providers.base import Provider
from bot.providers.bfl import BFLClient
from bot.references import ReferenceChecks, ReferenceLimits
from bot.servers.audit import AuditLog
from bot.servers.loras import LoraCatalogue
from bot.servers.settings import SettingsStore
from bot.settings import Settings
from bot.storage.clock import DatabaseClock
from bot.storage.db import Database, open_database
from bot.storage.secrets import shared_secret
from bot.variants import MEGAPIXEL, Variant


@dataclass
class Services:
    """Everything the adapters may call. Built by `build_services`; `start` after the ports
    are attached, `close` once."""

    settings: Settings
    db: Database
    clock: DatabaseClock  # the fleet's one clock: what every process agrees "now" is
    providers: dict[str, Provider]
    variants: dict[str, Variant]
    metrics: Metrics
    ledger: Ledger
    engine: JobEngine
    web: WebServer
    audit: AuditLog
    server_settings: SettingsStore
    moderation: Moderation
    studios: Studios
    generation: GenerationService
    approvals: ApprovalQueue
    caches: SharedCaches
    direct_messages: DirectMessages
    loop_lag: LoopLag
    accounts: AccountMonitor  # the provider keys' checks (readiness, metrics, the log)
    privacy: Privacy
    # Members' own defaults (/prefer), the same everywhere: `await preferences.get(user_id)`.
    preferences: Preferences
    global_blocks: GlobalBlocks  # the owner's blocks everywhere
    defaults: BotDefaults  # bot-wide defaults in force (the owner's over the environment's)
    welcomes: Welcomes  # the setup note, once per server
    loras: LoraCatalogue  # each server's LoRAs for the klein models
    favourites: Favourites  # members' ⭐ results (/favourites)
    showcase: Showcase  # results shared to a server's showcase channel, once each

    async def start(self) -> None:
        """Open the web server, then resume and run jobs and pending approvals."""
        try:
            await self.web.start()
        except OSError as exc:
            # Not "Cannot reach Discord": say which address and which setting moves it.
            host, port = self.settings.web_host, self.settings.web_port
            raise StartupError(address_in_use_message(host, port, exc)) from exc
        self.loop_lag.start()
        # In the background: a slow provider must not hold the start-up up.
        self.accounts.start()
        await self.caches.start()
        await self.engine.start()
        await self.approvals.resume()
        await self.ledger.budget.start()
        # (The privacy purge starts once Discord says which servers this process is in.)

    async def close(self) -> None:
        """Stop taking webhooks, stop the engine (open jobs resume on the next start), then
        close the provider clients and the database."""
        await self.web.stop()
        await self.privacy.stop()
        await self.ledger.budget.stop()
        await self.caches.stop()
        await self.engine.stop()
        await self.loop_lag.stop()
        await self.accounts.stop()
        for provider in self.providers.values():
            await provider.aclose()
        await self.db.close()


def build_providers(
    settings: Settings, *, user_key: bytes | None = None
) -> tuple[dict[str, Provider], list[ProviderKey]]:
    """One client (one shared HTTP connection pool) per configured provider, and every key
    the engine may submit with (several BFL accounts share the BFL client's pool).
    `user_key`: the key of the member ids sent to BFL (`bfl_user_key`)."""
    providers: dict[str, Provider] = {}
    keys: list[ProviderKey] = []
    bfl_keys = settings.bfl_keys()
    if bfl_keys:
        bfl = BFLClient(
            bfl_keys[0][0],
            settings.bfl_api_base,
            max_result_bytes=settings.max_result_bytes,
            max_connections=sum(cap for _, cap in bfl_keys) * 2 + 8,
            allow_loopback=settings.allow_loopback_provider_urls,
            user_key=user_key,
        )
        providers["bfl"] = bfl
        keys += [
            ProviderKey(key_fingerprint("bfl", secret), "bfl", bfl.with_key(secret), cap)
            for secret, cap in bfl_keys
        ]
    if settings.aiml_api_key is not None:
        aiml_key = settings.aiml_api_key.get_secret_value()
        providers["aiml"] = AIMLClient(
            aiml_key,
            settings.aiml_api_base,
            read_timeout=settings.aiml_read_timeout,
            max_result_bytes=settings.max_result_bytes,
            max_connections=settings.aiml_max_active * 2 + 8,
            units_per_credit=settings.aiml_units_per_credit,
            allow_loopback=settings.allow_loopback_provider_urls,
        )
        keys.append(
            ProviderKey(
                key_fingerprint("aiml", aiml_key),
                "aiml",
                providers["aiml"],
                settings.aiml_max_active,
            )
        )
    return providers, keys


async def bfl_user_key(settings: Settings, db: Database) -> bytes:
    """USER_HASH_SECRET, else the key the fleet made for itself on first start."""
    if settings.user_hash_secret is not None:
        secret = settings.user_hash_secret.get_secret_value().encode()
        return hashlib.sha256(b"fluxcord-user-hash:" + secret).digest()
    return await shared_secret(db, "bfl_user_key")


def check_failover(settings: Settings) -> None:
    """FAILOVER=aiml without the AI/ML API's key would quietly fail over to nothing."""
    if settings.failover == "aiml" and settings.aiml_api_key is None:
        raise StartupError(
            "FAILOVER=aiml needs AIML_API_KEY (the backup provider's key): set it, "
            "or set FAILOVER=off",
            exit_code=2,
        )


def secret_or_none(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


async def build_services(
    settings: Settings,
    *,
    member_lookup: MembershipLookup | None = None,
    discord_connected: Callable[[], bool],
) -> Services:
    """Assemble the core. `member_lookup(guild_id, user_id)` asks Discord whether someone is
    a member (for direct messages the store does not know about yet); `discord_connected()`
    feeds `/healthz`. Both come from the client."""
    check_failover(settings)
    db = await open_database(settings.database_target)
    # Every time another process may read back is on the database's clock (kept in step by
    # the engine), so a process whose own clock is off cannot misplace anything.
    clock = DatabaseClock(db)
    await clock.sync()
    providers, keys = build_providers(settings, user_key=await bfl_user_key(settings, db))
    variants = available_variants(
        include_preview=settings.bfl_enable_preview,
        providers=list(providers),
        prefer_aiml=settings.prefer_aiml_pro,
    )
    public_url = settings.webhook_public_url
    metrics = Metrics()
    loop_lag = LoopLag()
    metrics.bind_loop_lag(loop_lag.recent)
    server_settings: SettingsStore
    audit = AuditLog(
        db, audit_channel=lambda guild: server_settings.get(guild).audit_channel_id, clock=clock
    )
    # Moderators' /quota changes are audited like every other moderation action.
    ledger = Ledger(db, QuotaPolicy.from_settings(settings), audit=audit, clock=clock)
    engine = JobEngine(
        db,
        providers,
        keys=keys,
        lease_seconds=settings.lease_seconds,
        polling=PollingPolicy(
            initial=settings.poll_initial_interval,
            maximum=settings.poll_max_interval,
            deadline=settings.job_deadline_seconds,
        ),
        ledger=ledger,
        clock=clock,
        metrics=metrics,
        # 0 keeps them for ever.
        reference_retention=settings.reference_retention_days * 86400 or None,
        max_reported_cost=settings.max_reported_cost_credits,
        provider_moderation_strikes=settings.provider_moderation_strikes,
        shutdown_grace=settings.shutdown_grace_seconds,
        database_patience=settings.database_retry_seconds,
        failover=settings.failover == "aiml",
        webhooks=(
            WebhookConfig(public_url, settings.webhook_grace_seconds) if public_url else None
        ),
    )
    accounts = AccountMonitor(
        account_keys(settings, keys),
        metrics=metrics,
        low_balance=settings.low_balance_credits,
        interval=settings.provider_check_interval_seconds,
    )
    engine.on_key_rejected = accounts.key_rejected_in_use
    web = WebServer(
        create_app(
            metrics=metrics,
            health=HealthChecks(
                ping_database=lambda: db.fetch_value("SELECT 1"),
                discord_connected=discord_connected,
                queue_depth=engine.queue_depth,
                providers=accounts.report,
                loop_lag=loop_lag.recent,
            ),
            webhook_target=engine if public_url else None,
            metrics_token=secret_or_none(settings.metrics_token),
        ),
        settings.web_host,
        settings.web_port,
    )
    server_settings = SettingsStore(db, audit, known_variants=lambda: variants, clock=clock)
    moderation = Moderation(
        db,
        audit,
        settings=server_settings.get,
        clock=clock,
        terms_size_budget=settings.max_banned_terms_size_per_server,
    )
    await server_settings.load()
    await moderation.load()
    global_blocks = GlobalBlocks(db, clock=clock)
    await global_blocks.load()
    quota_policy = ledger.policy
    direct_messages = DirectMessages(
        db, server_settings, moderation, server_allowed=quota_policy.server_allowed
    )
    direct_messages.lookup = member_lookup
    policy = CommunityPolicy(
        server_settings,
        moderation,
        direct_messages=direct_messages,
        server_allowed=quota_policy.server_allowed,
        blocked_everywhere=global_blocks,
    )
    studios = Studios(db, audit, policy=policy, clock=clock)
    await studios.load()
    loras = LoraCatalogue(db, audit, clock=clock)
    await loras.load()
    # An ended studio posts its gallery once the jobs still running in it are done.
    engine.on_job_closed(studios.job_closed)
    engine.handover_admission = studios.admit_more  # FAILOVER's extra, within a studio budget
    preferences = Preferences(db, variants, moderation=moderation, clock=clock)
    generation = GenerationService(
        engine,
        variants,
        default_variant=settings.default_variant,
        limits=ReferenceLimits(
            max_bytes=settings.max_reference_bytes,
            max_pixels=settings.max_reference_megapixels * MEGAPIXEL,
        ),
        policy=policy,
        audit=audit,
        studios=studios,
        provider_moderation_strikes=settings.provider_moderation_strikes,
        reference_checks=ReferenceChecks(
            download_bytes=settings.reference_download_budget_bytes,
            decode_megapixels=settings.reference_decode_budget_megapixels,
        ),
        max_in_flight=settings.max_jobs_in_flight_per_member,
        preferences=preferences,
        tools=available_tools(list(providers)),
    )
    generation.loras = loras
    approvals = ApprovalQueue(
        db,
        audit,
        variant_for=generation.pick_variant,
        submit=generation.submit,
        job_exists=engine.store.get,
        ledger=ledger,
        max_pending_per_member=settings.max_pending_approvals_per_member,
        expiry_hours=settings.approval_expiry_hours,
        clock=clock,
    )
    generation.approvals = approvals  # held requests wait there (it submits through generation)
    defaults = BotDefaults(db, settings, clock=clock)

    async def apply_defaults(effective: Settings) -> None:
        # The owner's defaults hold from the next request on, in every process.
        await ledger.apply_policy(QuotaPolicy.from_settings(effective))
        generation.default_variant = effective.default_variant

    defaults.on_apply(apply_defaults)
    await defaults.load()
    # Another process's moderator changes reach this one's caches (bot/invalidation.py).
    caches = SharedCaches(db)
    caches.register(Cache.SERVER_SETTINGS, server_settings.load)
    caches.register(Cache.MODERATION, moderation.load)
    caches.register(Cache.STUDIOS, studios.load)
    caches.register(Cache.LORAS, loras.load)

    async def reload_server_caches() -> None:
        await server_settings.load()
        await moderation.load()
        await studios.load()
        await loras.load()

    privacy = Privacy(
        db,
        audit,
        RetentionPolicy.from_settings(settings),
        clock=clock,
        on_server_erased=reload_server_caches,
        preferences=preferences,
    )
    caches.register(Cache.GLOBAL_BLOCKS, global_blocks.load)
    caches.register(Cache.BOT_DEFAULTS, defaults.load)
    caches.register(Cache.MEMBER_PREFERENCES, preferences.forget_all)
    return Services(
        settings=settings,
        db=db,
        clock=clock,
        providers=providers,
        variants=variants,
        metrics=metrics,
        ledger=ledger,
        engine=engine,
        web=web,
        audit=audit,
        server_settings=server_settings,
        moderation=moderation,
        studios=studios,
        generation=generation,
        approvals=approvals,
        caches=caches,
        direct_messages=direct_messages,
        loop_lag=loop_lag,
        accounts=accounts,
        privacy=privacy,
        preferences=preferences,
        global_blocks=global_blocks,
        defaults=defaults,
        welcomes=Welcomes(db, clock=clock),
        loras=loras,
        favourites=Favourites(db, clock=clock),
        showcase=Showcase(db, audit, clock=clock),
    )
