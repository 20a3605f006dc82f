"""A JobNotifier that records what a channel would show, with Discord's edit-in-place semantics.

Each job has one message (its status message, or one created once per job like Discord's
enforced nonce), so delivering the same job twice edits that message instead of posting a
second one — exactly the idempotency the real notifier relies on.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.jobs.models import Job
from bot.providers.base import OutputImage


@dataclass
class ShownMessage:
    job_id: str
    kind: str  # "result" or "failure"
    text: str
    images: list[bytes] = field(default_factory=list)
    writes: int = 1
    at: float = 0.0


class RecordingNotifier:
    def __init__(self) -> None:
        self.messages: dict[int, ShownMessage] = {}
        self.deliver_calls: dict[str, int] = {}
        self.fail_calls: dict[str, int] = {}
        self.progress: list[tuple[str, str | None, int | None]] = []
        self.delivered_at: dict[str, float] = {}
        self.fail_next_deliveries = 0
        self.delivery_delay = 0.0  # seconds a post takes, to widen crash windows in tests
        self._ids = itertools.count(1_000_000)
        self._message_of_job: dict[str, int] = {}
        self._changed = asyncio.Condition()

    def _message_id(self, job: Job) -> int:
        if job.status_message_id is not None:
            return job.status_message_id
        return self._message_of_job.setdefault(job.id, next(self._ids))

    async def _show(self, job: Job, message: ShownMessage) -> int:
        message_id = self._message_id(job)
        previous = self.messages.get(message_id)
        if previous is not None:
            message.writes = previous.writes + 1
        self.messages[message_id] = message
        async with self._changed:
            self._changed.notify_all()
        return message_id

    async def job_progress(self, job: Job, *, queue_position: int | None) -> None:
        self.progress.append((job.id, job.provider_status, queue_position))

    async def job_delivered(self, job: Job, images: list[OutputImage]) -> int:
        self.deliver_calls[job.id] = self.deliver_calls.get(job.id, 0) + 1
        if self.fail_next_deliveries:
            self.fail_next_deliveries -= 1
            raise ConnectionError("discord is having a moment")
        if self.delivery_delay:
            await asyncio.sleep(self.delivery_delay)
        self.delivered_at[job.id] = time.monotonic()
        shown = ShownMessage(
            job.id, "result", job.prompt, [i.data for i in images], at=time.monotonic()
        )
        return await self._show(job, shown)

    async def job_failed(self, job: Job) -> None:
        self.fail_calls[job.id] = self.fail_calls.get(job.id, 0) + 1
        await self._show(job, ShownMessage(job.id, "failure", job.error or "", at=time.monotonic()))

    # ------------------------------------------------------------------ test helpers
    def shown_for(self, job_id: str) -> list[ShownMessage]:
        return [m for m in self.messages.values() if m.job_id == job_id]

    def outcome(self, job_id: str) -> ShownMessage | None:
        shown = self.shown_for(job_id)
        return shown[0] if shown else None

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        await asyncio.wait_for(wait(), within)
