"""Publishing a private result: once, publicly, in the job's channel, at no extra cost.

A private result (see `GenerationService.private_for`) is shown to its requester alone; its
Publish button posts it in the job's channel. "Once" holds against double clicks and several
processes: a click first claims the posting in the database (a compare-and-set on the job),
posts, then records the public message in the same transaction as its audit entry. A claim
whose process died before it finished lapses after CLAIM_SECONDS, so the result can still be
published. The ledger is never touched: the image was charged when it was made.
"""

from __future__ import annotations

from bot.community.policy import CommunityPolicy
from bot.errors import InvalidRequest
from bot.jobs.models import Job, JobState
from bot.jobs.store import JobStore
from bot.servers.audit import AuditLog
from bot.storage.db import Tx
from bot.text import code_excerpt

# Longer than posting a result takes through Discord's retries and rate limits, short enough
# that a member whose click's process died can try again soon.
CLAIM_SECONDS = 120.0
NOT_YOURS_TEXT = "Only the person who made this image can publish it."
NOT_PRIVATE_TEXT = "This image is already public."
NOT_READY_TEXT = "This image isn't finished, so it can't be published."
# Between its message going out and its job recording that: a moment.
DELIVERING_TEXT = "This image is still being delivered; try again in a moment."
PUBLISHING_NOW_TEXT = "It's being published right now; it will appear in the channel shortly."


class AlreadyPublished(InvalidRequest):
    """Published before (by this member's other click, or another process): where it is."""

    def __init__(self, job: Job) -> None:
        super().__init__("Already published.")
        self.job = job


class Publications:
    def __init__(
        self, store: JobStore, audit: AuditLog | None, policy: CommunityPolicy | None = None
    ) -> None:
        self._store = store
        self._audit = audit
        self._policy = policy

    async def claim(self, job: Job, user_id: int) -> Job:
        """This caller alone may post `job` publicly now. Raises AlreadyPublished, or
        InvalidRequest with the reason it can't be published (yet)."""
        if job.user_id != user_id:
            raise InvalidRequest(NOT_YOURS_TEXT)
        if not job.private:
            raise InvalidRequest(NOT_PRIVATE_TEXT)
        if self._policy is not None:  # a member blocked since may not post in the channel
            self._policy.check_blocked_everywhere(user_id)
            if job.guild_id is not None:
                self._policy.moderation.check_blocked(job.guild_id, user_id)
        claimed = await self._store.claim_publication(job.id, stale_after=CLAIM_SECONDS)
        if claimed is not None:
            return claimed
        current = await self._store.get(job.id) or job
        if current.published_message_id is not None:
            raise AlreadyPublished(current)
        if current.state is JobState.READY:
            raise InvalidRequest(DELIVERING_TEXT)
        if current.state is not JobState.DELIVERED:
            raise InvalidRequest(NOT_READY_TEXT)
        raise InvalidRequest(PUBLISHING_NOW_TEXT)

    async def published(self, job: Job, message_id: int) -> Job:
        """The claimed post is up in `message_id`: record it, and audit "published"."""
        audit = self._audit
        entry = (
            audit.entry(
                job.guild_id,
                job.user_id,
                "published",
                f"<@{job.user_id}>'s private image {code_excerpt(job.prompt, 200)} ({job.id})",
                target_id=job.user_id,
                job_id=job.id,
            )
            if audit is not None and job.guild_id
            else None
        )

        async def write_audit(tx: Tx) -> None:
            if entry is not None:
                await AuditLog.write(tx, entry)

        recorded = await self._store.record_publication(job.id, message_id, write_audit)
        if recorded is None:  # cannot happen while the claim holds; the first post stands
            current = await self._store.get(job.id) or job
            raise AlreadyPublished(current)
        if entry is not None and audit is not None:
            await audit.publish(entry)
        return recorded

    async def release(self, job: Job) -> None:
        """The post failed: let the member try again."""
        await self._store.release_publication(job.id)
