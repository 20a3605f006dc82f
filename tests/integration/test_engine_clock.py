"""Job deadlines run on a monotonic clock: a wall-clock jump neither expires nor extends them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bot.jobs.engine import TIMED_OUT_MESSAGE, JobEngine
from bot.jobs.following import PollingPolicy
from bot.jobs.models import JobState
from bot.providers.bfl import BFLClient
from bot.storage.db import Database
from tests.conftest import BFL_KEY, make_request
from tests.fakes.bfl_server import FakeBFL, Outcome
from tests.fakes.notifier import RecordingNotifier


class JumpingClock:
    """The engine's wall clock, which a test can move by hours at once."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


EngineWithClock = Callable[[PollingPolicy], Awaitable[JobEngine]]


@pytest.fixture
async def clock() -> JumpingClock:
    return JumpingClock()


@pytest.fixture
async def engine_with_clock(
    db: Database, fake_bfl: FakeBFL, notifier: RecordingNotifier, clock: JumpingClock
) -> AsyncIterator[EngineWithClock]:
    built: list[tuple[JobEngine, BFLClient]] = []

    async def build(polling: PollingPolicy) -> JobEngine:
        client = BFLClient(BFL_KEY, fake_bfl.base_url, allow_loopback=True)
        engine = JobEngine(db, {"bfl": client}, notifier, polling=polling, clock=clock)
        built.append((engine, client))
        await engine.start()
        return engine

    yield build
    for engine, client in built:
        await engine.stop()
        await client.aclose()


async def wait_until_submitted(engine: JobEngine, job_id: str) -> None:
    for _ in range(500):
        if (await engine.store.require(job_id)).state is JobState.SUBMITTED:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the job was never submitted")


async def test_a_forward_jump_of_the_wall_clock_does_not_expire_a_running_job(
    engine_with_clock: EngineWithClock, fake_bfl: FakeBFL, clock: JumpingClock
) -> None:
    fake_bfl.script("slow", Outcome(latency=0.5))
    engine = await engine_with_clock(PollingPolicy(initial=0.02, maximum=0.05, deadline=5.0))
    job, _ = await engine.accept(make_request("slow"))
    await wait_until_submitted(engine, job.id)
    clock.offset = 86_400.0  # the wall clock leaps a day ahead while the task runs
    await engine.wait_closed([job.id], 10)
    stored = await engine.store.require(job.id)
    assert (stored.state, stored.error) == (JobState.DELIVERED, None)


async def test_a_backward_jump_of_the_wall_clock_does_not_extend_the_deadline(
    engine_with_clock: EngineWithClock, fake_bfl: FakeBFL, clock: JumpingClock
) -> None:
    fake_bfl.script("stuck", Outcome(final_status="Queued-Weird", latency=0.01))
    engine = await engine_with_clock(PollingPolicy(initial=0.02, maximum=0.05, deadline=0.4))
    job, _ = await engine.accept(make_request("stuck"))
    await wait_until_submitted(engine, job.id)
    started = time.monotonic()
    clock.offset = -86_400.0  # a day back: a wall-clock deadline would wait a day longer
    await engine.wait_closed([job.id], 5)
    stored = await engine.store.require(job.id)
    assert (stored.state, stored.error) == (JobState.FAILED, TIMED_OUT_MESSAGE)
    assert time.monotonic() - started < 2.0


async def test_a_recovered_job_keeps_the_time_it_already_used(
    db: Database,
    fake_bfl: FakeBFL,
    engine_with_clock: EngineWithClock,
    clock: JumpingClock,
) -> None:
    """After a restart the persisted (wall-clock) submit time still counts: a job submitted
    long enough ago times out at once instead of getting a fresh deadline."""
    fake_bfl.script("stuck", Outcome(final_status="Queued-Weird", latency=0.01))
    first = await engine_with_clock(PollingPolicy(initial=0.02, maximum=0.05, deadline=60.0))
    job, _ = await first.accept(make_request("stuck"))
    await wait_until_submitted(first, job.id)
    await first.stop()
    clock.offset = 120.0  # the bot was down for two minutes, past the 60 s deadline
    second = await engine_with_clock(PollingPolicy(initial=0.02, maximum=0.05, deadline=60.0))
    await second.wait_closed([job.id], 5)
    stored = await second.store.require(job.id)
    assert (stored.state, stored.error) == (JobState.FAILED, TIMED_OUT_MESSAGE)
