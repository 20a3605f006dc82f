"""`fluxcord doctor`'s checks that need no Discord: the version, the database and its
schema, the provider keys and balances, and the webhook URL. Each gives `Finding`s, one line
each, saying what is wrong and what to do (the Discord checks are in bot/cli/doctor.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import httpx
from aiohttp import web

from bot.errors import StartupError
from bot.jobs.webhooks import WEBHOOK_PATH
from bot.operations.instance import try_binding
from bot.operations.web import PUBLIC_LIVEZ_PATH, SERVICE_NAME, livez_response
from bot.providers.accounts import KeyState, account_keys, check_keys, describe
from bot.servers.audit import AuditLog
from bot.servers.settings import SettingsStore
from bot.services import build_providers
from bot.settings import Settings
from bot.storage.db import Database, open_database
from bot.storage.migrations import discover, migrations_dir
from bot.version import __version__

WEBHOOK_TIMEOUT = 10.0


class Verdict(StrEnum):
    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"


@dataclass(frozen=True)
class Finding:
    verdict: Verdict
    check: str  # what was checked: "database", "BFL key", ...
    text: str  # what was found, and what to do when it is not ok

    def line(self) -> str:
        return f"{self.verdict.value:<8}{self.check}: {self.text}"


def ok(check: str, text: str) -> Finding:
    return Finding(Verdict.OK, check, text)


def warning(check: str, text: str) -> Finding:
    return Finding(Verdict.WARNING, check, text)


def problem(check: str, text: str) -> Finding:
    return Finding(Verdict.PROBLEM, check, text)


# --------------------------------------------------------------------------- the database
async def database_findings(settings: Settings) -> tuple[list[Finding], Database | None]:
    """The version, whether the database opens, and its schema against this release's.
    Returns the open database (for the server settings) when it is usable; close it."""
    findings = []
    shipped = [m.version for m in discover(migrations_dir("sqlite"))]
    findings.append(ok("version", f"Fluxcord {__version__} (database schema {max(shipped)})"))
    where = settings.database_name
    path = Path(settings.database_path)
    if settings.database_url is None and not await asyncio.to_thread(path.exists):
        findings.append(
            warning(
                "database",
                f"{where} does not exist yet: `fluxcord migrate` or the first start creates it",
            )
        )
        return findings, None
    try:
        db = await open_database(settings.database_target, migrate=False)
    except StartupError as exc:  # unreachable, or a login PostgreSQL refused: one line
        findings.append(problem("database", str(exc)))
        return findings, None
    except Exception as exc:  # e.g. a file that is not an SQLite database
        findings.append(problem("database", f"{where} cannot be opened ({type(exc).__name__})"))
        return findings, None
    try:
        applied = await _applied_versions(db)
    except Exception as exc:
        await db.close()
        findings.append(problem("database", f"{where} cannot be read ({type(exc).__name__})"))
        return findings, None
    pending = sorted(set(shipped) - applied)
    newer = sorted(applied - set(shipped))
    if newer:
        findings.append(
            problem(
                "database",
                f"{where} has schema {max(applied)}, newer than this release's "
                f"({max(shipped)}): upgrade Fluxcord, or restore the backup taken before the "
                "upgrade",
            )
        )
    elif pending:
        findings.append(
            problem(
                "database",
                f"{where} is at schema {max(applied, default=0)}, this release needs "
                f"{max(shipped)}: run `fluxcord migrate` (the bot also migrates at start)",
            )
        )
    else:
        findings.append(ok("database", f"{where} answers and is migrated (schema {max(shipped)})"))
        return findings, db
    await db.close()
    return findings, None


async def _applied_versions(db: Database) -> set[int]:
    has_record = await db.fetch_value(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        if db.backend == "sqlite"
        else "SELECT 1 FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_name = 'schema_migrations'"
    )
    if not has_record:
        return set()
    return {int(row[0]) for row in await db.fetch_all("SELECT version FROM schema_migrations")}


async def server_settings(db: Database) -> SettingsStore:
    """Every server's settings as the moderators left them (which channels may generate)."""
    store = SettingsStore(
        db, AuditLog(db, audit_channel=lambda guild: None), known_variants=lambda: ()
    )
    await store.load()
    return store


