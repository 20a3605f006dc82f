"""Learnt poll timing through the real engine and the BFL stand-in: after a couple of waves
a task is polled about once, just after it is done, instead of on the fixed schedule."""

from __future__ import annotations

import statistics

from bot.jobs.following import PollingPolicy
from bot.jobs.models import JobState
from bot.storage.db import Database
from tests.conftest import EngineFactory, make_request
from tests.fakes.bfl_server import FakeBFL
from tests.fakes.notifier import RecordingNotifier
from tests.integration.test_engine_webhooks import build_rig

CAP = 6
JOBS = 5 * CAP


async def test_a_latency_off_the_schedule_is_learnt_down_to_about_one_poll(
    make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    # The usual schedule polls at 0.5 s and 1 s after the submit: a 0.6 s task takes two
    # polls every time, and is seen ready up to 0.4 s after it was.
    fake_bfl.latency = 0.6
    engine = await make_engine(max_active=CAP, polling=PollingPolicy())
    jobs = [(await engine.accept(make_request(f"wave {n}")))[0] for n in range(JOBS)]
    closed = await engine.wait_closed([job.id for job in jobs], 60)

    assert {job.state for job in closed} == {JobState.DELIVERED}
    for submission in fake_bfl.submissions:
        task_id = submission.task_id or ""
        job_id = next(job.id for job in closed if job.provider_task_id == task_id)
        shown = notifier.outcome(job_id)
        assert shown is not None and shown.images == [fake_bfl.image_bytes(task_id)]
    tasks = sorted(fake_bfl.tasks.values(), key=lambda task: task.created_at)
    assert all(task.first_final_poll_at is not None for task in tasks)
    warm = tasks[2 * CAP :]  # the first wave had no history, the second refined it
    assert max(task.polls for task in warm) <= 3
    assert statistics.mean(task.polls for task in warm) <= 1.5
    assert engine.stats.polls == sum(task.polls for task in tasks)


async def test_with_webhooks_polls_stay_a_safety_net_after_the_grace(
    db: Database, fake_bfl: FakeBFL
) -> None:
    """A lost webhook: the task is polled once the grace is over, however many tasks of the
    kind went before (what was learnt without webhooks would poll far sooner)."""
    fake_bfl.webhook_mode = "drop"
    grace = 0.3
    async for rig in build_rig(db, fake_bfl, grace=grace):
        for n in range(4):
            job, _ = await rig.engine.accept(make_request(f"hook lost {n}"))
            [final] = await rig.engine.wait_closed([job.id], 5)
            assert final.state is JobState.DELIVERED
        for task in fake_bfl.tasks.values():
            assert task.polls == 1
            assert task.turnaround is not None and task.turnaround >= grace
