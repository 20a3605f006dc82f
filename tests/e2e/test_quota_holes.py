"""Allowance holes closed, end to end through the Discord stand-in: multi-image requests,
the approval queue, provider moderation, and buttons used where they don't belong."""

from __future__ import annotations

import asyncio
import io
import os
from typing import Any

import discord
from PIL import Image

from bot.community.approvals import PENDING_CAP_TEXT, SELF_APPROVAL_TEXT
from bot.errors import ButtonNotHere
from bot.ledger import Metric, Period, Scope
from bot.moderation.strikes import PROVIDER_MODERATION_TERM
from cogs.approvals import REVIEW_REFUSED_TEXT, ReviewButton
from cogs.client import FluxcordBot
from cogs.results import RESULT_ACTIONS, ResultButton
from tests.e2e.conftest import World
from tests.e2e.test_approvals import (
    MANAGE_MESSAGES,
    button,
    counts,
    enable_approvals,
    review_message,
    setup_world,
)
from tests.e2e.test_experience import decoded_inputs, job_id_of
from tests.fakes.bfl_server import Outcome
from tests.fakes.discord_server import Message, Upload


async def test_four_images_with_an_allowance_of_two_are_refused_and_nothing_is_charged(
    world_with_aiml: World,
) -> None:
    world = world_with_aiml
    assert world.aiml is not None
    bot = await world.start_bot(default_user_daily_images=2)
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "flux dev", {"prompt": "four foxes", "num_images": 4}
    )
    text = await world.refusal(it)
    assert text.startswith(
        "This request would go over your daily image allowance (2 images a day). "
        "Left today: 2 images"
    )
    assert "it needs 4 images" in text and "It resets at 00:00 UTC" in text
    assert world.aiml.requests == []
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == 0
    assert await bot.services.db.fetch_value("SELECT count(*) FROM ledger") == 0

    # Two still fit, and use the whole day's allowance.
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "flux dev", {"prompt": "two foxes", "num_images": 2}
    )
    result = await world.result_after(before)
    assert len(result.attachments) == 2
    again = await world.discord.invoke_slash(
        world.alice, world.channel, "flux dev", {"prompt": "one more"}
    )
    assert "Left today: 0 images" in await world.refusal(again)


# --------------------------------------------------------------------------- item 10: buttons
async def test_a_member_cannot_approve_their_own_request(world: World) -> None:
    review, _, trusted = setup_world(world)
    fake = world.discord
    # Manage Messages through an overwrite on the review channel only, as a server would set up
    # review helpers; Dave has it in the channel members post in, not in the review channel.
    carol = fake.add_member(world.guild.id, "carol")
    dave = fake.add_member(world.guild.id, "dave")
    for helper in (world.alice, carol):
        fake.set_overwrite(review, helper, allow=MANAGE_MESSAGES)
    fake.set_overwrite(world.channel, dave, allow=MANAGE_MESSAGES)
    assert fake.channel_permissions(review, world.alice) & MANAGE_MESSAGES
    assert not fake.channel_permissions(world.channel, world.alice) & MANAGE_MESSAGES
    assert not fake.channel_permissions(review, dave) & MANAGE_MESSAGES
    bot = await world.start_bot()
    await enable_approvals(bot, world, review, trusted)
    before = world.newest_message_id()
    # Not a moderator where she asks, so her request waits for review like anyone's.
    await fake.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "a cat"})
    queued = await review_message(world, review)

    it = await fake.click(world.alice, queued, button(queued, "approve"))
    assert it.payload["member"]["permissions"] == str(fake.channel_permissions(review, world.alice))
    assert await world.refusal(it) == SELF_APPROVAL_TEXT
    # Manage Messages elsewhere does not make a reviewer: neither button acts, no modal opens.
    for action in ("approve", "reject"):
        it = await fake.click(dave, queued, button(queued, action))
        assert await world.refusal(it) == REVIEW_REFUSED_TEXT, action
    assert await counts(bot) == (0, 0) and world.bfl.submissions == []
    approval = await bot.services.db.fetch_one("SELECT state FROM approvals")
    assert approval is not None and approval["state"] == "pending"
    assert button(fake.message(queued.id), "approve")  # still reviewable

    await fake.click(carol, queued, button(queued, "approve"))
    await world.result_after(before)
    assert await counts(bot) == (1, 1)
    assert f"Approved by <@{carol.id}>" in fake.message(queued.id).content


