"""The approval queue against a real database and ledger: pending requests are capped per
member and count toward the allowance, and review images always fit the upload budget."""

from __future__ import annotations

import asyncio
import io
import os
from dataclasses import dataclass, field, replace

import pytest
from PIL import Image

from bot.catalogue import get_variant
from bot.community.approvals import (
    MAX_REVIEW_IMAGES,
    PENDING_CAP_TEXT,
    REVIEW_FAILED_TEXT,
    REVIEW_IMAGE_SIDE,
    REVIEW_UNREACHABLE_TEXT,
    REVIEW_UPLOAD_BUDGET,
    Approval,
    ApprovalQueue,
    ReviewChannelUnreachable,
    ReviewImage,
    review_images,
)
from bot.errors import InvalidRequest
from bot.jobs.models import GenerationRequest, Job
from bot.ledger import Ledger, Metric, Period, Scope
from bot.providers.base import InputImage
from bot.servers.audit import AuditLog
from bot.storage.db import Database
from tests.conftest import make_request

GUILD, MEMBER, MOD, REVIEW = 42, 1001, 9, 77


@dataclass
class RecordingView:
    posted: list[list[ReviewImage]] = field(default_factory=list)
    fail_with: Exception | None = None

    async def post_review(self, approval: Approval, images: list[ReviewImage], channel: int) -> int:
        if self.fail_with is not None:
            raise self.fail_with
        self.posted.append(images)
        return 5000 + len(self.posted)

    async def show_decision(self, approval: Approval) -> None:
        pass


async def no_submit(request: GenerationRequest, *, status_message_id: int) -> tuple[Job, int]:
    raise AssertionError("nothing is approved in these tests")


async def no_job(job_id: str) -> Job | None:
    return None


def queue(db: Database, *, max_pending: int = 3) -> tuple[ApprovalQueue, RecordingView]:
    approvals = ApprovalQueue(
        db, AuditLog(db, audit_channel=lambda guild: None), variant_for=get_variant,
        submit=no_submit, job_exists=no_job, ledger=Ledger(db), max_pending_per_member=max_pending,
    )  # fmt: skip
    view = RecordingView()
    approvals.view = view
    return approvals, view


async def hold(approvals: ApprovalQueue, request: GenerationRequest) -> Approval:
    return await approvals.hold(
        request, variant_name=request.variant.key, status_message_id=1, review_channel_id=REVIEW
    )


def noise(side: int, kind: str = "PNG") -> InputImage:
    picture = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    picture.save(buffer, kind)
    mime = {"PNG": "image/png", "JPEG": "image/jpeg"}[kind]
    return InputImage(mime, side, side, buffer.getvalue())


async def pending(db: Database) -> tuple[int, int]:
    approvals = await db.fetch_value("SELECT count(*) FROM approvals WHERE state = 'pending'")
    inputs = await db.fetch_value("SELECT count(*) FROM approval_inputs")
    return int(approvals), int(inputs)


async def test_a_member_can_have_only_so_many_requests_waiting(db: Database) -> None:
    approvals, view = queue(db, max_pending=2)
    tiny = noise(16)
    for n in range(2):
        await hold(approvals, make_request(f"cat {n}", inputs=[tiny]))
    with pytest.raises(InvalidRequest) as refused:
        await hold(approvals, make_request("one too many", inputs=[tiny]))
    assert str(refused.value) == PENDING_CAP_TEXT.format(count=2)
    assert await pending(db) == (2, 2)  # the refused one stored nothing
    assert len(view.posted) == 2
    # Someone else, or the same member on another server, is not affected.
    await hold(approvals, make_request("bob's", user_id=2002))
    await hold(approvals, replace(make_request("elsewhere"), guild_id=43))
    # Once one is decided there is room again.
    first = (await approvals.pending(GUILD))[0]
    await approvals.reject(first.id, MOD, "no")
    await hold(approvals, make_request("now it fits", inputs=[tiny]))


