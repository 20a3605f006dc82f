"""A database outage never strands a job (issue 21, item 1).

Jobs are at BFL when the database stops answering: SQLite because another connection holds
an exclusive lock past the busy timeout, PostgreSQL because its server is stopped, or
restarted. Their images are made (and downloaded) during the outage. Without a restart,
every job must then be shown exactly once, charged exactly, with no provider slot left
taken, and the log must say "not answering" once and "answers again" once, with no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.jobs.claims import ClaimRound
from bot.jobs.engine import JobEngine
from bot.jobs.models import Job, JobState
from bot.providers.bfl import BFLClient
from bot.storage import sqlite as sqlite_storage
from bot.storage.db import Database, open_database
from tests.conftest import BFL_KEY, FAST_POLLING, make_request
from tests.fakes.bfl_server import FakeBFL
from tests.fakes.notifier import RecordingNotifier
from tests.postgres_server import PostgresServer, find_binaries

JOBS = 3
Outage = Callable[[], contextlib.AbstractAsyncContextManager[None]]


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float, what: str) -> None:
    """Wait for a condition the system reaches by itself (checked every 20 ms)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def engine_on(
    db: Database, fake: FakeBFL, notifier: RecordingNotifier
) -> AsyncIterator[JobEngine]:
    client = BFLClient(BFL_KEY, fake.base_url, backoff_base=0.01, allow_loopback=True)
    engine = JobEngine(db, {"bfl": client}, notifier, polling=FAST_POLLING, lease_seconds=60)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()
        await client.aclose()


async def ride_out(
    db: Database,
    outage: Outage,
    notifier: RecordingNotifier,
    caplog: pytest.LogCaptureFixture,
    *,
    expect_outage: bool = True,
) -> None:
    """Three jobs at BFL, an outage while their images are made and fetched, then the end."""
    caplog.set_level(logging.INFO)
    async with (
        FakeBFL(api_key=BFL_KEY, latency=0.3) as fake,
        engine_on(db, fake, notifier) as engine,
    ):
        jobs = [(await engine.accept(make_request(f"outage {i}")))[0] for i in range(JOBS)]
        await eventually(lambda: len(fake.tasks) == JOBS, 10, "every job submitted")
        await eventually(lambda: all_in(db, jobs, JobState.SUBMITTED), 10, "every submit recorded")
        async with outage():
            # Every image is made and downloaded while the database is out: each job is now
            # waiting to store its result.
            await eventually(
                lambda: all(fake.downloads[task] for task in fake.tasks), 20, "every download"
            )
            if expect_outage:
                await eventually(lambda: db.outage.down, 20, "the engine to meet the outage")
        final = await engine.wait_closed([job.id for job in jobs], 60)

    assert [job.state for job in final] == [JobState.DELIVERED] * JOBS
    assert notifier.deliver_calls == {job.id: 1 for job in jobs}  # each shown exactly once
    rows = await db.fetch_all(
        "SELECT status, charged_mc FROM ledger WHERE job_id IN (?, ?, ?) ORDER BY job_id",
        [job.id for job in jobs],
    )
    assert [tuple(row) for row in rows] == [("charged", 3000)] * JOBS
    assert await db.fetch_value("SELECT COUNT(*) FROM jobs WHERE slot IS NOT NULL") == 0
    assert await db.fetch_value("SELECT COUNT(*) FROM jobs WHERE closed = 0") == 0
    said = [record.getMessage() for record in caplog.records if record.name == "bot.storage"]
    # One line when it begins and one when it ends. (A quick restart may pass unnoticed:
    # the pool replaces the cut connections before anything fails.)
    outages = sum("is not answering" in line for line in said)
    assert outages == 1 if expect_outage else outages <= 1, said
    assert sum("answers again" in line for line in said) == outages, said
    tracebacks = [r for r in caplog.records if r.exc_info and r.levelno >= logging.WARNING]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]


