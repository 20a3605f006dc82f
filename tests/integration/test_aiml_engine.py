"""The AI/ML API through the engine: a synchronous provider with its own cap and recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.jobs.engine import INTERRUPTED_MESSAGE, JobEngine
from bot.jobs.models import JobState
from bot.providers.aiml import AIMLClient
from bot.storage.db import Database
from tests.conftest import FAST_POLLING, make_request
from tests.fakes.aiml_server import FakeAIML
from tests.fakes.notifier import RecordingNotifier

KEY = "test-aiml-key"


@pytest.fixture
async def aiml() -> AsyncIterator[FakeAIML]:
    async with FakeAIML(api_key=KEY, latency=0.05) as fake:
        yield fake


async def request_reached(fake: FakeAIML, within: float = 5.0) -> None:
    """Until the stand-in has a request (it has no event to await)."""
    for _ in range(int(within / 0.01)):
        if fake.requests:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the request never reached the AI/ML API stand-in")


async def started(
    db: Database, fake: FakeAIML, notifier: RecordingNotifier, cap: int = 8
) -> tuple[JobEngine, AIMLClient]:
    client = AIMLClient(KEY, fake.base_url, allow_loopback=True)
    engine = JobEngine(
        db, {"aiml": client}, notifier, polling=FAST_POLLING, max_active={"aiml": cap}
    )
    await engine.start()
    return engine, client


async def test_a_post_in_flight_at_a_crash_fails_and_is_refunded_never_resent(
    db: Database, aiml: FakeAIML
) -> None:
    aiml.latency = 5.0  # the generation is still running when the bot dies
    notifier = RecordingNotifier()
    first, client = await started(db, aiml, notifier)
    job, _ = await first.accept(make_request("slow", variant="dev"))
    await request_reached(aiml)
    await first.stop()
    await client.aclose()
    assert (await first.store.require(job.id)).state is JobState.SUBMITTING

    second, client = await started(db, aiml, notifier)
    try:
        [final] = await second.wait_closed([job.id], 5)
    finally:
        await second.stop()
        await client.aclose()
    assert (final.state, final.error) == (JobState.FAILED, INTERRUPTED_MESSAGE)
    assert len(aiml.requests) == 1
    status = await db.fetch_value("SELECT status FROM ledger WHERE job_id = ?", (job.id,))
    assert status == "refunded"
    shown = notifier.outcome(job.id)
    assert shown is not None and shown.text == INTERRUPTED_MESSAGE


async def test_the_aiml_cap_is_its_own_and_every_job_is_delivered(
    db: Database, aiml: FakeAIML
) -> None:
    aiml.latency = 0.1
    notifier = RecordingNotifier()
    engine, client = await started(db, aiml, notifier, cap=2)
    try:
        jobs = [
            (await engine.accept(make_request(f"n{n}", variant="dev", user_id=n % 3 + 1)))[0]
            for n in range(6)
        ]
        finals = await engine.wait_closed([j.id for j in jobs], 10)
    finally:
        await engine.stop()
        await client.aclose()
    assert {f.state for f in finals} == {JobState.DELIVERED}
    assert aiml.max_active_seen == 2  # our cap for this provider, not BFL's 24
    assert engine.stats.polls == 0  # synchronous: nothing to poll


async def test_a_graceful_stop_lets_a_request_in_flight_come_back_and_be_posted_once(
    db: Database, aiml: FakeAIML
) -> None:
    """SIGTERM (`docker stop`) while the AI/ML API is making an image: the engine claims
    nothing more, waits for the answer, posts it and charges it, then stops."""
    aiml.latency = 0.5
    notifier = RecordingNotifier()
    client = AIMLClient(KEY, aiml.base_url, allow_loopback=True)
    engine = JobEngine(
        db,
        {"aiml": client},
        notifier,
        polling=FAST_POLLING,
        max_active={"aiml": 1},
        shutdown_grace=30,
    )
    await engine.start()
    job, _ = await engine.accept(make_request("in flight", variant="dev"))
    waiting, _ = await engine.accept(make_request("still in line", variant="dev"))
    await request_reached(aiml)
    await engine.stop()
    await client.aclose()

    final = await engine.store.require(job.id)
    assert final.state is JobState.DELIVERED
    assert notifier.deliver_calls == {job.id: 1}
    assert len(aiml.requests) == 1  # the request in line was not sent during the stop
    assert (await engine.store.require(waiting.id)).state is JobState.QUEUED
    row = await db.fetch_one("SELECT status, charged_mc FROM ledger WHERE job_id = ?", (job.id,))
    assert row is not None and row["status"] == "charged" and row["charged_mc"] > 0
