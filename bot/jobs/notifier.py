"""How the engine tells the outside world (Discord, a test, a benchmark) about a job."""

from __future__ import annotations

from typing import Protocol

from bot.jobs.models import Job
from bot.providers.base import OutputImage


class JobNotifier(Protocol):
    async def job_progress(self, job: Job, *, queue_position: int | None) -> None:
        """Best effort: show that the job is queued (with its place) or running."""

    async def job_delivered(self, job: Job, images: list[OutputImage]) -> int:
        """Post the result; return the message id. Must be idempotent for one job: after a
        crash it may be called again for a result that was already posted."""

    async def job_failed(self, job: Job) -> None:
        """Tell the requester that the job ended without an image (`job.error` says why,
        safe to show; `job.state` is failed, moderated or cancelled). Idempotent."""
