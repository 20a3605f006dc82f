"""Interactions that reach the bot late (Discord under load, a busy bot): the first answer is
"thinking…", sent before the checks, and the job then shows in that same message."""

from __future__ import annotations

from tests.e2e.conftest import World

DEFERRED = 5  # "thinking…"
ANSWERED = 4  # a message


async def test_a_late_interaction_is_acknowledged_first_and_the_result_fills_it(
    world: World,
) -> None:
    bot = await world.start_bot()
    world.discord.interaction_delivery_delay = 1.6  # past the bot's 1.5 s: behind
    before = world.newest_message_id()
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a heron at dusk"}
    )
    message = await world.result_after(before)
    assert it.callbacks[0].type == DEFERRED
    assert it.first_answer_monotonic is not None
    assert it.first_answer_monotonic - it.created_monotonic < 3.0  # Discord's deadline
    [submission] = world.bfl.submissions
    assert message.attachments[0].data == world.bfl.image_bytes(submission.task_id or "")
    assert it.original is not None and it.original.id == message.id  # the deferral's message
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == 1


async def test_while_the_loop_lags_every_interaction_is_acknowledged_first(world: World) -> None:
    bot = await world.start_bot()
    bot.services.loop_lag.recent = lambda: 0.5  # type: ignore[method-assign]
    before = world.newest_message_id()
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a heron at noon"}
    )
    message = await world.result_after(before)
    assert it.callbacks[0].type == DEFERRED
    assert it.original is not None and it.original.id == message.id


async def test_on_time_interactions_are_answered_with_the_job_at_once(world: World) -> None:
    bot = await world.start_bot()
    # A quiet bot (a loaded test machine must not make this one defer).
    bot.services.loop_lag.recent = lambda: 0.0  # type: ignore[method-assign]
    before = world.newest_message_id()
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a heron at dawn"}
    )
    await world.result_after(before)
    assert it.callbacks[0].type == ANSWERED  # no "thinking…" step when there is time


async def test_a_refusal_after_acknowledging_first_is_still_private(world: World) -> None:
    bot = await world.start_bot()
    world.discord.interaction_delivery_delay = 1.6
    it = await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "  "})
    assert await world.refusal(it) == "Please give a prompt describing the image."
    assert it.callbacks[0].type == DEFERRED
    # The public "thinking…" is gone: nobody else sees anything, nothing was created.
    assert [
        m for m in world.discord.messages(world.channel.id) if not m.deleted and not m.ephemeral
    ] == []
    assert world.bfl.submissions == []
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == 0
