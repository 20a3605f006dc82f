"""Private results end to end: a channel made private by its moderators answers /imagine with
an ephemeral result only the member sees, with a Publish button that posts it once, publicly,
at no extra cost; after the interaction's token it goes to the member's DMs instead. Studios
and requests held for approval stay public. The real bot on the Discord and BFL stand-ins."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from bot.community.policy import Requester
from bot.community.publications import PUBLISHING_NOW_TEXT
from cogs.client import FluxcordBot
from tests.e2e.conftest import World
from tests.e2e.test_approvals import button, enable_approvals, review_message, setup_world
from tests.e2e.test_community import add_moderator, say
from tests.e2e.test_studio import imagine_in, open_studio
from tests.fakes.discord_server import InteractionHandle, Message, User


def public_results(world: World, channel_id: int | None = None) -> list[Message]:
    """The bot's images anyone in the channel can see."""
    return [
        m
        for m in world.discord.messages(channel_id or world.channel.id, include_ephemeral=False)
        if m.author_id == world.discord.application_id and m.attachments
    ]


def publish_id(message: Message) -> str:
    return next(c for c in message.custom_ids if c.startswith("flux:publish:"))


async def make_private(bot: FluxcordBot, world: World) -> None:
    await bot.services.server_settings.update(
        world.guild.id, 1, "private", private_channels=frozenset({world.channel.id})
    )


async def private_result(
    world: World, user: User, prompt: str
) -> tuple[InteractionHandle, Message]:
    it = await world.discord.invoke_slash(user, world.channel, "imagine", {"prompt": prompt})
    result = await it.wait_original(lambda m: bool(m.attachments), timeout=10)
    return it, result


async def delivered(bot: FluxcordBot) -> None:
    """Every job's result is shown and recorded (Publish acts on a delivered job)."""
    rows = await bot.services.db.fetch_all("SELECT id FROM jobs")
    await bot.services.engine.wait_closed([row["id"] for row in rows], 10)


async def answer_text(it: InteractionHandle) -> str:
    """The ephemeral answer a button click ended with (its deferral, edited)."""
    message = await it.wait_original(lambda m: bool(m.content), timeout=10)
    assert message.ephemeral
    return message.content


async def ledger_rows(bot: FluxcordBot) -> list[dict[str, Any]]:
    rows = await bot.services.db.fetch_all("SELECT job_id, status, charged_mc FROM ledger")
    return [dict(row) for row in rows]


async def audit_actions(bot: FluxcordBot) -> list[str]:
    rows = await bot.services.db.fetch_all("SELECT action FROM audit_log ORDER BY id")
    return [row["action"] for row in rows]


