"""One clock for the fleet: a process whose own clock is 15 minutes off still erases only
expired interaction tokens, keeps its requests in their place in the queue, and counts
reservations in the allowance window the database's clock says.

Each test has two processes on one store: a correct one, and one built as the bot builds its
own (`DatabaseClock`) whose wall clock is skewed: fast, and in a second run slow.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest

from bot.jobs.engine import JobEngine
from bot.jobs.models import GenerationRequest, InteractionToken, Job
from bot.jobs.store import JobStore
from bot.ledger import Ledger, Metric, Period, QuotaExceeded, QuotaPolicy, ResetSchedule
from bot.ledger.policy import unlimited_limits
from bot.providers.bfl import BFLClient
from bot.storage.base import DATABASE_NOW
from bot.storage.clock import DatabaseClock
from bot.storage.db import Database
from tests.conftest import BFL_KEY, make_request
from tests.fakes.bfl_server import FakeBFL
from tests.fakes.notifier import RecordingNotifier

SKEW = 15 * 60.0
TOKEN_LIFETIME = 15 * 60.0

SkewedProcess = Callable[[QuotaPolicy | None], Awaitable[JobEngine]]


@pytest.fixture(params=[SKEW, -SKEW], ids=["15-minutes-fast", "15-minutes-slow"])
def skew(request: pytest.FixtureRequest) -> float:
    return float(request.param)


@pytest.fixture
async def skewed_process(
    db: Database, fake_bfl: FakeBFL, skew: float
) -> AsyncIterator[SkewedProcess]:
    """Starts the skewed process's engine (its token sweep runs at once). Its BFL key has
    room for no task, so the queue stays as it is."""
    built: list[tuple[JobEngine, BFLClient]] = []

    async def build(policy: QuotaPolicy | None) -> JobEngine:
        clock = DatabaseClock(db, wall=lambda: time.time() + skew)
        client = BFLClient(BFL_KEY, fake_bfl.base_url, allow_loopback=True)
        engine = JobEngine(
            db,
            {"bfl": client},
            RecordingNotifier(),
            max_active=0,
            clock=clock,
            ledger=Ledger(db, policy, clock=clock),
        )
        built.append((engine, client))
        await engine.start()
        return engine

    yield build
    for engine, client in built:
        await engine.stop()
        await client.aclose()


def correct_process(db: Database, policy: QuotaPolicy | None = None) -> JobStore:
    """Another process, whose clock is right: it only writes jobs (and reservations)."""
    return JobStore(db, time.time, ledger=Ledger(db, policy, clock=time.time))


async def database_now(db: Database) -> float:
    return float(await db.fetch_value(f"SELECT {DATABASE_NOW[db.backend]}"))


async def stored_token(db: Database, job: Job) -> str | None:
    token: str | None = await db.fetch_value(
        "SELECT interaction_token FROM jobs WHERE id = ?", (job.id,)
    )
    return token


def with_token(request: GenerationRequest, token: str, expires_at: float) -> GenerationRequest:
    return replace(request, interaction=InteractionToken(token, expires_at))


async def test_the_token_sweep_erases_only_expired_tokens(
    db: Database, skewed_process: SkewedProcess
) -> None:
    other = correct_process(db)
    now = await database_now(db)
    # Received 10 minutes ago (5 left), and 16 minutes ago (expired a minute ago).
    live = await other.create(
        with_token(make_request("live", user_id=1), "live-token", now - 600 + TOKEN_LIFETIME),
        estimated_cost=1,
    )
    gone = await other.create(
        with_token(make_request("gone", user_id=2), "gone-token", now - 960 + TOKEN_LIFETIME),
        estimated_cost=1,
    )
    await skewed_process(None)  # its sweep runs as it starts
    for _ in range(500):
        if await stored_token(db, gone) is None:
            break
        await asyncio.sleep(0.01)
    assert await stored_token(db, gone) is None  # the sweep ran, and erased the expired one
    assert await stored_token(db, live) == "live-token"


async def test_a_request_keeps_its_place_in_the_queue(
    db: Database, skewed_process: SkewedProcess
) -> None:
    other = correct_process(db)
    skewed = await skewed_process(None)
    # Two processes' readings of the database clock agree to within half a round trip, so
    # requests closer together than that may be ordered either way; a real 0.3 s apart, they
    # are not, while a skew of 15 minutes would put the second first or last.
    first = await other.create(make_request("first", user_id=1), estimated_cost=1)
    await asyncio.sleep(0.3)
    second, _ = await skewed.accept(make_request("second", user_id=2))
    await asyncio.sleep(0.3)
    third = await other.create(make_request("third", user_id=3), estimated_cost=1)
    places = [await skewed.queue_position(job) for job in (first, second, third)]
    assert places == [1, 2, 3]


async def test_a_reservation_counts_in_the_window_the_database_is_in(
    db: Database, skewed_process: SkewedProcess, skew: float
) -> None:
    """Allowances reset minutes from now (fast) or reset minutes ago (slow): the skewed
    process's own clock would put its reservation across that reset."""
    now = await database_now(db)
    reset = dt.datetime.fromtimestamp(now + (450 if skew > 0 else -450), dt.UTC)
    policy = QuotaPolicy(
        ResetSchedule(dt.time(reset.hour, reset.minute, tzinfo=dt.UTC)),
        user={**unlimited_limits(), (Period.DAY, Metric.IMAGES): 1},
        guild=unlimited_limits(),
    )
    other = correct_process(db, policy)
    await other.create(make_request("today's one", user_id=7), estimated_cost=1)
    skewed = await skewed_process(policy)
    with pytest.raises(QuotaExceeded):
        await skewed.accept(make_request("one more", user_id=7))
    assert await db.fetch_value("SELECT COUNT(*) FROM ledger WHERE user_id = 7") == 1