async def test_a_review_button_copied_into_another_channel_does_nothing(world: World) -> None:
    review, moderator, trusted = setup_world(world)
    bot = await world.start_bot()
    await enable_approvals(bot, world, review, trusted)
    await world.discord.invoke_slash(world.bob, world.channel, "imagine", {"prompt": "a dog"})
    queued = await review_message(world, review)
    approval_id = button(queued, "approve").rsplit(":", 1)[1]
    elsewhere = world.discord.add_text_channel(world.guild.id, "lounge")
    copy = await copied_message(
        world, bot, elsewhere.id,
        [ReviewButton("approve", approval_id), ReviewButton("reject", approval_id)],
    )  # fmt: skip

    it = await world.discord.click(moderator, copy, f"flux:review:approve:{approval_id}")
    assert await world.refusal(it) == ButtonNotHere.user_message
    it = await world.discord.click(moderator, copy, f"flux:review:reject:{approval_id}")
    assert await world.refusal(it) == ButtonNotHere.user_message  # no modal opened either
    assert await counts(bot) == (0, 0) and world.bfl.submissions == []
    approval = await bot.services.db.fetch_one("SELECT state FROM approvals")
    assert approval is not None and approval["state"] == "pending"


async def test_result_buttons_copied_into_another_server_do_nothing(world: World) -> None:
    bot = await world.start_bot()
    before = world.newest_message_id()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "a fox"})
    result = await world.result_after(before)
    job_id = job_id_of(result)
    other = world.discord.add_guild("Elsewhere")
    channel = world.discord.add_text_channel(other.id, "general")
    # Manage Messages in every channel of her own server (and able to see them).
    mallory = world.discord.add_member(
        other.id,
        "mallory",
        permissions=MANAGE_MESSAGES | discord.Permissions(view_channel=True).value,
    )
    await world.discord.wait_for(lambda: bot.get_guild(other.id))
    copy = await copied_message(
        world, bot, channel.id, [ResultButton(a, job_id) for a in RESULT_ACTIONS]
    )

    for action in ("reroll", "delete", "chain", "remix"):
        it = await world.discord.click(mallory, copy, f"flux:{action}:{job_id}")
        assert await world.refusal(it) == ButtonNotHere.user_message, action
    assert not world.discord.message(result.id).deleted
    assert len(world.bfl.submissions) == 1
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == 1
    # In its own channel the same button still works.
    it = await world.discord.click(world.alice, result, f"flux:chain:{job_id}")
    assert "history" in (await it.response()).data["content"]


async def copied_message(
    world: World, bot: FluxcordBot, channel_id: int, items: list[Any]
) -> Message:
    """A message carrying another message's custom ids (as if copied), posted by the bot."""
    view = discord.ui.View(timeout=None)
    for item in items:
        view.add_item(item)
    sent = await bot.get_partial_messageable(channel_id).send("copied", view=view)
    return world.discord.message(sent.id)


# --------------------------------------------------------------------------- item 6: the queue
async def test_pending_requests_are_capped_and_count_toward_the_allowance(world: World) -> None:
    review, _, trusted = setup_world(world)
    bot = await world.start_bot(default_user_daily_images=2, max_pending_approvals_per_member=3)
    await enable_approvals(bot, world, review, trusted)
    for prompt in ("one", "two"):
        await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": prompt})
    await world.discord.wait_for(
        lambda: len([m for m in world.discord.messages(review.id) if m.custom_ids]) == 2
    )
    it = await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "3"})
    text = await world.refusal(it)
    assert "Left today: 0 images and 94 credits; it needs 1 image and 3 credits" in text
    assert text.endswith(
        "(Your 2 requests waiting for approval count as used until a moderator decides.)"
    )

    # Bob has room in his allowance but not in the queue.
    await bot.services.ledger.admin.set_limit(
        world.guild.id, 1, Scope.USER, world.bob.id, Period.DAY, Metric.IMAGES, 100
    )
    for prompt in ("a", "b", "c"):
        await world.discord.invoke_slash(world.bob, world.channel, "imagine", {"prompt": prompt})
    await world.discord.wait_for(
        lambda: len([m for m in world.discord.messages(review.id) if m.custom_ids]) == 5
    )
    it = await world.discord.invoke_slash(world.bob, world.channel, "imagine", {"prompt": "d"})
    assert await world.refusal(it) == PENDING_CAP_TEXT.format(count=3)
    assert await bot.services.db.fetch_value("SELECT count(*) FROM approvals") == 5
    assert await counts(bot) == (0, 0) and world.bfl.submissions == []


