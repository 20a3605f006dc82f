"""Rules from issue 12 that live in bot/: where a button may act, who may approve."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import replace

import pytest

from bot.catalogue import get_variant
from bot.community.approvals import (
    SELF_APPROVAL_TEXT,
    Approval,
    check_review,
)
from bot.errors import ButtonNotHere, InvalidRequest
from bot.generation import check_button_place
from bot.jobs.models import JobState
from bot.jobs.store import JobStore
from bot.ledger import Ledger, QuotaPolicy, TooManyRefunds
from bot.moderation.strikes import PROVIDER_MODERATION_TERM, Moderation
from bot.servers.audit import AuditLog
from bot.servers.settings import ServerSettings
from bot.storage.db import Database
from tests.conftest import make_request

REQUESTER, MODERATOR, GUILD, REVIEW = 1, 2, 42, 77


def approval() -> Approval:
    params = get_variant("pro").validate("a cat", seed=1)
    return Approval(
        id="0123456789abcdef", created_at=0.0, guild_id=GUILD, channel_id=5, user_id=REQUESTER,
        variant="pro", params=params, parent_job_id=None, role_ids=(), state="pending",
        status_message_id=None, review_channel_id=REVIEW, review_message_id=None,
        decided_by=None, reason=None, job_id=None,
    )  # fmt: skip


def test_a_review_click_acts_only_in_its_review_channel_and_never_as_self_approval() -> None:
    pending = approval()
    check_review(pending, actor_id=MODERATOR, guild_id=GUILD, channel_id=REVIEW, approving=True)
    # The requester may withdraw (reject) their own request, not approve it.
    check_review(pending, actor_id=REQUESTER, guild_id=GUILD, channel_id=REVIEW, approving=False)
    with pytest.raises(InvalidRequest) as refused:
        check_review(pending, actor_id=REQUESTER, guild_id=GUILD, channel_id=REVIEW, approving=True)
    assert str(refused.value) == SELF_APPROVAL_TEXT
    for guild, channel in [(GUILD, 5), (43, REVIEW), (None, REVIEW)]:
        for approving in (True, False):
            with pytest.raises(InvalidRequest) as refused:
                check_review(
                    pending, actor_id=MODERATOR, guild_id=guild, channel_id=channel,
                    approving=approving,
                )  # fmt: skip
            assert str(refused.value) == ButtonNotHere.user_message


async def test_a_result_button_acts_only_in_its_server_and_channel_or_on_its_message(
    db: Database,
) -> None:
    store = JobStore(db, time.time)
    job = await store.create(make_request("a fox"), estimated_cost=3.0)  # guild 42, channel 4242
    job = replace(job, result_message_id=900)
    check_button_place(job, guild_id=42, channel_id=4242, message_id=None)
    # Posted elsewhere in its server (a thread's parent): its own message still works.
    check_button_place(job, guild_id=42, channel_id=1, message_id=900)
    for guild, channel, message in [(42, 1, 901), (43, 4242, 900), (None, 4242, 900)]:
        with pytest.raises(InvalidRequest) as refused:
            check_button_place(job, guild_id=guild, channel_id=channel, message_id=message)
        assert str(refused.value) == ButtonNotHere.user_message


# --------------------------------------------------------------------------- item 4: refunds
class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def refunded_after_the_provider_had_it(store: JobStore, prompt: str, end: JobState) -> None:
    job = await store.create(make_request(prompt), estimated_cost=3.0)
    await store.transition(job.id, from_states=(JobState.QUEUED,), to=JobState.SUBMITTING)
    await store.transition(
        job.id, from_states=(JobState.SUBMITTING,), to=JobState.SUBMITTED,
        provider_task_id=f"task-{job.id}",
    )  # fmt: skip
    await store.transition(job.id, from_states=(JobState.SUBMITTED,), to=end)


async def test_refunds_of_jobs_the_provider_had_are_capped_per_member_and_day(
    db: Database,
) -> None:
    clock = Clock(dt.datetime(2026, 6, 3, 15, 0, tzinfo=dt.UTC).timestamp())
    ledger = Ledger(db, QuotaPolicy(max_refunded_per_day=2), clock=clock)
    store = JobStore(db, clock, ledger=ledger)
    # Refunds that cost the provider nothing don't count: cancelled in line, or failed
    # before the provider took the job (no task id).
    cancelled = await store.create(make_request("changed my mind"), estimated_cost=3.0)
    await store.transition(cancelled.id, from_states=(JobState.QUEUED,), to=JobState.CANCELLED)
    early = await store.create(make_request("submit refused"), estimated_cost=3.0)
    await store.transition(early.id, from_states=(JobState.QUEUED,), to=JobState.SUBMITTING)
    await store.transition(early.id, from_states=(JobState.SUBMITTING,), to=JobState.FAILED)
    await refunded_after_the_provider_had_it(store, "risky", JobState.MODERATED)
    await ledger.check(GUILD, 1001, (), credits=3.0, images=1)  # one counted: still fine

    await refunded_after_the_provider_had_it(store, "broke", JobState.FAILED)
    with pytest.raises(TooManyRefunds) as refused:
        await ledger.check(GUILD, 1001, (), credits=3.0, images=1)
    assert str(refused.value) == (
        "You've had 2 requests refunded here today after the image service had already taken "
        "them (blocked by its safety filter, or failed), and each of those still costs the "
        "bot. You can ask again at 00:00 UTC on Thursday 4 June (<t:1780531200:R>)."
    )
    with pytest.raises(TooManyRefunds):  # the transaction that creates a job refuses too
        await store.create(make_request("again"), estimated_cost=3.0)
    assert await db.fetch_value("SELECT count(*) FROM jobs") == 4
    # Another member, or the same member on another server, is not affected.
    await ledger.check(GUILD, 2002, (), credits=3.0, images=1)
    await ledger.check(43, 1001, (), credits=3.0, images=1)
    clock.now += 9 * 3600  # the next day
    await ledger.check(GUILD, 1001, (), credits=3.0, images=1)


async def test_without_a_cap_refunds_never_refuse(db: Database) -> None:
    ledger = Ledger(db, QuotaPolicy())
    store = JobStore(db, time.time, ledger=ledger)
    for n in range(5):
        await refunded_after_the_provider_had_it(store, f"risky {n}", JobState.MODERATED)
    await ledger.check(GUILD, 1001, (), credits=3.0, images=1)


async def test_a_provider_moderation_is_a_strike_that_escalates(db: Database) -> None:
    audit = AuditLog(db, audit_channel=lambda guild: None)
    settings = ServerSettings(GUILD, strike_warn=1, strike_temp_block=2, strike_block=3)
    moderation = Moderation(db, audit, settings=lambda guild: settings)
    assert await moderation.provider_moderation(GUILD, 1001, "a risky scene") is None
    block = await moderation.provider_moderation(GUILD, 1001, "a riskier scene")
    assert block is not None and block.until is not None
    with pytest.raises(InvalidRequest, match="You are blocked from making images on this server"):
        moderation.check_blocked(GUILD, 1001)
    strikes = await moderation.strikes(GUILD, 1001)
    assert [(s.term, s.prompt) for s in strikes] == [
        (PROVIDER_MODERATION_TERM, "a riskier scene"),
        (PROVIDER_MODERATION_TERM, "a risky scene"),
    ]
    final = await moderation.provider_moderation(GUILD, 1001, "again")
    assert final is not None and final.until is None  # blocked until a moderator unblocks
