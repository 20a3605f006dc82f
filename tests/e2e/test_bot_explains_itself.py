"""The bot explains itself, end to end on the Discord and BFL stand-ins: /help lists the
models this installation offers with their costs, /about its version and providers, and a
server the bot joins gets one setup note, never a second (not after a restart, nor when
Discord delivers the join again)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bot.catalogue import CATALOGUE
from bot.version import __version__
from tests.e2e.conftest import World
from tests.e2e.test_community import answer
from tests.e2e.test_spending import LogLines
from tests.fakes.discord.models import Channel, Message

SETUP_COMMANDS = ("/settings channel-add", "/quota set", "/imagine")


def fields(embed: dict[str, Any]) -> dict[str, str]:
    return {field["name"]: field["value"] for field in embed.get("fields", [])}


def embed_size(embed: dict[str, Any]) -> int:
    """What Discord counts against an embed's 6000 characters."""
    texts = [embed.get("title", ""), embed.get("description", "")]
    texts += [embed.get("footer", {}).get("text", "")]
    texts += [f["name"] + f["value"] for f in embed.get("fields", [])]
    return sum(len(text) for text in texts)


async def test_help_lists_each_model_this_bot_offers_with_its_cost(world: World) -> None:
    await world.start_bot()
    it = await world.discord.invoke_slash(world.alice, world.channel, "help")
    [embed] = (await answer(it))["embeds"]  # private: `answer` checks the flag
    shown = fields(embed)
    costs = shown["Costs in credits (1 credit = $0.01), for one 1 MP image"].splitlines()
    # Only BFL is configured: its models (no preview), in the catalogue's order and prices.
    assert costs == [
        "**pro** FLUX.2 [pro]: 3 credits, +1.5 per extra or reference MP (default)",
        "**max** FLUX.2 [max]: 7 credits, +3 per extra or reference MP",
        "**flex** FLUX.2 [flex]: 5 credits, +5 per extra or reference MP",
        "**klein-4b** FLUX.2 [klein] 4B: 1.4 credits, +0.1 per extra or reference MP",
        "**klein-9b** FLUX.2 [klein] 9B: 1.5 credits, +0.2 per extra or reference MP",
    ]
    assert CATALOGUE["max"].pricing.first_mp == 7  # the figures come from the catalogue
    assert "Reply to an image" in shown["Edit by replying"]
    assert "Edit with FLUX" in shown["Edit by replying"]
    stored = shown["What is stored about you"]
    assert "Prompts are kept for 90 days; reference images for 30 days" in stored
    assert "**/privacy export**" in stored and "**/privacy delete**" in stored
    assert "/imagine" in embed["description"]
    assert embed_size(embed) <= 6000
    assert all(len(value) <= 1024 for value in shown.values())


async def test_help_shows_the_servers_own_default_and_the_ai_ml_models(
    world_with_aiml: World,
) -> None:
    world = world_with_aiml
    bot = await world.start_bot()
    await bot.services.server_settings.update(world.guild.id, 1, "default", default_variant="flex")
    it = await world.discord.invoke_slash(world.bob, world.channel, "help")
    [embed] = (await answer(it))["embeds"]
    costs = "\n".join(
        value for name, value in fields(embed).items() if name.startswith("Costs in credits")
    )
    assert "**flex** FLUX.2 [flex]: 5 credits, +5 per extra or reference MP (default)" in costs
    assert costs.count("(default)") == 1
    assert "**dev** " in costs and "**lora** " in costs  # offered with the AI/ML API key


async def test_about_shows_the_version_providers_and_docs_link(world_with_aiml: World) -> None:
    world = world_with_aiml
    bot = await world.start_bot(docs_url="https://example.org/fluxcord/README.md")
    it = await world.discord.invoke_slash(world.bob, world.channel, "about")
    [embed] = (await answer(it))["embeds"]
    shown = fields(embed)
    assert shown["Version"] == f"Fluxcord {__version__}"
    assert shown["Image providers"] == "Black Forest Labs (BFL), AI/ML API"
    assert shown["Documentation"] == "https://example.org/fluxcord/README.md"
    assert shown["Up for"] == "less than a minute"
    # One process sees every server; of several (PostgreSQL), each sees only its shards'.
    assert shown.get("Servers") == (None if bot.services.db.shared else "1")
    # No key, token or URL of a provider is shown.
    assert world.discord.token not in str(embed) and "127.0.0.1" not in str(embed)


def setup_notes(world: World, channel: Channel) -> list[Message]:
    return [
        m
        for m in world.discord.messages(channel.id, include_deleted=True)
        if m.author_id == world.discord.application_id and "/quota set" in m.content
    ]


async def test_joining_a_server_posts_one_setup_note_and_never_another(world: World) -> None:
    bot = await world.start_bot(dev_guild_id=None)
    friends = world.discord.add_guild(
        "Friends", channels=("rules", "general"), system_channel="general"
    )
    rules, general = (world.discord.channel(c) for c in friends.channel_ids)
    note = await world.discord.wait_for_message(
        lambda m: m.author_id == world.discord.application_id, channel_id=general.id
    )
    assert note.content.startswith("Thanks for adding **")
    positions = [note.content.index(command) for command in SETUP_COMMANDS]
    assert positions == sorted(positions)  # the owner's first three commands, in order
    assert not note.ephemeral and not note.mentions

    # Discord delivers the same join again, and after a restart once more: no second note.
    world.discord.redeliver_guild_create(friends.id)
    await world.stop_bot(bot)
    await world.start_bot(dev_guild_id=None)
    world.discord.redeliver_guild_create(friends.id)
    # A server joined after those events gets its note: they were handled before it.
    later = world.discord.add_guild("Later", channels=("lobby",))
    await world.discord.wait_for_message(
        lambda m: m.author_id == world.discord.application_id,
        channel_id=later.channel_ids[0],
    )
    assert setup_notes(world, general) == [note]
    assert setup_notes(world, rules) == []


async def test_a_server_with_nowhere_to_post_gets_its_note_in_the_owners_messages(
    world: World,
) -> None:
    await world.start_bot(dev_guild_id=None)
    empty = world.discord.add_guild("Empty")  # no channel at all
    dm = await world.discord.wait_for(lambda: world.discord.dm_channel(empty.owner_id))
    note = await world.discord.wait_for_message(
        lambda m: m.author_id == world.discord.application_id, channel_id=dm.id
    )
    assert all(command in note.content for command in SETUP_COMMANDS)


async def test_a_server_that_may_not_make_images_gets_no_setup_note(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cogs.about")
    lines = LogLines()
    logging.getLogger("cogs.about").addHandler(lines)
    try:
        await world.start_bot(dev_guild_id=None, allowed_guild_ids=str(world.guild.id))
        stranger = world.discord.add_guild("Stranger", channels=("general",))
        await lines.wait_for(f"no setup note for server {stranger.id}")
        assert world.discord.messages(stranger.channel_ids[0]) == []
        assert world.discord.dm_channel(stranger.owner_id) is None
    finally:
        logging.getLogger("cogs.about").removeHandler(lines)