async def all_in(db: Database, jobs: list[Job], state: JobState) -> bool:
    ids = [job.id for job in jobs]
    states = await db.fetch_all(
        f"SELECT state FROM jobs WHERE id IN ({','.join('?' for _ in ids)})", ids
    )
    return [row[0] for row in states] == [state.value] * len(ids)


# --------------------------------------------------------------------------- SQLite
async def test_sqlite_a_lock_held_past_the_busy_timeout_strands_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    notifier: RecordingNotifier,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sqlite_storage, "BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "outage.sqlite3"
    db = await open_database(path)

    @contextlib.asynccontextmanager
    async def exclusive_lock() -> AsyncIterator[None]:
        # Another program (a backup tool, sqlite3 at a prompt) holds the write lock.
        taken, release = threading.Event(), threading.Event()

        def hold() -> None:
            other = sqlite3.connect(path, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
            taken.set()
            release.wait()
            other.execute("ROLLBACK")
            other.close()

        holder = asyncio.create_task(asyncio.to_thread(hold))
        await asyncio.to_thread(taken.wait)
        try:
            yield
        finally:
            release.set()
            await holder

    try:
        await ride_out(db, exclusive_lock, notifier, caplog)
    finally:
        await db.close()


# --------------------------------------------------------------------------- PostgreSQL
@pytest.fixture
def own_postgres() -> Any:
    """A server of this test's own, to stop and restart (the session's is shared)."""
    binaries = find_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed")
    server = PostgresServer(binaries)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("how", ["stopped for a while", "restarted"])
async def test_postgres_an_outage_strands_nothing(
    how: str,
    own_postgres: PostgresServer,
    notifier: RecordingNotifier,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = await open_database(own_postgres.fresh_database("outage"))

    @contextlib.asynccontextmanager
    async def server_down() -> AsyncIterator[None]:
        # `pg_ctl stop -m fast`: every session is cut, then nothing answers until it is back.
        await asyncio.to_thread(own_postgres.halt, "fast")
        try:
            yield
        finally:
            await asyncio.to_thread(own_postgres.resume_serving)

    @contextlib.asynccontextmanager
    async def server_restarted() -> AsyncIterator[None]:
        # `pg_ctl restart -m fast` as the outage begins: sessions are cut, the server is back
        # at once, and the engine's next writes meet fresh connections.
        await asyncio.to_thread(own_postgres.halt, "fast")
        await asyncio.to_thread(own_postgres.resume_serving)
        yield

    try:
        stopped = how == "stopped for a while"
        outage = server_down if stopped else server_restarted
        await ride_out(db, outage, notifier, caplog, expect_outage=stopped)
    finally:
        await db.close()


# --------------------------------------------------------------------------- the claim loop
async def test_the_claim_loop_outlives_an_outage_met_between_claims(
    db: Database, notifier: RecordingNotifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen end to end (tests/e2e/test_fleet_database_outage.py): the server stopped just as
    the claim loop, finding nothing to claim, asked whether a key was paused; the loop
    ended, and nothing was claimed again until a restart. (The loop now learns of pauses
    from its claim: the outage is met by the claim itself.)"""
    async with FakeBFL(api_key=BFL_KEY, latency=0.05) as fake:
        client = BFLClient(BFL_KEY, fake.base_url, backoff_base=0.01, allow_loopback=True)
        engine = JobEngine(db, {"bfl": client}, notifier, polling=FAST_POLLING, lease_seconds=60)
        asked = 0
        claim = engine.queue.release_and_claim

        async def unreachable_once(*args: Any, **kwargs: Any) -> ClaimRound:
            nonlocal asked
            asked += 1
            if asked == 1:
                raise ConnectionRefusedError("the database is restarting")
            return await claim(*args, **kwargs)

        monkeypatch.setattr(engine.queue, "release_and_claim", unreachable_once)
        await engine.start()
        try:
            await eventually(lambda: asked >= 1, 5, "the claim loop to meet the outage")
            job, _ = await engine.accept(make_request("after the blip"))
            [final] = await engine.wait_closed([job.id], 10)
            assert final.state is JobState.DELIVERED
        finally:
            await engine.stop()
            await client.aclose()
