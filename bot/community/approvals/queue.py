"""The approval queue service: holds a request for review, decides it once, starts an
approved request as a job, expires requests nobody reviewed, and resumes after a restart.
The Discord side (review posts, buttons, the requester's status message) is the
`ApprovalView` port, implemented in cogs/approvals.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

from bot.community.approvals.review_images import ReviewImage, review_images
from bot.community.approvals.rules import (
    ALREADY_DECIDED_TEXT,
    DEFAULT_EXPIRY_HOURS,
    DEFAULT_MAX_PENDING,
    EXPIRED_TEXT,
    MAX_REASON,
    REVIEW_FAILED_TEXT,
    REVIEW_UNREACHABLE_TEXT,
    UNKNOWN_APPROVAL_TEXT,
    Approval,
    check_pending_cap,
    check_review,
    counted_as_used,
    reservation_need,
)
from bot.community.approvals.store import ApprovalStore
from bot.errors import FluxcordError, InvalidRequest
from bot.jobs.models import GenerationRequest, Job
from bot.jobs.store import new_job_id
from bot.ledger import Ledger, Metric, QuotaExceeded
from bot.periodic import repeat
from bot.providers.base import InputImage
from bot.servers.audit import AuditLog
from bot.storage.db import Database, Tx
from bot.variants import Variant

log = logging.getLogger(__name__)

EXPIRY_SWEEP_SECONDS = 600.0


class ReviewChannelUnreachable(FluxcordError):
    """The review channel is gone or the bot may not post there (raised by the view)."""

    user_message = REVIEW_UNREACHABLE_TEXT


class ApprovalView(Protocol):
    """What the Discord layer does when an approval changes (see cogs/approvals.py)."""

    async def post_review(
        self, approval: Approval, images: list[ReviewImage], channel_id: int
    ) -> int:
        """Post the request for review; the review message's id. Raises
        ReviewChannelUnreachable when the channel can't be posted in."""
        ...

    async def show_decision(self, approval: Approval) -> None: ...


class Submitter(Protocol):
    async def __call__(
        self, request: GenerationRequest, *, status_message_id: int
    ) -> tuple[Job, int | None]: ...