async def test_review_images_are_thumbnails_and_a_too_small_limit_still_gets_reviewed(
    world: World,
) -> None:
    review, moderator, trusted = setup_world(world)
    bot = await world.start_bot()
    await enable_approvals(bot, world, review, trusted)
    big = Image.frombytes("RGB", (1800, 1200), os.urandom(1800 * 1200 * 3))
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=20)  # under the BFL stand-in's 1 MiB body limit
    reference = Upload("big.jpg", buffer.getvalue(), "image/jpeg")

    await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a big cat", "image": reference}
    )
    queued = await review_message(world, review)
    [shown] = queued.attachments
    assert shown.filename == "reference-1.jpg" and len(shown.data) < len(reference.data)
    with Image.open(io.BytesIO(shown.data)) as opened:
        assert opened.size == (1024, 683)

    # A channel whose upload limit is below even the thumbnail: posted without the image,
    # and the member is told to wait, not that the review channel can't be reached.
    world.discord._state.attachment_size_limit = 20_000
    before = world.newest_message_id()
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "another", "image": reference}
    )
    await world.discord.wait_for_message(
        lambda m: "Waiting for a moderator" in m.content, channel_id=world.channel.id,
        after=before,
    )  # fmt: skip
    second = await review_message(world, review, after=queued.id)
    assert second.attachments == []
    assert any("Too large to post" in f["value"] for f in second.embeds[0]["fields"])
    assert it.original is not None and "can't post" not in it.original.content
    world.discord._state.attachment_size_limit = 10 * 1024 * 1024
    before = world.newest_message_id()
    await world.discord.click(moderator, second, button(second, "approve"))
    await world.discord.wait_for(lambda: len(world.bfl.submissions) == 1)
    assert decoded_inputs(world.bfl.submissions[0].body) == [reference.data]


# --------------------------------------------------------------------------- item 4: refunds
async def moderated(world: World, member: Any, prompt: str) -> str:
    """Ask for `prompt`, which the BFL stand-in's safety filter blocks; the text shown."""
    world.bfl.script(prompt, Outcome(final_status="Content Moderated"))
    before = world.newest_message_id()
    await world.discord.invoke_slash(member, world.channel, "imagine", {"prompt": prompt})
    shown = await world.discord.wait_for_message(
        lambda m: "safety filter" in m.content, channel_id=world.channel.id, after=before
    )
    return shown.content


async def test_after_too_many_refunds_a_member_is_told_to_wait_until_the_reset(
    world: World,
) -> None:
    bot = await world.start_bot(max_refunded_jobs_per_day=2, provider_moderation_strikes=False)
    for n in range(2):
        text = await moderated(world, world.alice, f"a risky scene {n}")
        assert text.endswith("You were not charged.")
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a calm lake"}
    )
    text = await world.refusal(it)
    assert text.startswith(
        "You've had 2 requests refunded here today after the image service had already taken "
        "them (blocked by its safety filter, or failed), and each of those still costs the bot. "
        "You can ask again at 00:00 UTC on "
    )
    assert len(world.bfl.submissions) == 2
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == 2
    # Bob is not affected.
    before = world.newest_message_id()
    await world.discord.invoke_slash(world.bob, world.channel, "imagine", {"prompt": "a lake"})
    await world.result_after(before)


async def test_provider_moderation_counts_as_a_strike_and_blocks_at_the_threshold(
    world: World,
) -> None:
    bot = await world.start_bot()  # PROVIDER_MODERATION_STRIKES is on by default
    await bot.services.server_settings.update(
        world.guild.id, 1, "strikes", strike_warn=1, strike_temp_block=2, strike_block=5
    )
    for n in range(2):
        text = await moderated(world, world.alice, f"a risky scene {n}")
        assert "it counts as a strike on this server" in text and "not charged" in text
    for _ in range(100):  # the strike is recorded just after the refusal is shown
        if bot.services.moderation.block_of(world.guild.id, world.alice.id):
            break
        await asyncio.sleep(0.05)
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a calm lake"}
    )
    assert (await world.refusal(it)).startswith(
        "You are blocked from making images on this server until <t:"
    )
    assert len(world.bfl.submissions) == 2
    strikes = await bot.services.moderation.strikes(world.guild.id, world.alice.id)
    assert [s.term for s in strikes] == [PROVIDER_MODERATION_TERM] * 2
    rows = await bot.services.db.fetch_all("SELECT status FROM ledger")
    assert [r["status"] for r in rows] == ["refunded", "refunded"]
