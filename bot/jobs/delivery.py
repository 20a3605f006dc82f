"""A job's ending, shown once: the result posted, or the failure announced, through the
notifier with a bounded number of attempts; then the job is closed and listeners are told.

A result Discord can never take (the channel is gone, the file too large) fails the job with
a text saying so, and the charge stands: the provider made and billed the image.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Collection, Coroutine
from typing import Any

from bot.errors import DeliveryImpossible
from bot.jobs.batches import BatchDelivery
from bot.jobs.models import Job, JobState
from bot.jobs.notifier import JobNotifier
from bot.jobs.store import JobStore
from bot.operations.metrics import Metrics
from bot.providers.base import OutputImage

log = logging.getLogger(__name__)

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


class Unattached:
    """The notifier before the adapter attaches its own: nothing may be told yet."""

    async def job_progress(self, job: Job, *, queue_position: int | None) -> None:
        raise RuntimeError("no notifier attached")

    async def job_delivered(self, job: Job, images: list[OutputImage]) -> int:
        raise RuntimeError("no notifier attached")

    async def job_failed(self, job: Job) -> None:
        raise RuntimeError("no notifier attached")


class JobDelivery:
    """Ends jobs and shows their endings (the engine's half that talks to the notifier)."""

    def __init__(
        self,
        store: JobStore,
        metrics: Metrics,
        clock: Callable[[], float],
        notifier: JobNotifier | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.notifier: JobNotifier = notifier or Unattached()
        self.attempts = DELIVERY_ATTEMPTS
        self.backoff = 2.0  # seconds before the second attempt; doubles each time
        self._clock = clock
        self._closed_listeners: list[Callable[[Job], None]] = []
        self._closed = asyncio.Condition()
        self._closed_ids: set[str] = set()  # closed by this engine (for wait_closed)
        # Jobs of a batch are shown together, once the last has ended (bot/jobs/batches.py).
        self.batches = BatchDelivery(
            store,
            metrics,
            notifier=lambda: self.notifier,
            with_retries=self._with_retries,
            closed=self._job_closed,
        )

    @property
    def attached(self) -> bool:
        return not isinstance(self.notifier, Unattached)

    # ----------------------------------------------------------------- closing
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

    async def _job_closed(self, job_id: str, closed: Job | None = None) -> None:
        """`closed`: the job as its closing change returned it (else it is read)."""
        if self._closed_listeners:
            job = closed if closed is not None else await self.store.require(job_id)
            for listener in self._closed_listeners:
                listener(job)
        async with self._closed:
            self._closed_ids.add(job_id)
            self._closed.notify_all()

    # ----------------------------------------------------------------- endings
    async def deliver(
        self, job_id: str, *, ready: tuple[Job, list[OutputImage]] | None = None
    ) -> None:
        """Post a ready job's result (stored and charged already), then close the job.
        `ready`: the job and its images as they were just stored (not read back)."""
        if ready is None:
            job = await self.store.require(job_id)
            if job.in_batch:
                await self.batches.ended(job)
                return
            images = await self.store.outputs(job_id)
        else:
            job, images = ready
            if job.in_batch:
                await self.batches.ended(job)
                return
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
                await self.announce_failure(job_id)
                return
        else:
            delivered = await self.store.mark_delivered(job_id, message_id)
            self.metrics.job_state_changed(JobState.DELIVERED, job.variant)
            await self._job_closed(job_id, delivered)
            return
        await self._job_closed(job_id)

    async def fail(
        self, job_id: str, from_states: Collection[JobState], to: JobState, message: str
    ) -> bool:
        """Record a failed ending (if the job is still where we think) and announce it."""
        ended = await self.store.transition(
            job_id, from_states=from_states, to=to, error=message, finished_at=self._clock()
        )
        if ended is None:
            return False
        self.metrics.job_state_changed(to, ended.variant)
        await self.announce_failure(job_id)
        return True

    async def fail_anywhere(self, job_id: str) -> None:
        """An unexpected error: fail the job from wherever it is, short of a stored result."""
        try:
            live = [s for s in JobState if not s.is_terminal and s is not JobState.READY]
            await self.fail(job_id, live, JobState.FAILED, INTERNAL_ERROR_MESSAGE)
        except Exception:
            log.exception("job %s: could not record the failure", job_id)

    async def announce_failure(self, job_id: str) -> None:
        """Show an ended job's failure (`job.error`), then close it; a batch's job is shown
        with its batch, once the batch has ended."""
        job = await self.store.require(job_id)
        if job.in_batch:
            await self.batches.ended(job)
            return
        try:
            await self._with_retries(lambda: self.notifier.job_failed(job))
        except DeliveryImpossible as exc:
            log.warning("job %s: failure cannot be shown: %s", job_id, exc)
        await self.store.close(job_id)
        await self._job_closed(job_id)

    async def _with_retries(self, call: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Retry a Discord-side call through transient trouble, a bounded number of times;
        DeliveryImpossible stops it at once, and is what running out of attempts raises."""
        for attempt in range(1, self.attempts + 1):
            try:
                return await call()
            except (DeliveryImpossible, asyncio.CancelledError):
                raise
            except Exception:
                log.exception("notifying failed (attempt %d)", attempt)
                if attempt == self.attempts:
                    break
                delay = min(DELIVERY_BACKOFF_CAP, self.backoff * 2.0 ** (attempt - 1))
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
        raise DeliveryImpossible("Discord kept failing, so the bot gave up")
