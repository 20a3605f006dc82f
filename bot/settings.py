"""Bot configuration, read from the environment or a `.env` file.

Why this file is long: every setting is here with its description and its checks, in one
model, so start-up, the owner's `/owner defaults` (`with_setting`) and the generated
configuration docs all read the same rules."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.catalogue import CATALOGUE, available_variants
from bot.errors import SettingsError
from bot.moderation.patterns import DEFAULT_TERMS_SIZE_BUDGET
from bot.periods import parse_reset_time
from bot.providers.base import DEFAULT_MAX_REPORTED_COST
from bot.providers.egress import EgressPolicy
from bot.storage.base import is_postgres_url

# Discord's own address (DISCORD_API_BASE changes it for a REST proxy).
DISCORD_API_BASE = "https://discord.com"
# SHARD_COUNT's upper bound: no shard number can reach it.
MAX_SHARD_COUNT = 10_000
# Each provider's variants need its key; named as the settings that give one.
_PROVIDER_KEY_SETTINGS = {"bfl": "BFL_API_KEY (or BFL_API_KEYS)", "aiml": "AIML_API_KEY"}

# Words that mean "no limit" in an allowance setting (an empty value means "the default").
UNLIMITED_WORDS = frozenset({"unlimited", "none", "off", "-1"})
ALLOWANCE_SETTINGS = tuple(
    f"default_{level}_{period}_{metric}"
    for level in ("user", "guild")
    for period in ("daily", "weekly", "monthly")
    for metric in ("images", "credits")
)


class Settings(BaseSettings):
    """Every setting the bot reads; names are the environment variables, case-insensitive."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,  # `KEY=` in a .env or compose file means "use the default"
    )

    discord_token: SecretStr = Field(
        description="The bot token from the Discord developer portal (Bot → Reset Token)"
    )
    discord_api_base: str = Field(
        default=DISCORD_API_BASE,
        description="Where the bot sends Discord's REST calls. Change it only for a REST proxy "
        "that forwards to Discord (one that shares the rate limits of several processes); it "
        "must be https on the default port, since the bot token goes there",
    )
    bfl_api_key: SecretStr | None = Field(
        default=None,
        description="Your Black Forest Labs API key (pro, max, flex, klein). Set this, "
        "`AIML_API_KEY`, or both",
    )
    bfl_api_keys: SecretStr | None = Field(
        default=None,
        description="More BFL keys (several accounts), each with its own cap: `key1:24,key2:20` "
        "(a key without `:cap` gets `PROVIDER_MAX_ACTIVE`). Used together with `BFL_API_KEY`; "
        "each request stays on the key that sent it",
    )
    user_hash_secret: SecretStr | None = Field(
        default=None,
        description="The key of the keyed hash sent to BFL as `user` with every request, so BFL "
        "can tell one member's requests from another's without learning who they are. Unset, "
        "the bot makes one on first start and keeps it in the database (every process of a "
        "fleet shares it); set it to keep the same ids across a move to a new database",
    )
    bfl_api_base: str = Field(
        default="https://api.bfl.ai",
        description="BFL endpoint: also `https://api.eu.bfl.ai` or `https://api.us.bfl.ai`. "
        "Must be https on the default port (API keys never travel over plain http)",
    )
    bfl_enable_preview: bool = Field(
        default=False,
        description="Also offer the preview models (`pro-preview`, `klein-9b-preview`)",
    )
    default_variant: str = Field(
        default="pro",
        description="Model `/imagine` and `/edit` use: `pro`, `max`, `flex`, `klein-4b`, "
        "`klein-9b`, or with an AI/ML key `dev` or `lora`. A name that is not a model, or one "
        "whose key is not set, stops the bot at start (never silently replaced)",
    )
    database_path: Path = Field(
        default=Path("data/fluxcord.sqlite3"),
        description="SQLite database file (created with its folder). One bot per file; back it "
        "up with `fluxcord backup` while it runs",
    )
    backup_dir: Path | None = Field(
        default=None,
        description="Where `fluxcord backup` writes when given no PATH"
        " (default: a backups folder beside DATABASE_PATH)",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="`postgresql://user:password@host:5432/fluxcord`: keep everything in "
        "PostgreSQL instead of the SQLite file (needs the `postgres` extra), which also lets "
        "several processes share the work. It may hold a password, so it is kept secret",
    )
    provider_max_active: int = Field(
        default=24,
        ge=1,
        le=1000,
        description="Most requests running at BFL at once on `BFL_API_KEY` (BFL's default "
        "account limit is 24); shared by every process on one database",
    )
    shard_count: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SHARD_COUNT,
        description="Gateway shards in all (default: as many as Discord recommends). Every "
        "process on one database must agree",
    )
    lease_seconds: float = Field(
        default=20.0,
        ge=2,
        le=600,
        description="With several processes: how long a process's hold on its requests and "
        "shards lasts without renewal, so how soon another process takes over after it dies",
    )
    shutdown_grace_seconds: float = Field(
        default=25.0,
        ge=0,
        le=3600,
        description="On SIGTERM (`docker stop`, systemd) the bot stops taking new work and gives "
        "requests already sent to an image service this long to come back and be posted; the "
        "rest resume on the next start. Give Docker more time than this "
        "(`stop_grace_period: 30s`, or `docker stop -t 30`)",
    )
    database_retry_seconds: float = Field(
        default=300.0,
        ge=0,
        le=86400,
        description="When the database stops answering (a PostgreSQL restart, a full disk, a "
        "lock held too long), each request's writes retry for this long, then wait for the "
        "bot's own sweep: no request is lost or needs a restart. The log says once when the "
        "database stops answering and once when it is back",
    )
    shard_ids: str | None = Field(
        default=None,
        description="The shards this process connects, e.g. `0,1` or `0-3` (default: all). Only "
        "some of them needs `DATABASE_URL`: other processes run the rest",
    )
    poll_initial_interval: float = Field(
        default=0.5,
        gt=0,
        le=10,
        description="Seconds before the first status check of a request whose kind the bot "
        "has no recent timings for (after that, polls follow how long such tasks take)",
    )
    poll_max_interval: float = Field(
        default=4.0,
        gt=0,
        le=60,
        description="Longest gap, in seconds, between status checks of one request",
    )
    job_deadline_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Give up on a request the image service has not finished after this long",
    )
    max_result_bytes: int = Field(
        default=25 * 1024 * 1024,
        gt=0,
        description="Largest image the bot downloads (25 MiB). A result over the server's "
        "upload limit (10 MiB without boosts) is posted reduced to fit",
    )
    reference_retention_days: float = Field(
        default=30,
        ge=0,
        description="Keep stored images (the references a finished job was made from, for Reroll"
        " and Remix; results never posted; images of decided approvals) this many days;"
        " 0 = for ever",
    )
    # Privacy (bot/privacy, docs/privacy.md). Each is in days and bot-wide; 0 keeps for ever.
    prompt_retention_days: float = Field(
        default=90,
        ge=0,
        description="Keep members' prompts this many days after the job ended (then the text is"
        " blanked in the job, its decided approval, the strike and the audit entries quoting it;"
        " Reroll stops working); 0 = for ever",
    )
    finished_job_retention_days: float = Field(
        default=365,
        ge=0,
        description="Keep a finished job's record (for /history, lineage and its result's"
        " buttons) this many days; the ledger's amounts are kept regardless; 0 = for ever",
    )
    audit_retention_days: float = Field(
        default=365,
        ge=0,
        description="Keep audit log and /quota history entries this many days; 0 = for ever",
    )
    departed_server_grace_days: float = Field(
        default=30,
        ge=0,
        description="After the bot leaves or is removed from a server, erase that server's data"
        " (jobs, settings, strikes, audit log, approvals, studios) this many days later unless"
        " the bot is back by then; the ledger's amounts are kept; 0 = never erase",
    )
    max_reference_bytes: int = Field(
        default=20 * 1024 * 1024, gt=0, description="Largest reference image accepted (20 MiB)"
    )
    max_reference_megapixels: int = Field(
        default=40,
        gt=0,
        le=200,
        description="Largest reference image in megapixels; stops decompression bombs before "
        "decoding",
    )
    reference_download_budget_bytes: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        description="Most reference-image bytes being downloaded at once, over all members "
        "(64 MiB); further downloads wait their turn (a single larger file still goes alone)",
    )
    reference_decode_budget_megapixels: int = Field(
        default=48,
        ge=1,
        le=4096,
        description="Most reference-image memory being decoded at once, over all members, in "
        "megapixels of 4 bytes (48 ≈ 192 MiB). Each file's need is read from its header before "
        "it is decoded: 4 bytes a pixel for PNG, 16 for WebP, little for a JPEG decoded at 1/8 "
        "scale (up to 8 for a progressive one). Further checks wait their turn; a reference "
        "that alone needs more is refused (at the default: PNG up to 48 MP, WebP up to 12 MP)",
    )
    max_jobs_in_flight_per_member: int = Field(
        default=4,
        ge=1,
        le=100,
        description="Requests one member may have queued or running at once (over every server "
        "and DMs); more are refused with a message until one finishes",
    )
    button_cooldown_seconds: float = Field(
        default=3.0,
        ge=0,
        le=600,
        description="Pause one member must leave between requests: `/imagine`, `/flux`, "
        "`/edit`, Edit with FLUX, replies, and Reroll, Edit and Remix, counted together "
        "(`0` turns it off)",
    )
    aiml_api_key: SecretStr | None = Field(
        default=None,
        description="Your AI/ML API key (https://aimlapi.com): adds `/flux dev` and `/flux lora` "
        "(FLUX.2 [dev], with LoRAs), and serves `pro` when there is no BFL key",
    )
    aiml_api_base: str = Field(
        default="https://api.aimlapi.com",
        description="AI/ML API endpoint (https on the default port)",
    )
    aiml_read_timeout: float = Field(
        default=300.0,
        gt=0,
        le=1800,
        description="Seconds to wait for an AI/ML API answer (it answers with the finished image)",
    )
    aiml_max_active: int = Field(
        default=8, ge=1, le=1000, description="Most AI/ML API requests running at once"
    )
    aiml_units_per_credit: float = Field(
        default=20_000,
        gt=0,
        description="AI/ML API usage units per Fluxcord credit ($0.01; the AI/ML API counts "
        "$1 = 2,000,000)",
    )
    max_reported_cost_credits: float = Field(
        default=DEFAULT_MAX_REPORTED_COST,
        gt=0,
        le=1_000_000,
        description="Largest cost per request the bot believes from a provider ($5; the "
        "priciest usual request, flex at 4 MP with eight 4 MP references, is about 180). A "
        "reported cost that is negative, not a number or above this is logged and ignored: the "
        "request is charged its estimate",
    )
    allow_loopback_provider_urls: bool = Field(
        default=False,
        description="**Test only.** Lets the provider clients reach stand-ins on 127.0.0.1 (and "
        "send a key over plain http, still only to its configured API base). Never set it in "
        "production: links from the providers are otherwise refused when they point at "
        "loopback, private or link-local addresses",
    )
    prefer_aiml_pro: bool = Field(
        default=False, description="Serve `pro` through the AI/ML API even when a BFL key is set"
    )
    failover: Literal["off", "aiml"] = Field(
        default="off",
        description="`aiml`: when BFL cannot take a `pro` or `max` request (out of credits, "
        "unreachable, or still overloaded after the client's retries) and certainly did not "
        "start it, make it with the AI/ML API instead, charged what that provider reports. "
        "Needs `AIML_API_KEY`. Never after a moderation refusal, a rejected request, a 429 or "
        "an answer that leaves open whether BFL started the task",
    )
    web_host: str = Field(
        default="127.0.0.1",
        description="Address of the bot's small web server (webhooks, health, `/metrics`); "
        "health and metrics must stay private (docs/operations.md)",
    )
    web_port: int = Field(default=8080, ge=0, le=65535, description="The web server's port")
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Lets Prometheus scrape `/metrics` from another machine or container with "
        "`Authorization: Bearer <token>`. Unset: `/metrics` answers this machine's loopback "
        "address only",
    )
    webhook_public_url: str | None = Field(
        default=None,
        description="The public `https://` address that reaches the web server, e.g. "
        "`https://bot.example.com`. Unset: webhooks are off and polling alone delivers",
    )
    webhook_grace_seconds: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="How long the bot waits for a webhook before it starts polling a request "
        "anyway",
    )
    provider_check_interval_seconds: float = Field(
        default=600.0,
        ge=1,
        le=86_400,
        description="Seconds between checks of each provider key and balance (also at start-up):"
        " a rejected key or an empty account is one log line and turns /readyz red",
    )
    low_balance_credits: float = Field(
        default=500.0,
        ge=0,
        description="Log a warning when a provider account has fewer credits than this (500 = "
        "$5); the AI/ML API's own low-balance flag warns too",
    )
    message_content_intent: bool = Field(
        default=True,
        description="Ask Discord for message content (a privileged intent), so replying to "
        "*anyone's* image works. Set `false` if you can't enable the intent; replies to the "
        "bot's own results still work",
    )
    dev_guild_id: int | None = Field(
        default=None,
        description="Register commands in this one server only (instant; handy while testing). "
        "Without it commands are global and can take a while to appear the first time",
    )
    log_level: str = Field(
        default="INFO",
        description="`DEBUG`, `INFO`, `WARNING` or `ERROR`. At every level, interaction tokens, "
        "the bot token, the API keys and the database password are written as `[redacted]`",
    )

    # Quotas (bot/ledger). Windows reset at this UTC time; weeks start on Monday.
    quota_reset_time: str = Field(
        default="00:00",
        description="When daily, weekly (Monday) and monthly allowances reset, `HH:MM` in UTC",
    )
    # Bot-wide defaults for each member's own allowance and each server's total budget;
    # moderators override them per server with /quota. None ("unlimited") = no limit.
    # The defaults cap a member at about $1 a day and $10 a month, a server at $100 a month.
    default_user_daily_images: int | None = Field(
        default=25, ge=0, description="Images a member may make per day, on each server"
    )
    default_user_daily_credits: float | None = Field(
        default=100, ge=0, description="Credits a member may spend per day ($1)"
    )
    default_user_weekly_images: int | None = Field(
        default=None, ge=0, description="Images a member may make per week"
    )
    default_user_weekly_credits: float | None = Field(
        default=None, ge=0, description="Credits a member may spend per week"
    )
    default_user_monthly_images: int | None = Field(
        default=None, ge=0, description="Images a member may make per calendar month"
    )
    default_user_monthly_credits: float | None = Field(
        default=1000, ge=0, description="Credits a member may spend per calendar month ($10)"
    )
    default_guild_daily_images: int | None = Field(
        default=None, ge=0, description="Images a whole server may make per day"
    )
    default_guild_daily_credits: float | None = Field(
        default=None, ge=0, description="Credits a whole server may spend per day"
    )
    default_guild_weekly_images: int | None = Field(
        default=None, ge=0, description="Images a whole server may make per week"
    )
    default_guild_weekly_credits: float | None = Field(
        default=None, ge=0, description="Credits a whole server may spend per week"
    )
    default_guild_monthly_images: int | None = Field(
        default=None, ge=0, description="Images a whole server may make per calendar month"
    )
    default_guild_monthly_credits: float | None = Field(
        default=10000,
        ge=0,
        description="Credits a whole server may spend per calendar month ($100)",
    )
    # Who may spend the operator's money (bot/ledger/spending.py): the servers allowed to make
    # images at all, and one budget over every server together, with the owner warned.
    allowed_guild_ids: str | None = Field(
        default=None,
        description="Only these servers (comma-separated ids) may make images; anywhere else "
        'members get a private "this bot isn\'t enabled on this server" and nothing is sent or '
        "charged. Direct messages count only through servers on the list. Unset: any server "
        "that adds the bot",
    )
    bot_monthly_credits: float | None = Field(
        default=None,
        ge=0,
        description="Credits the whole bot may spend per calendar month, over every server and "
        "direct messages together (e.g. `30000` = $300); past it requests are refused until the "
        "reset. Checked when each request is accepted, exactly, even under a burst from many "
        "servers and processes; while it is set, every request's acceptance takes one "
        "fleet-wide turn",
    )
    owner_alert_channel_id: int | None = Field(
        default=None,
        description="Channel for the owner's budget warnings; unset = a DM to the app's owner",
    )
    docs_url: str | None = Field(
        default=None,
        description="Link to this bot's documentation that /about and /help show (for example"
        " the README of the release you run); unset = no link",
    )

    # Abuse limits (issue 12): the approval queue and refunded requests.
    max_pending_approvals_per_member: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Requests one member may have waiting for a moderator's approval on a "
        "server; more are refused until some are reviewed",
    )
    # What checking a prompt against one server's own banned terms may cost: their total RE2
    # program size (bot/moderation/patterns.py). The ceiling keeps the combined program within
    # RE2's memory for it.
    max_banned_terms_size_per_server: int = Field(
        default=DEFAULT_TERMS_SIZE_BUDGET,
        ge=0,
        le=100_000,
        description="How large one server's own banned terms may be together, in RE2 program "
        "instructions (an ordinary word takes 15-20, so about 200 fit; `.{100}` alone takes "
        "800). A prompt check costs at most this size times the prompt's length: at the default "
        "at most about 0.7 s of CPU for the most hostile terms and a 4,000-character prompt. A "
        "server's checks run one at a time, and one that can't start within 1.5 s is refused as "
        "busy (no strike). A term that doesn't fit is refused with the reason; terms stored "
        "when the budget was larger stay listed, the oldest that fit stay in force, and a "
        "moderator adding a term is told so",
    )
    approval_expiry_hours: float = Field(
        default=72.0,
        gt=0,
        le=24 * 30,
        description="A request waiting for approval that no moderator reviews in this many hours "
        "expires: the member is told, nothing is charged, and it stops counting against their "
        "allowance",
    )
    provider_moderation_strikes: bool = Field(
        default=True,
        description="A request the image service's safety filter blocks counts as a strike on "
        "the member's server (warnings and blocks at the server's strike thresholds)",
    )
    max_refunded_jobs_per_day: int = Field(
        default=10,
        ge=0,
        description="Refunded requests the image service had already taken (and billed), per "
        "member, server and day; past it the member's next request is refused until the daily "
        "reset. `0` = no cap",
    )

    @field_validator("bfl_api_base", "aiml_api_base", "discord_api_base")
    @classmethod
    def _base_is_http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _keys_travel_safely(self) -> Settings:
        # API keys go only over https on the default port (plain http to loopback only
        # under the test switch): refuse a base they could not be sent to, at start-up.
        for name in ("bfl_api_base", "aiml_api_base", "discord_api_base"):
            try:
                EgressPolicy(getattr(self, name), allow_loopback=self.allow_loopback_provider_urls)
            except ValueError as exc:
                message = (
                    f"{name.upper()}: {exc} (API keys and the bot token are sent only over https)"
                )
                raise ValueError(message) from None
        return self

    @model_validator(mode="after")
    def _jobs_kept_a_day(self) -> Settings:
        # The daily cap on refunds reads today's jobs: a job must outlive its day.
        if 0 < self.finished_job_retention_days < 1:
            raise ValueError("FINISHED_JOB_RETENTION_DAYS must be 0 (for ever) or at least 1")
        return self

    @model_validator(mode="after")
    def _shards_fit(self) -> Settings:
        if self.shard_ids is None:
            return self
        if self.shard_count is None:
            raise ValueError("SHARD_IDS needs SHARD_COUNT (how many shards there are in all)")
        ids = parse_shard_ids(self.shard_ids, self.shard_count)
        if len(ids) < self.shard_count and self.database_url is None:
            # The other shards run in other processes, which need one shared store.
            raise ValueError(
                "SHARD_IDS runs only some of the shards, so other processes run the rest: "
                "that needs PostgreSQL as the shared store (set DATABASE_URL)"
            )
        return self

    @property
    def process_shard_ids(self) -> list[int] | None:
        """The shards this process connects, or None for all of them."""
        if self.shard_ids is None:
            return None
        return parse_shard_ids(self.shard_ids, self.shard_count or MAX_SHARD_COUNT)

    @model_validator(mode="after")
    def _bfl_keys_parse(self) -> Settings:
        self.bfl_keys()  # raises ValueError naming the problem, never the key
        return self

    @field_validator("default_variant")
    @classmethod
    def _variant_name(cls, value: str) -> str:
        return value.strip().lower()

    @model_validator(mode="after")
    def _default_variant_offered(self) -> Settings:
        """Refuse a DEFAULT_VARIANT this installation cannot serve, rather than quietly
        serving another model in its place."""
        name = self.default_variant
        shown = f"DEFAULT_VARIANT={_shown(name)}"
        # The variants offered under this name (`pro` is BFL's, or the AI/ML API's alias).
        serving = [v for v in CATALOGUE.values() if (v.alias_of or v.key) == name]
        if not serving:
            every = available_variants(include_preview=True, providers=list(_PROVIDER_KEY_SETTINGS))
            raise ValueError(f"{shown} is not a model; choose one of {', '.join(every)}")
        has_key = {
            "bfl": self.bfl_api_key is not None or self.bfl_api_keys is not None,
            "aiml": self.aiml_api_key is not None,
        }
        configured = [provider for provider, present in has_key.items() if present]
        offered = available_variants(
            include_preview=self.bfl_enable_preview,
            providers=configured,
            prefer_aiml=self.prefer_aiml_pro,
        )
        if name in offered or not configured:  # none configured: `migrate`, or a warning
            return self
        choose = f"choose one of {', '.join(offered)}"
        if all(v.preview for v in serving) and not self.bfl_enable_preview:
            raise ValueError(
                f"{shown} is a preview model: set BFL_ENABLE_PREVIEW=true, or {choose}"
            )
        keys = " or ".join(_PROVIDER_KEY_SETTINGS[v.provider] for v in serving)
        raise ValueError(f"{shown} needs {keys}, which is not set: set it, or {choose}")

    def bfl_keys(self) -> list[tuple[str, int]]:
        """Every BFL key with its concurrency cap: BFL_API_KEY first, then BFL_API_KEYS."""
        keys: list[tuple[str, int]] = []
        if self.bfl_api_key is not None:
            keys.append((self.bfl_api_key.get_secret_value(), self.provider_max_active))
        if self.bfl_api_keys is not None:
            keys += parse_keys(self.bfl_api_keys.get_secret_value(), self.provider_max_active)
        if len({key for key, _ in keys}) < len(keys):
            raise ValueError("BFL_API_KEYS names the same key twice (or repeats BFL_API_KEY)")
        return keys

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        url = value.get_secret_value()
        if not is_postgres_url(url):
            raise ValueError("DATABASE_URL must start with postgresql:// (SQLite: DATABASE_PATH)")
        netloc = urlsplit(url).netloc
        if "," not in netloc:  # several hosts ("h1:5432,h2") are asyncpg's to read
            try:
                urlsplit(url).port  # noqa: B018 - raises for a port that is not 0-65535
            except ValueError:
                raise ValueError("has a port that is not a number up to 65535") from None
        return value

    def secret_values(self) -> list[str]:
        """Every configured secret (the bot token, provider keys, the database password), so
        that the logs can blank them wherever they might appear (bot/redaction.py)."""
        secrets = [self.discord_token.get_secret_value(), *(key for key, _ in self.bfl_keys())]
        if self.aiml_api_key is not None:
            secrets.append(self.aiml_api_key.get_secret_value())
        if self.metrics_token is not None:
            secrets.append(self.metrics_token.get_secret_value())
        if self.database_url is not None:
            password = urlsplit(self.database_url.get_secret_value()).password
            if password:
                secrets += [password, unquote(password)]
        return secrets

    @property
    def database_target(self) -> str | Path:
        """What `Database.open` opens: the PostgreSQL URL when set, else the SQLite file."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return self.database_path

    @property
    def database_name(self) -> str:
        """The store, for log lines and messages: never the URL, which may hold a password."""
        return (
            "PostgreSQL (DATABASE_URL)"
            if self.database_url is not None
            else str(self.database_path)
        )

    @field_validator("quota_reset_time")
    @classmethod
    def _reset_time(cls, value: str) -> str:
        at = parse_reset_time(value)
        return f"{at.hour:02d}:{at.minute:02d}"

    @field_validator(*ALLOWANCE_SETTINGS, "bot_monthly_credits", mode="before")
    @classmethod
    def _unlimited_words(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in UNLIMITED_WORDS:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool) and value == -1:
            return None
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                raise ValueError("must be a number or 'unlimited'") from None
        return value

    @field_validator("allowed_guild_ids")
    @classmethod
    def _guild_ids(cls, value: str | None) -> str | None:
        if value is not None:
            parse_guild_ids(value)  # raises ValueError naming the entry
        return value

    @property
    def allowed_guilds(self) -> frozenset[int] | None:
        """The servers that may make images (ALLOWED_GUILD_IDS), or None for any server."""
        return None if self.allowed_guild_ids is None else parse_guild_ids(self.allowed_guild_ids)

    @field_validator("docs_url")
    @classmethod
    def _docs_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL")
        return value.strip()

    @field_validator("webhook_public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ValueError("must be an http(s) URL without a query")
        return value.rstrip("/")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level


def parse_shard_ids(text: str, shard_count: int = MAX_SHARD_COUNT) -> list[int]:
    """ "0,1" or "0-3" or "0-1,4" → sorted shard ids, each below `shard_count`. Every range
    is checked before any is expanded, so "0-99999999" is refused without building it."""
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        part = part.strip()
        first, dash, last = part.partition("-")
        try:
            low, high = int(first), int(last) if dash else int(first)
        except ValueError:
            raise ValueError(
                f"SHARD_IDS: {_shown(part)!r} is not a shard number or range"
            ) from None
        if low < 0 or high < low:
            raise ValueError(f"SHARD_IDS: {_shown(part)!r} is not a shard number or range")
        if high >= shard_count:
            problem = (
                f"{low} is not a shard of"
                if low == high
                else f"{low}-{high} goes past the shards of"
            )
            raise ValueError(
                f"SHARD_IDS {problem} SHARD_COUNT={shard_count} (0 to {shard_count - 1})"
            )
        ranges.append((low, high))
    return sorted({shard for low, high in ranges for shard in range(low, high + 1)})


def _shown(value: str, limit: int = 40) -> str:
    """A setting's value for a one-line message: printable, and short."""
    printable = "".join(char if char.isprintable() else "?" for char in value)
    return printable if len(printable) <= limit else printable[: limit - 1] + "…"


