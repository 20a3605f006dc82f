"""Self-tests of the Discord stand-in's channel permission overwrites, seen from an unmodified
discord.py: what ``channel.permissions_for(member)`` computes from the cached channel (sent in
GUILD_CREATE / CHANNEL_UPDATE / ``GET /channels/{id}``) and what an interaction reports there
(``interaction.permissions``, ``app_permissions``) must agree, as they do on Discord."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import discord
import pytest
from discord import app_commands

from tests.e2e.standin_clients import (
    connected,
    no_leaks,  # noqa: F401 (autouse)
)
from tests.fakes.discord_server import Channel as FakeChannel
from tests.fakes.discord_server import FakeDiscord, Guild, Role, Upload, User

P = discord.Permissions
MANAGE_MESSAGES = P(manage_messages=True).value
MANAGE_THREADS = P(manage_threads=True).value
VIEW = P(view_channel=True).value
SEND = P(send_messages=True).value


class PermissionsClient(discord.Client):
    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.ready = asyncio.Event()
        self.channel_updates: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue()
        self.errors: list[Exception] = []
        self.tree.error(self._on_tree_error)
        tree = self.tree

        @tree.command(description="Your permissions here, four ways")
        async def perms(interaction: discord.Interaction) -> None:
            channel, member, guild = interaction.channel, interaction.user, interaction.guild
            assert isinstance(channel, discord.TextChannel | discord.Thread)
            assert isinstance(member, discord.Member) and guild is not None
            answer = {
                "interaction": interaction.permissions.value,
                "cache": channel.permissions_for(member).value,
                "app": interaction.app_permissions.value,
                "bot_cache": channel.permissions_for(guild.me).value,
            }
            await interaction.response.send_message(json.dumps(answer))

        @tree.command(description="Someone's permissions here, and yours in another channel")
        async def peek(
            interaction: discord.Interaction,
            who: discord.Member,
            where: app_commands.AppCommandChannel,
        ) -> None:
            assert who.resolved_permissions is not None
            answer = {"who": who.resolved_permissions.value, "where": where.permissions.value}
            await interaction.response.send_message(json.dumps(answer))

        @tree.context_menu(name="Moderate message")
        @app_commands.default_permissions(manage_messages=True)
        async def moderate(interaction: discord.Interaction, message: discord.Message) -> None:
            await interaction.response.send_message(f"{interaction.permissions.manage_messages}")

    async def _on_tree_error(self, interaction: discord.Interaction, error: Exception) -> None:
        self.errors.append(getattr(error, "original", error))

    async def on_ready(self) -> None:
        self.ready.set()

    async def on_guild_channel_update(self, before: Any, after: Any) -> None:
        await self.channel_updates.put((before, after))


@dataclass
class World:
    fake: FakeDiscord
    guild: Guild
    general: FakeChannel
    review: FakeChannel
    mods: Role  # no guild-level permissions: what it may do is set per channel
    alice: User  # has the Mods role
    bob: User  # a plain member


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with FakeDiscord() as fake:
        guild = fake.add_guild("Overwrites")
        general = fake.add_text_channel(guild.id, "general")
        review = fake.add_text_channel(guild.id, "review")
        mods = fake.add_role(guild.id, "Mods")
        alice = fake.add_member(guild.id, "alice", roles=[mods.id])
        bob = fake.add_member(guild.id, "bob")
        with fake.patch_discord_py():
            yield World(fake, guild, general, review, mods, alice, bob)
        assert not fake.unhandled_requests, fake.unhandled_requests


@asynccontextmanager
async def running(world: World) -> AsyncIterator[PermissionsClient]:
    async with connected(PermissionsClient(), world.fake.token) as client:
        await client.tree.sync()
        yield client
        assert client.errors == []


async def perms(world: World, user: User | int, channel: FakeChannel) -> dict[str, P]:
    """``/perms`` as ``user`` in ``channel``; checks the two views of each side agree."""
    it = await world.fake.invoke_slash(user, channel, "perms")
    answer = {k: P(v) for k, v in json.loads((await it.wait_original()).content).items()}
    assert answer["interaction"] == answer["cache"], answer
    assert answer["app"] == answer["bot_cache"], answer
    assert answer["interaction"].value == int(it.payload["member"]["permissions"])
    assert answer["interaction"].value == world.fake.channel_permissions(channel, user)
    return answer


async def updated(client: PermissionsClient, channel: FakeChannel) -> discord.TextChannel:
    """The cached channel after the CHANNEL_UPDATE a ``set_overwrite`` dispatched."""
    _, after = await asyncio.wait_for(client.channel_updates.get(), 5)
    assert isinstance(after, discord.TextChannel) and after.id == channel.id
    return after


async def test_a_member_overwrite_shows_in_the_cache_and_in_interactions(world: World) -> None:
    fake = world.fake
    # Set before the bot connects: it arrives in GUILD_CREATE.
    fake.set_overwrite(world.review, world.bob, allow=MANAGE_MESSAGES)
    async with running(world) as client:
        review = client.get_channel(world.review.id)
        assert isinstance(review, discord.TextChannel)
        assert review.overwrites_for(discord.Object(world.bob.id)).manage_messages is True
        here = await perms(world, world.bob, world.review)
        assert here["interaction"].manage_messages and not here["interaction"].manage_guild
        elsewhere = await perms(world, world.bob, world.general)
        assert not elsewhere["interaction"].manage_messages
        assert here["interaction"].value == elsewhere["interaction"].value | MANAGE_MESSAGES

        # Set while connected: CHANNEL_UPDATE; also what GET /channels/{id} answers.
        fake.set_overwrite(world.general, world.mods, allow=MANAGE_MESSAGES)
        after = await updated(client, world.general)
        assert after.overwrites_for(after.guild.get_role(world.mods.id)).manage_messages  # type: ignore[arg-type]
        assert (await perms(world, world.alice, world.general))["interaction"].manage_messages
        assert not (await perms(world, world.bob, world.general))["interaction"].manage_messages
        fetched = await client.fetch_channel(world.general.id)
        assert isinstance(fetched, discord.TextChannel)
        assert {t.id for t in fetched.overwrites} == {world.mods.id}

        # allow=0, deny=0 removes it.
        fake.set_overwrite(world.general, world.mods)
        assert (await updated(client, world.general)).overwrites == {}
        assert not (await perms(world, world.alice, world.general))["interaction"].manage_messages
        assert fake.channel(world.general.id).overwrites == []


async def test_resolved_options_carry_channel_permissions(world: World) -> None:
    fake = world.fake
    fake.set_overwrite(world.review, world.bob, allow=MANAGE_MESSAGES)
    fake.set_overwrite(world.general, world.mods, deny=SEND)
    async with running(world):
        # Alice, in #review, asks about Bob (resolved: his permissions in #review) and #general
        # (resolved: her own permissions there).
        it = await fake.invoke_slash(
            world.alice, world.review, "peek", {"who": world.bob, "where": world.general}
        )
        answer = json.loads((await it.wait_original()).content)
        assert answer["who"] == fake.channel_permissions(world.review, world.bob)
        assert P(answer["who"]).manage_messages
        assert answer["where"] == fake.channel_permissions(world.general, world.alice)
        assert not P(answer["where"]).send_messages


async def test_member_overwrite_beats_role_overwrites_and_role_allows_beat_role_denies(
    world: World,
) -> None:
    fake = world.fake
    helpers = fake.add_role(world.guild.id, "Helpers")
    fake.set_member_roles(world.guild, world.alice, [world.mods, helpers])
    fake.set_member_roles(world.guild, world.bob, [world.mods])
    fake.set_overwrite(world.review, world.mods, allow=MANAGE_MESSAGES, deny=SEND)
    fake.set_overwrite(world.review, helpers, allow=SEND)  # one role's allow beats another's deny
    fake.set_overwrite(world.review, world.alice, deny=MANAGE_MESSAGES)  # the member's own wins
    fake.set_overwrite(
        world.review, world.guild, allow=MANAGE_THREADS, deny=P(add_reactions=True).value
    )
    async with running(world):
        alice = (await perms(world, world.alice, world.review))["interaction"]
        assert not alice.manage_messages and alice.send_messages
        bob = (await perms(world, world.bob, world.review))["interaction"]
        assert bob.manage_messages and not bob.send_messages
        # Without Send Messages, discord.py drops the implicit ones (embeds, files) and so does
        # the stand-in; @everyone's overwrite applies to everyone, first.
        assert not bob.embed_links and not bob.attach_files
        assert alice.manage_threads and bob.manage_threads and not alice.add_reactions
        with pytest.raises(PermissionError, match="SEND_MESSAGES"):
            await fake.post_user_message(world.bob, world.review, "may I?")
        await fake.post_user_message(world.alice, world.review, "I may")


async def test_an_everyone_deny_hides_a_channel_unless_a_role_allows_it(world: World) -> None:
    fake = world.fake
    fake.set_overwrite(world.review, world.guild.id, deny=VIEW)  # the @everyone role's id
    fake.set_overwrite(world.review, world.mods, allow=VIEW)
    fake.set_overwrite(world.general, world.guild, deny=P(use_application_commands=True).value)
    async with running(world) as client:
        assert (await perms(world, world.alice, world.review))["interaction"].read_messages
        with pytest.raises(PermissionError, match="cannot see"):
            await fake.invoke_slash(world.bob, world.review, "perms")
        with pytest.raises(PermissionError, match="VIEW_CHANNEL"):
            await fake.post_user_message(world.bob, world.review, "hello?")
        review = client.get_channel(world.review.id)
        assert isinstance(review, discord.TextChannel)
        bob = review.guild.get_member(world.bob.id) or await review.guild.fetch_member(world.bob.id)
        # No View Channel: no channel permission at all, only guild-wide ones remain.
        left = P(change_nickname=True).value
        assert review.permissions_for(bob).value == left
        assert fake.channel_permissions(world.review, world.bob) == left

        # No "Use Application Commands" in #general: commands are not offered there...
        with pytest.raises(PermissionError, match="USE_APPLICATION_COMMANDS"):
            await fake.invoke_slash(world.bob, world.general, "perms")
        # ...yet members still post there.
        await fake.post_user_message(world.bob, world.general, "just chatting")


async def test_default_member_permissions_follow_the_channel(world: World) -> None:
    fake = world.fake
    fake.set_overwrite(world.review, world.mods, allow=MANAGE_MESSAGES)
    async with running(world):
        target = await fake.post_user_message(world.bob, world.review, "spam")
        it = await fake.invoke_message_command(
            world.alice, world.review, "Moderate message", target
        )
        assert (await it.wait_original()).content == "True"
        elsewhere = await fake.post_user_message(world.bob, world.general, "spam")
        with pytest.raises(PermissionError, match="default_member_permissions"):
            await fake.invoke_message_command(
                world.alice, world.general, "Moderate message", elsewhere
            )


async def test_threads_inherit_their_parents_overwrites(world: World) -> None:
    fake = world.fake
    fake.set_overwrite(world.review, world.mods, allow=MANAGE_THREADS)
    locked = fake.add_thread(world.review, "locked", owner_id=world.bob, locked=True)
    other = fake.add_thread(world.general, "locked too", owner_id=world.bob, locked=True)
    async with running(world) as client:
        here = await perms(world, world.alice, locked)
        assert here["interaction"].manage_threads
        assert not (await perms(world, world.alice, other))["interaction"].manage_threads
        thread = client.get_channel(locked.id)
        assert isinstance(thread, discord.Thread)
        await fake.post_user_message(world.alice, locked, "a moderator here")
        with pytest.raises(PermissionError, match="locked"):
            await fake.post_user_message(world.alice, other, "not a moderator there")
        with pytest.raises(ValueError, match="threads"):
            fake.set_overwrite(locked, world.mods, allow=MANAGE_THREADS)

        # Denying Send Messages in Threads on the parent mutes its threads, not the parent.
        fake.set_overwrite(world.review, world.guild, deny=P(send_messages_in_threads=True).value)
        await updated(client, world.review)
        open_thread = fake.add_thread(world.review, "open", owner_id=world.bob)
        in_thread = (await perms(world, world.bob, open_thread))["interaction"]
        assert not in_thread.send_messages_in_threads and not in_thread.attach_files
        with pytest.raises(PermissionError, match="SEND_MESSAGES_IN_THREADS"):
            await fake.post_user_message(world.bob, open_thread, "hi")
        await fake.post_user_message(world.bob, world.review, "hi in the channel")


async def test_the_bots_own_overwrites_reach_app_permissions_and_its_thread_rules(
    world: World,
) -> None:
    fake = world.fake
    bot_role = fake.guild(world.guild.id).bot_role_id
    assert bot_role is not None
    fake.set_overwrite(world.review, bot_role, deny=MANAGE_THREADS)
    async with running(world) as client:
        assert (await perms(world, world.bob, world.review))["app"].manage_threads is False
        assert (await perms(world, world.bob, world.general))["app"].manage_threads is True
        review = client.get_channel(world.review.id)
        assert isinstance(review, discord.TextChannel)
        thread = await review.create_thread(name="job", type=discord.ChannelType.public_thread)
        with pytest.raises(discord.Forbidden) as refused:
            await thread.edit(locked=True)  # needs Manage Threads, denied here
        assert refused.value.code == 50013


async def test_administrators_and_the_owner_bypass_overwrites(world: World) -> None:
    fake = world.fake
    admins = fake.add_role(world.guild.id, "Admins", permissions=P(administrator=True).value)
    fake.set_member_roles(world.guild, world.bob, [admins])
    fake.set_overwrite(world.review, world.guild, deny=VIEW | SEND)
    fake.set_overwrite(world.review, world.bob, deny=VIEW | MANAGE_MESSAGES)
    owner = fake.guild(world.guild.id).owner_id
    fake.set_overwrite(world.review, owner, deny=VIEW)
    async with running(world):
        # Everything (discord.py drops only the voice permissions in text channels).
        everything = P.all().value & ~P.voice().value
        for user in (world.bob, owner):
            assert (await perms(world, user, world.review))["interaction"].value == everything
        await fake.post_user_message(world.bob, world.review, "admins see everything")


async def test_overwrites_hold_channel_permissions_only(world: World) -> None:
    fake = world.fake
    with pytest.raises(ValueError, match="channel permissions"):
        fake.set_overwrite(world.review, world.mods, allow=P(administrator=True).value)
    with pytest.raises(ValueError, match="both allowed and denied"):
        fake.set_overwrite(world.review, world.mods, allow=SEND, deny=SEND)
    with pytest.raises(ValueError, match="neither a role nor a member"):
        fake.set_overwrite(world.review, 12345, allow=SEND)
    assert fake.channel(world.review.id).overwrites == []


async def test_the_bot_posts_only_where_its_permissions_let_it(world: World) -> None:
    fake = world.fake
    bot_role = fake.guild(world.guild.id).bot_role_id
    assert bot_role is not None
    hidden = fake.add_text_channel(world.guild.id, "hidden")
    fake.set_overwrite(hidden, world.guild, deny=VIEW)  # @everyone can't see it, nor can the bot
    fake.set_overwrite(world.review, bot_role, deny=SEND)
    fake.set_overwrite(world.general, bot_role, deny=P(attach_files=True).value)
    async with running(world) as client:
        for channel_id, code in ((hidden.id, 50001), (world.review.id, 50013)):
            channel = client.get_channel(channel_id)
            assert isinstance(channel, discord.TextChannel)
            assert not channel.permissions_for(channel.guild.me).send_messages
            with pytest.raises(discord.Forbidden) as refused:
                await channel.send("hello")
            assert refused.value.code == code
        general = client.get_channel(world.general.id)
        assert isinstance(general, discord.TextChannel)
        with pytest.raises(discord.Forbidden) as refused:
            await general.send("a file", file=discord.File(__file__))
        assert refused.value.code == 50013
        await general.send("text is fine")
        assert [m.content for m in fake.messages(world.general.id)] == ["text is fine"]
        assert fake.messages(world.review.id) == fake.messages(hidden.id) == []

        # Members: the same rules, refused before anything is posted.
        fake.set_overwrite(world.general, world.guild, deny=P(attach_files=True).value)
        with pytest.raises(PermissionError, match="ATTACH_FILES"):
            await fake.post_user_message(
                world.bob, world.general, "look", attachments=[Upload("a.txt", b"hi")]
            )
        await fake.post_user_message(world.bob, world.general, "no file then")
        # ...and interaction answers (webhooks) still reach a channel the bot can't post in.
        it = await fake.invoke_slash(world.bob, world.review, "perms")
        assert (await it.wait_original()).channel_id == world.review.id


def test_the_stand_ins_permission_sets_are_discord_pys() -> None:
    # If a discord.py upgrade changes these, the stand-in must follow or the two views differ.
    from tests.fakes.discord import _util

    assert P.all_channel().value == _util.ALL_CHANNEL_PERMISSIONS
    assert P.voice().value == _util.VOICE_PERMISSIONS
    implied = P(send_tts_messages=True, mention_everyone=True, embed_links=True, attach_files=True)
    assert implied.value == _util.NEEDS_SEND_PERMISSIONS
    assert P.all().value == _util.ALL_PERMISSIONS
