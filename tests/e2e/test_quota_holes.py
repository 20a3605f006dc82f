"""Allowance holes closed, end to end through the Discord stand-in: multi-image requests,
the approval queue, provider moderation, and buttons used where they don't belong."""

from __future__ import annotations

from typing import Any

import discord

from bot.app import FluxcordBot
from bot.community.approvals import NOT_HERE_TEXT, SELF_APPROVAL_TEXT
from bot.generation import BUTTON_NOT_HERE_TEXT
from cogs.approvals import ReviewButton
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
from tests.e2e.test_experience import job_id_of
from tests.fakes.discord_server import Message


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
    assert await bot.db.fetch_value("SELECT count(*) FROM jobs") == 0
    assert await bot.db.fetch_value("SELECT count(*) FROM ledger") == 0

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
    review, moderator, trusted = setup_world(world)
    bot = await world.start_bot()
    await enable_approvals(bot, world, review, trusted)
    before = world.newest_message_id()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "a cat"})
    queued = await review_message(world, review)
    # Alice now has Manage Messages (as with a role that grants it in the review channel only).
    mods = next(r for r in world.guild.roles.values() if r.name == "Mods")
    world.discord.set_member_roles(world.guild.id, world.alice.id, [mods.id])

    it = await world.discord.click(world.alice, queued, button(queued, "approve"))
    assert await world.refusal(it) == SELF_APPROVAL_TEXT
    assert await counts(bot) == (0, 0) and world.bfl.submissions == []
    approval = await bot.db.fetch_one("SELECT state FROM approvals")
    assert approval is not None and approval["state"] == "pending"
    assert button(world.discord.message(queued.id), "approve")  # still reviewable

    await world.discord.click(moderator, queued, button(queued, "approve"))
    await world.result_after(before)
    assert await counts(bot) == (1, 1)


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
    assert await world.refusal(it) == NOT_HERE_TEXT
    it = await world.discord.click(moderator, copy, f"flux:review:reject:{approval_id}")
    assert await world.refusal(it) == NOT_HERE_TEXT  # no modal opened either
    assert await counts(bot) == (0, 0) and world.bfl.submissions == []
    approval = await bot.db.fetch_one("SELECT state FROM approvals")
    assert approval is not None and approval["state"] == "pending"


async def test_result_buttons_copied_into_another_server_do_nothing(world: World) -> None:
    bot = await world.start_bot()
    before = world.newest_message_id()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "a fox"})
    result = await world.result_after(before)
    job_id = job_id_of(result)
    other = world.discord.add_guild("Elsewhere")
    channel = world.discord.add_text_channel(other.id, "general")
    mallory = world.discord.add_member(other.id, "mallory", permissions=MANAGE_MESSAGES)
    await world.discord.wait_for(lambda: bot.get_guild(other.id))
    copy = await copied_message(
        world, bot, channel.id, [ResultButton(a, job_id) for a in RESULT_ACTIONS]
    )

    for action in ("reroll", "delete", "chain", "remix"):
        it = await world.discord.click(mallory, copy, f"flux:{action}:{job_id}")
        assert await world.refusal(it) == BUTTON_NOT_HERE_TEXT, action
    assert not world.discord.message(result.id).deleted
    assert len(world.bfl.submissions) == 1
    assert await bot.db.fetch_value("SELECT count(*) FROM jobs") == 1
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