# --------------------------------------------------------------------------- providers
async def provider_findings(settings: Settings) -> list[Finding]:
    """Each key checked once with the clients the bot uses (bot/providers/accounts.py)."""
    providers, keys = build_providers(settings)
    try:
        if not keys:
            return [
                problem(
                    "provider keys",
                    "none of BFL_API_KEY, BFL_API_KEYS and AIML_API_KEY is set: no image "
                    "model is available",
                )
            ]
        low = settings.low_balance_credits
        results = await check_keys(account_keys(settings, keys), low)
    finally:
        for provider in providers.values():
            await provider.aclose()
    findings = []
    for key, status, trouble in results:
        line = describe(key, status, low, trouble)
        check = f"{key.provider.upper()} key"
        if status.state in (KeyState.INVALID, KeyState.EMPTY):
            findings.append(problem(check, line))
        elif status.state in (KeyState.LOW, KeyState.UNREACHABLE):
            findings.append(warning(check, line))
        else:
            findings.append(ok(check, line))
    return findings


# --------------------------------------------------------------------------- webhooks
async def webhook_finding(settings: Settings) -> Finding:
    """Whether WEBHOOK_PUBLIC_URL reaches a Fluxcord: GET <public>/webhooks/bfl/livez, the
    path BFL's deliveries take. When the bot is not running (its port is free), doctor
    listens there itself for the check, so the address and proxy are checked all the same."""
    public = settings.webhook_public_url
    if public is None:
        return ok("webhook", "WEBHOOK_PUBLIC_URL is unset: results are polled (check skipped)")
    url = f"{public}{PUBLIC_LIVEZ_PATH}"
    forward = (
        f"check the address, and that the proxy forwards {WEBHOOK_PATH}/ to "
        f"WEB_HOST:WEB_PORT ({settings.web_host}:{settings.web_port})"
    )
    async with _listening_if_free(settings.web_host, settings.web_port) as own:
        try:
            async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT, follow_redirects=False) as http:
                response = await http.get(url)
        except httpx.HTTPError as exc:
            return problem(
                "webhook",
                f"WEBHOOK_PUBLIC_URL does not reach Fluxcord: GET {url} failed "
                f"({type(exc).__name__}): {forward}",
            )
    try:
        body = response.json()
    except ValueError:
        body = None
    if (
        response.status_code == 200
        and isinstance(body, dict)
        and body.get("service") == SERVICE_NAME
    ):
        who = "this doctor (the bot is not running)" if own else f"Fluxcord {body.get('version')}"
        return ok("webhook", f"{url} reaches {who}")
    return problem(
        "webhook",
        f"WEBHOOK_PUBLIC_URL does not reach Fluxcord: GET {url} answered HTTP "
        f"{response.status_code}, not Fluxcord: {forward}",
    )


@contextlib.asynccontextmanager
async def _listening_if_free(host: str, port: int) -> AsyncIterator[bool]:
    """Answer `/livez` on the bot's address while the block runs, when the bot does not
    hold it (True then); otherwise the running bot answers (False)."""
    if port == 0 or not _free(host, port):
        yield False
        return

    async def livez(request: web.Request) -> web.Response:
        return livez_response()

    app = web.Application()
    app.router.add_get(PUBLIC_LIVEZ_PATH, livez)
    app.router.add_get("/livez", livez)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:  # taken in between: whoever holds it answers
        await runner.cleanup()
        yield False
        return
    try:
        yield True
    finally:
        await runner.cleanup()


def _free(host: str, port: int) -> bool:
    try:
        try_binding(host, port)
    except OSError:
        return False
    return True
