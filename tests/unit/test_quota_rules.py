"""Rules from issue 12 that live in bot/: where a button may act, who may approve."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from bot.community.approvals import (
    NOT_HERE_TEXT,
    SELF_APPROVAL_TEXT,
    Approval,
    check_review,
)
from bot.generation import BUTTON_NOT_HERE_TEXT, check_button_place
from bot.storage.db import Database
from bot.storage.jobs import JobStore
from bot.variants import InvalidRequest, get_variant
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
            assert str(refused.value) == NOT_HERE_TEXT


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
        assert str(refused.value) == BUTTON_NOT_HERE_TEXT