async def test_a_private_channel_answers_privately_and_publish_posts_it_once(
    world: World,
) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    reply = await say(world, mod, "settings private-results", private=True, channel=world.channel)
    assert f"Private results in: <#{world.channel.id}> (was no channel)" in reply

    it, result = await private_result(world, world.alice, "a lantern in the fog")
    [submission] = world.bfl.submissions
    image = world.bfl.image_bytes(submission.task_id or "")
    assert result.ephemeral and result.visible_to == world.alice.id
    assert result.attachments[0].data == image
    assert it.callbacks[0].data is not None and it.callbacks[0].data.get("flags", 0) & 64
    assert public_results(world) == []  # nobody else sees anything
    assert not any(c.startswith("flux:delete:") for c in result.custom_ids)
    with pytest.raises(PermissionError):  # another member can't even see its buttons
        await world.discord.click(world.bob, result, publish_id(result))
    await delivered(bot)
    [charge] = await ledger_rows(bot)
    assert charge["status"] == "charged"
    # /history says it is private rather than linking to a message nobody else can open.
    listing = await world.discord.invoke_slash(world.alice, world.channel, "history")
    assert "a lantern in the fog" in str((await listing.response()).data)
    assert "· private" in str((await listing.response()).data)

    # A double click: two clicks at once post it once.
    clicks = await asyncio.gather(
        world.discord.click(world.alice, result, publish_id(result)),
        world.discord.click(world.alice, result, publish_id(result)),
    )
    answers = sorted([await answer_text(click) for click in clicks])
    [public] = await world.discord.wait_for(lambda: public_results(world) or None, timeout=10)
    link = f"https://discord.com/channels/{world.guild.id}/{world.channel.id}/{public.id}"
    assert any(text == f"Published: {link}" for text in answers), answers
    assert public.attachments[0].data == image and not public.ephemeral
    assert f"<@{world.alice.id}>" in public.content
    # The usual buttons of a public result, Delete included; no Publish.
    assert any(c.startswith("flux:delete:") for c in public.custom_ids)
    assert not any(c.startswith("flux:publish:") for c in public.custom_ids)

    # Later clicks say where it is, and post nothing.
    again = await world.discord.click(world.alice, result, publish_id(result))
    assert await answer_text(again) == f"It's already published: {link}"
    assert len(public_results(world)) == 1

    # It is now the job's result: /history links to it; charged once, audited once.
    row = await bot.services.db.fetch_one(
        "SELECT id, private, result_message_id, published_message_id FROM jobs"
    )
    assert row is not None and row["private"]
    assert row["result_message_id"] == row["published_message_id"] == public.id
    history = await world.discord.invoke_slash(world.alice, world.channel, "history")
    assert link in str((await history.response()).data)
    assert await ledger_rows(bot) == [charge]
    assert world.bfl.submissions == [submission]
    assert (await audit_actions(bot)).count("published") == 1
    assert "generate" in await audit_actions(bot)


async def test_publish_works_after_a_restart(world: World) -> None:
    bot = await world.start_bot()
    await make_private(bot, world)
    _, result = await private_result(world, world.alice, "a quiet harbour")
    await delivered(bot)
    await world.stop_bot(bot)
    # Another process is posting it right now (its claim is fresh): this click waits its turn.
    await world.write_sql("UPDATE jobs SET publish_claimed_at = 1e12")
    bot = await world.start_bot()
    # Blocked by a moderator meanwhile: it can't be posted in the channel now.
    await bot.services.moderation.block(world.guild.id, 1, world.alice.id, hours=1, reason="x")
    blocked = await world.discord.click(world.alice, result, publish_id(result))
    assert "blocked" in (await answer_text(blocked)).lower()
    await bot.services.moderation.unblock(world.guild.id, 1, world.alice.id)
    busy = await world.discord.click(world.alice, result, publish_id(result))
    assert await answer_text(busy) == PUBLISHING_NOW_TEXT
    assert public_results(world) == []
    # That process died long ago: its claim lapses, and the result can be published.
    await world.write_sql("UPDATE jobs SET publish_claimed_at = 1")

    click = await world.discord.click(world.alice, result, publish_id(result))
    assert (await answer_text(click)).startswith("Published: ")
    [public] = public_results(world)
    assert public.attachments[0].data == result.attachments[0].data
    [charge] = await ledger_rows(bot)
    assert charge["status"] == "charged"


async def test_a_private_result_after_its_token_expired_goes_to_the_members_dms(
    world: World,
) -> None:
    world.discord.interaction_token_lifetime = 1.0  # gone before the image is made
    world.bfl.latency = 1.5
    bot = await world.start_bot()
    await make_private(bot, world)
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a slow moonrise"}
    )
    queued = await it.wait_original()
    assert queued.ephemeral

    def in_dms() -> Message | None:
        dm = world.discord.dm_channel(world.alice)
        found = [m for m in world.discord.messages(dm.id) if m.attachments] if dm else []
        return found[0] if found else None

    dm_result = await world.discord.wait_for(in_dms, timeout=10)
    image = world.bfl.image_bytes(world.bfl.submissions[0].task_id or "")
    assert dm_result.attachments[0].data == image
    assert f"<#{world.channel.id}>" in dm_result.content
    assert dm_result.custom_ids == [publish_id(dm_result)]  # what can work in DMs
    dm = world.discord.dm_channel(world.alice)
    assert dm is not None and len(world.discord.messages(dm.id)) == 1  # no progress in DMs
    assert public_results(world) == []

    # Publish from the DM posts it in the job's channel.
    await delivered(bot)
    world.discord.interaction_token_lifetime = 900.0
    click = await world.discord.click(world.alice, dm_result, publish_id(dm_result))
    assert (await answer_text(click)).startswith("Published: ")
    [public] = public_results(world)
    assert public.attachments[0].data == image
    [charge] = await ledger_rows(bot)
    assert charge["status"] == "charged"


