"""Allowance holes closed, end to end through the Discord stand-in: multi-image requests,
the approval queue, provider moderation, and buttons used where they don't belong."""

from __future__ import annotations

from tests.e2e.conftest import World


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
