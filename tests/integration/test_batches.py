"""Batches (several images per prompt) in the core: created all or none, each job run and
settled alone, and shown exactly once, whichever engine's ending completes the batch. Runs on
SQLite and (FLUXCORD_TEST_DATABASE=postgres) on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace

import pytest

from bot.jobs.models import Job, JobState
from bot.jobs.store import JobStore
from bot.ledger import Ledger, Metric, Period, QuotaExceeded, QuotaPolicy, unlimited_limits
from bot.providers.base import OutputImage
from bot.storage.db import Database
from tests.conftest import EngineFactory, make_request
from tests.fakes.bfl_server import FakeBFL, Outcome
from tests.fakes.notifier import RecordingNotifier, ShownMessage


class GridNotifier(RecordingNotifier):
    """Records batches as one message each (keyed by their first job, like Discord's nonce)."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_calls = 0
        self.entered = asyncio.Event()
        self.both_entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def batch_progress(self, jobs: list[Job], *, queue_position: int | None) -> None:
        self.progress.append((jobs[0].id, "batch", queue_position))

    async def batch_delivered(
        self, jobs: list[Job], images: Mapping[str, list[OutputImage]]
    ) -> int:
        self.batch_calls += 1
        self.entered.set()
        if self.batch_calls == 2:
            self.both_entered.set()
        await self.gate.wait()
        data = [image.data for job in jobs for image in images.get(job.id, [])]
        shown = ShownMessage(jobs[0].id, "grid", jobs[0].prompt, data)
        return await self._show(jobs[0], shown)


async def ready_batch(engine_store: JobStore, count: int) -> list[Job]:
    """A batch whose jobs are all ready (images stored and charged), not yet shown."""
    lead = await engine_store.create(
        replace(make_request("grid", seed=10), batch_size=count), estimated_cost=1
    )
    assert lead.batch_id is not None
    jobs = await engine_store.batch(lead.batch_id)
    for job in jobs:
        await engine_store.transition(job.id, from_states=(JobState.QUEUED,), to=JobState.SUBMITTED)
        image = OutputImage("image/png", 8, 8, f"image {job.batch_index}".encode())
        await engine_store.mark_ready(job.id, [image], seed=job.params.seed, cost=1.5)
    return await engine_store.batch(lead.batch_id)


async def test_a_batch_is_created_whole_with_a_seed_each(
    db: Database, make_engine: EngineFactory
) -> None:
    engine = await make_engine(start=False)
    lead = await engine.store.create(
        replace(make_request("four", seed=2**32 - 2), batch_size=4), estimated_cost=2
    )
    jobs = await engine.store.batch(lead.id)
    assert [job.batch_index for job in jobs] == [0, 1, 2, 3]
    assert [job.params.seed for job in jobs] == [2**32 - 2, 2**32 - 1, 0, 1]  # wrapped
    assert {job.batch_id for job in jobs} == {lead.id}
    reserved = await db.fetch_all("SELECT reserved_mc FROM ledger")
    assert [row["reserved_mc"] for row in reserved] == [2000] * 4


async def test_a_batch_that_does_not_fit_creates_nothing(db: Database) -> None:
    limits = {**unlimited_limits(), (Period.DAY, Metric.IMAGES): 3}
    ledger = Ledger(db, QuotaPolicy(user=limits))
    store = JobStore(db, lambda: 1_700_000_000.0, ledger=ledger)
    with pytest.raises(QuotaExceeded):
        await store.create(replace(make_request("four"), batch_size=4), estimated_cost=1)
    assert await db.fetch_value("SELECT count(*) FROM jobs") == 0
    assert await db.fetch_value("SELECT count(*) FROM ledger") == 0


async def test_two_engines_completing_one_batch_at_once_show_it_once(
    db: Database, make_engine: EngineFactory
) -> None:
    notifier = GridNotifier()
    first = await make_engine(start=False, job_notifier=notifier)
    second = await make_engine(start=False, job_notifier=notifier)
    jobs = await ready_batch(first.store, 3)
    closed: list[str] = []
    for engine in (first, second):
        engine.on_job_closed(lambda job: closed.append(job.id))

    notifier.gate.clear()  # both endings read the batch complete before either posts it
    one = asyncio.create_task(first.delivery.batches.ended(jobs[0]))
    await notifier.entered.wait()
    two = asyncio.create_task(second.delivery.batches.ended(jobs[2]))
    await asyncio.wait_for(notifier.both_entered.wait(), 5)
    notifier.gate.set()
    await asyncio.gather(one, two)

    [message] = notifier.messages.values()  # one message, written twice at most
    assert message.images == [b"image 0", b"image 1", b"image 2"]
    final = await first.store.batch(jobs[0].id)
    assert [job.state for job in final] == [JobState.DELIVERED] * 3
    assert len({job.result_message_id for job in final}) == 1
    assert sorted(closed) == sorted(job.id for job in jobs)  # each closed exactly once
    charged = await db.fetch_all("SELECT status, charged_mc FROM ledger")
    assert [(row["status"], row["charged_mc"]) for row in charged] == [("charged", 1500)] * 3


async def test_a_batch_runs_as_separate_tasks_and_a_moderated_one_is_refunded_alone(
    db: Database, make_engine: EngineFactory, fake_bfl: FakeBFL
) -> None:
    fake_bfl.script_task("cats", 11, Outcome(final_status="Request Moderated"))
    notifier = GridNotifier()
    engine = await make_engine(job_notifier=notifier)
    lead, _ = await engine.accept(replace(make_request("cats", seed=10), batch_size=3))
    jobs = await engine.store.batch(lead.id)
    final = await engine.wait_closed([job.id for job in jobs], 10)
    assert [job.state for job in final] == [
        JobState.DELIVERED,
        JobState.MODERATED,
        JobState.DELIVERED,
    ]
    assert sorted(s.body["seed"] for s in fake_bfl.submissions) == [10, 11, 12]
    assert notifier.batch_calls == 1 and len(notifier.messages) == 1
    statuses = await db.fetch_all(
        "SELECT l.status FROM ledger l JOIN jobs j ON j.id = l.job_id ORDER BY j.batch_index"
    )
    assert [row["status"] for row in statuses] == ["charged", "refunded", "charged"]
