"""Learnt poll timing (bot/jobs/poll_timing.py), on a simulated clock: tasks of known
completion times are "polled" on the schedule the follower would use, and the polls each
needs and how late the poll that saw it ready came are counted."""

from __future__ import annotations

import heapq
import itertools
import random
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bot.catalogue import get_variant
from bot.jobs.following import PollingPolicy
from bot.jobs.models import Job, JobState
from bot.jobs.poll_timing import MAX_CLASSES, RING, TIGHT, PollPlan, PollTiming, timing_class

POLICY = PollingPolicy()  # the settings' defaults: 0.5 s, then 0.5, 0.75, … capped at 4 s
KEY = ("bfl", "pro", 0, 0, 1)


@dataclass(frozen=True)
class Followed:
    """One simulated task: its completion time, the polls it took, and how late the poll
    that saw it ready was (seconds after its completion)."""

    completion: float
    polls: int
    late: float
    learnt: bool  # followed on a learnt plan (not the cold schedule)


def offsets(plan: PollPlan | None) -> Iterator[float]:
    """When the follower polls (seconds since the submit's answer), as following.py does."""
    gaps = POLICY.intervals(POLICY.initial) if plan is None else POLICY.planned(plan.offsets)
    return itertools.accumulate(gaps)


Observation = tuple[float | None, float, float]  # lo, hi, probe: PollTiming.observe's


def follow(timing: PollTiming, completion: float) -> tuple[Followed, Observation]:
    """Plan one task and poll it until ready; the caller reports the observation (at once,
    or when it is seen ready among concurrent tasks)."""
    plan = timing.plan(KEY)
    lo: float | None = None
    for polls, at in enumerate(offsets(plan), start=1):
        if at >= completion:
            task = Followed(completion, polls, at - completion, plan is not None)
            return task, (lo, at, 0.0 if plan is None else plan.probe)
        lo = at
    raise AssertionError("unreachable")


def one_at_a_time(timing: PollTiming, completions: list[float]) -> list[Followed]:
    followed = []
    for completion in completions:
        task, (lo, hi, probe) = follow(timing, completion)
        timing.observe(KEY, lo, hi, probe=probe)
        followed.append(task)
    return followed


def concurrently(
    completion_of: Callable[[int], float], jobs: int, cap: int, timing: PollTiming | None = None
) -> list[Followed]:
    """`cap` tasks at a time, as the engine runs them: a task's observation arrives when it is
    seen ready, and frees its slot for the next task, planned from what is known by then."""
    timing = timing or PollTiming()
    running: list[tuple[float, int, float | None, float, float]] = []
    followed: dict[int, Followed] = {}
    started = 0

    def start(now: float) -> None:
        nonlocal started
        task, (lo, hi, probe) = follow(timing, completion_of(started))
        followed[started] = task
        heapq.heappush(running, (now + hi, started, lo, hi, probe))
        started += 1

    for _ in range(min(cap, jobs)):
        start(0.0)
    while running:
        now, _, lo, hi, probe = heapq.heappop(running)
        timing.observe(KEY, lo, hi, probe=probe)
        if started < jobs:
            start(now)
    return [followed[n] for n in range(jobs)]


def test_no_history_keeps_the_usual_schedule() -> None:
    timing = PollTiming()
    assert timing.plan(KEY) is None
    [task] = one_at_a_time(timing, [1.1])
    assert (task.polls, task.learnt) == (3, False)  # 0.5, 1.0, 1.5: as before


def test_a_fixed_latency_is_learnt_within_a_few_jobs_down_to_one_poll() -> None:
    timing = PollTiming()
    followed = one_at_a_time(timing, [2.7] * 60)
    assert followed[0].polls == 4 and followed[0].late > 0.1  # 0.5, 1, 1.75, 2.875
    settled = followed[10:]
    # Only the occasional probe for a faster model costs a second poll.
    assert max(task.polls for task in settled) <= 2
    assert sum(task.polls for task in settled) <= len(settled) * 1.2
    assert max(task.late for task in settled) <= TIGHT + 0.01


def test_concurrent_waves_learn_from_each_other() -> None:
    """24 at a time (the bench's cap): the first wave has no history; the next waves probe
    different points of what is not yet known, so the third is already settled."""
    for latency in (0.37, 1.1, 2.7, 7.3):
        followed = concurrently(lambda _: latency, jobs=240, cap=24)  # noqa: B023
        warm = followed[48:]
        assert statistics.mean(task.polls for task in warm) <= 1.3, latency
        assert max(task.polls for task in warm) <= 3, latency
        assert statistics.median(task.late for task in warm) <= 0.02, latency
        assert statistics.median(task.late for task in followed[:24]) > 0.1  # cold: as before