async def test_a_restart_within_the_tokens_life_finishes_the_same_private_answer(
    world: World,
) -> None:
    bot = await world.start_bot()
    await make_private(bot, world)
    world.bfl.hold()
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a patient heron"}
    )
    queued = await it.wait_original()
    await world.discord.wait_for(lambda: world.bfl.submissions or None, timeout=10)
    await world.stop_bot(bot)
    world.bfl.release()
    bot = await world.start_bot()  # the job remembers it is private

    result = await it.wait_original(lambda m: bool(m.attachments), timeout=10)
    assert result.id == queued.id and result.ephemeral and result.visible_to == world.alice.id
    assert publish_id(result)
    assert public_results(world) == [] and world.discord.dm_channel(world.alice) is None


async def test_a_restart_after_the_token_expired_delivers_to_dms(world: World) -> None:
    bot = await world.start_bot()
    await make_private(bot, world)
    world.bfl.hold()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "a fern"})
    await world.discord.wait_for(lambda: world.bfl.submissions or None, timeout=10)
    await world.stop_bot(bot)
    # Time passed while the bot was away: the stored token is no longer usable.
    await world.write_sql("UPDATE jobs SET interaction_expires_at = 1")
    world.bfl.release()
    bot = await world.start_bot()

    def in_dms() -> Message | None:
        dm = world.discord.dm_channel(world.alice)
        found = [m for m in world.discord.messages(dm.id) if m.attachments] if dm else []
        return found[0] if found else None

    dm_result = await world.discord.wait_for(in_dms, timeout=10)
    assert dm_result.attachments[0].data == world.bfl.image_bytes(
        world.bfl.submissions[0].task_id or ""
    )
    assert public_results(world) == []


async def test_closed_dms_fail_it_privately_and_never_post_it_publicly(world: World) -> None:
    world.discord.interaction_token_lifetime = 1.0
    world.bfl.latency = 1.5
    world.discord.set_accepts_dms(world.alice, False)
    bot = await world.start_bot()
    await make_private(bot, world)
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "a moth"})
    job_id = await world.discord.wait_for(lambda: world.bfl.submissions or None, timeout=10)
    assert job_id
    [row] = await bot.services.db.fetch_all("SELECT id FROM jobs")
    [job] = await bot.services.engine.wait_closed([row["id"]], 15)
    assert job.error is not None and "your direct messages are closed" in job.error
    assert public_results(world) == []
    assert not any(
        m.author_id == world.discord.application_id
        for m in world.discord.messages(world.channel.id, include_ephemeral=False)
    )
    # The image was made and billed: the charge stands, as for any undeliverable result.
    [charge] = await ledger_rows(bot)
    assert charge["status"] == "charged"


async def test_studios_and_held_requests_stay_public(world: World) -> None:
    bot = await world.start_bot()
    await bot.services.server_settings.update(world.guild.id, 1, "private", private_everywhere=True)
    thread, _ = await open_studio(world, world.alice, "ink wash")
    in_studio = await imagine_in(world, world.bob, thread, "a crane")
    assert not in_studio.ephemeral and in_studio.channel_id == thread.id
    # The member's own preference (/prefer) can't make these private either.
    private_for = bot.services.generation.private_for
    bob_here = Requester(world.bob.id, world.guild.id, world.channel.id)
    in_thread = replace(bob_here, channel_id=thread.id, parent_channel_id=world.channel.id)
    assert private_for(bob_here, member_prefers_private=False)
    assert not private_for(in_thread, member_prefers_private=True)
    in_dms = replace(bob_here, guild_id=None)
    assert not private_for(in_dms, member_prefers_private=True)

    review, moderator, trusted = setup_world(world)
    await enable_approvals(bot, world, review, trusted)
    before = world.newest_message_id()
    it = await world.discord.invoke_slash(world.bob, world.channel, "imagine", {"prompt": "a kite"})
    assert not private_for(bob_here, member_prefers_private=True)
    waiting = await it.wait_original(lambda m: "Waiting for a moderator" in m.content)
    assert not waiting.ephemeral
    queued = await review_message(world, review)
    await world.discord.click(moderator, queued, button(queued, "approve"))
    result = await world.result_after(before)
    assert not result.ephemeral and result.id == waiting.id
    assert not any(c.startswith("flux:publish:") for c in result.custom_ids)