async def test_pending_requests_count_toward_the_allowance(db: Database) -> None:
    approvals, _ = queue(db, max_pending=10)
    ledger = Ledger(db)
    await ledger.admin.set_limit(GUILD, MOD, Scope.USER, MEMBER, Period.DAY, Metric.IMAGES, 2)
    await hold(approvals, make_request("one"))
    await hold(approvals, make_request("two"))
    with pytest.raises(InvalidRequest) as refused:
        await hold(approvals, make_request("three"))
    text = str(refused.value)
    assert text.startswith(
        "This request would go over your daily image allowance (2 images a day). "
        "Left today: 0 images"
    )
    assert text.endswith(
        "(Your 2 requests waiting for approval count as used until a moderator decides.)"
    )
    assert await pending(db) == (2, 0)
    assert await db.fetch_value("SELECT count(*) FROM ledger") == 0  # pending reserves nothing

    # A multi-image request is counted in full: 4 never fit an allowance of 2.
    await approvals.reject((await approvals.pending(GUILD))[0].id, MOD, "no")
    four = make_request("four", variant="dev", options={"num_images": 4})
    with pytest.raises(InvalidRequest, match="Left today: 1 image;"):
        await hold(approvals, four)
    await approvals.reject((await approvals.pending(GUILD))[0].id, MOD, "no")
    with pytest.raises(InvalidRequest, match="it needs 4 images"):
        await hold(approvals, four)
    assert await pending(db) == (0, 0)


async def test_the_credit_allowance_counts_pending_credits_too(db: Database) -> None:
    approvals, _ = queue(db, max_pending=10)
    ledger = Ledger(db)
    await ledger.admin.set_limit(GUILD, MOD, Scope.USER, MEMBER, Period.DAY, Metric.CREDITS, 5000)
    await hold(approvals, make_request("3 credits"))  # pro at 1 MP: 3 credits
    with pytest.raises(InvalidRequest, match="Left today: 2 credits"):
        await hold(approvals, make_request("3 more"))


async def test_a_failed_review_post_withdraws_the_request_and_says_why(db: Database) -> None:
    approvals, view = queue(db)
    view.fail_with = ReviewChannelUnreachable("403")
    with pytest.raises(InvalidRequest) as refused:
        await hold(approvals, make_request("x", inputs=[noise(16)]))
    assert str(refused.value) == REVIEW_UNREACHABLE_TEXT
    view.fail_with = ConnectionError("discord is down")
    with pytest.raises(InvalidRequest) as refused:
        await hold(approvals, make_request("x", inputs=[noise(16)]))
    assert str(refused.value) == REVIEW_FAILED_TEXT
    assert await pending(db) == (0, 0)


def test_review_images_always_fit_the_upload_budget() -> None:
    large = [noise(1500) for _ in range(MAX_REVIEW_IMAGES)]  # ~6.5 MiB of PNG each
    shown = review_images(large)
    assert len(shown) == MAX_REVIEW_IMAGES
    assert sum(len(image.data) for image in shown) <= REVIEW_UPLOAD_BUDGET
    for image in shown:
        with Image.open(io.BytesIO(image.data)) as opened:
            assert opened.format == "JPEG"
            assert max(opened.size) <= REVIEW_IMAGE_SIDE
        assert image.filename.endswith(".jpg")


def test_small_review_images_are_posted_as_they_are_and_transparency_on_white() -> None:
    small = noise(64)
    [kept] = review_images([small])
    assert kept.data == small.data and kept.filename == "reference-1.png"

    buffer = io.BytesIO()
    Image.new("RGBA", (1500, 1000), (255, 0, 0, 0)).save(buffer, "PNG")
    clear = InputImage("image/png", 1500, 1000, buffer.getvalue())
    [shown] = review_images([clear])
    with Image.open(io.BytesIO(shown.data)) as opened:
        assert opened.size == (1024, 683)
        red, green, blue = opened.convert("RGB").getpixel((10, 10))
        assert min(red, green, blue) > 240  # fully transparent shows as white, not black


async def test_simultaneous_requests_cannot_slip_past_the_cap_or_the_allowance(
    db: Database,
) -> None:
    approvals, _ = queue(db, max_pending=3)
    results = await asyncio.gather(
        *(hold(approvals, make_request(f"burst {n}")) for n in range(10)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Approval) for r in results) == 3
    assert all(isinstance(r, (Approval, InvalidRequest)) for r in results)

    await Ledger(db).admin.set_limit(GUILD, MOD, Scope.USER, 2002, Period.DAY, Metric.IMAGES, 2)
    results = await asyncio.gather(
        *(hold(approvals, make_request(f"bob {n}", user_id=2002)) for n in range(10)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Approval) for r in results) == 2
    assert await db.fetch_value("SELECT count(*) FROM approvals") == 5
