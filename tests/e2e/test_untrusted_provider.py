"""What a member sees when the image service answers with hostile costs, links or images."""

from __future__ import annotations

import math

import pytest

from tests.e2e.conftest import World
from tests.e2e.test_usage import make_image, reply
from tests.integration.test_untrusted_provider import connections  # noqa: F401 (a fixture)


@pytest.mark.parametrize("reported", [-5, 1e300, math.nan], ids=["negative", "1e300", "NaN"])
async def test_a_hostile_cost_still_delivers_and_usage_shows_the_estimate(
    world: World, reported: float
) -> None:
    world.bfl.reported_cost = reported
    await world.start_bot()
    result = await make_image(world, world.alice, "a lighthouse")
    assert result.attachments  # the image is posted, not the internal-error text
    text = await reply(await world.discord.invoke_slash(world.alice, world.channel, "usage"))
    today = text.splitlines()[1]
    assert today.startswith("**Today**: 1 image · 3 credits ($0.03) — 24 images · 97 credits left")
    assert "-" not in today.split("—")[0]


async def test_a_result_link_at_a_private_address_ends_with_a_clear_message(
    world: World,
    connections: list[tuple[str, int]],  # noqa: F811
) -> None:
    world.bfl.sample_url_override = "http://169.254.169.254/latest/meta-data"
    await world.start_bot()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "a cloud"})
    message = await world.discord.wait_for_message(
        lambda m: "does not trust" in m.content, channel_id=world.channel.id, timeout=10
    )
    assert message.attachments == []
    assert (
        "The image service answered with a link the bot does not trust, so it was not "
        "followed. You were not charged."
    ) in message.content
    text = await reply(await world.discord.invoke_slash(world.alice, world.channel, "usage"))
    assert text.splitlines()[1].startswith("**Today**: 0 images · 0 credits ($0.00)")
    # Every connection the bot opened went to the loopback stand-ins, none to 169.254.169.254.
    assert connections and all(host.startswith("127.") for host, _ in connections)


async def test_a_result_far_larger_than_asked_ends_with_a_clear_message(world: World) -> None:
    world.bfl.result_size = (10000, 10000)  # a 10000² PNG of ~12 KB for a 1 MP request
    await world.start_bot()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "a moon"})
    message = await world.discord.wait_for_message(
        lambda m: "larger than the bot accepts" in m.content,
        channel_id=world.channel.id,
        timeout=10,
    )
    assert message.attachments == []
    assert "The finished image was larger than the bot accepts." in message.content
    text = await reply(await world.discord.invoke_slash(world.alice, world.channel, "usage"))
    assert text.splitlines()[1].startswith("**Today**: 0 images · 0 credits ($0.00)")


async def test_a_malformed_polling_url_still_delivers(world: World) -> None:
    world.bfl.polling_url_override = "https://[zz]/x"  # urlsplit raises on this one
    await world.start_bot()
    result = await make_image(world, world.alice, "a harbour")
    assert result.attachments  # polled by id on the configured host instead
    assert any(path == "/v1/get_result" for _, path in world.bfl.requests_seen)


async def test_a_malformed_result_link_ends_with_the_untrusted_link_message(world: World) -> None:
    world.bfl.sample_url_override = "https://[zz]/x"
    await world.start_bot()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "a fog"})
    message = await world.discord.wait_for_message(
        lambda m: "does not trust" in m.content, channel_id=world.channel.id, timeout=10
    )
    assert message.attachments == []
    assert "Something went wrong" not in message.content
    text = await reply(await world.discord.invoke_slash(world.alice, world.channel, "usage"))
    assert text.splitlines()[1].startswith("**Today**: 0 images · 0 credits ($0.00)")
