"""Following a submitted task to its end: polls on a schedule counted from the submit (just
after tasks of its kind recently ended, once there are some: bot/jobs/poll_timing.py), with
a deadline on the loop's monotonic clock, woken early by a verified webhook (BFL pushes the
result when the receiver is on). Used by the job engine (bot/jobs/engine.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from bot.errors import ProviderAccessDenied, ProviderBusy, ProviderUnavailable
from bot.jobs.models import Job
from bot.jobs.poll_timing import PollTiming, timing_class
from bot.jobs.store import JobStore
from bot.jobs.webhooks import WebhookSubscription, job_id_from_url
from bot.operations.metrics import Metrics
from bot.periodic import repeat
from bot.providers.base import Provider, TaskOutcome, TaskResult

if TYPE_CHECKING:
    from bot.jobs.engine import EngineStats

log = logging.getLogger(__name__)

# Consecutive "Task not found" answers tolerated right after a submit before giving up.
NOT_FOUND_TOLERANCE = 3

_FINAL_OUTCOMES = (TaskOutcome.READY, TaskOutcome.MODERATED, TaskOutcome.FAILED)
# How often an owner looks for recorded webhooks, in case a notification was lost.
RECORDED_WEBHOOK_POLL = 2.0


def result_to_json(result: TaskResult) -> str:
    return json.dumps(
        {
            "outcome": result.outcome.value,
            "raw_status": result.raw_status,
            "sample_urls": list(result.sample_urls),
            "seed": result.seed,
            "cost": result.cost,
            "details": result.details,
            "progress": result.progress,
        }
    )


def result_from_json(text: str) -> TaskResult:
    data = json.loads(text)
    return TaskResult(
        outcome=TaskOutcome(data["outcome"]),
        raw_status=str(data["raw_status"]),
        sample_urls=tuple(data.get("sample_urls") or ()),
        seed=data.get("seed"),
        cost=data.get("cost"),
        details=dict(data.get("details") or {}),
        progress=data.get("progress"),
    )


@dataclass(frozen=True)
class PollingPolicy:
    initial: float = 0.5
    maximum: float = 4.0
    growth: float = 1.5
    deadline: float = 600.0

    def intervals(self, first: float) -> Iterator[float]:
        """first, initial, initial×growth, … capped at maximum."""
        yield first
        yield from self._growing()

    def planned(self, offsets: tuple[float, ...]) -> Iterator[float]:
        """The gaps between a learnt plan's polls (seconds since the submit's answer, see
        bot/jobs/poll_timing.py), then the growing schedule from `initial`."""
        previous = 0.0
        for offset in offsets:
            yield offset - previous
            previous = offset
        yield from self._growing()

    def _growing(self) -> Iterator[float]:
        interval = self.initial
        while True:
            yield interval
            interval = min(self.maximum, interval * self.growth)


class TaskFollower:
    """Implements bot.jobs.webhooks.WebhookTarget for the engine: a verified webhook wakes
    the job's follower."""

    def __init__(
        self,
        store: JobStore,
        polling: PollingPolicy,
        clock: Callable[[], float],
        metrics: Metrics,
        stats: EngineStats,
        *,
        on_status: Callable[[Job], None],
    ) -> None:
        self.store = store
        self._polling = polling
        self._clock = clock
        self.metrics = metrics
        self.stats = stats
        self._on_status = on_status  # the provider's status text changed
        self._wake: dict[str, asyncio.Event] = {}
        self._pushed: dict[str, tuple[str, TaskResult]] = {}
        # Set by the engine: with a shared store a webhook may reach any process, so one
        # for a job followed elsewhere is verified from the database and recorded there.
        self.shared = False
        self.owner: str | None = None
        # The fleet's key for webhook URL tags (bot/jobs/webhooks.py), read at start.
        self.url_key: bytes | None = None
        self._reading: set[str] = set()
        # How long each kind of task took recently, to poll just after it is likely done.
        self.timing = PollTiming()

    def forget_all(self) -> None:
        for job_id in list(self._wake):
            self.forget(job_id)

    def watch(self, job_id: str) -> None:
        """Follow the job: from now on a webhook for it wakes its follower."""
        self._wake.setdefault(job_id, asyncio.Event())

    def forget(self, job_id: str) -> None:
        """The job is no longer followed (a late webhook for it is still verified: its URL
        carries the fleet's tag)."""
        self._wake.pop(job_id, None)
        self._pushed.pop(job_id, None)

    async def webhook_subscription(self, url_id: str) -> WebhookSubscription | None:
        job_id = job_id_from_url(self.url_key, url_id)
        if job_id is None:
            # Not a URL the fleet gave out (job ids alone are public, in every button):
            # refused from memory, so a flood of them costs no database read.
            return None
        job = await self.store.get(job_id)
        if job is not None and job.closed:
            # Ended, its secret erased: still answered, so a late duplicate is not retried.
            return WebhookSubscription(secret=None, task_id=job.provider_task_id)
        if job is None or job.webhook_secret is None:
            return None
        return WebhookSubscription(secret=job.webhook_secret, task_id=job.provider_task_id)

    async def webhook_result(self, url_id: str, task_id: str, result: TaskResult) -> None:
        """A verified delivery (`url_id`: the job id as its webhook URL names it). Only wakes
        the job's follower, whose transitions are
        compare-and-set: a duplicate, a late arrival or a race with a poll delivers once."""
        job_id = job_id_from_url(self.url_key, url_id)
        if job_id is None:
            return  # never verified: the receiver asks `webhook_subscription` first
        event = self._wake.get(job_id)
        if event is None:
            if self.shared and result.outcome in _FINAL_OUTCOMES:
                await self.store.record_webhook(job_id, task_id, result_to_json(result))
            return  # not followed here: finished, a late duplicate, or another's to finish
        self._push(job_id, task_id, result)

    def _push(self, job_id: str, task_id: str, result: TaskResult) -> None:
        event = self._wake.get(job_id)
        if event is None:
            return
        if result.outcome in _FINAL_OUTCOMES or job_id not in self._pushed:
            self._pushed[job_id] = (task_id, result)  # never replace an ending with a hint
        event.set()

    def webhook_recorded(self, job_id: str) -> None:
        """NOTIFY from the process that received the job's webhook (a listener callback)."""
        if job_id in self._wake and job_id not in self._reading:
            self._reading.add(job_id)
            task = asyncio.get_running_loop().create_task(self._read_recorded([job_id]))
            task.add_done_callback(lambda _: self._reading.discard(job_id))

    async def watch_recorded_webhooks(self) -> None:
        """The safety net under NOTIFY: look for recorded webhooks of followed jobs."""

        async def look() -> None:
            if self._wake:
                await self._read_recorded(None)

        await repeat(look, lambda: RECORDED_WEBHOOK_POLL, what="reading recorded webhooks")

    async def _read_recorded(self, job_ids: list[str] | None) -> None:
        if self.owner is None:
            return
        for job_id, task_id, payload in await self.store.recorded_webhooks(self.owner, job_ids):
            if job_id not in self._pushed:
                self._push(job_id, task_id, result_from_json(payload))

    async def outcome(
        self, job: Job, provider: Provider, first_delay: float, since: float | None
    ) -> TaskResult:
        """Wait for the submitted task's final result (or its last "not found"). `since` (loop
        time) is when the provider accepted it: the poll schedule counts from it, and what
        the polls show teaches `timing` when to poll tasks of the kind. Raises
        TimeoutError past the deadline, ProviderAccessDenied as soon as it comes."""
        assert job.provider_task_id is not None
        loop = asyncio.get_running_loop()
        deadline = self._deadline(job, since, loop.time())
        last_status = job.provider_status
        not_found = 0
        poll_at = loop.time() if since is None else since
        # Learnt timing only where polling is the way to the result: counted from a submit
        # seen in this run, and with no webhook on its way (then polls are a safety net and
        # keep today's schedule, which waits out the webhook's grace first).
        timing_key = timing_class(job) if since is not None and job.webhook_secret is None else None
        plan = None if timing_key is None else self.timing.plan(timing_key)
        intervals = (
            self._polling.intervals(first_delay)
            if plan is None
            else self._polling.planned(plan.offsets)
        )
        not_ready_at: float | None = None  # when the last poll saw the task unfinished
        # A probe's answer is known only while every poll was answered (see poll_timing).
        probe = 0.0 if plan is None else plan.probe
        while True:
            interval = next(intervals)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            # Polls keep to a schedule counted from the submit, so time spent in earlier
            # polls does not push later ones back (a finished task is noticed promptly).
            poll_at = max(poll_at + interval, loop.time())
            pushed = await self._wait_for_webhook(job, min(poll_at - loop.time(), remaining))
            if pushed is not None:
                return pushed
            self.stats.polls += 1
            polled_at = loop.time()
            try:
                with self.metrics.time_provider_call(job.provider, "poll"):
                    result = await provider.poll(job.provider_task_id, job.polling_url)
            except (ProviderUnavailable, ProviderBusy) as exc:
                log.info("job %s: poll failed, will retry: %s", job.id, exc)
                probe = 0.0
                continue
            except ProviderAccessDenied:
                raise
            if result.outcome is TaskOutcome.NOT_FOUND:
                if plan is not None:
                    # Not visible yet (or lost): the plan's quick polls would use up the
                    # tolerance in a moment, so the usual schedule spaces them out instead.
                    plan, timing_key = None, None
                    intervals = self._polling.intervals(self._polling.initial)
                not_found += 1
                if not_found > NOT_FOUND_TOLERANCE:
                    return result
                continue
            not_found = 0
            if result.outcome in (TaskOutcome.RUNNING, TaskOutcome.UNKNOWN):
                not_ready_at = polled_at
                if result.raw_status != last_status:
                    last_status = result.raw_status
                    self._show_status(job, result.raw_status)
                continue
            if timing_key is not None and since is not None and result.outcome is TaskOutcome.READY:
                self.timing.observe(
                    timing_key,
                    None if not_ready_at is None else not_ready_at - since,
                    polled_at - since,
                    probe=probe,
                )
            return result

    def _show_status(self, job: Job, status: str) -> None:
        """Show the provider's status text. Only a decoration: never written to the database
        (it was a commit per status change per job, a quarter of SQLite's work per image), so
        polling never waits on it and an outage does not touch it; a process that resumes
        the job shows "Submitted" until its first poll."""
        self._on_status(replace(job, provider_status=status))

    def _deadline(self, job: Job, since: float | None, now: float) -> float:
        """The job's deadline on the loop's monotonic clock, so that a wall-clock jump (NTP,
        a VM resumed) can neither expire nor extend a running job. A job submitted in this
        run counts from the submit's answer (`since`, loop time); one recovered after a
        restart converts its persisted wall-clock submit time once, here."""
        if since is not None:
            return since + self._polling.deadline
        submitted_at = job.submitted_at
        elapsed = 0.0 if submitted_at is None else max(0.0, self._clock() - submitted_at)
        return now + max(0.0, self._polling.deadline - elapsed)

    async def _wait_for_webhook(self, job: Job, delay: float) -> TaskResult | None:
        """Sleep until the next poll is due, or until a webhook reports the task's end.
        A webhook that is only a hint (still running, or "Ready" without an image) makes the
        poll happen now instead."""
        event = self._wake.get(job.id)
        if event is None:
            await asyncio.sleep(delay)
            return None
        try:
            async with asyncio.timeout(max(0.0, delay)):
                await event.wait()
        except TimeoutError:
            return None
        event.clear()
        pushed = self._pushed.pop(job.id, None)
        if pushed and pushed[0] == job.provider_task_id and pushed[1].outcome in _FINAL_OUTCOMES:
            return pushed[1]
        return None