def parse_guild_ids(text: str) -> frozenset[int]:
    """ "123,456" → {123, 456}: Discord server ids (snowflakes)."""
    ids = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not (part.isascii() and part.isdigit()) or not 0 < int(part) < 2**63:
            raise ValueError(f"{part!r} is not a server id (a number like 1234567890123456789)")
        ids.add(int(part))
    if not ids:
        raise ValueError("names no server id (leave it unset to let any server use the bot)")
    return frozenset(ids)


def parse_keys(text: str, default_cap: int) -> list[tuple[str, int]]:
    """ "key:24,key2:20" → [(key, 24), (key2, 20)]; a key without a cap gets `default_cap`.
    Errors say which entry (by position), never the key."""
    keys = []
    for position, entry in enumerate(text.split(","), start=1):
        key, colon, cap_text = entry.strip().rpartition(":")
        if not colon:
            key, cap_text = entry.strip(), ""
        if not key:
            raise ValueError(f"BFL_API_KEYS: entry {position} has no key")
        try:
            cap = int(cap_text) if cap_text else default_cap
        except ValueError:
            raise ValueError(
                f"BFL_API_KEYS: entry {position} has a cap that is not a number"
            ) from None
        if not 1 <= cap <= 1000:
            raise ValueError(f"BFL_API_KEYS: entry {position} has a cap outside 1-1000")
        keys.append((key, cap))
    return keys


