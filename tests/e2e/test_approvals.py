"""The approval queue end to end: the real bot on the Discord stand-in, BFL behind it."""

from __future__ import annotations

import pytest

from bot.errors import InvalidRequest
from cogs.client import FluxcordBot
from tests.e2e.conftest import World
from tests.e2e.test_experience import decoded_inputs, image_file
from tests.fakes.bfl_server import Outcome
from tests.fakes.discord_server import Channel, Message, User

MANAGE_MESSAGES = 1 << 13


async def enable_approvals(bot: FluxcordBot, world: World, review: Channel, trusted: int) -> None:
    await bot.services.server_settings.update(
        world.guild.id, 1, "approval on",
        approval_enabled=True, approval_channel_id=review.id, trusted_roles=frozenset({trusted}),
    )  # fmt: skip


async def review_message(world: World, review: Channel, after: int = 0) -> Message:
    return await world.discord.wait_for_message(
        lambda m: any(c.startswith("flux:review:") for c in m.custom_ids),
        channel_id=review.id, after=after,
    )  # fmt: skip


def button(message: Message, action: str) -> str:
    return next(c for c in message.custom_ids if c.startswith(f"flux:review:{action}:"))


async def counts(bot: FluxcordBot) -> tuple[int, int]:
    jobs = await bot.services.db.fetch_value("SELECT count(*) FROM jobs")
    ledger = await bot.services.db.fetch_value("SELECT count(*) FROM ledger")
    return int(jobs), int(ledger)


def setup_world(world: World) -> tuple[Channel, User, int]:
    review = world.discord.add_text_channel(world.guild.id, "mod-queue")
    mods = world.discord.add_role(world.guild.id, "Mods", permissions=MANAGE_MESSAGES)
    trusted = world.discord.add_role(world.guild.id, "Trusted")
    moderator = world.discord.add_member(world.guild.id, "mod", roles=[mods.id])
    return review, moderator, trusted.id


async def test_request_waits_for_approval_across_a_restart_then_is_made(world: World) -> None:
    review, moderator, trusted = setup_world(world)
    bot = await world.start_bot()
    await enable_approvals(bot, world, review, trusted)
    before = world.newest_message_id()
    reference = image_file("cat.png", (200, 10, 10))

    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a red cat", "image": reference}
    )
    status = await world.discord.wait_for_message(
        lambda m: "Waiting for a moderator" in m.content, channel_id=world.channel.id,
        after=before,
    )  # fmt: skip
    queued = await review_message(world, review)
    # Nothing reserved, nothing sent: only the request, with its reference, for the moderators.
    assert await counts(bot) == (0, 0)
    assert world.bfl.submissions == []
    assert queued.embeds[0]["description"] == "a red cat"
    assert queued.attachments[0].data == reference.data
    # The waiting message is the interaction's own answer.
    assert it.original is not None and it.original.id == status.id

    await world.stop_bot(bot)
    bot = await world.start_bot()  # the buttons and the request survive the restart

    stranger = await world.discord.click(world.bob, queued, button(queued, "approve"))
    assert "Only moderators" in await world.refusal(stranger)
    assert await counts(bot) == (0, 0)

    await world.discord.click(moderator, queued, button(queued, "approve"))
    result = await world.result_after(before)
    assert result.id == status.id  # the waiting message became the result
    submission = world.bfl.submissions[0]
    assert submission.body["prompt"] == "a red cat"
    assert decoded_inputs(submission.body) == [reference.data]
    assert result.attachments[0].data == world.bfl.image_bytes(submission.task_id or "")
    row = await bot.services.db.fetch_one("SELECT status, job_id FROM ledger")
    assert row is not None and row["status"] == "charged"
    approval = await bot.services.db.fetch_one("SELECT id, state, job_id FROM approvals")
    assert approval is not None and approval["state"] == "approved"
    assert approval["job_id"] == approval["id"] == row["job_id"]
    decided = world.discord.message(queued.id)
    assert f"Approved by <@{moderator.id}>" in decided.content and not decided.custom_ids
    actions = [r["action"] for r in await bot.services.db.fetch_all("SELECT action FROM audit_log")]
    assert {"approval requested", "approved", "edit"} <= set(actions)


async def test_rejection_tells_the_member_why_and_charges_nothing(world: World) -> None:
    review, moderator, trusted = setup_world(world)
    bot = await world.start_bot()
    await enable_approvals(bot, world, review, trusted)
    before = world.newest_message_id()
    await world.discord.invoke_slash(world.bob, world.channel, "imagine", {"prompt": "a dog"})
    queued = await review_message(world, review)

    opened = await world.discord.click(moderator, queued, button(queued, "reject"))
    modal = await opened.response()
    assert modal.type == 9
    await world.discord.submit_modal(
        moderator, review, modal.data["custom_id"], {"reason": "Off-topic for this channel."},
        message_id=queued.id,
    )  # fmt: skip
    status = await world.discord.wait_for_message(
        lambda m: "not approved" in m.content, channel_id=world.channel.id, after=before
    )
    assert status.content.endswith("Off-topic for this channel.")
    assert f"<@{world.bob.id}>" in status.content
    assert await counts(bot) == (0, 0) and world.bfl.submissions == []
    await world.discord.wait_for(lambda: not world.discord.message(queued.id).custom_ids)
    assert "Rejected by" in world.discord.message(queued.id).content