async def test_quota_refusals_read_the_same_in_a_private_channel(world: World) -> None:
    bot = await world.start_bot(default_user_daily_images=1)
    await make_private(bot, world)
    await private_result(world, world.alice, "the only one today")
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "one more please"}
    )
    text = await world.refusal(it)
    assert text.startswith(
        "This request would go over your daily image allowance (1 image a day). "
        "Left today: 0 images and 97 credits; it needs 1 image and 3 credits. It resets "
    )
    assert len(world.bfl.submissions) == 1
    assert [row["status"] for row in await ledger_rows(bot)] == ["charged"]
    assert public_results(world) == []


async def test_a_late_interaction_in_a_private_channel_thinks_privately(world: World) -> None:
    bot = await world.start_bot()
    await make_private(bot, world)
    world.discord.interaction_delivery_delay = 1.6  # past the bot's 1.5 s: answered first
    it, result = await private_result(world, world.alice, "a heron at dusk")
    deferral = it.callbacks[0]
    assert deferral.type == 5 and deferral.data is not None and deferral.data["flags"] & 64
    assert result.ephemeral and result.attachments
    assert public_results(world) == []


async def test_private_results_wait_out_the_channels_shared_webhook_limit(world: World) -> None:
    fake = world.discord
    fake.shared_webhook_limit, fake.shared_webhook_window = 2, 1.0
    fake.shared_webhook_limit_counts_edits = True
    members = [fake.add_member(world.guild.id, f"member{n}") for n in range(5)]
    bot = await world.start_bot()
    await make_private(bot, world)
    world.bfl.hold()  # the results arrive together
    handles = [
        await fake.invoke_slash(member, world.channel, "imagine", {"prompt": f"crowd {n}"})
        for n, member in enumerate(members)
    ]
    await fake.wait_for(lambda: len(world.bfl.submissions) == len(members), timeout=10)
    world.bfl.release()
    await delivered(bot)

    # Each private result went through its own interaction, under the channel's shared limit
    # (Discord refused some edits with it, and the bot waited): none to DMs or the channel.
    for it, member in zip(handles, members, strict=True):
        assert it.original is not None and it.original.attachments
        assert it.original.ephemeral and it.original.visible_to == member.id
    assert any(hit.scope == "shared" for hit in fake.rate_limited)
    assert all(fake.dm_channel(member) is None for member in members)
    assert public_results(world) == []


async def test_a_member_who_prefers_private_results_gets_them_in_any_channel(
    world: World,
) -> None:
    """/prefer private:true makes the member's own results private where the channel is
    public, and leaves everyone else's public."""
    bot = await world.start_bot()
    chose = await world.discord.invoke_slash(
        world.alice, world.channel, "prefer set", {"private": True}
    )
    assert (await chose.response()).data.get("flags", 0) & 64
    _, result = await private_result(world, world.alice, "a quiet harbour")
    assert result.ephemeral and result.visible_to == world.alice.id
    assert any(c.startswith("flux:publish:") for c in result.custom_ids)
    assert public_results(world) == []

    before = world.newest_message_id()
    await world.discord.invoke_slash(world.bob, world.channel, "imagine", {"prompt": "a market"})
    public = await world.result_after(before)
    assert not public.ephemeral
    await delivered(bot)
    assert [row["status"] for row in await ledger_rows(bot)] == ["charged", "charged"]
