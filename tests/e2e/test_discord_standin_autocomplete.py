"""Self-tests of the Discord stand-in's autocomplete: an unmodified discord.py client answers
APPLICATION_COMMAND_AUTOCOMPLETE interactions (type 4) with callback 8 and its choices."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest
from discord import app_commands

from tests.e2e.standin_clients import (
    connected,
    no_leaks,  # noqa: F401 (autouse)
    sync_to_guild,
)
from tests.fakes.discord_server import Channel, FakeDiscord, Guild, Upload, User

FRUITS = ["apple", "apricot", "banana", "cherry"]


class AutocompleteClient(discord.Client):
    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.ready = asyncio.Event()
        self.seen: list[tuple[str, dict[str, Any]]] = []  # (typed, the other options so far)
        self.answer_errors: list[Exception] = []
        self.many = False  # answer 30 choices, more than Discord takes
        self._register()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """No 5 s pause before a re-IDENTIFY here."""

    async def on_ready(self) -> None:
        self.ready.set()

    def _register(self) -> None:
        food = app_commands.Group(name="food", description="Food")

        @food.command(description="Pick a fruit")
        async def fruit(
            interaction: discord.Interaction,
            prompt: str,
            name: str,
            count: int = 1,
            photo: discord.Attachment | None = None,
        ) -> None:
            await interaction.response.send_message(f"{count} {name}: {prompt}")

        @fruit.autocomplete("name")
        async def suggest(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            self.seen.append((current, dict(vars(interaction.namespace))))
            if self.many:
                return [app_commands.Choice(name=f"fruit {n}", value=f"f{n}") for n in range(30)]
            return [app_commands.Choice(name=f.title(), value=f) for f in FRUITS if current in f]

        self.tree.add_command(food)

        @self.tree.error
        async def on_error(interaction: discord.Interaction, error: Exception) -> None:
            self.answer_errors.append(error)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        with server.patch_discord_py():
            yield server
        assert not server.unhandled_requests, server.unhandled_requests


async def world(fake: FakeDiscord) -> tuple[Guild, Channel, User]:
    guild = fake.add_guild("Test Guild")
    return guild, fake.add_text_channel(guild.id, "general"), fake.add_member(guild.id, "alice")


async def test_the_focused_option_is_answered_with_choices(fake: FakeDiscord) -> None:
    guild, channel, alice = await world(fake)
    async with connected(AutocompleteClient(), fake.token) as client:
        await sync_to_guild(client, guild.id)
        it = await fake.invoke_autocomplete(
            alice, channel, "food fruit", {"name": "ap", "count": 3}, focused="name"
        )
        callback = await it.response()
        assert callback.type == 8
        assert it.choices == [
            {"name": "Apple", "value": "apple"},
            {"name": "Apricot", "value": "apricot"},
        ]
        # Required `prompt` not filled in yet: Discord sends autocomplete all the same.
        [(typed, others)] = client.seen
        assert typed == "ap" and others["count"] == 3 and "prompt" not in others
        assert it.payload["type"] == 4
        [group] = it.payload["data"]["options"]
        focused = [o for o in group["options"] if o.get("focused")]
        assert focused == [{"name": "name", "type": 3, "value": "ap", "focused": True}]
        # Nothing was posted: an autocomplete answer is no message.
        assert fake.messages(channel.id) == []


async def test_an_empty_focused_option_and_its_limits(fake: FakeDiscord) -> None:
    guild, channel, alice = await world(fake)
    async with connected(AutocompleteClient(), fake.token) as client:
        await sync_to_guild(client, guild.id)
        it = await fake.invoke_autocomplete(alice, channel, "food fruit", focused="name")
        await it.response()
        assert [c["value"] for c in it.choices or []] == FRUITS
        with pytest.raises(ValueError, match="no autocomplete"):
            await fake.invoke_autocomplete(alice, channel, "food fruit", focused="prompt")
        with pytest.raises(LookupError, match="no option"):
            await fake.invoke_autocomplete(alice, channel, "food fruit", focused="colour")
        with pytest.raises(ValueError, match="attachments"):
            await fake.invoke_autocomplete(
                alice, channel, "food fruit", {"photo": Upload("a.png", b"x")}, focused="name"
            )


async def test_more_than_25_choices_are_refused(fake: FakeDiscord) -> None:
    guild, channel, alice = await world(fake)
    async with connected(AutocompleteClient(), fake.token) as client:
        await sync_to_guild(client, guild.id)
        client.many = True
        it = await fake.invoke_autocomplete(alice, channel, "food fruit", focused="name")
        refused = await fake.wait_for(
            lambda: [r for r in fake.requests if "/callback" in r.path and r.status == 400]
        )
        assert refused and it.choices is None and it.callbacks == []


async def test_an_answer_after_the_deadline_is_unknown(fake: FakeDiscord) -> None:
    guild, channel, alice = await world(fake)
    async with connected(AutocompleteClient(), fake.token) as client:
        await sync_to_guild(client, guild.id)
        fake.interaction_deadline = 0.0  # every answer is late
        it = await fake.invoke_autocomplete(alice, channel, "food fruit", focused="name")
        late = await fake.wait_for(
            lambda: [r for r in fake.requests if "/callback" in r.path and r.status == 404]
        )
        assert late and it.choices is None
