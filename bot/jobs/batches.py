"""Several images per prompt: a batch of jobs shown in one message.

`images: N` on a BFL request makes N jobs in one transaction (bot/jobs/store.py: all or
none, each with its own reservation and seed). Each job then runs alone — its own provider
slot, its own place in the fair queue, charged or refunded alone — and ends as usual: ready
(images stored, charged) or failed, moderated or cancelled (refunded). Only the showing is
shared: a batch job's ending does not post anything of its own. Instead, each ending, once
its own state is committed, reads its siblings; the ending that finds them all ended posts
the batch (the first job's message: its interaction's answer, else its channel message), and
then every job of the batch is closed with that message's id.

Whatever crashes, at least one ending sees the batch complete (each commits before it
reads), and recovery delivers a ready batch job like any ready job, which comes back here.
Two endings may both see it complete (two processes): posting it is idempotent (the same
interaction message is edited, or the channel post carries the first job's nonce), and
closing the jobs is a compare-and-set, so there is exactly one message.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bot.errors import DeliveryImpossible
from bot.jobs.models import Job, JobState
from bot.jobs.store import JobStore
from bot.operations.metrics import Metrics
from bot.providers.base import OutputImage

if TYPE_CHECKING:
    from bot.jobs.notifier import JobNotifier

log = logging.getLogger(__name__)

# The most images one request may ask for (each is one BFL task).
MAX_BATCH_IMAGES = 4
# An image of a batch that was made but could not be posted: it stays charged.
UNSHOWN_MESSAGE = "It was made, but the message could not take it: {reason}. It was charged."


@runtime_checkable
class BatchNotifier(Protocol):
    """A notifier that shows a batch in one message (cogs/delivery.py). A notifier without
    it shows each image of a batch as a result of its own."""

    async def batch_progress(self, jobs: list[Job], *, queue_position: int | None) -> None:
        """Best effort: how far the batch is (`jobs` in order, the first shows it)."""

    async def batch_delivered(
        self, jobs: list[Job], images: Mapping[str, list[OutputImage]]
    ) -> int:
        """Post the batch: the images of its ready jobs (`images` by job id), and a line for
        each failed one; returns the message id. Idempotent, like `job_delivered`."""


def has_ended(job: Job) -> bool:
    """The job's own outcome is final: its image is stored, or it ended without one."""
    return job.state is JobState.READY or job.state.is_terminal


class BatchDelivery:
    """Shows a batch once its last job has ended (see the module docstring)."""

    def __init__(
        self,
        store: JobStore,
        metrics: Metrics,
        *,
        notifier: Callable[[], JobNotifier],
        with_retries: Callable[[Callable[[], Coroutine[Any, Any, Any]]], Coroutine[Any, Any, Any]],
        closed: Callable[[str, Job | None], Coroutine[Any, Any, None]],
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._notifier = notifier
        self._with_retries = with_retries
        self._closed = closed
        # One ending of a batch at a time in this process; other processes rely on the
        # idempotent post and the compare-and-set close.
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # the lock and its users

    async def ended(self, job: Job) -> None:
        """A job of the batch has ended (its state committed): show the batch if it is the
        last, else show how far it is."""
        assert job.batch_id is not None
        batch_id = job.batch_id
        lock, users = self._locks.get(batch_id, (asyncio.Lock(), 0))
        self._locks[batch_id] = (lock, users + 1)
        try:
            async with lock:
                await self._show_if_complete(batch_id)
        finally:
            lock, users = self._locks[batch_id]
            if users == 1:
                del self._locks[batch_id]
            else:
                self._locks[batch_id] = (lock, users - 1)

    async def progress(self, job: Job, queue_position: int | None) -> None:
        """Show the batch's progress (`queue_position`: the first job's place in line)."""
        assert job.batch_id is not None
        notifier = self._notifier()
        if not isinstance(notifier, BatchNotifier):
            await notifier.job_progress(job, queue_position=queue_position)
            return
        jobs = await self._store.batch(job.batch_id)
        if jobs and not all(sibling.closed for sibling in jobs):
            await notifier.batch_progress(jobs, queue_position=queue_position)

    async def _show_if_complete(self, batch_id: str) -> None:
        jobs = await self._store.batch(batch_id)
        if not jobs or all(job.closed for job in jobs):
            return  # shown already (by another ending, or another process)
        notifier = self._notifier()
        if not all(has_ended(job) for job in jobs):
            if isinstance(notifier, BatchNotifier):
                try:
                    await notifier.batch_progress(jobs, queue_position=None)
                except Exception:
                    log.debug("batch %s: progress update failed", batch_id, exc_info=True)
            return
        images = {
            job.id: await self._store.outputs(job.id) for job in jobs if job.state is JobState.READY
        }
        if not isinstance(notifier, BatchNotifier):
            await self._show_one_by_one(jobs, images, notifier)
            return
        try:
            message_id = await self._with_retries(lambda: notifier.batch_delivered(jobs, images))
        except DeliveryImpossible as exc:
            log.warning("batch %s: its images cannot be posted: %s", batch_id, exc)
            jobs = await self._unshown(jobs, str(exc))
            try:
                message_id = await self._with_retries(lambda: notifier.batch_delivered(jobs, {}))
            except DeliveryImpossible as again:
                log.warning("batch %s: its outcome cannot be shown: %s", batch_id, again)
                message_id = None
        for closed in await self._store.deliver_batch(batch_id, message_id):
            if closed.state is JobState.DELIVERED:  # a failure was counted when it failed
                self._metrics.job_state_changed(closed.state, closed.variant)
            await self._closed(closed.id, closed)

    async def _unshown(self, jobs: list[Job], reason: str) -> list[Job]:
        """The ready jobs become failed (their charge stands: the images exist)."""
        result = []
        for job in jobs:
            if job.state is JobState.READY:
                failed = await self._store.transition(
                    job.id,
                    from_states=(JobState.READY,),
                    to=JobState.FAILED,
                    error=UNSHOWN_MESSAGE.format(reason=reason),
                )
                job = failed or await self._store.require(job.id)
            result.append(job)
        return result

    async def _show_one_by_one(
        self,
        jobs: list[Job],
        images: Mapping[str, list[OutputImage]],
        notifier: JobNotifier,
    ) -> None:
        """A notifier that does not know batches: each image is its own result."""
        for job in jobs:
            if job.state is JobState.READY:
                shown = list(images[job.id])
                message_id = await self._with_retries(
                    functools.partial(notifier.job_delivered, job, shown)
                )
                delivered = await self._store.mark_delivered(job.id, message_id)
                if delivered is not None:
                    self._metrics.job_state_changed(JobState.DELIVERED, job.variant)
                    await self._closed(job.id, delivered)
            elif not job.closed:
                await self._with_retries(functools.partial(notifier.job_failed, job))
                await self._store.close(job.id)
                await self._closed(job.id, None)


def batch_ready_count(jobs: list[Job]) -> int:
    """How many images of the batch are made (ready, or delivered)."""
    return sum(job.state in (JobState.READY, JobState.DELIVERED) for job in jobs)