class ApprovalQueue:
    """On servers that turn it on, requests by members without a trusted role wait for a
    moderator before anything is reserved or sent. Waiting requests are capped per member and
    count as used when the member's next request is checked against their allowance.

    Approving is a compare-and-set (pending → approved) followed by the normal acceptance,
    with the job's id fixed to the approval's id: if the bot stops in between, `resume`
    finishes the acceptance on the next start and can never create the job twice."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        *,
        variant_for: Callable[[str], Variant],
        submit: Submitter,
        job_exists: Callable[[str], Awaitable[Job | None]],
        clock: Callable[[], float] = time.time,
        ledger: Ledger | None = None,
        max_pending_per_member: int = DEFAULT_MAX_PENDING,
        expiry_hours: float = DEFAULT_EXPIRY_HOURS,
    ) -> None:
        self._db = db
        self._store = ApprovalStore(db)
        self.expiry_hours = expiry_hours
        # With several processes each resumes only the servers on its own shards.
        self.handles_guild: Callable[[int], bool] = lambda guild_id: True
        self.sweep_interval = EXPIRY_SWEEP_SECONDS
        self._ledger = ledger
        self._max_pending = max_pending_per_member
        self._audit = audit
        self._variant_for = variant_for
        self._submit = submit
        self._job_exists = job_exists
        self._clock = clock
        self.view: ApprovalView | None = None

    async def hold(
        self,
        request: GenerationRequest,
        *,
        variant_name: str,
        status_message_id: int,
        review_channel_id: int,
    ) -> Approval:
        """Store a request for review and post it to the moderators' channel. Refused
        (InvalidRequest) when the member has the most pending requests allowed, or when this
        one together with their pending ones would not fit their allowance: a pending request
        reserves nothing in the ledger, so it is counted here instead."""
        assert request.guild_id is not None, "direct messages have no moderators"
        approval_id = new_job_id()
        now = self._clock()
        need = reservation_need(request)
        # A refusal before the thumbnails are made costs no decoding; the write checks again.
        await self._db.run(lambda tx: self._admit(tx, request, need, now))
        images = await asyncio.to_thread(review_images, request.inputs)  # decoding: CPU work
        entry = self._audit.entry(
            request.guild_id,
            request.user_id,
            "approval requested",
            f"{request.variant.label}: `{request.params.prompt[:200]}`",
            target_id=request.user_id,
            job_id=approval_id,
        )

        async def write(tx: Tx) -> None:
            await self._admit(tx, request, need, now)
            await ApprovalStore.insert(
                tx,
                approval_id,
                request,
                variant_name=variant_name,
                need=need,
                created_at=now,
                status_message_id=status_message_id,
                review_channel_id=review_channel_id,
            )
            await self._audit.write(tx, entry)

        await self._db.run(write)
        await self._audit.publish(entry)
        approval = await self.require(approval_id)
        if self.view is not None:
            try:
                message_id = await self.view.post_review(approval, images, review_channel_id)
            except Exception as exc:
                # Nobody could ever review it: withdraw it rather than leave it waiting.
                log.warning("could not post approval %s for review", approval_id, exc_info=True)
                await self._store.delete(approval_id)
                text = (
                    exc.user_message
                    if isinstance(exc, ReviewChannelUnreachable)
                    else REVIEW_FAILED_TEXT
                )
                raise InvalidRequest(text) from None
            await self._store.set_review_message(approval_id, message_id)
            approval = replace(approval, review_message_id=message_id)
        return approval

    async def _admit(
        self, tx: Tx, request: GenerationRequest, need: tuple[int, int],
        now: float,
    ) -> None:  # fmt: skip
        """In the transaction that stores the request."""
        assert request.guild_id is not None
        # The ledger's check takes this lock too; taken first, the pending load read here
        # cannot change before the request is stored (PostgreSQL runs writers at once).
        await tx.lock(f"allowance:{request.guild_id}")
        load = await ApprovalStore.pending_load(tx, request.guild_id, request.user_id)
        check_pending_cap(load, self._max_pending)
        if self._ledger is None:
            return
        images, credits_mc = need
        try:
            await self._ledger.check_in(
                tx,
                guild_id=request.guild_id,
                user_id=request.user_id,
                role_ids=request.role_ids,
                credits=credits_mc / 1000,
                images=images,
                held={Metric.IMAGES: load.images, Metric.CREDITS: load.credits_mc},
                now=now,
            )
        except QuotaExceeded as exc:
            if not load.count:
                raise
            raise counted_as_used(exc, load) from exc

    async def get(self, approval_id: str) -> Approval | None:
        return await self._store.get(approval_id)

    async def require(self, approval_id: str) -> Approval:
        approval = await self.get(approval_id)
        if approval is None:
            raise InvalidRequest(UNKNOWN_APPROVAL_TEXT)
        return approval

    async def inputs(self, approval_id: str) -> list[InputImage]:
        return await self._store.inputs(approval_id)

    async def pending(self, guild_id: int) -> list[Approval]:
        return await self._store.pending(guild_id)

    async def _decide(
        self, approval_id: str, to: str, moderator_id: int, reason: str | None
    ) -> Approval:
        """pending → `to`, once: the second of two moderators clicking at once is told."""
        decided = await self._store.decide(approval_id, to, moderator_id, self._clock(), reason)
        if decided is None:
            current = await self.require(approval_id)
            raise InvalidRequest(ALREADY_DECIDED_TEXT.format(state=current.state))
        return decided

    async def check_click(
        self, approval_id: str, actor_id: int, guild_id: int | None, channel_id: int | None,
        *, approving: bool,
    ) -> Approval:  # fmt: skip
        """The approval a review button or modal acts on, if this click may decide it."""
        approval = await self.require(approval_id)
        check_review(
            approval, actor_id=actor_id, guild_id=guild_id, channel_id=channel_id,
            approving=approving,
        )  # fmt: skip
        return approval

    async def approve(self, approval_id: str, moderator_id: int) -> Approval:
        approval = await self._decide(approval_id, "approved", moderator_id, None)
        await self._audit.record(
            approval.guild_id,
            moderator_id,
            "approved",
            f"<@{approval.user_id}>'s request",
            target_id=approval.user_id,
            job_id=approval.id,
        )
        return await self._start(approval)

    async def reject(self, approval_id: str, moderator_id: int, reason: str) -> Approval:
        reason = reason.strip()[:MAX_REASON] or "No reason given."
        approval = await self._decide(approval_id, "rejected", moderator_id, reason)
        await self._finish(approval, moderator_id, "rejected", reason)
        return approval

    async def _start(self, approval: Approval) -> Approval:
        """Accept an approved request as a job whose id is the approval's."""
        if await self._job_exists(approval.id) is None:
            request = GenerationRequest(
                user_id=approval.user_id,
                guild_id=approval.guild_id,
                channel_id=approval.channel_id,
                variant=self._variant_for(approval.variant),
                params=approval.params,
                inputs=await self.inputs(approval.id),
                parent_job_id=approval.parent_job_id,
                role_ids=approval.role_ids,
                job_id=approval.id,
                batch_size=approval.batch_size,
            )
            try:
                await self._submit(request, status_message_id=approval.status_message_id or 0)
            except InvalidRequest as exc:  # e.g. the allowance ran out while it waited
                failed = replace(approval, state="rejected", reason=str(exc))
                await self._store.mark_not_started(approval.id, str(exc))
                await self._finish(failed, 0, "could not start", str(exc))
                return failed
        await self._store.mark_started(approval.id)
        started = replace(approval, job_id=approval.id)
        if self.view is not None:
            await self.view.show_decision(started)
        return started

    async def _finish(self, approval: Approval, actor_id: int, action: str, reason: str) -> None:
        await self._store.drop_inputs(approval.id)
        await self._audit.record(
            approval.guild_id,
            actor_id,
            action,
            f"<@{approval.user_id}>'s request: {reason}",
            target_id=approval.user_id,
            job_id=approval.id,
        )
        if self.view is not None:
            await self.view.show_decision(approval)

    async def expire_due(self) -> int:
        """Reject the pending requests older than `expiry_hours` (their waiting messages say
        so); returns how many expired."""
        cutoff = self._clock() - self.expiry_hours * 3600
        reason = EXPIRED_TEXT.format(hours=self.expiry_hours)
        expired = 0
        for approval_id in await self._store.pending_before(cutoff):
            try:
                approval = await self._decide(approval_id, "rejected", 0, reason)
            except InvalidRequest:  # a moderator decided it meanwhile
                continue
            await self._finish(approval, 0, "expired", reason)
            expired += 1
        return expired

    async def run(self, ready: Callable[[], Awaitable[object]]) -> None:
        """The background sweep: once the bot is ready, then every `sweep_interval`
        seconds, expire requests nobody reviewed. Runs until cancelled."""
        await ready()
        await repeat(self.expire_due, lambda: self.sweep_interval, what="approval expiry sweep")

    async def resume(self) -> int:
        """After a restart: finish approvals that were approved but not yet started."""
        approval_ids = await self._store.approved_not_started()
        for approval_id in approval_ids:
            try:
                approval = await self.require(approval_id)
                if not self.handles_guild(approval.guild_id):
                    continue  # another process's shard resumes it
                await self._start(approval)
            except Exception:
                log.exception("could not resume approval %s", approval_id)
        return len(approval_ids)
