"""The approval queue: on servers that turn it on, requests by members without a trusted role
wait for a moderator before anything is reserved or sent. Waiting requests are capped per
member and count as used when the member's next request is checked against their allowance;
moderators see their references as thumbnails that fit any upload limit.

A held request is stored whole (parameters and reference images), so it survives restarts.
Approving it is a compare-and-set (pending → approved) followed by the normal acceptance,
with the job's id fixed to the approval's id: if the bot stops in between, `resume` finishes
the acceptance on the next start and can never create the job twice.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from PIL import Image

from bot.errors import InvalidRequest
from bot.jobs.models import GenerationRequest, Job
from bot.jobs.store import new_job_id
from bot.ledger import Ledger, Metric, QuotaExceeded, credits_to_mc
from bot.periodic import repeat
from bot.providers.base import InputImage
from bot.servers.audit import AuditLog
from bot.storage.db import Database
from bot.variants import JobParams, ReferenceSize, Variant

log = logging.getLogger(__name__)

MAX_REASON = 300
DEFAULT_MAX_PENDING = 3
REVIEW_UNREACHABLE_TEXT = (
    "Requests here need a moderator's approval, but I can't post in the review channel. "
    "Nothing was charged; please tell a moderator."
)
REVIEW_FAILED_TEXT = (
    "Requests here need a moderator's approval, but posting yours for review failed just now. "
    "Nothing was charged; please try again in a moment."
)
PENDING_CAP_TEXT = (
    "You already have {count} requests waiting for a moderator's approval on this server, "
    "the most allowed. Please wait until they are reviewed. Nothing was charged."
)
PENDING_COUNTED_TEXT = (
    "(Your {requests} waiting for approval {verb} as used until a moderator decides.)"
)
# Review images: at most this many pixels a side, and all of them together within this many
# bytes, well under Discord's smallest upload limit (10 MiB) with room for the rest of the post.
REVIEW_IMAGE_SIDE = 1024
REVIEW_UPLOAD_BUDGET = 8 * 1024 * 1024
MAX_REVIEW_IMAGES = 10
_SHOWN_AS_IS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
ALREADY_DECIDED_TEXT = "This request has already been {state}."
# A request nobody reviews must not hold its place (and the member's allowance) for ever.
DEFAULT_EXPIRY_HOURS = 72.0
EXPIRY_SWEEP_SECONDS = 600.0
EXPIRED_TEXT = (
    "No moderator reviewed it within {hours:g} hours, so it expired. Nothing was charged; "
    "ask again if you still want it."
)
SELF_APPROVAL_TEXT = (
    "You can't approve your own request: another moderator has to review it. "
    "(You can still reject it to withdraw it.)"
)
NOT_HERE_TEXT = "This button doesn't belong to this channel, so it did nothing."


@dataclass(frozen=True)
class Approval:
    id: str
    created_at: float
    guild_id: int
    channel_id: int
    user_id: int
    variant: str
    params: JobParams
    parent_job_id: str | None
    role_ids: tuple[int, ...]
    state: str
    status_message_id: int | None
    review_channel_id: int | None
    review_message_id: int | None
    decided_by: int | None
    reason: str | None
    job_id: str | None


def check_review(
    approval: Approval,
    *,
    actor_id: int,
    guild_id: int | None,
    channel_id: int | None,
    approving: bool,
) -> None:
    """May this click decide this approval? Only in the review channel it was posted to (a
    custom id copied into another server's or channel's message must not act), and never
    the requester approving their own request: Manage Messages in the review channel alone
    would otherwise let a member wave their own requests through. Raises InvalidRequest."""
    if approval.guild_id != guild_id or approval.review_channel_id != channel_id:
        raise InvalidRequest(NOT_HERE_TEXT)
    if approving and approval.user_id == actor_id:
        raise InvalidRequest(SELF_APPROVAL_TEXT)


@dataclass(frozen=True)
class ReviewImage:
    """A reference image as the moderators see it: small enough to post anywhere."""

    filename: str
    data: bytes


def review_images(inputs: Sequence[InputImage]) -> list[ReviewImage]:
    """Thumbnails of a request's references that together fit REVIEW_UPLOAD_BUDGET. CPU work:
    run it off the event loop."""
    shown = list(inputs[:MAX_REVIEW_IMAGES])
    if not shown:
        return []
    budget = REVIEW_UPLOAD_BUDGET // len(shown)
    return [review_image(index, image, budget) for index, image in enumerate(shown, start=1)]


def review_image(index: int, image: InputImage, budget: int) -> ReviewImage:
    """The image itself when it is small already; else a JPEG of at most REVIEW_IMAGE_SIDE
    pixels a side, made smaller until it fits `budget` bytes."""
    extension = _SHOWN_AS_IS.get(image.content_type)
    small = max(image.width, image.height) <= REVIEW_IMAGE_SIDE
    if extension is not None and small and len(image.data) <= budget:
        return ReviewImage(f"reference-{index}.{extension}", image.data)
    with Image.open(io.BytesIO(image.data)) as opened:
        # Shrunk before anything else (a JPEG is even decoded reduced): a 40 MP reference is
        # never held at full size in RGBA.
        opened.thumbnail((REVIEW_IMAGE_SIDE, REVIEW_IMAGE_SIDE))
        picture = opened.convert("RGBA")
    flat = Image.new("RGB", picture.size, (255, 255, 255))
    flat.paste(picture, mask=picture.getchannel("A"))  # transparency shown on white
    data = b""
    for side in (REVIEW_IMAGE_SIDE, 768, 512, 256, 128):
        thumb = flat.copy()
        thumb.thumbnail((side, side))
        for quality in (85, 70, 50):
            buffer = io.BytesIO()
            thumb.save(buffer, "JPEG", quality=quality, optimize=True)
            data = buffer.getvalue()
            if len(data) <= budget:
                return ReviewImage(f"reference-{index}.jpg", data)
    return ReviewImage(f"reference-{index}.jpg", data)  # 128 px: a few KiB whatever it shows


class ReviewChannelUnreachable(Exception):
    """The review channel is gone or the bot may not post there (raised by the view)."""


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
        self.expiry_hours = expiry_hours
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
        need = _need(request)
        # A refusal before the thumbnails are made costs no decoding; the write checks again.
        await self._db.run(lambda conn: self._admit(conn, request, need, now))
        images = await asyncio.to_thread(review_images, request.inputs)  # decoding: CPU work
        entry = self._audit.entry(
            request.guild_id,
            request.user_id,
            "approval requested",
            f"{request.variant.label}: `{request.params.prompt[:200]}`",
            target_id=request.user_id,
            job_id=approval_id,
        )

        def write(conn: sqlite3.Connection) -> None:
            self._admit(conn, request, need, now)
            conn.execute(
                "INSERT INTO approvals (id, created_at, guild_id, channel_id, user_id, request,"
                " status_message_id, review_channel_id) VALUES (?,?,?,?,?,?,?,?)",
                (
                    approval_id,
                    now,
                    request.guild_id,
                    request.channel_id,
                    request.user_id,
                    json.dumps(
                        {
                            "variant": variant_name,
                            "params": request.params.to_json(),
                            "parent_job_id": request.parent_job_id,
                            "role_ids": list(request.role_ids),
                            "need": {"images": need[0], "credits_mc": need[1]},
                        }
                    ),
                    status_message_id,
                    review_channel_id,
                ),
            )
            conn.executemany(
                "INSERT INTO approval_inputs (approval_id, position, content_type, width,"
                " height, data) VALUES (?,?,?,?,?,?)",
                [
                    (approval_id, i, image.content_type, image.width, image.height, image.data)
                    for i, image in enumerate(request.inputs)
                ],
            )
            self._audit.write(conn, entry)

        await self._db.run(write)
        await self._audit.publish(entry)
        approval = await self.require(approval_id)
        if self.view is not None:
            try:
                message_id = await self.view.post_review(approval, images, review_channel_id)
            except Exception as exc:
                # Nobody could ever review it: withdraw it rather than leave it waiting.
                log.warning("could not post approval %s for review", approval_id, exc_info=True)
                await self._db.execute("DELETE FROM approvals WHERE id = ?", (approval_id,))
                unreachable = isinstance(exc, ReviewChannelUnreachable)
                raise InvalidRequest(
                    REVIEW_UNREACHABLE_TEXT if unreachable else REVIEW_FAILED_TEXT
                ) from None
            await self._db.execute(
                "UPDATE approvals SET review_message_id = ? WHERE id = ?", (message_id, approval_id)
            )
            approval = replace(approval, review_message_id=message_id)
        return approval

    def _admit(
        self, conn: sqlite3.Connection, request: GenerationRequest, need: tuple[int, int],
        now: float,
    ) -> None:  # fmt: skip
        """On the database thread, in the transaction that stores the request."""
        count, held_images, held_mc = conn.execute(
            "SELECT count(*), COALESCE(SUM(COALESCE(json_extract(request, '$.need.images'), 1)),"
            " 0), COALESCE(SUM(COALESCE(json_extract(request, '$.need.credits_mc'), 0)), 0)"
            " FROM approvals WHERE guild_id = ? AND user_id = ? AND state = 'pending'",
            (request.guild_id, request.user_id),
        ).fetchone()
        if count >= self._max_pending:
            raise InvalidRequest(PENDING_CAP_TEXT.format(count=count))
        if self._ledger is None:
            return
        images, credits_mc = need
        try:
            self._ledger.check_in(
                conn,
                guild_id=request.guild_id,
                user_id=request.user_id,
                role_ids=request.role_ids,
                credits=credits_mc / 1000,
                images=images,
                held={Metric.IMAGES: int(held_images), Metric.CREDITS: int(held_mc)},
                now=now,
            )
        except QuotaExceeded as exc:
            if not count:
                raise
            requests = "request" if count == 1 else f"{count} requests"
            counted = PENDING_COUNTED_TEXT.format(
                requests=requests, verb="counts" if count == 1 else "count"
            )
            raise InvalidRequest(f"{exc} {counted}") from exc

    async def get(self, approval_id: str) -> Approval | None:
        row = await self._db.fetch_one("SELECT * FROM approvals WHERE id = ?", (approval_id,))
        return None if row is None else _approval(row)

    async def require(self, approval_id: str) -> Approval:
        approval = await self.get(approval_id)
        if approval is None:
            raise InvalidRequest("This request is no longer known.")
        return approval

    async def inputs(self, approval_id: str) -> list[InputImage]:
        rows = await self._db.fetch_all(
            "SELECT * FROM approval_inputs WHERE approval_id = ? ORDER BY position",
            (approval_id,),
        )
        return [InputImage(r["content_type"], r["width"], r["height"], r["data"]) for r in rows]

    async def pending(self, guild_id: int) -> list[Approval]:
        rows = await self._db.fetch_all(
            "SELECT * FROM approvals WHERE guild_id = ? AND state = 'pending' ORDER BY created_at",
            (guild_id,),
        )
        return [_approval(row) for row in rows]

    async def _decide(
        self, approval_id: str, to: str, moderator_id: int, reason: str | None
    ) -> Approval:
        """pending → `to`, once: the second of two moderators clicking at once is told."""
        rows = await self._db.run(
            lambda conn: conn.execute(
                "UPDATE approvals SET state = ?, decided_by = ?, decided_at = ?, reason = ?"
                " WHERE id = ? AND state = 'pending' RETURNING *",
                (to, moderator_id, self._clock(), reason, approval_id),
            ).fetchall()
        )
        if not rows:
            current = await self.require(approval_id)
            raise InvalidRequest(ALREADY_DECIDED_TEXT.format(state=current.state))
        return _approval(rows[0])

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
            )
            try:
                await self._submit(request, status_message_id=approval.status_message_id or 0)
            except InvalidRequest as exc:  # e.g. the allowance ran out while it waited
                failed = replace(approval, state="rejected", reason=str(exc))
                await self._db.execute(
                    "UPDATE approvals SET state = 'rejected', reason = ? WHERE id = ?",
                    (str(exc), approval.id),
                )
                await self._finish(failed, 0, "could not start", str(exc))
                return failed
        await self._db.execute(
            "UPDATE approvals SET job_id = ? WHERE id = ?", (approval.id, approval.id)
        )
        await self._db.execute("DELETE FROM approval_inputs WHERE approval_id = ?", (approval.id,))
        started = replace(approval, job_id=approval.id)
        if self.view is not None:
            await self.view.show_decision(started)
        return started

    async def _finish(self, approval: Approval, actor_id: int, action: str, reason: str) -> None:
        await self._db.execute("DELETE FROM approval_inputs WHERE approval_id = ?", (approval.id,))
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
        rows = await self._db.fetch_all(
            "SELECT id FROM approvals WHERE state = 'pending' AND created_at < ?"
            " ORDER BY created_at",
            (cutoff,),
        )
        reason = EXPIRED_TEXT.format(hours=self.expiry_hours)
        expired = 0
        for row in rows:
            try:
                approval = await self._decide(row["id"], "rejected", 0, reason)
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
        rows = await self._db.fetch_all(
            "SELECT * FROM approvals WHERE state = 'approved' AND job_id IS NULL"
        )
        for row in rows:
            try:
                await self._start(_approval(row))
            except Exception:
                log.exception("could not resume approval %s", row["id"])
        return len(rows)


def _need(request: GenerationRequest) -> tuple[int, int]:
    """(images, millicredits) the request will reserve once approved, as the engine counts."""
    references = [ReferenceSize(image.width, image.height) for image in request.inputs]
    credits = request.variant.estimate_cost(request.params, references)
    return request.variant.image_count(request.params), credits_to_mc(credits)


def _approval(row: sqlite3.Row) -> Approval:
    request = json.loads(row["request"])
    return Approval(
        id=row["id"],
        created_at=row["created_at"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        user_id=row["user_id"],
        variant=request["variant"],
        params=JobParams.from_json(request["params"]),
        parent_job_id=request["parent_job_id"],
        role_ids=tuple(request["role_ids"]),
        state=row["state"],
        status_message_id=row["status_message_id"],
        review_channel_id=row["review_channel_id"],
        review_message_id=row["review_message_id"],
        decided_by=row["decided_by"],
        reason=row["reason"],
        job_id=row["job_id"],
    )
