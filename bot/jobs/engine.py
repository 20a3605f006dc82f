"""The job engine: persist, queue fairly, submit, follow, download, deliver — and recover.

Every state change is written to the store before the next step starts, so whichever
process owns a job next (this one restarted, or another that adopted it when this one's lease
ran out: bot/jobs/work.py) resumes it from its last state:

    queued     → claimed again by any process (it never reached the provider)
    submitting → failed with a message: the provider may have the task and billed it, and it
                 cannot tell us, so we never resubmit blindly
    submitted  → polled again
    ready      → posted again (the notifier's delivery is idempotent)
    failed / moderated / cancelled but not yet announced → announced

Accounting rides on the same writes (bot/ledger): `accept` reserves the estimate in the
transaction that creates the job (or refuses with QuotaExceeded), and the state change that
ends a job settles it in its own transaction — charged at `ready`, refunded on failed,
moderated or cancelled — so recovery never needs to settle anything separately.

Parts that stand alone live beside it: the shared queue, keys and slots (bot/jobs/claims.py),
this process's lease, adoption and claiming (bot/jobs/work.py), following a submitted task
(polls and webhooks, bot/jobs/following.py), and ending a job and showing its outcome
(bot/jobs/delivery.py). Why this file is long: it drives one job through every state, and
the steps of that path read best in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bot.catalogue import get_variant
from bot.errors import InvalidRequest, ProviderBusy, ProviderError, ProviderKeyRejected
from bot.jobs.claims import Claim, ProviderKey, SharedQueue
from bot.jobs.delivery import JobDelivery
from bot.jobs.failover import BACKUP_PROVIDER, REFUSED, plan_handover, refusal_text
from bot.jobs.following import PollingPolicy, TaskFollower
from bot.jobs.leases import ProcessLease
from bot.jobs.models import GenerationRequest, Job, JobState
from bot.jobs.notifier import JobNotifier
from bot.jobs.store import WEBHOOK_CHANNEL, JobStore, MoreAdmission
from bot.jobs.webhooks import (
    WebhookSubscription,
    new_webhook_secret,
    webhook_url,
    webhook_url_key,
)
from bot.jobs.work import SharedWork
from bot.ledger import Ledger, credits_to_mc
from bot.operations.metrics import Metrics
from bot.periodic import repeat
from bot.providers.base import (
    DEFAULT_MAX_REPORTED_COST,
    OutputImage,
    Provider,
    TaskOutcome,
    TaskResult,
    WebhookRequest,
    result_pixel_limit,
    sane_cost,
)
from bot.storage.clock import DatabaseClock
from bot.storage.db import Database
from bot.storage.outage import DEFAULT_PATIENCE, is_database_outage, is_outage
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
CANCELLED_MESSAGE = "Cancelled before it started. Nothing was charged."
REFERENCE_PURGE_INTERVAL = 3600.0
TOKEN_SWEEP_INTERVAL = 60.0


@dataclass
class EngineStats:
    submits: int = 0
    polls: int = 0
    busy_responses: int = 0


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


class JobEngine:
    """Implements bot.jobs.webhooks.WebhookTarget: a verified webhook wakes the job's follower."""

    def __init__(
        self,
        db: Database,
        providers: Mapping[str, Provider],
        notifier: JobNotifier | None = None,
        *,
        max_active: int | Mapping[str, int] = 24,
        keys: Collection[ProviderKey] | None = None,
        lease_seconds: float | None = None,
        polling: PollingPolicy | None = None,
        clock: Callable[[], float] | None = None,
        ledger: Ledger | None = None,
        webhooks: WebhookConfig | None = None,
        metrics: Metrics | None = None,
        reference_retention: float | None = None,
        max_reported_cost: float = DEFAULT_MAX_REPORTED_COST,
        provider_moderation_strikes: bool = False,
        shutdown_grace: float = 0.0,
        database_patience: float = DEFAULT_PATIENCE,
        failover: bool = False,
    ) -> None:
        # Times other processes read back are in database time, unless a test brings its own
        # clock (bot/storage/clock.py).
        clock = DatabaseClock(db) if clock is None else clock
        # Without a configured ledger every job is still accounted, with no limits.
        self.ledger = ledger or Ledger(db, clock=clock)
        self.store = JobStore(db, clock, ledger=self.ledger, patience=database_patience)
        self.stats = EngineStats()
        self._polling = polling or PollingPolicy()
        self._clock = clock
        if keys is None:
            # One key per provider, named after it, with the cap given for it.
            caps = max_active if isinstance(max_active, Mapping) else {}
            default_cap = max_active if isinstance(max_active, int) else 24
            keys = [
                ProviderKey(name, name, provider, caps.get(name, default_cap))
                for name, provider in providers.items()
            ]
        self.queue = SharedQueue(db, keys, clock)
        self.lease = (
            ProcessLease(db) if lease_seconds is None else ProcessLease(db, seconds=lease_seconds)
        )
        self._db = db
        self._webhooks = webhooks
        self._reference_retention = reference_retention
        self._max_reported_cost = max_reported_cost
        self._moderation_strikes = provider_moderation_strikes
        # FAILOVER=aiml: BFL's pro and max go to the AI/ML API when BFL cannot take them.
        self._failover = failover
        self.metrics = metrics or Metrics(process_metrics=False)
        self.metrics.bind_engine(queue_depth=self.queue_depth, active_tasks=self.active_tasks)
        # Endings and how they are shown (bot/jobs/delivery.py).
        self.delivery = JobDelivery(self.store, self.metrics, clock, notifier)
        # Jobs this engine is following, polled and woken early by a verified webhook.
        self.follower = TaskFollower(
            self.store, self._polling, clock, self.metrics, self.stats, on_status=self._progress
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        # The tasks working on claimed jobs: dropped together if this process loses its lease.
        self._job_tasks: set[asyncio.Task[Any]] = set()
        # Which jobs have a task working on them now, and which had one since the owner's
        # sweep began: the sweep resumes only jobs that neither lists (`_resume_unfollowed`).
        self._working: dict[str, int] = {}
        self._worked_since_sweep: set[str] = set()
        self._tasks_of: dict[str, set[asyncio.Task[Any]]] = {}
        # Jobs whose request is on its way to a provider now (what a graceful stop waits for).
        self._sending: set[str] = set()
        self._shutdown_grace = shutdown_grace
        self._unfollowed: dict[str, float] = {}  # job id → updated_at, seen by the last sweep
        # Told the key id when a provider rejects a key in use (401): the operator's log line
        # and readiness (bot/providers/accounts.py) without waiting for the next key check.
        self.on_key_rejected: Callable[[str], None] | None = None
        # Checks the extra a job handed to the backup provider needs beyond the ledger's
        # (a studio's budget), set by the services (bot/services.py).
        self.handover_admission: MoreAdmission | None = None
        self._running = False
        self.work = SharedWork(
            db,
            self.store,
            self.queue,
            self.lease,
            recover=self._recover,
            submit=self._start_submission,
            drop_job_tasks=self._drop_job_tasks,
            resume_unfollowed=self._resume_unfollowed,
            secret_for=self._webhook_secret_for,
        )
        self.work.on_owner_changed = self._owner_changed

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Take a lease, resume every unfinished job this process now owns, then start
        claiming queued ones (bot/jobs/work.py)."""
        if not self.delivery.attached:
            raise RuntimeError("attach a notifier before starting the engine")
        if isinstance(self._clock, DatabaseClock):  # before any time is written or compared
            await self._clock.sync()
            self._spawn(self._clock.keep_synced(), name="database-clock")
        self.follower.url_key = await webhook_url_key(self._db)
        await self.work.start(lambda coro, name: self._spawn(coro, name=name))
        if self._db.shared:
            # A webhook another process received for one of this process's jobs.
            self.follower.shared = True
            await self._db.listen(WEBHOOK_CHANNEL, self.follower.webhook_recorded)
            self._spawn(self.follower.watch_recorded_webhooks(), name="recorded-webhooks")
        if self._reference_retention is not None:
            self._spawn(self._purge_old_references(self._reference_retention), name="purge")
        self._spawn(self._erase_expired_tokens(), name="token-sweep")
        self._running = True

    async def stop(self) -> None:
        """Stop claiming work, give the requests being sent to a provider up to
        `shutdown_grace` seconds to come back and finish (a synchronous provider's image
        would otherwise be made, billed and lost), then stop the rest at once. What was in
        flight resumes from the database: in another process at once (the lease is given
        up), or in this one on its next start."""
        self.work.stop_claiming()
        sending = [task for job_id in self._sending for task in self._tasks_of.get(job_id, ())]
        if sending and self._shutdown_grace > 0:
            log.info(
                "stopping: waiting up to %.0f s for %d request(s) at the image services",
                self._shutdown_grace,
                len(sending),
            )
            await asyncio.wait(sending, timeout=self._shutdown_grace)
        self._running = False
        tasks = [*self._tasks, *self._job_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.work.release()

    async def _drop_job_tasks(self) -> None:
        tasks = list(self._job_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.follower.forget_all()

    def _recover(self, job: Job) -> None:
        key = self.queue.key_of(job)
        if job.state is JobState.READY:
            # The image is already stored (and charged): posting it needs no provider.
            self._spawn_job(job.id, self.delivery.deliver(job.id))
            return
        if key is None and not job.state.is_terminal:
            self._spawn_job(
                job.id,
                self.delivery.fail(
                    job.id,
                    (job.state,),
                    JobState.FAILED,
                    "This model is no longer configured on the bot.",
                ),
            )
            return
        if job.state is JobState.QUEUED:
            self.work.wake(job.provider)
        elif job.state is JobState.SUBMITTING:
            self._spawn_job(
                job.id,
                self.delivery.fail(
                    job.id, (JobState.SUBMITTING,), JobState.FAILED, INTERRUPTED_MESSAGE
                ),
            )
        elif job.state is JobState.SUBMITTED:
            assert key is not None
            self.follower.watch(job.id)  # its webhook may come any moment
            self._spawn_job(job.id, self._follow(job, key, first_delay=0.0))
        else:
            self._spawn_job(job.id, self.delivery.announce_failure(job.id))

    async def _resume_unfollowed(self) -> None:
        """Resume this process's unfinished jobs that no task is working on: a job whose
        task gave up while the database was unreachable (or ended on a write whose answer
        was lost) continues from its stored state, without waiting for a restart.

        A job is resumed when two sweeps in a row found it unchanged with no task on it and
        none started in between, so a job claimed or adopted a moment ago, whose task is
        just starting, is never resumed twice. Called from the lease heartbeat, so it never
        races a change of this process's identity."""
        started, self._worked_since_sweep = self._worked_since_sweep, set()
        suspects, self._unfollowed = self._unfollowed, {}
        for job in await self.store.owned_unfinished(self.lease.id):
            if job.id in self._working or job.id in self._worked_since_sweep:
                continue
            if suspects.get(job.id) != job.updated_at or job.id in started:
                self._unfollowed[job.id] = job.updated_at  # resumed next time if still so
                continue
            log.info("job %s: resuming it from %s (nothing was following it)", job.id, job.state)
            self._recover(job)

    def _start_submission(self, claim: Claim) -> None:
        self._spawn_job(claim.job.id, self._submit(claim), name=f"job-{claim.job.id}")

    def _owner_changed(self, owner: str) -> None:
        self.follower.owner = owner

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
        if not self.queue.keys(variant.provider):
            raise InvalidRequest(f"{variant.label} is not available on this bot.")
        variant.check_reference_count(len(request.inputs))
        job, position = await self.store.create_then(
            request,
            estimated_cost=_estimate(request),
            images=_images(request),
            then=self.queue.place_of_newest,
            # Each NOTIFY costs every listening process and its server backend a wake-up:
            # not sent when this process claims the job itself (or finds no slot free, when
            # whoever frees one claims it).
            tell_others=not (self._running and self.work.claims_here(variant.provider)),
        )
        self.work.job_queued(job.provider)
        self.metrics.job_state_changed(job.state, job.variant)
        self._progress(job, position)
        return job, position

    async def check_quota(self, request: GenerationRequest) -> None:
        """Raise QuotaExceeded now if the request would not fit, holding nothing: lets a caller
        refuse before posting anything. `accept` still decides, atomically. A batch needs
        its size times one image's estimate."""
        await self.ledger.check(
            request.guild_id,
            request.user_id,
            request.role_ids,
            credits=_estimate(request) * request.batch_size,
            images=_images(request) * request.batch_size,
        )

    @property
    def notifier(self) -> JobNotifier:
        return self.delivery.notifier

    @notifier.setter
    def notifier(self, notifier: JobNotifier) -> None:
        """The Discord adapter attaches its notifier before `start` (see cogs/delivery.py)."""
        self.delivery.notifier = notifier

    def on_job_closed(self, listener: Callable[[Job], None]) -> None:
        """See JobDelivery.on_job_closed."""
        self.delivery.on_job_closed(listener)

    async def wait_closed(self, job_ids: Collection[str], within: float) -> list[Job]:
        """See JobDelivery.wait_closed."""
        return await self.delivery.wait_closed(job_ids, within)

    async def queue_position(self, job: Job) -> int | None:
        return await self.queue.position(job)

    def queue_depth(self) -> int:
        """Queued jobs over the fleet, as of the last count (every few seconds)."""
        return sum(queued for queued, _ in self.work.counts.values())

    def active_tasks(self) -> int:
        """Tasks active at the providers over the fleet, as of the last count."""
        return sum(active for _, active in self.work.counts.values())

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job that is still waiting in line; running jobs cannot be recalled."""
        job = await self.store.get(job_id)
        if job is None or job.state is not JobState.QUEUED:
            return False
        with self._working_on(job_id):  # cancelled, not yet shown: not the sweep's to resume
            return await self.delivery.fail(
                job_id, (JobState.QUEUED,), JobState.CANCELLED, CANCELLED_MESSAGE
            )

    def _key_failed(self, key: ProviderKey, exc: ProviderError) -> None:
        if isinstance(exc, ProviderKeyRejected) and self.on_key_rejected is not None:
            self.on_key_rejected(key.key_id)

    # ----------------------------------------------------------------- the pipeline
    async def _submit(self, claim: Claim) -> None:
        job, key = claim.job, claim.key
        job_id = job.id
        followed = False
        try:
            self.metrics.job_state_changed(job.state, job.variant)
            provider = key.client
            variant = get_variant(job.variant)
            inputs = await self.store.inputs(job_id) if job.reference_count else []
            webhook = self._webhook_for(job, webhooks=variant.webhooks)
            if not self.lease.may_submit():
                # Cut off from the database for a while: another process may take this job
                # any moment, and a task sent now might be delivered by nobody. Nothing has
                # reached the provider yet, so it goes back in line (if it is still ours).
                log.warning("job %s: this process's lease is running out; not sending", job_id)
                await self._requeue(job)
                return
            self.stats.submits += 1
            self._sending.add(job_id)
            try:
                with self.metrics.time_provider_call(job.provider, "submit"):
                    submission = await provider.submit(
                        variant, job.params, inputs, user_id=job.user_id, webhook=webhook
                    )
                accepted_at = asyncio.get_running_loop().time()
            except ProviderBusy as exc:
                self.stats.busy_responses += 1
                self.metrics.provider_rate_limited(job.provider)
                await self._note_key(self.queue.busy(key, exc.retry_after))
                await self._requeue(job)
                return
            except ProviderError as exc:
                log.warning("job %s: submit failed: %s", job_id, exc)
                self._key_failed(key, exc)
                if await self._handed_over(job, exc):
                    return
                await self.delivery.fail(
                    job_id, (JobState.SUBMITTING,), JobState.FAILED, exc.user_message
                )
                return
            finally:
                self._sending.discard(job_id)
            if claim.recovering:  # otherwise there is no 429 episode to end
                await self._note_key(self.queue.accepted(key))
            submitted = await self.store.transition(
                job_id,
                from_states=(JobState.SUBMITTING,),
                to=JobState.SUBMITTED,
                provider_task_id=submission.task_id,
                polling_url=submission.polling_url,
                submitted_at=self._clock(),
                cost=self._believed_cost(job_id, submission.cost, "submit answer"),
                # A route without webhooks (outpainting) is polled: its claim's secret goes.
                **({} if variant.webhooks else {"webhook_secret": None}),
            )
            if submitted is None:
                log.warning("job %s: submitted, but another process had taken it", job_id)
                return
            job = submitted
            self.metrics.job_state_changed(job.state, job.variant)
            self._progress(job)
            # With a webhook on its way, the first poll waits out the grace period.
            first = self._webhooks.grace if webhook and self._webhooks else self._polling.initial
            followed = True
            await self._follow(
                job, key, first_delay=first, since=accepted_at, finished=submission.result
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._left_to_the_sweep(job_id, exc):
                log.exception("job %s: unexpected error", job_id)
                await self.delivery.fail_anywhere(job_id)
        finally:
            # Every ending above freed the slot in its own transition: let the next job in
            # (`_follow` hands the slot on itself).
            if not followed:
                self.work.wake(job.provider)
            self.follower.forget(job_id)

    async def _handed_over(self, job: Job, exc: ProviderError) -> bool:
        """With FAILOVER on, a job BFL could not take (and certainly did not start) goes to
        the backup provider's line (bot/jobs/failover.py). False: it fails as usual."""
        if not self._failover or not self.queue.keys(BACKUP_PROVIDER):
            return False
        references = await self.store.input_sizes(job.id) if job.reference_count else []
        handover = plan_handover(job, exc, references)
        if handover is None:
            return False
        try:
            moved = await self.store.hand_over(
                job,
                handover.variant,
                handover.params,
                estimated_cost=handover.estimate,
                reason=handover.reason,
                admission=self.handover_admission,
            )
        except InvalidRequest as refusal:  # the allowance can't cover the backup's estimate
            log.info("job %s: not handed over: %s", job.id, refusal)
            self.metrics.failed_over(job.variant, REFUSED)
            more = credits_to_mc(handover.estimate) - credits_to_mc(job.estimated_cost)
            text = refusal_text(handover.reason, more, refusal)
            await self.delivery.fail(job.id, (JobState.SUBMITTING,), JobState.FAILED, text)
            return True
        if moved is not None:
            log.info("job %s: handed to the backup provider (%s)", job.id, handover.reason)
            self.metrics.failed_over(job.variant, handover.reason)
            self._progress(moved)
        self.work.job_queued(BACKUP_PROVIDER)  # also if the move landed before an outage hid it
        return True

    async def _note_key(self, change: Coroutine[Any, Any, Any]) -> None:
        """Record a key's back-off or recovery; best effort, since the job's own state
        matters more than the key's pacing when the database is unreachable."""
        try:
            await change
        except Exception as exc:
            if not is_outage(exc):
                raise
            log.debug("could not record the provider key's pacing during an outage")

    def _left_to_the_sweep(self, job_id: str, exc: Exception) -> bool:
        """An outage outlasted the job's patience: failing it would need the database too,
        so it stays as stored and this process's sweep resumes it once the database is
        back (`_resume_unfollowed`)."""
        if not is_database_outage(exc):  # not a refused connection to Discord, say
            return False
        log.warning("job %s: the database is still unreachable; it resumes when it is back", job_id)
        return True

    async def _requeue(self, job: Job) -> None:
        """A claimed job that never reached the provider goes back in line for any process
        (keeping its turn: its creation time), its slot freed."""
        await self.store.transition(
            job.id,
            from_states=(JobState.SUBMITTING,),
            to=JobState.QUEUED,
            owner=None,
            provider_key=None,
        )
        self.work.wake(job.provider)

    async def _release(self, job_id: str, provider: str) -> bool:
        """Free the job's slot before its images are downloaded (the provider is done with
        it) and hand it to the next job, in one transaction. Any later state change would
        free it too. False if it could not be done now (the caller lets the claim loop in)."""
        try:
            await self.work.release_and_claim(job_id, provider)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Not fatal: the job's next state change frees the slot too.
            if not is_outage(exc):
                log.warning("job %s: could not free its slot now", job_id, exc_info=True)
            self.work.wake(provider)
            return False
        return True

    def _webhook_secret_for(self, key: ProviderKey) -> str | None:
        """A claimed job's webhook secret, written with its claim (None: no webhook)."""
        if self._webhooks is None or self.follower.url_key is None:
            return None
        return new_webhook_secret() if key.client.supports_webhooks else None

    def _webhook_for(self, job: Job, *, webhooks: bool = True) -> WebhookRequest | None:
        """Register the job for early wake-up, and give it a webhook when it has a secret
        (written with its claim) and its variant's route takes one (`webhooks`; outpainting
        has no webhook fields, so it is polled). Registered before the submit: a fast
        task's webhook may beat the submit's answer."""
        self.follower.watch(job.id)
        url_key = self.follower.url_key  # read at start; every URL given out carries its tag
        if self._webhooks is None or job.webhook_secret is None or url_key is None:
            return None
        if not webhooks:
            return None
        url = webhook_url(self._webhooks.public_url, job.id, key=url_key)
        return WebhookRequest(url, job.webhook_secret)

    # ----------------------------------------------------------------- webhooks (WebhookTarget)
    async def webhook_subscription(self, job_id: str) -> WebhookSubscription | None:
        return await self.follower.webhook_subscription(job_id)

    async def webhook_result(self, job_id: str, task_id: str, result: TaskResult) -> None:
        await self.follower.webhook_result(job_id, task_id, result)

    async def _follow(
        self,
        job: Job,
        key: ProviderKey,
        *,
        first_delay: float,
        since: float | None = None,
        finished: TaskResult | None = None,
    ) -> None:
        """Wait for a submitted task's end, free the provider slot, then finish the job.
        `since` (loop time) is when the provider accepted it: the poll schedule counts from it.
        `finished`: a synchronous provider's result, already final, so there is no poll."""
        self.follower.watch(job.id)
        handed_on = False
        try:
            try:
                if finished is None:
                    finished = await self.follower.outcome(job, key.client, first_delay, since)
            finally:
                self.follower.forget(job.id)
            handed_on = await self._release(job.id, job.provider)
            await self._complete(job, key, finished)
        except asyncio.CancelledError:
            raise
        except ProviderError as exc:
            log.warning("job %s: %s", job.id, exc)
            self._key_failed(key, exc)
            await self.delivery.fail(
                job.id, (JobState.SUBMITTED,), JobState.FAILED, exc.user_message
            )
        except TimeoutError:
            log.warning("job %s: no final status before the deadline", job.id)
            await self.delivery.fail(
                job.id, (JobState.SUBMITTED,), JobState.FAILED, TIMED_OUT_MESSAGE
            )
        except Exception as exc:
            if not self._left_to_the_sweep(job.id, exc):
                log.exception("job %s: unexpected error while following", job.id)
                await self.delivery.fail_anywhere(job.id)
        finally:
            if not handed_on:
                self.work.wake(job.provider)  # its slot is free, however it ended

    async def _complete(self, job: Job, key: ProviderKey, result: TaskResult) -> None:
        if result.outcome is TaskOutcome.MODERATED:
            log.info("job %s: %s %s", job.id, result.raw_status, result.details or "")
            # Servers count it as a strike (GenerationService); direct messages have none.
            strike = self._moderation_strikes and job.guild_id is not None
            message = MODERATED_STRIKE_MESSAGE if strike else MODERATED_MESSAGE
            await self.delivery.fail(job.id, (JobState.SUBMITTED,), JobState.MODERATED, message)
            return
        if result.outcome is not TaskOutcome.READY:
            log.warning("job %s: provider says %r %s", job.id, result.raw_status, result.details)
            await self.delivery.fail(
                job.id,
                (JobState.SUBMITTED,),
                JobState.FAILED,
                "The image service could not make this image. You were not charged.",
            )
            return
        provider = key.client
        variant = get_variant(job.variant)
        # An image far larger than asked for is refused from its header, before any decoding.
        most_pixels = result_pixel_limit(
            variant, job.params, has_references=job.reference_count > 0
        )

        async def download(url: str) -> OutputImage:
            with self.metrics.time_provider_call(job.provider, "download"):
                return await provider.download(url, max_pixels=most_pixels)

        # Never more images than were asked for (and reserved): the rest would be charged
        # beyond what the allowance check admitted.
        wanted = variant.image_count(job.params)
        outputs: list[OutputImage] = list(
            await asyncio.gather(*(download(url) for url in result.sample_urls[:wanted]))
        )
        reported = self._believed_cost(job.id, result.cost, "final status")
        cost = reported if reported is not None else job.cost
        ready = await self.store.mark_ready(
            job.id,
            outputs,
            seed=result.seed if result.seed is not None else job.params.seed,
            cost=cost,
        )
        if ready is not None:
            self.metrics.job_state_changed(JobState.READY, job.variant)
            self.metrics.spent_credits(job.provider, job.variant, cost or job.estimated_cost)
            await self.delivery.deliver(job.id, ready=(ready, outputs))

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

    def _progress(self, job: Job, position: int | None = None) -> None:
        """Show the job's progress; `position`: its place in line, known only while queued
        (every later report is about a job no longer in line)."""
        if self._running:
            self._spawn(self._report_progress(job, position))

    async def _report_progress(self, job: Job, position: int | None) -> None:
        try:
            if job.in_batch:  # the batch's one message (bot/jobs/batches.py)
                await self.delivery.batches.progress(job, position)
                return
            await self.notifier.job_progress(job, queue_position=position)
        except Exception:
            log.debug("progress update for job %s failed", job.id, exc_info=True)

    def _spawn(
        self,
        coro: Coroutine[Any, Any, Any],
        *,
        name: str | None = None,
        into: set[asyncio.Task[Any]] | None = None,
    ) -> asyncio.Task[Any]:
        tasks = self._tasks if into is None else into
        task = asyncio.create_task(coro, name=name)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    def _spawn_job(
        self, job_id: str, coro: Coroutine[Any, Any, Any], *, name: str | None = None
    ) -> None:
        """A task working on a claimed job: dropped if this process loses its lease. The job
        counts as worked on from now (not from when the task first runs) until it ends."""
        self._begin_work(job_id)
        task = self._spawn(coro, name=name, into=self._job_tasks)
        self._tasks_of.setdefault(job_id, set()).add(task)
        task.add_done_callback(lambda _: self._end_work(job_id, task))

    @contextlib.contextmanager
    def _working_on(self, job_id: str) -> Iterator[None]:
        """Mark the job as having a task on it, so the sweep leaves it alone."""
        self._begin_work(job_id)
        try:
            yield
        finally:
            self._end_work(job_id)

    def _begin_work(self, job_id: str) -> None:
        self._working[job_id] = self._working.get(job_id, 0) + 1
        self._worked_since_sweep.add(job_id)

    def _end_work(self, job_id: str, task: asyncio.Task[Any] | None = None) -> None:
        if task is not None:
            tasks = self._tasks_of.get(job_id, set())
            tasks.discard(task)
            if not tasks:
                self._tasks_of.pop(job_id, None)
        left = self._working.pop(job_id) - 1
        if left:
            self._working[job_id] = left
