"""The approval queue: on servers that turn it on, requests by members without a trusted role
wait for a moderator before anything is reserved or sent. Waiting requests are capped per
member and count as used when the member's next request is checked against their allowance;
moderators see their references as thumbnails that fit any upload limit.

- `rules`: the limits and texts, `Approval`, which click may decide a request, what a
  waiting request counts against the member's allowance; plain values.
- `review_images`: the thumbnails moderators see.
- `store`: the approvals tables (SQLite), returning `Approval`s.
- `queue`: `ApprovalQueue`, the service the bot holds, and the `ApprovalView` port the cog
  implements (cogs/approvals.py renders the review posts and the requester's status).
"""

from bot.community.approvals.queue import (
    ApprovalQueue,
    ApprovalView,
    ReviewChannelUnreachable,
    Submitter,
)
from bot.community.approvals.review_images import (
    MAX_REVIEW_IMAGES,
    REVIEW_IMAGE_SIDE,
    REVIEW_UPLOAD_BUDGET,
    ReviewImage,
    review_images,
)
from bot.community.approvals.rules import (
    PENDING_CAP_TEXT,
    REVIEW_FAILED_TEXT,
    REVIEW_UNREACHABLE_TEXT,
    SELF_APPROVAL_TEXT,
    Approval,
    check_review,
)

__all__ = [
    "MAX_REVIEW_IMAGES",
    "PENDING_CAP_TEXT",
    "REVIEW_FAILED_TEXT",
    "REVIEW_IMAGE_SIDE",
    "REVIEW_UNREACHABLE_TEXT",
    "REVIEW_UPLOAD_BUDGET",
    "SELF_APPROVAL_TEXT",
    "Approval",
    "ApprovalQueue",
    "ApprovalView",
    "ReviewChannelUnreachable",
    "ReviewImage",
    "Submitter",
    "check_review",
    "review_images",
]