def test_a_jittered_latency_stays_within_three_polls_mostly_and_is_seen_earlier() -> None:
    rng = random.Random(5)
    followed = concurrently(lambda _: 2.7 * rng.uniform(0.9, 1.1), jobs=480, cap=24)
    warm = followed[48:]
    assert statistics.mean(task.polls for task in warm) <= 3
    assert sum(task.polls > 4 for task in warm) <= len(warm) * 0.05
    # The usual schedule polls at 2.875 and 4.5625 around 2.7 s: about 0.5 s late.
    cold_late = statistics.median(task.late for task in followed[:24])
    assert statistics.median(task.late for task in warm) < min(0.2, cold_late / 2)


def test_a_model_that_becomes_slower_is_followed() -> None:
    timing = PollTiming()
    one_at_a_time(timing, [1.0] * 30)
    slower = one_at_a_time(timing, [1.5] * 40)
    assert slower[0].polls >= 4  # the plan's polls, then the growing schedule found it
    settled = slower[RING + 8 :]
    assert max(task.late for task in settled) <= TIGHT + 0.01
    assert sum(task.polls for task in settled) <= len(settled) * 1.3


def test_a_model_that_becomes_faster_is_followed() -> None:
    timing = PollTiming()
    one_at_a_time(timing, [2.7] * 30)
    faster = one_at_a_time(timing, [1.5] * 60)
    assert faster[0].late > 1.0  # still polled at the old time
    settled = faster[30:]
    assert max(task.late for task in settled) <= TIGHT + 0.01
    assert sum(task.polls for task in settled) <= len(settled) * 1.3


def test_memory_is_bounded_per_class_and_in_classes() -> None:
    timing = PollTiming()
    rng = random.Random(1)
    for _ in range(5_000):
        timing.observe(KEY, rng.uniform(0, 1), rng.uniform(1, 2))
        timing.plan(KEY)
    state = timing._classes[KEY]
    assert len(state._his) == len(state._los) == len(state._lo_seen) == RING
    for n in range(MAX_CLASSES * 3):
        timing.observe(("bfl", "flex", n, 0, 1), None, 1.0)
        timing.plan(KEY)  # in use all along: kept
    assert len(timing) == MAX_CLASSES
    assert timing.plan(KEY) is not None
    assert timing.plan(("bfl", "flex", 0, 0, 1)) is None  # the least recently used: forgotten


def test_a_class_is_key_model_size_references_and_images() -> None:
    def job(
        prompt: str = "a cat",
        key: str | None = "bfl:key-a",
        variant: str = "pro",
        references: int = 0,
        **validate: object,
    ) -> Job:
        params = get_variant(variant).validate(prompt, seed=1, **validate)
        return Job(
            id="j", created_at=0, updated_at=0, guild_id=1, channel_id=1, user_id=1,
            variant=variant, provider="bfl", params=params, parent_job_id=None,
            state=JobState.SUBMITTED, status_message_id=None, result_message_id=None,
            provider_task_id="t", polling_url=None, provider_status=None, estimated_cost=0,
            cost=None, result_seed=None, result_width=None, result_height=None, error=None,
            submitted_at=0, ready_at=None, finished_at=None, closed=False,
            reference_count=references, provider_key=key,
        )  # fmt: skip

    same = timing_class(job())
    assert timing_class(job("a dog")) == same
    assert timing_class(job(width=1024, height=1024)) == timing_class(job(width=1024, height=992))
    different = [
        job(key="bfl:key-b"),
        job(variant="klein-4b"),
        job(width=2048, height=2048),
        job(references=2),
    ]
    assert len({same, *(timing_class(other) for other in different)}) == 5


def test_a_plan_continues_with_the_growing_schedule() -> None:
    gaps = POLICY.planned((1.0, 1.2, 1.3))
    assert [round(gap, 3) for gap in itertools.islice(gaps, 7)] == [
        1.0, 0.2, 0.1, 0.5, 0.75, 1.125, 1.688,
    ]  # fmt: skip


def test_every_plan_polls_at_increasing_times_whatever_was_seen() -> None:
    rng = random.Random(3)
    timing = PollTiming()
    for _ in range(2_000):
        hi = rng.choice([0.0, 0.001, rng.uniform(0, 0.1), rng.uniform(0, 20)])
        lo = rng.choice([None, hi * rng.random()])
        timing.observe(KEY, lo, hi, probe=rng.choice([0.0, 0.03, 1.0]))
        plan = timing.plan(KEY)
        assert plan is not None and plan.offsets[0] >= 0
        assert all(b > a for a, b in itertools.pairwise(plan.offsets)), plan