# Where Docker secrets (or any files named after settings) are read from, after the
# environment and .env: /run/secrets in compose.postgres.yaml. Read from the environment
# only, since it says where other settings come from.
SECRETS_DIR_VARIABLE = "SECRETS_DIR"


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning pydantic's report into one readable line per problem."""
    secrets_dir = os.environ.get(SECRETS_DIR_VARIABLE) or None
    if secrets_dir is not None and not Path(secrets_dir).is_dir():
        raise SettingsError(f"{SECRETS_DIR_VARIABLE} {secrets_dir} is not a directory")
    try:
        return Settings(_secrets_dir=secrets_dir, **overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_problems(exc)) from None


def describe_problems(exc: ValidationError) -> str:
    """Pydantic's report as one line: each problem with the setting it is about."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        name = ".".join(str(part) for part in error["loc"]).upper()
        reason = "is required" if error["type"] == "missing" else error["msg"]
        if not name:  # a check across settings: its message names them
            reason = reason.removeprefix("Value error, ")
        problems.append(f"{name} {reason}" if name else reason)
    return "; ".join(problems)


def with_setting(settings: Settings, name: str, value: object) -> Settings:
    """A copy of `settings` with one setting changed, checked by the same rules as at
    start-up (its own and those across settings). Raises SettingsError; `settings` itself
    never changes."""
    changed = settings.model_copy()
    try:
        Settings.__pydantic_validator__.validate_assignment(changed, name, value)
    except ValidationError as exc:
        raise SettingsError(describe_problems(exc)) from None
    return changed
