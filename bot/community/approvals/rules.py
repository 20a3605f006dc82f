"""What the approval queue allows: how many requests a member may have waiting, what a
waiting request counts against their allowance, and which click may decide a request."""

from __future__ import annotations

from dataclasses import dataclass

from bot.errors import ButtonNotHere, InvalidRequest
from bot.jobs.models import GenerationRequest
from bot.ledger import credits_to_mc
from bot.variants import JobParams, ReferenceSize

MAX_REASON = 300
DEFAULT_MAX_PENDING = 3
# A request nobody reviews must not hold its place (and the member's allowance) for ever.
DEFAULT_EXPIRY_HOURS = 72.0
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
ALREADY_DECIDED_TEXT = "This request has already been {state}."
UNKNOWN_APPROVAL_TEXT = "This request is no longer known."
EXPIRED_TEXT = (
    "No moderator reviewed it within {hours:g} hours, so it expired. Nothing was charged; "
    "ask again if you still want it."
)
SELF_APPROVAL_TEXT = (
    "You can't approve your own request: another moderator has to review it. "
    "(You can still reject it to withdraw it.)"
)


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
    batch_size: int = 1  # several images per prompt (bot/jobs/batches.py)


@dataclass(frozen=True)
class PendingLoad:
    """A member's requests waiting on a server, and what they will reserve once approved."""

    count: int
    images: int
    credits_mc: int


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
        raise ButtonNotHere()
    if approving and approval.user_id == actor_id:
        raise InvalidRequest(SELF_APPROVAL_TEXT)


def check_pending_cap(load: PendingLoad, max_pending: int) -> None:
    if load.count >= max_pending:
        raise InvalidRequest(PENDING_CAP_TEXT.format(count=load.count))


def counted_as_used(refusal: InvalidRequest, load: PendingLoad) -> InvalidRequest:
    """An allowance refusal of a member with requests waiting: it says those count as used
    (they are why the allowance is short)."""
    requests = "request" if load.count == 1 else f"{load.count} requests"
    counted = PENDING_COUNTED_TEXT.format(
        requests=requests, verb="counts" if load.count == 1 else "count"
    )
    return InvalidRequest(f"{refusal} {counted}")


def reservation_need(request: GenerationRequest) -> tuple[int, int]:
    """(images, millicredits) the request will reserve once approved, as the engine counts."""
    references = [ReferenceSize(image.width, image.height) for image in request.inputs]
    credits = request.variant.estimate_cost(request.params, references)
    count = request.batch_size  # a batch: each of its jobs reserves one estimate
    return request.variant.image_count(request.params) * count, credits_to_mc(credits) * count
