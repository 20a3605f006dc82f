"""The owner's bot-wide defaults and blocks on a real store (SQLite or PostgreSQL): stored,
applied at once to the ledger (allowances and the bot-wide budget), skipped when the rules
no longer accept them, and, on PostgreSQL, reaching another process without a restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack

import pytest

from bot.errors import InvalidRequest
from bot.invalidation import Cache, SharedCaches
from bot.ledger import BotBudgetSpent, Ledger, Metric, QuotaExceeded, QuotaPolicy
from bot.operator import BotDefaults, GlobalBlocks
from bot.operator.blocks import BlockedEverywhere
from bot.periods import Period
from bot.settings import Settings
from bot.storage.db import Database, open_database
from tests.e2e.fleet import wait_until
from tests.postgres_fixtures import DsnFactory, on_postgres
from tests.postgres_server import PostgresServer

GUILD, USER, OWNER = 42, 7, 1


def base_settings(**values: object) -> Settings:
    return Settings(discord_token="token", bfl_api_key="key", **values)  # type: ignore[arg-type]


async def wired(db: Database, settings: Settings) -> tuple[BotDefaults, Ledger]:
    """The defaults applied to a ledger, as build_services wires them."""
    ledger = Ledger(db, QuotaPolicy.from_settings(settings))
    defaults = BotDefaults(db, settings)

    async def apply(effective: Settings) -> None:
        await ledger.apply_policy(QuotaPolicy.from_settings(effective))

    defaults.on_apply(apply)
    await defaults.load()
    return defaults, ledger


async def test_the_owners_defaults_hold_at_once_and_after_a_restart(db: Database) -> None:
    settings = base_settings(default_user_daily_credits=50)
    defaults, ledger = await wired(db, settings)
    await ledger.budget.start()
    try:
        await ledger.check(GUILD, USER, (), credits=5, images=1)  # no bot-wide cap yet
        await defaults.set(OWNER, "bot_monthly_credits", "3")
        with pytest.raises(BotBudgetSpent):
            await ledger.check(GUILD, USER, (), credits=5, images=1)
        await defaults.set(OWNER, "DEFAULT_USER_DAILY_IMAGES", "0")
        with pytest.raises(QuotaExceeded):
            await ledger.check(GUILD, USER, (), credits=1, images=1)
        with pytest.raises(InvalidRequest, match="QUOTA_RESET_TIME can't be changed here"):
            await defaults.set(OWNER, "quota_reset_time", "01:00")
        shown = {value.name: value for value in defaults.shown()}
        assert shown["default_user_daily_images"].source == "set by the owner"
        assert shown["default_user_daily_images"].set_by == OWNER
        assert shown["default_user_daily_credits"].source == "environment"
        assert shown["default_guild_daily_credits"].source == "built-in default"
    finally:
        await ledger.budget.stop()

    # Another start of the bot: the owner's values are read back and in force.
    _, restarted = await wired(db, settings)
    assert restarted.policy.bot_monthly_mc == 3000
    assert await defaults.reset(OWNER, "bot_monthly_credits")
    assert defaults.effective.bot_monthly_credits is None


async def test_a_stored_default_the_rules_no_longer_accept_is_skipped(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # Stored while the AI/ML API was configured; this start has only BFL.
    await db.execute(
        "INSERT INTO bot_defaults (name, value, updated_by, updated_at) VALUES (?,?,?,?)",
        ("default_variant", "dev", OWNER, 0.0),
    )
    caplog.set_level(logging.WARNING, logger="bot.operator.defaults")
    defaults, _ = await wired(db, base_settings())
    assert defaults.effective.default_variant == "pro"
    [shown] = [v for v in defaults.shown() if v.name == "default_variant"]
    assert (shown.value, shown.source) == ("pro", "built-in default")
    assert "the owner's DEFAULT_VARIANT is not applied: DEFAULT_VARIANT=dev needs" in caplog.text


@pytest.mark.skipif(not on_postgres(), reason="several processes need PostgreSQL")
async def test_the_owners_change_in_one_process_reaches_the_other(
    postgres_dsn_factory: DsnFactory, postgres_server: PostgresServer
) -> None:
    dsn = postgres_dsn_factory()
    settings = base_settings()
    # Stopping the caches cancels a reload that may still be reading (the first one).
    with postgres_server.expect_error("canceling statement due to user request"):
        await _two_processes(dsn, settings)


async def _two_processes(dsn: str, settings: Settings) -> None:
    async with AsyncExitStack() as stack:
        processes = []
        reloaded = {Cache.GLOBAL_BLOCKS: asyncio.Event(), Cache.BOT_DEFAULTS: asyncio.Event()}
        for index in range(2):
            db = await open_database(dsn)
            stack.push_async_callback(db.close)
            blocks = GlobalBlocks(db)
            await blocks.load()
            defaults, ledger = await wired(db, settings)
            caches = SharedCaches(db)
            if index == 1:  # the other process: say when its caches reload
                for cache, load in (
                    (Cache.GLOBAL_BLOCKS, blocks.load),
                    (Cache.BOT_DEFAULTS, defaults.load),
                ):
                    caches.register(cache, _signalling(load, reloaded[cache]))
            await caches.start()
            stack.push_async_callback(caches.stop)
            processes.append((db, blocks, defaults, ledger))
        (_, blocks_a, defaults_a, _), (db_b, blocks_b, _, ledger_b) = processes
        await wait_until(lambda: _listening(db_b), 10, "the second process to LISTEN")

        await defaults_a.set(OWNER, "default_user_daily_images", "0")
        await blocks_a.block(OWNER, USER, "spam")
        # A reload that started before the change (the periodic one, at start) may finish
        # after it: wait for one that read it, not for any reload.
        await _reloaded_until(reloaded[Cache.BOT_DEFAULTS], lambda: _refuses(ledger_b))
        await _reloaded_until(
            reloaded[Cache.GLOBAL_BLOCKS], lambda: blocks_b.block_of(USER) is not None
        )
        with pytest.raises(QuotaExceeded):
            await ledger_b.check(GUILD, USER + 1, (), credits=1, images=1)
        with pytest.raises(BlockedEverywhere):
            blocks_b.check(USER)


def _refuses(ledger: Ledger) -> bool:
    return ledger.policy.user[(Period.DAY, Metric.IMAGES)] == 0


async def _reloaded_until(event: asyncio.Event, done: Callable[[], bool]) -> None:
    """Wait through the other process's reloads until one has brought the change."""
    async with asyncio.timeout(5):
        while not done():
            event.clear()
            await event.wait()


def _signalling(load, event: asyncio.Event):  # type: ignore[no-untyped-def]
    async def reload() -> None:
        await load()
        event.set()

    return reload


async def _listening(db: Database) -> bool:
    """Whether the process's LISTEN connection is registered with the server."""
    pid = getattr(db, "listener").backend_pid  # noqa: B009 - PostgreSQL only
    if pid is None:
        return False
    query = await db.fetch_value("SELECT query FROM pg_stat_activity WHERE pid = ?", (pid,))
    return bool(query) and "LISTEN" in str(query).upper()
