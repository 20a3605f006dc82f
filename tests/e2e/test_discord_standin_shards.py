"""Self-tests of the Discord stand-in's gateway sharding, with real discord.py sharded clients.

https://discord.com/developers/docs/topics/gateway#sharding: guild events go to shard
``(guild_id >> 22) % num_shards``, DMs to shard 0; IDENTIFYs are rate limited per bucket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.e2e.standin_clients import no_leaks  # noqa: F401 (autouse)
from tests.fakes.discord_server import FakeDiscord, GatewayClose, ShardSession

JSON = dict[str, Any]


class ShardClient(discord.AutoShardedClient):
    """A sharded bot with a ``/where`` command answering which client and shard handled it."""

    def __init__(
        self, *, name: str = "bot", identify_wait: float | None = None, **options: Any
    ) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        intents.members = True
        super().__init__(intents=intents, guild_ready_timeout=0.05, **options)
        self.name = name
        #: None: discord.py's own 5 s wait before every non-initial IDENTIFY.
        self.identify_wait = identify_wait
        self.ready = asyncio.Event()
        self.inbox: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.disconnects = 0
        self.tree = app_commands.CommandTree(self)

        @self.tree.command(description="Which shard handled this?")
        async def where(interaction: discord.Interaction) -> None:
            shard = "dm" if interaction.guild is None else interaction.guild.shard_id
            await interaction.response.send_message(f"{self.name} shard {shard}")

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        if self.identify_wait is None:
            await super().before_identify_hook(shard_id, initial=initial)
        elif not initial:
            await asyncio.sleep(self.identify_wait)

    async def on_ready(self) -> None:
        self.ready.set()

    async def on_disconnect(self) -> None:
        self.disconnects += 1

    async def on_message(self, message: discord.Message) -> None:
        if message.author != self.user:
            await self.inbox.put(message)


@asynccontextmanager
async def started(
    clients: list[ShardClient], token: str, *, ready_within: float = 5.0
) -> AsyncIterator[None]:
    """Start the clients together, wait until each is ready, close them all after."""
    tasks = [asyncio.create_task(client.start(token)) for client in clients]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), ready_within)
        yield
    finally:
        for client in clients:
            await client.close()
        await asyncio.gather(*tasks)


def only_session(fake: FakeDiscord, shard_id: int) -> ShardSession:
    sessions = fake.gateway_sessions(shard_id)
    assert len(sessions) == 1, sessions
    return sessions[0]


def guild_of(event: str, payload: JSON) -> str | None:
    """The guild id an event is about (GUILD_CREATE carries it as ``id``)."""
    if event == "GUILD_CREATE":
        return str(payload["id"])
    value = payload.get("guild_id")
    return None if value is None else str(value)


async def next_message(client: ShardClient) -> discord.Message:
    return await asyncio.wait_for(client.inbox.get(), 5)


def test_add_guild_lands_on_the_chosen_shard() -> None:
    fake = FakeDiscord(shard_count=3)
    guilds = [fake.add_guild(f"g{i}", shard_id=i % 3) for i in range(7)]
    assert [(g.id >> 22) % 3 for g in guilds] == [i % 3 for i in range(7)]
    assert [fake.shard_for_guild(g) for g in guilds] == [i % 3 for i in range(7)]
    assert fake.shard_for_guild(None) == 0  # DMs
    ids = [g.id for g in guilds]
    assert ids == sorted(ids) and len(set(ids)) == 7
    assert fake.add_text_channel(guilds[-1].id, "after").id > guilds[-1].id  # still monotonic
    with pytest.raises(ValueError, match="range"):
        fake.add_guild("nowhere", shard_id=3)


async def test_auto_sharded_client_gets_guilds_events_and_dms_on_their_shards() -> None:
    # discord.py's own pacing (5 s before the second shard) against the default 5 s interval.
    async with FakeDiscord(shard_count=2) as fake:
        zero, one = fake.add_guild("Zero", shard_id=0), fake.add_guild("One", shard_id=1)
        general0 = fake.add_text_channel(zero.id, "general")
        general1 = fake.add_text_channel(one.id, "general")
        alice = fake.add_member(one.id, "alice")
        fake.add_member(zero.id, "alice", user_id=alice.id)
        dm = fake.open_dm(alice)
        with fake.patch_discord_py():
            client = ShardClient(shard_count=2)
            async with started([client], fake.token, ready_within=15):
                assert fake.identify_rate_violations == 0
                assert fake.identify_counts == {0: 1, 1: 1}
                assert fake.overlapping_shard_sessions == 0
                assert {g.id: g.shard_id for g in client.guilds} == {zero.id: 0, one.id: 1}
                s0, s1 = only_session(fake, 0), only_session(fake, 1)
                assert (s0.shard, s1.shard) == ((0, 2), (1, 2))
                for session, guild in ((s0, zero), (s1, one)):
                    (ready,) = session.events("READY")
                    assert ready["shard"] == [session.shard_id, 2]
                    assert [g["id"] for g in ready["guilds"]] == [str(guild.id)]
                    assert [g["id"] for g in session.events("GUILD_CREATE")] == [str(guild.id)]

                posted = await fake.post_user_message(alice, general1, "hello shard one")
                received = await next_message(client)
                assert received.id == posted.id and received.guild is not None
                assert received.guild.shard_id == 1
                s0, s1 = only_session(fake, 0), only_session(fake, 1)
                assert [m["id"] for m in s1.events("MESSAGE_CREATE")] == [str(posted.id)]
                assert s0.events("MESSAGE_CREATE") == []

                whisper = await fake.post_user_message(alice, dm, "psst")
                received = await next_message(client)
                assert received.id == whisper.id and received.guild is None
                assert [m["id"] for m in only_session(fake, 0).events("MESSAGE_CREATE")] == [
                    str(whisper.id)
                ]
                assert len(only_session(fake, 1).events("MESSAGE_CREATE")) == 1

                await client.tree.sync()
                answers = {}
                for channel in (general0, general1, dm):
                    it = await fake.invoke_slash(alice, channel, "where")
                    callback = await it.response()
                    assert callback.data is not None
                    answers[channel.id] = callback.data["content"]
                assert answers == {
                    general0.id: "bot shard 0",
                    general1.id: "bot shard 1",
                    dm.id: "bot shard dm",
                }
                s0, s1 = only_session(fake, 0), only_session(fake, 1)
                assert [i.get("guild_id") for i in s0.events("INTERACTION_CREATE")] == [
                    str(zero.id),
                    None,
                ]
                assert [i.get("guild_id") for i in s1.events("INTERACTION_CREATE")] == [str(one.id)]

                async with aiohttp.ClientSession() as http:
                    headers = {"Authorization": f"Bot {fake.token}"}
                    async with http.get(
                        f"{fake.base_url}/api/v10/gateway/bot", headers=headers
                    ) as response:
                        bot_gateway = await response.json()
                assert bot_gateway["shards"] == 2
                limit = bot_gateway["session_start_limit"]
                assert (limit["total"], limit["remaining"], limit["max_concurrency"]) == (
                    1000,
                    998,
                    1,
                )
                assert 0 < limit["reset_after"] <= 86_400_000
    assert not fake.unhandled_requests


async def test_every_guild_event_goes_only_to_its_shard() -> None:
    async with FakeDiscord(shard_count=2, identify_interval=0.1) as fake:
        zero, one = fake.add_guild("Zero", shard_id=0), fake.add_guild("One", shard_id=1)
        fake.add_text_channel(zero.id, "general")
        general1 = fake.add_text_channel(one.id, "general")
        with fake.patch_discord_py():
            client = ShardClient(shard_count=2, identify_wait=0.15)
            async with started([client], fake.token):
                assert fake.identify_rate_violations == 0
                channel = fake.add_text_channel(one.id, "later")
                mods = fake.add_role(one.id, "Mods")
                bob = fake.add_member(one.id, "bob")
                fake.set_member_roles(one.id, bob, [mods])
                fake.set_overwrite(general1, mods, allow=1 << 13)
                thread = fake.add_thread(general1, "talk")
                await fake.edit_channel(thread, name="renamed")
                posted = await fake.post_user_message(bob, general1, "hi")
                await next_message(client)
                text = client.get_channel(channel.id)
                assert isinstance(text, discord.TextChannel) and text.guild.shard_id == 1
                sent = await text.send("from the bot")
                await sent.edit(content="edited")
                await sent.create_thread(name="bot thread")
                await fake.delete_message(posted)
                late = fake.add_guild("Late", shard_id=1)
                await client.tree.sync()
                await (await fake.invoke_slash(bob, channel, "where")).response()
                expected = {
                    "CHANNEL_CREATE",
                    "GUILD_ROLE_CREATE",
                    "GUILD_MEMBER_ADD",
                    "GUILD_MEMBER_UPDATE",
                    "CHANNEL_UPDATE",
                    "THREAD_CREATE",
                    "THREAD_UPDATE",
                    "MESSAGE_CREATE",
                    "MESSAGE_UPDATE",
                    "MESSAGE_DELETE",
                    "GUILD_CREATE",
                    "INTERACTION_CREATE",
                }
                ones = {str(one.id), str(late.id)}

                def shard_one_events() -> set[str]:
                    return {
                        event
                        for event, payload in only_session(fake, 1).dispatched
                        if guild_of(event, payload) in ones
                    }

                await fake.wait_for(lambda: shard_one_events() >= expected)
                await fake.wait_for(lambda: client.get_guild(late.id) is not None)
                strays = [
                    (event, payload)
                    for event, payload in only_session(fake, 0).dispatched
                    if guild_of(event, payload) in ones
                ]
                assert strays == []

                await fake.drop_gateway(shard_id=1)  # only shard 1 reconnects (and resumes)
                await fake.wait_for(lambda: fake.resume_count == 1 and fake.gateway_connected)
                await fake.wait_until_connected()
                assert fake.gateway_closes[-1] == GatewayClose(4000, "dropped by test", (1, 2))
                assert fake.identify_counts == {0: 1, 1: 1}
                again = await fake.post_user_message(bob, general1, "still there?")
                assert (await next_message(client)).id == again.id
    assert not fake.unhandled_requests


async def test_separate_processes_each_get_only_their_shard() -> None:
    # max_concurrency=2: shards 0 and 1 are in different buckets and may identify together.
    async with FakeDiscord(shard_count=2, max_concurrency=2) as fake:
        zero, one = fake.add_guild("Zero", shard_id=0), fake.add_guild("One", shard_id=1)
        general0 = fake.add_text_channel(zero.id, "general")
        general1 = fake.add_text_channel(one.id, "general")
        alice = fake.add_member(zero.id, "alice")
        fake.add_member(one.id, "alice", user_id=alice.id)
        dm = fake.open_dm(alice)
        with fake.patch_discord_py():
            first = ShardClient(name="first", shard_ids=[0], shard_count=2)
            second = ShardClient(name="second", shard_ids=[1], shard_count=2)
            async with started([first, second], fake.token):
                assert fake.identify_rate_violations == 0
                assert fake.identify_counts == {0: 1, 1: 1}
                assert [g.id for g in first.guilds] == [zero.id]
                assert [g.id for g in second.guilds] == [one.id]

                to_zero = await fake.post_user_message(alice, general0, "for zero")
                to_one = await fake.post_user_message(alice, general1, "for one")
                to_dm = await fake.post_user_message(alice, dm, "for the dm")
                assert (await next_message(first)).id == to_zero.id
                assert (await next_message(second)).id == to_one.id
                assert (await next_message(first)).id == to_dm.id
                assert first.inbox.empty() and second.inbox.empty()

                await first.tree.sync()  # one global registration serves both processes
                answers = []
                for channel in (general0, general1, dm):
                    callback = await (await fake.invoke_slash(alice, channel, "where")).response()
                    assert callback.data is not None
                    answers.append(callback.data["content"])
                assert answers == ["first shard 0", "second shard 1", "first shard dm"]
    assert not fake.unhandled_requests


async def test_invalid_shard_pairs_are_closed() -> None:
    async with FakeDiscord(shard_count=2) as fake:
        fake.add_guild("Zero", shard_id=0)
        with fake.patch_discord_py():
            cases: list[tuple[discord.Client, int, tuple[int, int] | None]] = [
                (
                    discord.Client(intents=discord.Intents.default(), shard_id=2, shard_count=2),
                    4010,
                    (2, 2),
                ),
                (
                    discord.Client(intents=discord.Intents.default(), shard_id=0, shard_count=3),
                    4010,
                    (0, 3),
                ),
                # No ``shard`` means [0, 1]: too few shards for this bot.
                (discord.Client(intents=discord.Intents.default()), 4011, (0, 1)),
            ]
            for client, code, pair in cases:
                with pytest.raises(discord.ConnectionClosed) as closed:
                    await asyncio.wait_for(client.start(fake.token), 5)
                assert closed.value.code == code
                assert fake.gateway_closes[-1].code == code
                assert fake.gateway_closes[-1].shard == pair
        assert [c.reason for c in fake.gateway_closes] == [
            "Invalid shard.",
            "Invalid shard.",
            "Sharding required.",
        ]
        assert fake.identify_count == 0 and fake.identify_counts == {}
        assert fake.gateway_sessions() == []
        assert fake.session_start_limit["remaining"] == 1000


async def test_single_shard_stand_in_accepts_any_valid_pair() -> None:
    # shard_count 1 (the default) imposes no count; a bot may still choose to shard.
    async with FakeDiscord() as fake:
        zero = fake.add_guild("Zero")
        with fake.patch_discord_py():
            client = ShardClient(shard_ids=[(zero.id >> 22) % 2], shard_count=2)
            async with started([client], fake.token):
                (session,) = fake.gateway_sessions()
                assert session.shard == ((zero.id >> 22) % 2, 2)
                assert [g.id for g in client.guilds] == [zero.id]


async def test_identify_within_the_interval_of_its_bucket_gets_invalid_session() -> None:
    async with FakeDiscord(shard_count=2, identify_interval=1.0) as fake:
        fake.add_guild("Zero", shard_id=0)
        fake.add_guild("One", shard_id=1)
        with fake.patch_discord_py():
            # max_concurrency 1: both shards share bucket 0. Both start at once, so whichever
            # IDENTIFY arrives second is refused; its client waits and identifies again.
            first = ShardClient(name="first", shard_ids=[0], shard_count=2, identify_wait=1.0)
            second = ShardClient(name="second", shard_ids=[1], shard_count=2, identify_wait=1.0)
            async with started([first, second], fake.token):
                assert fake.identify_rate_violations == 1
                assert sorted([first.disconnects, second.disconnects]) == [0, 1]
                assert fake.identify_counts == {0: 1, 1: 1}
                assert [len(fake.gateway_sessions(s)) for s in (0, 1)] == [1, 1]
                assert fake.session_start_limit["remaining"] == 998


async def test_second_session_for_a_held_shard_is_counted_as_overlapping() -> None:
    async with FakeDiscord(shard_count=2, identify_rate_limit=False) as fake:
        zero = fake.add_guild("Zero", shard_id=0)
        general0 = fake.add_text_channel(zero.id, "general")
        alice = fake.add_member(zero.id, "alice")
        with fake.patch_discord_py():
            holder = ShardClient(name="holder", shard_ids=[0], shard_count=2)
            async with started([holder], fake.token):
                assert fake.overlapping_shard_sessions == 0
                intruder = ShardClient(name="intruder", shard_ids=[0], shard_count=2)
                async with started([intruder], fake.token):
                    assert fake.overlapping_shard_sessions == 1
                    assert [s.connected for s in fake.gateway_sessions(0)] == [True, True]
                    # Like Discord: both sessions of the shard get its events.
                    posted = await fake.post_user_message(alice, general0, "who hears this?")
                    assert (await next_message(holder)).id == posted.id
                    assert (await next_message(intruder)).id == posted.id
                # The intruder closed (1000): its session ended, so a new one does not overlap.
                assert len(fake.gateway_sessions(0)) == 1
            assert fake.gateway_sessions() == []
            successor = ShardClient(name="successor", shard_ids=[0], shard_count=2)
            async with started([successor], fake.token):
                assert fake.overlapping_shard_sessions == 1
        assert fake.identify_counts == {0: 3}


async def test_auto_sharded_client_without_a_count_uses_gateway_bot() -> None:
    async with FakeDiscord(shard_count=3, identify_interval=0.1) as fake:
        guilds = [fake.add_guild(f"g{i}", shard_id=i) for i in range(3)]
        with fake.patch_discord_py():
            client = ShardClient(identify_wait=0.15)
            async with started([client], fake.token):
                assert client.shard_count == 3
                assert fake.identify_counts == {0: 1, 1: 1, 2: 1}
                assert fake.identify_rate_violations == 0
                assert {g.id: g.shard_id for g in client.guilds} == {
                    g.id: i for i, g in enumerate(guilds)
                }
