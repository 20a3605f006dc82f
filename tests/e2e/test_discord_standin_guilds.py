"""The Discord stand-in's guild membership, as plain discord.py sees it: joining a guild that
already has channels (and a system channel), the same join delivered twice, listing the
bot's guilds, leaving one, and an application owned by a team."""

from __future__ import annotations

import asyncio

import discord
import pytest

from tests.e2e.standin_clients import connected, no_leaks  # noqa: F401 - autouse fixture
from tests.fakes.discord_server import FakeDiscord


class JoinWatcher(discord.Client):
    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.ready = asyncio.Event()
        self.joins: asyncio.Queue[discord.Guild] = asyncio.Queue()
        self.removed: asyncio.Queue[discord.Guild] = asyncio.Queue()

    async def on_ready(self) -> None:
        self.ready.set()

    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self.joins.put(guild)

    async def on_guild_remove(self, guild: discord.Guild) -> None:
        await self.removed.put(guild)


async def test_joining_listing_and_leaving_guilds() -> None:
    async with FakeDiscord() as fake:
        with fake.patch_discord_py():
            home = fake.add_guild("Home")
            async with connected(JoinWatcher(), fake.token) as client:
                friends = fake.add_guild(
                    "Friends", channels=("rules", "general"), system_channel="general"
                )
                joined = await asyncio.wait_for(client.joins.get(), 5)
                assert joined.id == friends.id
                assert [c.name for c in joined.text_channels] == ["rules", "general"]
                assert joined.system_channel is not None and joined.system_channel.name == "general"
                fake.redeliver_guild_create(friends.id)  # Discord may send a join twice
                again = await asyncio.wait_for(client.joins.get(), 5)
                assert again.id == friends.id

                listed = [g.id async for g in client.fetch_guilds(limit=None)]
                assert listed == sorted([home.id, friends.id])

                await joined.leave()
                removed = await asyncio.wait_for(client.removed.get(), 5)
                assert removed.id == friends.id
                assert client.get_guild(friends.id) is None
                assert (
                    client.user is not None and client.user.id not in fake.guild(friends.id).members
                )
                assert [g.id async for g in client.fetch_guilds(limit=None)] == [home.id]
                with pytest.raises(discord.Forbidden):  # a guild the bot left is not readable
                    await client.fetch_guild(friends.id)
            assert not fake.unhandled_requests, fake.unhandled_requests


async def test_an_application_owned_by_a_team() -> None:
    async with FakeDiscord() as fake:
        with fake.patch_discord_py():
            home = fake.add_guild("Home")
            developer = fake.add_member(home.id, "dev")
            viewer = fake.add_member(home.id, "viewer")
            async with connected(JoinWatcher(), fake.token) as client:
                app = await client.application_info()
                assert app.team is None and app.owner.id == home.owner_id
                fake.set_team(home.owner_id, [(developer, "developer"), (viewer, "read_only")])
                app = await client.application_info()
                assert app.team is not None and app.team.owner_id == home.owner_id
                roles = {m.id: m.role for m in app.team.members}
                assert roles == {
                    home.owner_id: discord.TeamMemberRole.admin,
                    developer.id: discord.TeamMemberRole.developer,
                    viewer.id: discord.TeamMemberRole.read_only,
                }
