"""Self-tests of the Discord stand-in's community features, seen from an unmodified discord.py:
threads (edit, archive, lock), direct messages, permission overrides, member role updates and
age-restricted (nsfw) channels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.e2e.standin_clients import (
    connected,
    no_leaks,  # noqa: F401 (autouse)
)
from tests.fakes.discord_server import Channel as FakeChannel
from tests.fakes.discord_server import FakeDiscord, Guild, Role, User

MANAGE_GUILD = discord.Permissions(manage_guild=True)


def describe(interaction: discord.Interaction) -> str:
    """What the bot knows about where an interaction comes from."""
    channel = interaction.channel
    guild = interaction.guild
    parts = [
        f"guild={None if guild is None else guild.id}",
        f"user={type(interaction.user).__name__}",
        f"channel={type(channel).__name__}",
    ]
    if isinstance(channel, discord.Thread):
        parts.append(f"parent={channel.parent_id}")
    if isinstance(channel, discord.TextChannel | discord.Thread):
        parts.append(f"nsfw={channel.is_nsfw()}")
    return " ".join(parts)


class CommunityClient(discord.Client):
    def __init__(
        self, *, members: bool = False, dm_messages: bool = True, message_content: bool = True
    ) -> None:
        intents = discord.Intents.default()
        intents.message_content = message_content
        intents.members = members
        intents.dm_messages = dm_messages
        super().__init__(intents=intents, guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.errors: list[Exception] = []
        self.tree.error(self._on_tree_error)
        self.ready = asyncio.Event()
        self.inbox: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.thread_updates: asyncio.Queue[tuple[discord.Thread, discord.Thread]] = asyncio.Queue()
        self.thread_joins: asyncio.Queue[discord.Thread] = asyncio.Queue()
        self.thread_creates: asyncio.Queue[discord.Thread] = asyncio.Queue()
        self.channel_updates: asyncio.Queue[Any] = asyncio.Queue()
        self.member_updates: asyncio.Queue[tuple[discord.Member, discord.Member]] = asyncio.Queue()
        self._register_commands()

    async def _on_tree_error(self, interaction: discord.Interaction, error: Exception) -> None:
        self.errors.append(getattr(error, "original", error))

    async def on_ready(self) -> None:
        self.ready.set()

    async def on_message(self, message: discord.Message) -> None:
        if message.author != self.user:
            await self.inbox.put(message)

    async def on_thread_update(self, before: discord.Thread, after: discord.Thread) -> None:
        await self.thread_updates.put((before, after))

    async def on_thread_join(self, thread: discord.Thread) -> None:
        await self.thread_joins.put(thread)

    async def on_thread_create(self, thread: discord.Thread) -> None:
        await self.thread_creates.put(thread)

    async def on_guild_channel_update(self, before: Any, after: Any) -> None:
        await self.channel_updates.put((before, after))

    async def on_member_update(self, before: discord.Member, after: discord.Member) -> None:
        await self.member_updates.put((before, after))

    def _register_commands(self) -> None:
        tree = self.tree

        @tree.command(description="Where am I?")
        async def where(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(describe(interaction))

        @tree.command(description="Guild-only admin command; the bot re-checks permissions")
        @app_commands.guild_only()
        @app_commands.default_permissions(manage_guild=True)
        async def admin(interaction: discord.Interaction) -> None:
            allowed = interaction.permissions.manage_guild
            await interaction.response.send_message("ok" if allowed else "denied", ephemeral=True)

        @tree.command(description="Needs Manage Server in guilds, usable in DMs")
        @app_commands.default_permissions(manage_guild=True)
        async def report(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(f"report {describe(interaction)}")

        @tree.command(description="My roles")
        @app_commands.guild_only()
        async def whoami(interaction: discord.Interaction) -> None:
            member = interaction.user
            assert isinstance(member, discord.Member)
            roles = ",".join(r.name for r in member.roles if not r.is_default())
            await interaction.response.send_message(
                f"{roles or '-'} manage_guild={interaction.permissions.manage_guild}"
            )

        @tree.command(description="The bot DMs you")
        async def notify(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True)
            try:
                await interaction.user.send("a private hello")
            except discord.Forbidden as error:
                await interaction.followup.send(f"cannot DM you ({error.code})")
            else:
                await interaction.followup.send("check your DMs")

        @tree.command(description="Age-restricted", nsfw=True)
        async def spicy(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("hot")

        @tree.context_menu(name="Moderate message")
        @app_commands.default_permissions(manage_messages=True)
        async def moderate_message(
            interaction: discord.Interaction, message: discord.Message
        ) -> None:
            allowed = interaction.permissions.manage_messages
            await interaction.response.send_message(f"moderate {message.id}: {allowed}")

        @tree.context_menu(name="Inspect user")
        @app_commands.default_permissions(manage_guild=True)
        async def inspect_user(interaction: discord.Interaction, user: discord.Member) -> None:
            allowed = interaction.permissions.manage_guild
            await interaction.response.send_message(f"inspect {user.name}: {allowed}")


@dataclass
class World:
    fake: FakeDiscord
    guild: Guild
    channel: FakeChannel
    mods: Role
    alice: User  # a moderator (Manage Server)
    bob: User  # a plain member


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with FakeDiscord() as fake:
        guild = fake.add_guild("Community")
        channel = fake.add_text_channel(guild.id, "general")
        mods = fake.add_role(guild.id, "Moderator", permissions=MANAGE_GUILD.value)
        alice = fake.add_member(guild.id, "alice", roles=[mods.id])
        bob = fake.add_member(guild.id, "bob")
        with fake.patch_discord_py():
            yield World(fake, guild, channel, mods, alice, bob)
        assert not fake.unhandled_requests, fake.unhandled_requests


@asynccontextmanager
async def running(world: World, **options: Any) -> AsyncIterator[CommunityClient]:
    async with connected(CommunityClient(**options), world.fake.token) as client:
        await client.tree.sync()  # global commands: usable in guilds and (unless guild-only) DMs
        yield client


async def next_item(queue: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(queue.get(), 5)


# ---------------------------------------------------------------------------- threads
async def test_bot_locks_and_archives_a_thread(world: World) -> None:
    fake = world.fake
    async with running(world) as client:
        channel = client.get_channel(world.channel.id)
        assert isinstance(channel, discord.TextChannel)
        thread = await channel.create_thread(name="job 1", type=discord.ChannelType.public_thread)
        await fake.post_user_message(world.bob, thread.id, "hi in the thread")
        assert (await next_item(client.inbox)).channel == thread
        progress = await thread.send("working...")

        edited = await thread.edit(locked=True, archived=True, name="job 1 (done)")
        assert edited.locked and edited.archived and edited.name == "job 1 (done)"
        before, after = await next_item(client.thread_updates)
        assert (before.locked, before.archived) == (False, False)
        assert (after.locked, after.archived, after.name) == (True, True, "job 1 (done)")
        stored = fake.channel(thread.id)
        assert stored.locked and stored.archived and stored.name == "job 1 (done)"
        assert client.get_channel(thread.id) is None  # discord.py drops archived threads

        # Members cannot post in (or use commands in) a locked/archived thread...
        with pytest.raises(PermissionError, match="locked"):
            await fake.post_user_message(world.bob, thread.id, "let me in")
        with pytest.raises(PermissionError, match="archived"):
            await fake.invoke_slash(world.alice, thread.id, "where")
        # ...and neither can the bot while it is both locked and archived.
        with pytest.raises(discord.HTTPException) as refused:
            await thread.send("late result")
        assert refused.value.code == 50083
        with pytest.raises(discord.HTTPException) as refused:
            await progress.edit(content="done")  # no edits in archived threads either
        assert refused.value.code == 50083

        # Un-archived but still locked: the bot (Manage Threads) may post, members may not.
        reopened = await thread.edit(archived=False)
        assert reopened.locked and not reopened.archived
        assert (await next_item(client.thread_joins)).id == thread.id  # back in the cache
        await thread.send("moderators only now")
        with pytest.raises(PermissionError, match="locked"):
            await fake.post_user_message(world.bob, thread.id, "still locked?")
        await progress.edit(content="done")
        assert [m.content for m in fake.messages(thread.id)] == [
            "hi in the thread",
            "done",
            "moderators only now",
        ]


async def test_thread_edit_rules_and_text_channel_update(world: World) -> None:
    fake = world.fake
    thread = fake.add_thread(world.channel, "alice's thread", owner_id=world.alice)
    async with running(world) as client:
        cached = client.get_channel(thread.id)
        assert isinstance(cached, discord.Thread) and cached.owner_id == world.alice.id
        with pytest.raises(discord.HTTPException) as bad:
            await cached.edit(auto_archive_duration=30)  # type: ignore[arg-type]
        assert bad.value.status == 400 and bad.value.code == 50035
        await cached.edit(slowmode_delay=10, auto_archive_duration=60)
        _, after = await next_item(client.thread_updates)
        assert after.slowmode_delay == 10 and after.auto_archive_duration == 60
        assert fake.channel(thread.id).rate_limit_per_user == 10

        # A moderator archives it in the Discord client: editing it now needs un-archiving.
        await fake.edit_channel(thread, archived=True)
        await next_item(client.thread_updates)
        with pytest.raises(discord.HTTPException) as archived:
            await cached.edit(name="renamed")
        assert archived.value.code == 50083
        await cached.send("bumping it")  # a message un-archives an unlocked thread
        assert not fake.channel(thread.id).archived
        assert (await next_item(client.thread_joins)).id == thread.id

        channel = client.get_channel(world.channel.id)
        assert isinstance(channel, discord.TextChannel)
        await channel.edit(name="lobby", topic="say hi", nsfw=True, slowmode_delay=5)
        before, after = await next_item(client.channel_updates)
        assert before.name == "general" and not before.is_nsfw()
        assert (after.name, after.topic, after.is_nsfw(), after.slowmode_delay) == (
            "lobby",
            "say hi",
            True,
            5,
        )
        assert fake.channel(world.channel.id).nsfw and fake.channel(world.channel.id).topic

        with pytest.raises(discord.HTTPException):
            await channel.edit(default_thread_slowmode_delay=5)  # not in the fake: 400
        (unhandled,) = fake.unhandled_requests
        assert (unhandled.method, unhandled.path) == ("PATCH", f"/channels/{world.channel.id}")
        fake.unhandled_requests.clear()


async def test_user_reply_in_archived_thread_unarchives_it(world: World) -> None:
    fake = world.fake
    async with running(world) as client:
        channel = client.get_channel(world.channel.id)
        assert isinstance(channel, discord.TextChannel)
        bot_message = await channel.send("your image is ready")
        thread = fake.add_thread(
            world.channel, "feedback", owner_id=world.bob, message=bot_message.id
        )
        assert thread.id == bot_message.id
        in_thread = await next_item(client.thread_creates)  # a member started it
        assert in_thread.id == thread.id and in_thread.owner_id == world.bob.id
        assert in_thread.parent == channel
        first = await in_thread.send("tell me more")

        await fake.edit_channel(thread, archived=True)  # auto-archived after inactivity
        await next_item(client.thread_updates)
        assert client.get_channel(thread.id) is None

        posted = await fake.post_user_message(
            world.bob, thread, "make it bluer", reply_to=first.id, mention_bot=True
        )
        assert not fake.channel(thread.id).archived
        rejoined = await next_item(client.thread_joins)  # THREAD_UPDATE before MESSAGE_CREATE
        assert rejoined.id == thread.id and not rejoined.archived
        received = await next_item(client.inbox)
        assert received.id == posted.id and isinstance(received.channel, discord.Thread)
        assert received.channel.id == thread.id and received.guild is not None
        assert received.reference is not None and received.reference.message_id == first.id
        assert client.user in received.mentions
        reply = await received.reply("bluer it is")
        assert fake.message(reply.id).channel_id == thread.id
        assert fake.message(reply.id).reply_to == posted.id


async def test_slash_command_inside_a_thread_of_an_nsfw_channel(world: World) -> None:
    fake = world.fake
    adult = fake.add_text_channel(world.guild.id, "after-dark", nsfw=True)
    thread = fake.add_thread(adult, "late night", owner_id=world.alice)
    plain_thread = fake.add_thread(world.channel, "daytime", owner_id=world.alice)
    async with running(world) as client:
        it = await fake.invoke_slash(world.bob, thread, "where")
        assert it.payload["channel"]["type"] == 11
        assert it.payload["channel"]["parent_id"] == str(adult.id)
        assert it.payload["guild_id"] == str(world.guild.id)
        reply = await it.wait_original()
        assert reply.channel_id == thread.id
        assert reply.content == (
            f"guild={world.guild.id} user=Member channel=Thread parent={adult.id} nsfw=True"
        )

        it = await fake.invoke_slash(world.bob, adult, "where")
        assert it.payload["channel"]["nsfw"] is True
        assert (await it.wait_original()).content.endswith("channel=TextChannel nsfw=True")
        it = await fake.invoke_slash(world.bob, world.channel, "where")
        assert it.payload["channel"]["nsfw"] is False
        assert (await it.wait_original()).content.endswith("nsfw=False")
        it = await fake.invoke_slash(world.bob, plain_thread, "where")
        assert (await it.wait_original()).content.endswith(f"parent={world.channel.id} nsfw=False")

        # Age-restricted commands only show up in age-restricted channels (and their threads).
        assert (await (await fake.invoke_slash(world.bob, thread, "spicy")).wait_original()).content
        with pytest.raises(PermissionError, match="age-restricted"):
            await fake.invoke_slash(world.bob, plain_thread, "spicy")
        assert client.errors == []


# ---------------------------------------------------------------------------- direct messages
async def test_slash_command_in_a_dm(world: World) -> None:
    fake = world.fake
    dm = fake.open_dm(world.bob)
    assert fake.open_dm(world.bob) is dm and fake.dm_channel(world.bob) is dm
    async with running(world) as client:
        it = await fake.invoke_slash(world.bob, dm, "where")
        payload = it.payload
        assert "guild_id" not in payload and "member" not in payload
        assert payload["user"]["id"] == str(world.bob.id)
        assert payload["channel"]["type"] == 1 and payload["context"] == 1
        assert payload["authorizing_integration_owners"] == {"0": "0"}
        assert int(payload["app_permissions"]) > 0
        reply = await it.wait_original()
        assert reply.content == "guild=None user=User channel=DMChannel"
        assert reply.channel_id == dm.id and reply.guild_id is None
        assert fake.messages(dm.id) == [reply]

        # default_member_permissions only restrict use inside guilds.
        it = await fake.invoke_slash(world.bob, dm, "report")
        assert (await it.wait_original()).content.startswith("report guild=None")
        # Only the DM's recipient can use it.
        with pytest.raises(PermissionError, match="recipient"):
            await fake.invoke_slash(world.alice, dm, "where")
        assert client.errors == []


async def test_guild_only_and_guild_scoped_commands_are_refused_in_dms(world: World) -> None:
    fake = world.fake
    dm = fake.open_dm(world.alice)
    async with running(world) as client:
        admin = fake.command("admin")
        assert admin["contexts"] == [0] and admin["dm_permission"] is False
        with pytest.raises(PermissionError, match="guild-only"):
            await fake.invoke_slash(world.alice, dm, "admin")
        with pytest.raises(PermissionError, match="guild-only"):
            await fake.invoke_slash(world.alice, dm, "whoami")
        # A command synced to one guild only is never offered in DMs.
        client.tree.copy_global_to(guild=discord.Object(world.guild.id))
        client.tree.clear_commands(guild=None)
        await client.tree.sync(guild=discord.Object(world.guild.id))
        await client.tree.sync()
        with pytest.raises(PermissionError, match="only in guilds"):
            await fake.invoke_slash(world.alice, dm, "where")
        it = await fake.invoke_slash(world.alice, world.channel, "where")
        assert (await it.wait_original()).content.startswith(f"guild={world.guild.id}")


async def test_bot_opens_a_dm_and_the_user_answers(world: World) -> None:
    fake = world.fake
    async with running(world) as client:
        assert fake.dm_channel(world.bob) is None
        it = await fake.invoke_slash(world.bob, world.channel, "notify")
        assert (await it.wait_followup()).content == "check your DMs"
        dm = fake.dm_channel(world.bob)
        assert dm is not None and dm.recipient_id == world.bob.id
        (hello,) = fake.messages(dm.id)
        assert hello.content == "a private hello" and hello.guild_id is None
        assert hello.author_id == fake.bot_id

        answer = await fake.post_user_message(world.bob, dm, "thanks!")
        received = await next_item(client.inbox)
        assert received.id == answer.id and received.guild is None
        assert isinstance(received.channel, discord.DMChannel)
        await received.channel.send("you're welcome")
        assert [m.content for m in fake.messages(dm.id)] == [
            "a private hello",
            "thanks!",
            "you're welcome",
        ]
        with pytest.raises(PermissionError):
            await fake.post_user_message(world.alice, dm, "not my DM")

        fake.set_accepts_dms(world.alice, False)
        it = await fake.invoke_slash(world.alice, world.channel, "notify")
        assert (await it.wait_followup()).content == "cannot DM you (50007)"
        assert client.errors == []


async def test_dm_messages_need_the_direct_messages_intent(world: World) -> None:
    fake = world.fake
    dm = fake.open_dm(world.bob)
    async with running(world, dm_messages=False) as client:
        await fake.post_user_message(world.bob, dm, "anyone there?")
        await fake.post_user_message(world.bob, world.channel, "guild message")
        assert (await next_item(client.inbox)).content == "guild message"
        assert client.inbox.empty()
    async with running(world, message_content=False) as client:
        await fake.post_user_message(world.bob, dm, "hello?")
        assert (await next_item(client.inbox)).content == "hello?"  # DMs always carry content
        await fake.post_user_message(world.bob, world.channel, "hidden")
        assert (await next_item(client.inbox)).content == ""
    # The REST API opens the same DM channel the fake handed out.
    async with aiohttp.ClientSession() as session:
        url = f"{fake.base_url}/api/v10/users/@me/channels"
        headers = {"Authorization": f"Bot {fake.token}"}
        async with session.post(
            url, json={"recipient_id": str(world.bob.id)}, headers=headers
        ) as r:
            body = await r.json()
        assert body["id"] == str(dm.id) and body["recipients"][0]["id"] == str(world.bob.id)


# ---------------------------------------------------------------------------- permissions
async def test_default_permission_override_lets_the_bot_recheck(world: World) -> None:
    fake = world.fake
    async with running(world) as client:
        with pytest.raises(PermissionError, match="default_member_permissions"):
            await fake.invoke_slash(world.bob, world.channel, "admin")
        it = await fake.invoke_slash(
            world.bob, world.channel, "admin", ignore_default_permissions=True
        )
        assert (await it.wait_original()).content == "denied"
        it = await fake.invoke_slash(world.alice, world.channel, "admin")
        assert (await it.wait_original()).content == "ok"

        target = await fake.post_user_message(world.alice, world.channel, "spam")
        with pytest.raises(PermissionError):
            await fake.invoke_message_command(world.bob, world.channel, "Moderate message", target)
        it = await fake.invoke_message_command(
            world.bob, world.channel, "Moderate message", target, ignore_default_permissions=True
        )
        assert (await it.wait_original()).content == f"moderate {target.id}: False"

        with pytest.raises(PermissionError):
            await fake.invoke_user_command(world.bob, world.channel, "Inspect user", world.alice)
        it = await fake.invoke_user_command(
            world.bob, world.channel, "Inspect user", world.alice, ignore_default_permissions=True
        )
        assert (await it.wait_original()).content == "inspect alice: False"
        assert client.errors == []


async def test_role_changes_reach_interactions_and_member_update(world: World) -> None:
    fake = world.fake
    async with running(world, members=True) as client:
        it = await fake.invoke_slash(world.bob, world.channel, "whoami")
        assert (await it.wait_original()).content == "- manage_guild=False"

        fake.set_member_roles(world.guild, world.bob, [world.mods])
        before, after = await next_item(client.member_updates)
        assert before.roles == [before.guild.default_role]
        assert [r.name for r in after.roles] == ["@everyone", "Moderator"]
        it = await fake.invoke_slash(world.bob, world.channel, "whoami")
        assert it.payload["member"]["roles"] == [str(world.mods.id)]
        assert (await it.wait_original()).content == "Moderator manage_guild=True"
        it = await fake.invoke_slash(world.bob, world.channel, "admin")  # now offered to bob
        assert (await it.wait_original()).content == "ok"

        fake.set_member_roles(world.guild, world.bob, [])
        await next_item(client.member_updates)
        with pytest.raises(PermissionError):
            await fake.invoke_slash(world.bob, world.channel, "admin")
        with pytest.raises(LookupError):
            fake.set_member_roles(world.guild, world.bob, [world.guild.id])  # @everyone


async def test_role_changes_without_the_members_intent(world: World) -> None:
    fake = world.fake
    async with running(world) as client:
        fake.set_member_roles(world.guild, world.bob, [world.mods])
        it = await fake.invoke_slash(world.bob, world.channel, "whoami")
        assert (await it.wait_original()).content == "Moderator manage_guild=True"
        assert client.member_updates.empty()  # GUILD_MEMBER_UPDATE needs GUILD_MEMBERS
