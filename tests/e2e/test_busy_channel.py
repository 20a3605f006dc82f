"""One busy channel under Discord's rate limits: every request is answered through its own
interaction, the provider never waits on Discord, and nothing gets a 429."""

from __future__ import annotations

import asyncio
import time

from bot.jobs.models import JobState
from tests.e2e.conftest import World
from tests.e2e.test_community import add_moderator, say
from tests.e2e.test_experience import image_file
from tests.fakes.discord_server import InteractionHandle, Message

ACK_DEADLINE = 3.0


def results(world: World) -> list[Message]:
    return [
        m
        for m in world.discord.messages(world.channel.id, include_ephemeral=False)
        if m.author_id == world.discord.application_id and m.attachments
    ]


def audit_posts(world: World, channel_id: int) -> int:
    return len([m for m in world.discord.messages(channel_id) if not m.ephemeral])


def channel_posts(world: World) -> list[str]:
    """The bot's POST /channels/{id}/messages calls (the 5-per-5-seconds bucket)."""
    return [
        r.path
        for r in world.discord.requests
        if r.method == "POST" and r.path.startswith("/channels/") and r.path.endswith("/messages")
    ]


async def test_thirty_requests_in_one_channel_all_arrive_through_their_interactions(
    world: World,
) -> None:
    members = [world.discord.add_member(world.guild.id, f"member{n}") for n in range(10)]
    bot = await world.start_bot()
    started = time.monotonic()
    handles: list[InteractionHandle] = []
    for n in range(30):
        handles.append(
            await world.discord.invoke_slash(
                members[n % 10], world.channel, "imagine", {"prompt": f"busy {n}"}
            )
        )
        await asyncio.sleep(2 / 30)
    assert time.monotonic() - started < 2.5

    await world.discord.wait_for(lambda: len(results(world)) >= 30, timeout=30)
    for it in handles:
        # Acknowledged in time (the stand-in refuses a late first callback with 10062) and
        # the result is the interaction's own answer.
        assert it.callbacks and it.callbacks[0].type == 4
        assert it.original is not None and it.original.attachments
    by_bytes = {world.bfl.image_bytes(task_id): task_id for task_id in world.bfl.tasks}
    shown = {it.original.attachments[0].data for it in handles if it.original}
    assert shown <= set(by_bytes) and len(shown) == 30  # 30 different images, each once
    assert channel_posts(world) == []  # not one channel post: nothing waits on its bucket
    assert world.discord.rate_limited == []
    job_ids = [row["id"] for row in await bot.services.db.fetch_all("SELECT id FROM jobs")]
    finished = await bot.services.engine.wait_closed(job_ids, 10)
    assert [job.state for job in finished] == [JobState.DELIVERED] * 30
    jobs = await bot.services.db.fetch_all("SELECT interaction_token FROM jobs")
    assert all(row["interaction_token"] is None for row in jobs)  # erased once delivered


async def test_reroll_answers_in_its_own_interaction(world: World) -> None:
    await world.start_bot()
    first = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a lighthouse"}
    )
    result = await first.wait_original(lambda m: bool(m.attachments))
    reroll = next(c for c in result.custom_ids if c.startswith("flux:reroll:"))

    click = await world.discord.click(world.bob, result, reroll)
    rerolled = await click.wait_original(lambda m: bool(m.attachments), timeout=10)
    assert rerolled.id != result.id
    assert rerolled.interaction_id == click.id  # the click's own answer, not a channel post
    assert len(world.bfl.submissions) == 2
    assert world.bfl.submissions[1].body["prompt"] == "a lighthouse"
    task_id = world.bfl.submissions[1].task_id or ""
    assert rerolled.attachments[0].data == world.bfl.image_bytes(task_id)
    assert channel_posts(world) == []
    assert world.discord.rate_limited == []


