"""`fluxcord doctor`: check the setup and print one line per check, "ok", "warning" or
"problem" with what to do; exit 0 when there is no problem, else 1.

Checked, in order: the version and the database (reachable, migrated, not newer than this
release), the provider keys and balances, the webhook URL, then Discord: the token, the
Message Content intent against MESSAGE_CONTENT_INTENT, "Public Bot" left on with no
ALLOWED_GUILD_IDS (strangers could spend your credits), the invite URL, and in each server the
permissions the bot lacks in the channels where members may generate (from the servers'
/settings; every channel the bot can see when unrestricted). For those it connects to the
gateway for a moment (Guilds intent only), as a second session beside a running bot.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from bot.ledger import QuotaPolicy
from bot.ledger.spending import public_bot_warning
from bot.operations.doctor import (
    Finding,
    Verdict,
    database_findings,
    ok,
    problem,
    provider_findings,
    server_settings,
    warning,
    webhook_finding,
)
from bot.servers.settings import ServerSettings
from bot.settings import Settings, load_settings

if TYPE_CHECKING:
    import discord

NAME = "doctor"
HELP = (
    "check the setup (database, provider keys, webhook URL, Discord token, intents and "
    "permissions) and say what to fix"
)

# How long the gateway may take to send every server (a few seconds even for large bots).
READY_TIMEOUT = 60.0
# Channels named per server in a line; the rest are counted.
MAX_CHANNELS_NAMED = 3
# For tests against the Discord stand-in (e.g. a short guild_ready_timeout).
CLIENT_OPTIONS: dict[str, Any] = {}

ServerSettingsLookup = Callable[[int], ServerSettings]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def load(args: argparse.Namespace) -> Settings:
    return load_settings()


async def execute(settings: Settings, args: argparse.Namespace, *, out: Any = None) -> int:
    problems = 0

    def show(findings: Iterable[Finding]) -> None:
        nonlocal problems
        for finding in findings:
            problems += finding.verdict is Verdict.PROBLEM
            print(finding.line(), file=out, flush=True)

    found, db = await database_findings(settings)
    show(found)
    lookup: ServerSettingsLookup = ServerSettings
    if db is not None:
        try:
            lookup = (await server_settings(db)).get
        finally:
            await db.close()
    show(await provider_findings(settings))
    show([await webhook_finding(settings)])
    show(await discord_findings(settings, lookup))
    return 1 if problems else 0


async def discord_findings(settings: Settings, lookup: ServerSettingsLookup) -> list[Finding]:
    import discord  # here, not at import: `fluxcord --version` stays quick

    # Doctor's lines are on stdout; keep discord.py's chatter (voice libraries, "logging in")
    # off stderr unless something goes wrong.
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False
    chatter = logging.getLogger("discord")
    level = chatter.level
    chatter.setLevel(logging.WARNING)
    intents = discord.Intents.none()
    intents.guilds = True  # channels, roles and the bot's own member: what permissions need
    client = discord.AutoShardedClient(
        intents=intents, shard_count=settings.shard_count, **CLIENT_OPTIONS
    )
    try:
        return await _discord_findings(client, settings, lookup)
    finally:
        await client.close()
        chatter.setLevel(level)


async def _discord_findings(
    client: discord.AutoShardedClient, settings: Settings, lookup: ServerSettingsLookup
) -> list[Finding]:
    import discord

    from cogs.permissions import invite_url

    try:
        await client.login(settings.discord_token.get_secret_value())
    except discord.LoginFailure:
        return [
            problem(
                "DISCORD_TOKEN",
                "rejected by Discord: copy the token again from the developer portal "
                "(Bot → Reset Token)",
            )
        ]
    except (discord.HTTPException, OSError) as exc:
        return [problem("Discord", f"cannot reach Discord ({type(exc).__name__})")]
    application = client.application
    assert application is not None and client.user is not None  # set by login
    findings = [ok("DISCORD_TOKEN", f"logged in as {client.user} (application {application.id})")]
    findings.append(_intent_finding(settings, application.flags))
    public = public_bot_warning(application.bot_public, QuotaPolicy.from_settings(settings))
    if public is not None:
        findings.append(warning("Public Bot", public))
    url = invite_url(application.id)
    findings += await _server_findings(client, settings, lookup, url)
    return findings


def _intent_finding(settings: Settings, flags: discord.ApplicationFlags) -> Finding:
    allowed = flags.gateway_message_content or flags.gateway_message_content_limited
    if settings.message_content_intent and not allowed:
        return problem(
            "intents",
            "MESSAGE_CONTENT_INTENT is on but the Message Content intent is off for the "
            "application: turn it on in the developer portal (Bot → Privileged Gateway "
            "Intents), or set MESSAGE_CONTENT_INTENT=false",
        )
    if not settings.message_content_intent:
        return ok(
            "intents",
            "MESSAGE_CONTENT_INTENT=false: the images of a message members reply to are not "
            "read (turn both on to edit by replying)",
        )
    return ok("intents", "the Message Content intent is on, as MESSAGE_CONTENT_INTENT asks")


async def _server_findings(
    client: discord.AutoShardedClient,
    settings: Settings,
    lookup: ServerSettingsLookup,
    url: str,
) -> list[Finding]:
    ready = asyncio.Event()

    async def on_ready() -> None:
        ready.set()

    client.event(on_ready)
    connection = asyncio.create_task(client.connect(reconnect=False))
    waiting = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait(
            {connection, waiting}, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        waiting.cancel()
    if not ready.is_set():
        error = connection.exception() if connection.done() else None
        connection.cancel()
        with contextlib.suppress(BaseException):
            await connection
        why = type(error).__name__ if error else f"no answer in {READY_TIMEOUT:.0f} s"
        return [problem("Discord", f"could not connect to the gateway ({why})")]
    try:
        guilds = list(client.guilds)
        if not guilds:
            return [warning("servers", f"Fluxcord is in no server yet: invite it with {url}")]
        findings = [ok("invite", url)]
        allowed = settings.allowed_guilds
        for guild in sorted(guilds, key=lambda g: g.name.lower()):
            if allowed is not None and guild.id not in allowed:
                findings.append(
                    ok(f"server {guild.name} ({guild.id})", "not in ALLOWED_GUILD_IDS: skipped")
                )
                continue
            findings += _guild_findings(guild, lookup(guild.id))
        return findings
    finally:
        await client.close()
        with contextlib.suppress(BaseException):
            await connection


def _guild_findings(guild: discord.Guild, server: ServerSettings) -> list[Finding]:
    from cogs.permissions import GENERATION_PERMISSIONS, STUDIO_PERMISSIONS, missing

    check = f"server {guild.name} ({guild.id})"
    me = guild.me
    enabled = server.enabled_channels
    if enabled is None:
        # Unrestricted: every channel the bot can see (hidden ones are the server's choice).
        channels = [c for c in guild.text_channels if c.permissions_for(me).view_channel]
    else:
        channels = [c for c in guild.text_channels if c.id in enabled]
    channels.sort(key=lambda c: c.position)

    def lacking_in_channels(
        needed: discord.Permissions,
    ) -> list[tuple[discord.TextChannel, list[str]]]:
        found = [(c, missing(c.permissions_for(me), needed)) for c in channels]
        return [(c, names) for c, names in found if names]

    lacking = lacking_in_channels(GENERATION_PERMISSIONS)
    if lacking:
        return [
            problem(
                check,
                f"the bot lacks {_where(lacking)} where members may generate: give the "
                f"{me.top_role.name} role those permissions (Server Settings → Roles) or "
                "allow them in each channel's permissions",
            )
        ]
    studio = lacking_in_channels(STUDIO_PERMISSIONS)
    if studio:
        return [
            warning(
                check,
                f"studios cannot run in every channel: the bot lacks {_where(studio)} "
                "(threads for /studio)",
            )
        ]
    scope = "every channel it can see" if enabled is None else f"the {len(channels)} allowed"
    return [ok(check, f"the bot has the permissions it needs in {scope}")]


def _where(lacking: list[tuple[discord.TextChannel, list[str]]]) -> str:
    named = [f"{', '.join(names)} in #{c.name}" for c, names in lacking[:MAX_CHANNELS_NAMED]]
    rest = len(lacking) - MAX_CHANNELS_NAMED
    text = "; ".join(named)
    return text + (f" (and {rest} more channel{'s' if rest > 1 else ''})" if rest > 0 else "")
