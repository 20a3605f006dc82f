"""Races that only PostgreSQL can lose: its writers run at once under READ COMMITTED, where
SQLite's BEGIN IMMEDIATE queues them. Each race is made deterministic by holding one
transaction open at the decisive point while the other runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.ledger import (
    Ledger,
    Metric,
    Period,
    QuotaExceeded,
    QuotaPolicy,
    ResetSchedule,
    unlimited_limits,
)
from bot.periods import parse_reset_time
from bot.storage.db import Database, Tx, open_database
from tests.postgres_fixtures import DsnFactory

GUILD, ALICE = 42, 1001


@pytest.fixture
async def two_processes(
    postgres_dsn_factory: DsnFactory,
) -> AsyncIterator[tuple[Database, Database]]:
    """Two stores on one PostgreSQL database, as two bot processes would hold them."""
    dsn = postgres_dsn_factory()
    first, second = await open_database(dsn), await open_database(dsn)
    yield first, second
    await first.close()
    await second.close()


def one_image_a_day() -> QuotaPolicy:
    return QuotaPolicy(
        ResetSchedule(parse_reset_time("00:00")),
        user={**unlimited_limits(), (Period.DAY, Metric.IMAGES): 1},
        guild=unlimited_limits(),
    )


async def test_two_reservations_at_the_limit_exactly_one_wins(
    two_processes: tuple[Database, Database],
) -> None:
    first_db, second_db = two_processes
    first, second = Ledger(first_db, one_image_a_day()), Ledger(second_db, one_image_a_day())
    first_reserved, release = asyncio.Event(), asyncio.Event()

    async def reserve(ledger: Ledger, tx: Tx, job_id: str) -> None:
        await ledger.reserve(
            tx, job_id=job_id, guild_id=GUILD, user_id=ALICE, role_ids=(), variant="pro",
            credits=1.0, images=1,
        )  # fmt: skip

    async def held_open(tx: Tx) -> None:
        await reserve(first, tx, "first")
        first_reserved.set()
        await release.wait()  # the reservation is written but not committed yet

    holder = asyncio.create_task(first_db.run(held_open))
    await asyncio.wait_for(first_reserved.wait(), 10)
    contender = asyncio.create_task(second_db.run(lambda tx: reserve(second, tx, "second")))
    await asyncio.sleep(0.3)
    # Without the server's allowance lock the contender would read a usage of 0 (the first
    # reservation is uncommitted) and reserve too: two images on a one-image allowance.
    assert not contender.done(), "the second reservation must wait for the first"
    release.set()
    await asyncio.wait_for(holder, 10)
    with pytest.raises(QuotaExceeded):
        await asyncio.wait_for(contender, 10)
    rows = await first_db.fetch_all("SELECT job_id FROM ledger WHERE user_id = ?", (ALICE,))
    assert [row["job_id"] for row in rows] == ["first"]


async def test_a_refused_reservation_in_a_race_leaves_nothing_behind(
    two_processes: tuple[Database, Database],
) -> None:
    """Twenty members' worth of concurrent reservations from two processes on a one-image
    allowance: exactly one row, whatever the interleaving."""
    first_db, second_db = two_processes
    ledgers = [Ledger(first_db, one_image_a_day()), Ledger(second_db, one_image_a_day())]

    async def attempt(n: int) -> bool:
        ledger = ledgers[n % 2]
        try:
            await ledger.db.run(
                lambda tx: ledger.reserve(
                    tx, job_id=f"job{n}", guild_id=GUILD, user_id=ALICE, role_ids=(),
                    variant="pro", credits=1.0, images=1,
                )
            )  # fmt: skip
        except QuotaExceeded:
            return False
        return True

    results = await asyncio.gather(*(attempt(n) for n in range(20)))
    assert results.count(True) == 1
    assert await first_db.fetch_value("SELECT count(*) FROM ledger") == 1