async def test_a_job_that_outlives_its_token_ends_in_one_channel_reply(world: World) -> None:
    world.discord.interaction_token_lifetime = 1.0
    world.bfl.latency = 1.5
    bot = await world.start_bot()
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a slow sunset"}
    )
    original = await it.wait_original()

    result = await world.result_after(original.id, within=10)
    assert result.id != original.id
    assert result.reply_to == original.id  # continues in the channel, replying to it
    assert result.attachments[0].data == world.bfl.image_bytes(
        world.bfl.submissions[0].task_id or ""
    )
    assert [m.id for m in results(world)] == [result.id]  # exactly one visible result
    [job] = await bot.services.engine.wait_closed(
        [await bot.services.db.fetch_value("SELECT id FROM jobs")], 5
    )
    assert job.state is JobState.DELIVERED
    row = await bot.services.db.fetch_one(
        "SELECT state, result_message_id, interaction_token FROM jobs"
    )
    assert row is not None
    assert (row["state"], row["result_message_id"]) == ("delivered", result.id)
    assert row["interaction_token"] is None


async def test_a_restart_within_the_tokens_life_edits_the_same_message(world: World) -> None:
    world.bfl.latency = 2.0
    bot = await world.start_bot()
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a patient heron"}
    )
    await it.wait_original()
    await world.discord.wait_for(lambda: world.bfl.submissions or None)
    # The token is stored with the job (it is how the new process reaches the message).
    assert await bot.services.db.fetch_value("SELECT interaction_token FROM jobs") == it.token
    await world.stop_bot(bot)

    bot = await world.start_bot()
    result = await it.wait_original(lambda m: bool(m.attachments), timeout=10)
    assert result.attachments[0].data == world.bfl.image_bytes(
        world.bfl.submissions[0].task_id or ""
    )
    assert [m.id for m in results(world)] == [result.id]
    assert channel_posts(world) == []
    assert len(world.bfl.submissions) == 1


async def test_a_burst_of_twenty_replies_in_one_channel_costs_one_post_each(
    world: World,
) -> None:
    members = [world.discord.add_member(world.guild.id, f"member{n}") for n in range(20)]
    await world.start_bot()
    source = await world.discord.post_user_message(
        world.alice, world.channel, "my cat", attachments=[image_file("cat.png", (200, 10, 10))]
    )
    replies = [
        await world.discord.post_user_message(
            member, world.channel, f"make it blue {n}", reply_to=source, mention_bot=True
        )
        for n, member in enumerate(members)
    ]
    await world.discord.wait_for(lambda: len(results(world)) >= 20, timeout=60)
    # Each result replies to the member's message that asked for it.
    assert sorted(m.reply_to or 0 for m in results(world)) == sorted(r.id for r in replies)
    assert len(world.bfl.submissions) == 20
    assert world.discord.rate_limited == []
    # Statuses still waiting for the channel when their result came were never posted.
    assert len(channel_posts(world)) <= 20 + 5


async def test_moderators_are_answered_at_once_while_the_audit_channel_is_busy(
    world: World,
) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    log = world.discord.add_text_channel(world.guild.id, "mod-log")
    await say(world, mod, "settings audit-channel", channel=log)
    await say(world, mod, "settings strikes", warn=100, temp_block=100, block=100)
    rows_before = await bot.services.db.fetch_value("SELECT count(*) FROM audit_log")
    await world.discord.wait_for(lambda: audit_posts(world, log.id) >= 1)
    posts_before = audit_posts(world, log.id)
    # Refused prompts fill the audit channel's bucket (one post each).
    for n in range(8):
        it = await world.discord.invoke_slash(
            world.bob, world.channel, "imagine", {"prompt": f"nude {n}"}
        )
        await world.refusal(it)

    commands = [
        ("settings dms", {"allowed": True}),
        ("settings terms-add", {"term": "dragon"}),
        ("mod block", {"user": world.alice}),
        ("mod unblock", {"user": world.alice}),
    ]
    for path, options in commands:
        started = time.monotonic()
        it = await world.discord.invoke_slash(mod, world.channel, path, options)
        callback = await it.response()
        assert time.monotonic() - started < ACK_DEADLINE, path
        assert callback.type == 4 and callback.data and callback.data.get("flags", 0) & 64

    # Every audit entry still arrives, afterwards, without a 429.
    rows = await bot.services.db.fetch_value("SELECT count(*) FROM audit_log")
    assert rows - rows_before == 8 + len(commands)
    await world.discord.wait_for(
        lambda: audit_posts(world, log.id) - posts_before >= rows - rows_before, timeout=30
    )
    assert world.discord.rate_limited == []