async def test_trusted_members_and_moderators_skip_the_queue(world: World) -> None:
    review, moderator, trusted = setup_world(world)
    bot = await world.start_bot()
    await enable_approvals(bot, world, review, trusted)
    world.discord.set_member_roles(world.guild.id, world.alice.id, [trusted])
    for member in (world.alice, moderator):
        before = world.newest_message_id()
        await world.discord.invoke_slash(member, world.channel, "imagine", {"prompt": "a boat"})
        await world.result_after(before)
    assert await bot.services.db.fetch_value("SELECT count(*) FROM approvals") == 0


async def test_unreachable_review_channel_withdraws_the_request(world: World) -> None:
    _, _, trusted = setup_world(world)
    bot = await world.start_bot()
    await bot.services.server_settings.update(
        world.guild.id, 1, "approval on", approval_enabled=True, approval_channel_id=999,
        trusted_roles=frozenset({trusted}),
    )  # fmt: skip
    it = await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "x"})
    assert "can't post in the review channel" in await world.refusal(it)
    assert await bot.services.db.fetch_value("SELECT count(*) FROM approvals") == 0
    assert await counts(bot) == (0, 0)
    world.discord.unhandled_requests.clear()  # the post to the missing channel


async def test_an_approval_interrupted_by_a_crash_is_started_once_on_restart(
    world: World,
) -> None:
    review, moderator, trusted = setup_world(world)
    bot = await world.start_bot()
    await enable_approvals(bot, world, review, trusted)
    before = world.newest_message_id()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "a fox"})
    await review_message(world, review)
    await world.stop_bot(bot)
    # The bot died right after recording the approval, before creating the job.
    await world.write_sql(
        "UPDATE approvals SET state = 'approved', decided_by = ?", (moderator.id,)
    )

    bot = await world.start_bot()
    await world.result_after(before)
    assert await counts(bot) == (1, 1)
    assert len(world.bfl.submissions) == 1
    await world.stop_bot(bot)
    bot = await world.start_bot()  # and a further restart changes nothing
    assert await counts(bot) == (1, 1) and len(world.bfl.submissions) == 1


async def test_provider_moderation_is_shown_refunded_and_audited(world: World) -> None:
    audit = world.discord.add_text_channel(world.guild.id, "audit")
    bot = await world.start_bot()
    await bot.services.server_settings.update(
        world.guild.id, 1, "audit on", audit_channel_id=audit.id
    )
    world.bfl.script("a risky scene", Outcome(final_status="Content Moderated"))
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a risky scene"}
    )
    shown = await world.discord.wait_for_message(
        lambda m: "safety filter" in m.content, channel_id=world.channel.id, after=before
    )
    assert "not charged" in shown.content
    ledger = await bot.services.db.fetch_one("SELECT status FROM ledger")
    assert ledger is not None and ledger["status"] == "refunded"
    posted = await world.discord.wait_for_message(
        lambda m: "provider moderation" in m.content, channel_id=audit.id
    )
    assert f"<@{world.alice.id}>" in posted.content and not posted.mentions
    row = await bot.services.db.fetch_one(
        "SELECT * FROM audit_log WHERE action = 'provider moderation'"
    )
    assert row is not None and row["target_id"] == world.alice.id


async def test_a_request_nobody_reviews_expires_and_frees_its_place(world: World) -> None:
    review, moderator, trusted = setup_world(world)
    bot = await world.start_bot()
    await enable_approvals(bot, world, review, trusted)
    before = world.newest_message_id()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "a fox"})
    status = await world.discord.wait_for_message(
        lambda m: "Waiting for a moderator" in m.content, channel_id=world.channel.id,
        after=before,
    )  # fmt: skip
    queued = await review_message(world, review)
    approve = button(queued, "approve")

    assert await bot.services.approvals.expire_due() == 0  # not yet 72 hours old
    bot.services.approvals.expiry_hours = 1e-9  # as if the hours had passed
    assert await bot.services.approvals.expire_due() == 1
    expired = await world.discord.wait_for(
        lambda: (m := world.discord.message(status.id)) and "expired" in m.content and m
    )
    assert expired.content == (
        f"⌛ <@{world.alice.id}>'s request: No moderator reviewed it within 1e-09 hours, so it "
        "expired. Nothing was charged; ask again if you still want it."
    )
    review_post = await world.discord.wait_for(
        lambda: (m := world.discord.message(queued.id)) and not m.custom_ids and m
    )
    assert review_post.content.startswith("⌛ No moderator reviewed it")
    # Its buttons are gone; a stale click (an old client) is too late all the same.
    approval_id = approve.rsplit(":", 1)[1]
    with pytest.raises(InvalidRequest, match="already been rejected"):
        await bot.services.approvals.approve(approval_id, moderator.id)
    assert await counts(bot) == (0, 0) and world.bfl.submissions == []
    # It no longer counts against the member's waiting requests or allowance.
    pending = "SELECT count(*) FROM approvals WHERE state = 'pending'"
    assert await bot.services.db.fetch_value(pending) == 0
    row = await bot.services.db.fetch_one("SELECT action FROM audit_log ORDER BY id DESC LIMIT 1")
    assert row is not None and row["action"] == "expired"
