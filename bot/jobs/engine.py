"""The job engine: persist, queue fairly, submit, follow, download, deliver — and recover.

Every state change is written to SQLite before the next step starts, so a fresh engine on
the same database resumes each unfinished job from its last state:

    queued     → submitted again (it never reached the provider)
    submitting → failed with a message: the provider may have the task and billed it, and it
                 cannot tell us, so we never resubmit blindly
    submitted  → polled again
    ready      → posted again (the notifier's delivery is idempotent)
    failed / moderated / cancelled but not yet announced → announced

Accounting rides on the same writes (bot/ledger): `accept` reserves the estimate in the
transaction that creates the job (or refuses with QuotaExceeded), and the state change that
ends a job settles it in its own transaction — charged at `ready`, refunded on failed,
moderated or cancelled — so recovery never needs to settle anything separately.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bot.catalogue import get_variant
from bot.errors import (
    DeliveryImpossible,
    InvalidRequest,
    ProviderAccessDenied,
    ProviderBusy,
    ProviderError,
    ProviderUnavailable,
)
from bot.jobs.models import GenerationRequest, Job, JobState
from bot.jobs.notifier import JobNotifier
from bot.jobs.scheduler import ProviderLane, Slot
from bot.jobs.store import JobStore
from bot.jobs.webhooks import WebhookSubscription, new_webhook_secret, webhook_url
from bot.ledger import Ledger
from bot.metrics import Metrics
from bot.periodic import repeat
from bot.providers.base import (
    DEFAULT_MAX_REPORTED_COST,
    OutputImage,
    Provider,
    TaskOutcome,
    TaskResult,
    WebhookRequest,
    sane_cost,
)
from bot.storage.db import Database
from bot.variants import ReferenceSize

log = logging.getLogger(__name__)

MODERATED_MESSAGE = (
    "The image service's safety filter blocked this request, so no image was made. "
    "You were not charged."
)
MODERATED_STRIKE_MESSAGE = (
    "The image service's safety filter blocked this request, so no image was made. "
    "You were not charged, but it counts as a strike on this server, like a banned term."
)
INTERRUPTED_MESSAGE = (
    "The bot restarted while sending this request, so it was stopped rather than risk "
    "paying twice. Please try again."
)
TIMED_OUT_MESSAGE = "The image service took too long to finish this image. Please try again."
INTERNAL_ERROR_MESSAGE = "Something went wrong on our side. Please try again."
# The image exists and the provider billed it, so the charge stands; the member is told so.
UNDELIVERABLE_MESSAGE = (
    "Your image was made, but it could not be posted here: {reason}. "
    "You were charged {credits:g} credits for it."
)
# Posting a result or a failure: attempts through transient trouble (Discord 5xx, network)
# before it is given up, with a backoff of 2, 4, 8… seconds capped at a minute (~7 min).
DELIVERY_ATTEMPTS = 12
DELIVERY_BACKOFF_CAP = 60.0
CANCELLED_MESSAGE = "Cancelled before it started. Nothing was charged."
REFERENCE_PURGE_INTERVAL = 3600.0
TOKEN_SWEEP_INTERVAL = 60.0
# Jobs whose follower ended recently, so a late or duplicate webhook for them is still verified
# (and answered 200); any other id unknown to this engine is refused without a database read.
RECENT_WEBHOOK_JOBS = 4096
# Consecutive "Task not found" answers tolerated right after a submit before giving up.
NOT_FOUND_TOLERANCE = 3


@dataclass
class EngineStats:
    submits: int = 0
    polls: int = 0
    busy_responses: int = 0


@dataclass(frozen=True)
class PollingPolicy:
    initial: float = 0.5
    maximum: float = 4.0
    growth: float = 1.5
    deadline: float = 600.0

    def intervals(self, first: float) -> Iterator[float]:
        """first, initial, initial×growth, … capped at maximum."""
        yield first
        interval = self.initial
        while True:
            yield interval
            interval = min(self.maximum, interval * self.growth)


def _estimate(request: GenerationRequest) -> float:
    references = [ReferenceSize(image.width, image.height) for image in request.inputs]
    return request.variant.estimate_cost(request.params, references)


def _images(request: GenerationRequest) -> int:
    """Every image the request can produce is reserved: a job of 4 is charged up to 4."""
    return request.variant.image_count(request.params)


@dataclass(frozen=True)
class WebhookConfig:
    """Where BFL can reach our receiver, and how long to wait for a webhook before polling."""

    public_url: str
    grace: float = 15.0


_FINAL_OUTCOMES = (TaskOutcome.READY, TaskOutcome.MODERATED, TaskOutcome.FAILED)


class _Unattached:
    """The notifier before the adapter attaches its own: nothing may be told yet."""

    async def job_progress(self, job: Job, *, queue_position: int | None) -> None:
        raise RuntimeError("no notifier attached")

    async def job_delivered(self, job: Job, images: list[OutputImage]) -> int:
        raise RuntimeError("no notifier attached")

    async def job_failed(self, job: Job) -> None:
        raise RuntimeError("no notifier attached")


class JobEngine:
    """Implements bot.jobs.webhooks.WebhookTarget: a verified webhook wakes the job's follower."""

    def __init__(
        self,
        db: Database,
        providers: Mapping[str, Provider],
        notifier: JobNotifier | None = None,
        *,
        max_active: int | Mapping[str, int] = 24,
        polling: PollingPolicy | None = None,
        clock: Callable[[], float] = time.time,
        ledger: Ledger | None = None,
        webhooks: WebhookConfig | None = None,
        metrics: Metrics | None = None,
        reference_retention: float | None = None,
        max_reported_cost: float = DEFAULT_MAX_REPORTED_COST,
        provider_moderation_strikes: bool = False,
    ) -> None:
        # Without a configured ledger every job is still accounted, with no limits.
        self.ledger = ledger or Ledger(db, clock=clock)
        self.store = JobStore(db, clock, ledger=self.ledger)
        # The Discord adapter attaches its notifier before `start` (see cogs/delivery.py).
        self.notifier: JobNotifier = notifier or _Unattached()
        self.stats = EngineStats()
        self._providers = dict(providers)
        self._polling = polling or PollingPolicy()
        self.delivery_attempts = DELIVERY_ATTEMPTS
        self.delivery_backoff = 2.0  # seconds before the second attempt; doubles each time
        self._clock = clock
        caps = max_active if isinstance(max_active, Mapping) else {}
        default_cap = max_active if isinstance(max_active, int) else 24
        self._lanes = {
            name: ProviderLane(name, caps.get(name, default_cap), self._start_submission)
            for name in providers
        }
        self._webhooks = webhooks
        self._reference_retention = reference_retention
        self._max_reported_cost = max_reported_cost
        self._moderation_strikes = provider_moderation_strikes
        self.metrics = metrics or Metrics(process_metrics=False)
        self.metrics.bind_engine(queue_depth=self.queue_depth, active_tasks=self.active_tasks)
        # Jobs this engine is following, woken early by a verified webhook.
        self._wake: dict[str, asyncio.Event] = {}
        self._pushed: dict[str, tuple[str, TaskResult]] = {}
        self._recently_followed: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running = False
        self._closed_listeners: list[Callable[[Job], None]] = []
        self._closed = asyncio.Condition()
        self._closed_ids: set[str] = set()  # closed by this engine (for wait_closed)

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Resume every unfinished job, then start admitting queued ones."""
        if isinstance(self.notifier, _Unattached):
            raise RuntimeError("attach a notifier before starting the engine")
        for job in await self.store.open_jobs():
            self._recover(job)
        for lane in self._lanes.values():
            self._spawn(lane.run(), name=f"lane-{lane.name}")
        if self._reference_retention is not None:
            self._spawn(self._purge_old_references(self._reference_retention), name="purge")
        self._spawn(self._erase_expired_tokens(), name="token-sweep")
        self._running = True

    async def stop(self) -> None:
        """Stop at once. Whatever was in flight resumes from the database on the next start."""
        self._running = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _recover(self, job: Job) -> None:
        lane = self._lanes.get(job.provider)
        if job.state is JobState.READY:
            # The image is already stored (and charged): posting it needs no provider.
            self._spawn(self._deliver(job.id))
            return
        if lane is None and not job.state.is_terminal:
            self._spawn(
                self._fail(
                    job.id,
                    (job.state,),
                    JobState.FAILED,
                    "This model is no longer configured on the bot.",
                )
            )
            return
        if job.state is JobState.QUEUED:
            assert lane is not None
            lane.enqueue(job.user_id, job.id)
        elif job.state is JobState.SUBMITTING:
            self._spawn(
                self._fail(job.id, (JobState.SUBMITTING,), JobState.FAILED, INTERRUPTED_MESSAGE)
            )
        elif job.state is JobState.SUBMITTED:
            assert lane is not None
            self._wake.setdefault(job.id, asyncio.Event())  # its webhook may come any moment
            self._spawn(self._follow(job, lane.occupy(), first_delay=0.0))
        else:
            self._spawn(self._announce_failure(job.id))

    async def _purge_old_references(self, retention: float) -> None:
        """Stored reference images are only needed to reroll or remix: drop them after
        `retention` seconds so the database does not grow for ever."""

        async def purge() -> None:
            purged = await self.store.purge_inputs(self._clock() - retention)
            if purged:
                log.info("purged %d stored reference images", purged)

        await repeat(purge, lambda: REFERENCE_PURGE_INTERVAL, what="purging old reference images")

    async def _erase_expired_tokens(self) -> None:
        """Interaction tokens are credentials: none is kept past its 15 minutes."""
        await repeat(
            lambda: self.store.erase_expired_tokens(self._clock()),
            lambda: TOKEN_SWEEP_INTERVAL,
            what="erasing expired interaction tokens",
        )

    # ----------------------------------------------------------------- public API
    async def accept(self, request: GenerationRequest) -> tuple[Job, int | None]:
        """Persist a validated request as a queued job; returns it and its place in line.
        Raises InvalidRequest (QuotaExceeded when over an allowance) and then creates nothing."""
        variant = request.variant
        lane = self._lanes.get(variant.provider)
        if lane is None:
            raise InvalidRequest(f"{variant.label} is not available on this bot.")
        variant.check_reference_count(len(request.inputs))
        job = await self.store.create(
            request, estimated_cost=_estimate(request), images=_images(request)
        )
        lane.enqueue(job.user_id, job.id)
        self.metrics.job_state_changed(job.state, job.variant)
        self._progress(job)
        return job, lane.position(job.id)

    async def check_quota(self, request: GenerationRequest) -> None:
        """Raise QuotaExceeded now if the request would not fit, holding nothing: lets a caller
        refuse before posting anything. `accept` still decides, atomically."""
        await self.ledger.check(
            request.guild_id,
            request.user_id,
            request.role_ids,
            credits=_estimate(request),
            images=_images(request),
        )

    def on_job_closed(self, listener: Callable[[Job], None]) -> None:
        """Call `listener` with the final job each time a job's outcome has been shown."""
        self._closed_listeners.append(listener)

    async def wait_closed(self, job_ids: Collection[str], within: float) -> list[Job]:
        """Wait until every given job has been shown its outcome; returns the final jobs."""

        async def all_closed() -> list[Job]:
            async with self._closed:
                pending = {job.id for job in await self._load(job_ids) if not job.closed}
                await self._closed.wait_for(lambda: pending <= self._closed_ids)
            return await self._load(job_ids)

        return await asyncio.wait_for(all_closed(), within)

    async def _load(self, job_ids: Collection[str]) -> list[Job]:
        return [await self.store.require(job_id) for job_id in job_ids]

    async def _job_closed(self, job_id: str) -> None:
        if self._closed_listeners:
            job = await self.store.require(job_id)
            for listener in self._closed_listeners:
                listener(job)
        async with self._closed:
            self._closed_ids.add(job_id)
            self._closed.notify_all()

    def queue_position(self, job: Job) -> int | None:
        lane = self._lanes.get(job.provider)
        return None if lane is None else lane.position(job.id)

    def queue_depth(self) -> int:
        return sum(lane.queued for lane in self._lanes.values())

    def active_tasks(self) -> int:
        return sum(lane.active for lane in self._lanes.values())

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job that is still waiting in line; running jobs cannot be recalled."""
        job = await self.store.get(job_id)
        if job is None or job.state is not JobState.QUEUED:
            return False
        lane = self._lanes.get(job.provider)
        if lane is not None:
            lane.remove(job_id)
        return await self._fail(job_id, (JobState.QUEUED,), JobState.CANCELLED, CANCELLED_MESSAGE)

    # ----------------------------------------------------------------- the pipeline
    def _start_submission(self, job_id: str, slot: Slot) -> None:
        self._spawn(self._submit(job_id, slot), name=f"job-{job_id}")

    async def _submit(self, job_id: str, slot: Slot) -> None:
        try:
            job = await self.store.transition(
                job_id, from_states=(JobState.QUEUED,), to=JobState.SUBMITTING
            )
            if job is None:
                return  # cancelled while it waited
            provider = self._providers[job.provider]
            variant = get_variant(job.variant)
            inputs = await self.store.inputs(job_id)
            webhook = await self._webhook_for(job, provider)
            try:
                self.stats.submits += 1
                with self.metrics.time_provider_call(job.provider, "submit"):
                    submission = await provider.submit(
                        variant, job.params, inputs, user_id=job.user_id, webhook=webhook
                    )
                accepted_at = asyncio.get_running_loop().time()
            except ProviderBusy as exc:
                self.stats.busy_responses += 1
                self.metrics.provider_rate_limited(job.provider)
                await self.store.transition(
                    job_id, from_states=(JobState.SUBMITTING,), to=JobState.QUEUED
                )
                lane = self._lanes[job.provider]
                lane.provider_busy(exc.retry_after)
                lane.enqueue(job.user_id, job_id, front=True)
                return
            except ProviderError as exc:
                log.warning("job %s: submit failed: %s", job_id, exc)
                await self._fail(job_id, (JobState.SUBMITTING,), JobState.FAILED, exc.user_message)
                return
            self._lanes[job.provider].provider_accepted()
            submitted = await self.store.transition(
                job_id,
                from_states=(JobState.SUBMITTING,),
                to=JobState.SUBMITTED,
                provider_task_id=submission.task_id,
                polling_url=submission.polling_url,
                submitted_at=self._clock(),
                cost=self._believed_cost(job_id, submission.cost, "submit answer"),
            )
            if submitted is None:
                return
            job = submitted
            self.metrics.job_state_changed(job.state, job.variant)
            self._progress(job)
            # With a webhook on its way, the first poll waits out the grace period.
            first = self._webhooks.grace if webhook and self._webhooks else self._polling.initial
            await self._follow(
                job, slot, first_delay=first, since=accepted_at, finished=submission.result
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s: unexpected error", job_id)
            await self._fail_anywhere(job_id)
        finally:
            slot.release()
            self._forget_webhook(job_id)

    async def _webhook_for(self, job: Job, provider: Provider) -> WebhookRequest | None:
        """Register the job for early wake-up, and give it a webhook when the receiver is on.
        Registered before the submit: a fast task's webhook may beat the submit's answer."""
        self._wake.setdefault(job.id, asyncio.Event())
        if self._webhooks is None or not provider.supports_webhooks:
            return None
        secret = new_webhook_secret()
        await self.store.update(job.id, webhook_secret=secret)
        return WebhookRequest(webhook_url(self._webhooks.public_url, job.id), secret)

    def _forget_webhook(self, job_id: str) -> None:
        if self._wake.pop(job_id, None) is not None:
            self._recently_followed[job_id] = None
            self._recently_followed.move_to_end(job_id)
            while len(self._recently_followed) > RECENT_WEBHOOK_JOBS:
                self._recently_followed.popitem(last=False)
        self._pushed.pop(job_id, None)

    # ----------------------------------------------------------------- webhooks (WebhookTarget)
    async def webhook_subscription(self, job_id: str) -> WebhookSubscription | None:
        if job_id not in self._wake and job_id not in self._recently_followed:
            # Not a job this engine follows or recently followed: answered from memory, so
            # a flood of made-up ids costs no database read.
            return None
        job = await self.store.get(job_id)
        if job is None or job.webhook_secret is None:
            return None  # finished jobs still answer, so a late duplicate is not retried
        return WebhookSubscription(secret=job.webhook_secret, task_id=job.provider_task_id)

    async def webhook_result(self, job_id: str, task_id: str, result: TaskResult) -> None:
        """A verified delivery. Only wakes the job's follower, whose transitions are
        compare-and-set: a duplicate, a late arrival or a race with a poll delivers once."""
        event = self._wake.get(job_id)
        if event is None:
            return  # not being followed: already finished, or a late duplicate
        if result.outcome in _FINAL_OUTCOMES or job_id not in self._pushed:
            self._pushed[job_id] = (task_id, result)  # never replace an ending with a hint
        event.set()

    async def _follow(
        self,
        job: Job,
        slot: Slot,
        *,
        first_delay: float,
        since: float | None = None,
        finished: TaskResult | None = None,
    ) -> None:
        """Wait for a submitted task's end, free the provider slot, then finish the job.
        `since` (loop time) is when the provider accepted it: the poll schedule counts from it.
        `finished`: a synchronous provider's result, already final, so there is no poll."""
        self._wake.setdefault(job.id, asyncio.Event())
        try:
            try:
                if finished is None:
                    finished = await self._await_outcome(job, first_delay, since)
            finally:
                slot.release()
                self._forget_webhook(job.id)
            await self._complete(job, finished)
        except asyncio.CancelledError:
            raise
        except ProviderError as exc:
            log.warning("job %s: %s", job.id, exc)
            await self._fail(job.id, (JobState.SUBMITTED,), JobState.FAILED, exc.user_message)
        except TimeoutError:
            log.warning("job %s: no final status before the deadline", job.id)
            await self._fail(job.id, (JobState.SUBMITTED,), JobState.FAILED, TIMED_OUT_MESSAGE)
        except Exception:
            log.exception("job %s: unexpected error while following", job.id)
            await self._fail_anywhere(job.id)

    async def _await_outcome(self, job: Job, first_delay: float, since: float | None) -> TaskResult:
        assert job.provider_task_id is not None
        provider = self._providers[job.provider]
        loop = asyncio.get_running_loop()
        deadline = self._deadline(job, since, loop.time())
        last_status = job.provider_status
        not_found = 0
        poll_at = loop.time() if since is None else since
        for interval in self._polling.intervals(first_delay):
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
            try:
                with self.metrics.time_provider_call(job.provider, "poll"):
                    result = await provider.poll(job.provider_task_id, job.polling_url)
            except (ProviderUnavailable, ProviderBusy) as exc:
                log.info("job %s: poll failed, will retry: %s", job.id, exc)
                continue
            except ProviderAccessDenied:
                raise
            if result.outcome is TaskOutcome.NOT_FOUND:
                not_found += 1
                if not_found > NOT_FOUND_TOLERANCE:
                    return result
                continue
            not_found = 0
            if result.outcome in (TaskOutcome.RUNNING, TaskOutcome.UNKNOWN):
                if result.raw_status != last_status:
                    last_status = result.raw_status
                    self._progress(
                        await self.store.update(job.id, provider_status=result.raw_status)
                    )
                continue
            return result
        raise AssertionError("unreachable")  # pragma: no cover

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

    async def _complete(self, job: Job, result: TaskResult) -> None:
        if result.outcome is TaskOutcome.MODERATED:
            log.info("job %s: %s %s", job.id, result.raw_status, result.details or "")
            # Servers count it as a strike (GenerationService); direct messages have none.
            strike = self._moderation_strikes and job.guild_id is not None
            message = MODERATED_STRIKE_MESSAGE if strike else MODERATED_MESSAGE
            await self._fail(job.id, (JobState.SUBMITTED,), JobState.MODERATED, message)
            return
        if result.outcome is not TaskOutcome.READY:
            log.warning("job %s: provider says %r %s", job.id, result.raw_status, result.details)
            await self._fail(
                job.id,
                (JobState.SUBMITTED,),
                JobState.FAILED,
                "The image service could not make this image. You were not charged.",
            )
            return
        provider = self._providers[job.provider]

        async def download(url: str) -> OutputImage:
            with self.metrics.time_provider_call(job.provider, "download"):
                return await provider.download(url)

        # Never more images than were asked for (and reserved): the rest would be charged
        # beyond what the allowance check admitted.
        wanted = get_variant(job.variant).image_count(job.params)
        outputs: list[OutputImage] = list(
            await asyncio.gather(*(download(url) for url in result.sample_urls[:wanted]))
        )
        reported = self._believed_cost(job.id, result.cost, "final status")
        cost = reported if reported is not None else job.cost
        won = await self.store.mark_ready(
            job.id,
            outputs,
            seed=result.seed if result.seed is not None else job.params.seed,
            cost=cost,
        )
        if won:
            self.metrics.job_state_changed(JobState.READY, job.variant)
            self.metrics.spent_credits(job.provider, job.variant, cost or job.estimated_cost)
            await self._deliver(job.id)

    def _believed_cost(self, job_id: str, reported: float | None, source: str) -> float | None:
        """The provider's cost if it is sane, else None (the job keeps the cost it has, or
        its estimate). Each source is read once per job, so this logs once per job."""
        cost, problem = sane_cost(reported, self._max_reported_cost)
        if problem is not None:
            log.warning(
                "job %s: not believing the cost %r in the %s (%s); the estimate stands",
                job_id,
                reported,
                source,
                problem,
            )
        return cost

    async def _deliver(self, job_id: str) -> None:
        job = await self.store.require(job_id)
        images = await self.store.outputs(job_id)
        try:
            message_id = await self._with_retries(lambda: self.notifier.job_delivered(job, images))
        except DeliveryImpossible as exc:
            log.warning("job %s: result cannot be posted: %s", job_id, exc)
            credits = job.cost if job.cost is not None else job.estimated_cost
            failed = await self.store.transition(
                job_id,
                from_states=(JobState.READY,),
                to=JobState.FAILED,
                error=UNDELIVERABLE_MESSAGE.format(reason=exc, credits=credits),
                finished_at=self._clock(),
            )
            if failed is not None:
                self.metrics.job_state_changed(JobState.FAILED, job.variant)
                # Often a text fits where the image did not (too large, form rejected).
                await self._announce_failure(job_id)
                return
        else:
            await self.store.mark_delivered(job_id, message_id)
            self.metrics.job_state_changed(JobState.DELIVERED, job.variant)
        await self._job_closed(job_id)

    # ----------------------------------------------------------------- endings
    async def _fail(
        self, job_id: str, from_states: Collection[JobState], to: JobState, message: str
    ) -> bool:
        """Record a failed ending (if the job is still where we think) and announce it."""
        ended = await self.store.transition(
            job_id, from_states=from_states, to=to, error=message, finished_at=self._clock()
        )
        if ended is None:
            return False
        self.metrics.job_state_changed(to, ended.variant)
        await self._announce_failure(job_id)
        return True

    async def _fail_anywhere(self, job_id: str) -> None:
        try:
            live = [s for s in JobState if not s.is_terminal and s is not JobState.READY]
            await self._fail(job_id, live, JobState.FAILED, INTERNAL_ERROR_MESSAGE)
        except Exception:
            log.exception("job %s: could not record the failure", job_id)

    async def _announce_failure(self, job_id: str) -> None:
        job = await self.store.require(job_id)
        try:
            await self._with_retries(lambda: self.notifier.job_failed(job))
        except DeliveryImpossible as exc:
            log.warning("job %s: failure cannot be shown: %s", job_id, exc)
        await self.store.close(job_id)
        await self._job_closed(job_id)

    async def _with_retries(self, call: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Retry a Discord-side call through transient trouble, a bounded number of times;
        DeliveryImpossible stops it at once, and is what running out of attempts raises."""
        for attempt in range(1, self.delivery_attempts + 1):
            try:
                return await call()
            except (DeliveryImpossible, asyncio.CancelledError):
                raise
            except Exception:
                log.exception("notifying failed (attempt %d)", attempt)
                if attempt == self.delivery_attempts:
                    break
                delay = min(DELIVERY_BACKOFF_CAP, self.delivery_backoff * 2.0 ** (attempt - 1))
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
        raise DeliveryImpossible("Discord kept failing, so the bot gave up")

    def _progress(self, job: Job) -> None:
        if self._running:
            self._spawn(self._report_progress(job))

    async def _report_progress(self, job: Job) -> None:
        try:
            await self.notifier.job_progress(job, queue_position=self.queue_position(job))
        except Exception:
            log.debug("progress update for job %s failed", job.id, exc_info=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
