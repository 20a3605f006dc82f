"""Crash recovery: a fresh engine on the same database finishes every job exactly once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from bot.jobs.engine import INTERRUPTED_MESSAGE
from bot.jobs.models import JobState
from bot.providers.base import OutputImage
from bot.providers.bfl import BFLClient
from bot.storage.db import Database
from tests.conftest import BFL_KEY, EngineFactory, make_request
from tests.fakes.bfl_server import FakeBFL
from tests.fakes.notifier import RecordingNotifier


async def test_every_saved_state_is_resumed_exactly_once(
    db: Database, make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    """Jobs left in each state by a crash, written the way the engine writes them."""
    dead = await make_engine(start=False)  # only its store is used: the "crashed" process
    store = dead.store
    queued = await store.create(make_request("queued"), estimated_cost=3)
    submitting = await store.create(make_request("submitting"), estimated_cost=3)
    await store.transition(submitting.id, from_states=[JobState.QUEUED], to=JobState.SUBMITTING)

    client = BFLClient(BFL_KEY, fake_bfl.base_url, allow_loopback=True)
    submitted = await store.create(make_request("submitted"), estimated_cost=3)
    request = make_request("submitted")
    task = await client.submit(request.variant, request.params, [], user_id=1)
    await store.transition(submitted.id, from_states=[JobState.QUEUED], to=JobState.SUBMITTING)
    await store.transition(
        submitted.id,
        from_states=[JobState.SUBMITTING],
        to=JobState.SUBMITTED,
        provider_task_id=task.task_id,
        polling_url=task.polling_url,
        submitted_at=time.time(),
    )
    await client.aclose()

    ready = await store.create(make_request("ready"), estimated_cost=3)
    await store.transition(ready.id, from_states=[JobState.QUEUED], to=JobState.SUBMITTED)
    image = OutputImage("image/png", 1, 1, b"\x89PNG ready bytes")
    await store.mark_ready(ready.id, [image], seed=5, cost=3.0)
    # The crash hit after the post but before it was recorded: Discord already shows it.
    await notifier.job_delivered(await store.require(ready.id), [image])

    failed = await store.create(make_request("failed"), estimated_cost=3)
    await store.transition(
        failed.id,
        from_states=[JobState.QUEUED],
        to=JobState.FAILED,
        error="The image service could not make this image.",
    )
    done = await store.create(make_request("done"), estimated_cost=3)
    await store.transition(done.id, from_states=[JobState.QUEUED], to=JobState.READY)
    await store.mark_delivered(done.id, 555)

    submits_before = len(fake_bfl.submissions)
    engine = await make_engine()
    ids = [queued.id, submitting.id, submitted.id, ready.id, failed.id]
    final = {job.id: job for job in await engine.wait_closed(ids, 10)}

    assert final[queued.id].state is JobState.DELIVERED
    assert final[submitted.id].state is JobState.DELIVERED
    assert final[ready.id].state is JobState.DELIVERED
    assert (final[submitting.id].state, final[submitting.id].error) == (
        JobState.FAILED,
        INTERRUPTED_MESSAGE,
    )
    assert final[failed.id].state is JobState.FAILED
    # Only the queued job reached the provider again; the submitting one was never resent.
    assert [s.body["prompt"] for s in fake_bfl.submissions[submits_before:]] == ["queued"]
    # Exactly one visible message per job, with the right bytes.
    for job_id in ids:
        assert len(notifier.shown_for(job_id)) == 1, job_id
    submitted_shown = notifier.outcome(submitted.id)
    assert submitted_shown is not None
    assert submitted_shown.images == [fake_bfl.image_bytes(task.task_id)]
    ready_shown = notifier.outcome(ready.id)
    assert ready_shown is not None and ready_shown.images == [image.data]
    assert done.id not in notifier.deliver_calls and done.id not in notifier.fail_calls
    assert (await engine.store.require(done.id)).result_message_id == 555


async def test_abrupt_stop_mid_run_then_restart_finishes_every_job_once(
    db: Database, make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    fake_bfl.latency = 0.25
    notifier.delivery_delay = 0.05
    first = await make_engine(max_active=6)
    jobs = [(await first.accept(make_request(f"job {n}", user_id=n % 5 + 1)))[0] for n in range(40)]

    seen: set[str] = set()
    for _ in range(400):  # stop when queued, submitted and ready jobs all exist
        rows = await db.fetch_all("SELECT DISTINCT state FROM jobs")
        seen = {row[0] for row in rows}
        if {"queued", "submitted", "ready"} <= seen:
            break
        await asyncio.sleep(0.005)
    await first.stop()  # like a crash: tasks die wherever they are
    assert {"queued", "submitted"} <= seen

    second = await make_engine(max_active=6)
    final = await second.wait_closed([j.id for j in jobs], 30)

    for job in final:
        assert len(notifier.shown_for(job.id)) == 1, job
        assert job.state in (JobState.DELIVERED, JobState.FAILED)
        if job.state is JobState.DELIVERED:
            shown = notifier.outcome(job.id)
            assert shown is not None
            assert shown.images == [fake_bfl.image_bytes(job.provider_task_id or "")]
        else:
            # Only a job caught with its submit in flight may fail, and says why.
            assert job.error == INTERRUPTED_MESSAGE
    accepted = Counter(s.body["prompt"] for s in fake_bfl.submissions if s.status == 200)
    delivered_prompts = {j.prompt for j in final if j.state is JobState.DELIVERED}
    assert all(accepted[p] == 1 for p in delivered_prompts)
    assert sum(j.state is JobState.DELIVERED for j in final) >= 34
