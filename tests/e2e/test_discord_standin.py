"""Self-tests of the Discord stand-in: an unmodified discord.py client against FakeDiscord."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from PIL import Image

from tests.e2e.standin_clients import (
    connected,
    no_leaks,  # noqa: F401 (autouse)
    sync_to_guild,
)
from tests.fakes.discord_server import Channel as FakeChannel
from tests.fakes.discord_server import FakeDiscord, Guild, Upload, User


def png(color: tuple[int, int, int], size: tuple[int, int] = (6, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


RED, BLUE, GREEN = png((255, 0, 0)), png((0, 0, 255), (3, 5)), png((0, 255, 0))


class ConfirmButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"confirm:(?P<job>\d+)"
):
    def __init__(self, job: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Confirm", custom_id=f"confirm:{job}", style=discord.ButtonStyle.green
            )
        )
        self.job = job

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ConfirmButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(content=f"confirmed job {self.job}", view=None)


class LaterButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"later:(?P<job>\d+)"):
    def __init__(self, job: int) -> None:
        super().__init__(discord.ui.Button(label="Later", custom_id=f"later:{job}"))
        self.job = job

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> LaterButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer()  # type 6: deferred update of the clicked message
        await interaction.edit_original_response(content=f"later job {self.job}")


class PromptModal(discord.ui.Modal, title="Refine prompt"):
    prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(label="Prompt", custom_id="prompt")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"modal got {self.prompt.value}")


class StandinClient(discord.Client):
    def __init__(self, *, message_content: bool = True) -> None:
        intents = discord.Intents.default()
        intents.message_content = message_content
        super().__init__(intents=intents, guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.errors: list[Exception] = []
        self.failed = asyncio.Event()
        self.tree.error(self._on_tree_error)
        self.ready = asyncio.Event()
        self.resumed = asyncio.Event()
        self.inbox: asyncio.Queue[discord.Message] = asyncio.Queue()
        self._register_commands()

    async def setup_hook(self) -> None:
        self.add_dynamic_items(ConfirmButton, LaterButton)

    async def _on_tree_error(self, interaction: discord.Interaction, error: Exception) -> None:
        self.errors.append(getattr(error, "original", error))
        self.failed.set()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py sleeps 5 s before every re-IDENTIFY (a real rate limit); skip it here."""

    async def on_ready(self) -> None:
        self.ready.set()

    async def on_resumed(self) -> None:
        self.resumed.set()

    async def on_message(self, message: discord.Message) -> None:
        if message.author != self.user:
            await self.inbox.put(message)

    def _register_commands(self) -> None:
        tree = self.tree

        @tree.command(description="Generate an image")
        @app_commands.choices(
            style=[
                app_commands.Choice(name="Photo", value="photo"),
                app_commands.Choice(name="Art", value="art"),
            ]
        )
        async def imagine(
            interaction: discord.Interaction,
            prompt: str,
            image: discord.Attachment | None = None,
            style: str = "photo",
        ) -> None:
            await interaction.response.defer(thinking=True)
            note = ""
            if image is not None:
                source = await image.read()  # fetched from the fake's CDN
                note = f" from {image.filename} {image.width}x{image.height} ({len(source)} bytes)"
            await interaction.edit_original_response(
                content=f"{style}: {prompt}{note}",
                attachments=[discord.File(io.BytesIO(RED), "result.png")],
                view=discord.ui.View(timeout=None)
                .add_item(ConfirmButton(42))
                .add_item(LaterButton(7)),
            )

        @tree.command(description="Only you can see this")
        async def secret(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("psst", ephemeral=True)

        @tree.command(description="Deferred ephemeral reply, then followups")
        async def followups(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            await interaction.followup.send("first")  # replaces the "thinking" message
            await interaction.followup.send(
                "second", ephemeral=True, file=discord.File(io.BytesIO(GREEN), "g.png")
            )
            await interaction.followup.send("public")

        @tree.command(description="Resolved options and a multipart response")
        async def pick(
            interaction: discord.Interaction,
            who: discord.Member,
            role: discord.Role,
            count: app_commands.Range[int, 1, 4] = 1,
        ) -> None:
            await interaction.response.send_message(
                f"{who.name}/{role.name}/{count}/{interaction.permissions.manage_guild}",
                file=discord.File(io.BytesIO(BLUE), "pick.png"),
            )

        @tree.command(description="Threads and typing")
        async def threads(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("starting")
            starter = await interaction.original_response()
            thread = await starter.create_thread(name="job thread")
            await thread.send("inside")
            channel = interaction.channel
            assert isinstance(channel, discord.TextChannel)
            await channel.create_thread(name="side", type=discord.ChannelType.public_thread)
            await channel.typing()

        flux = app_commands.Group(name="flux", description="FLUX models")

        @flux.command(description="Refine with a modal")
        async def pro(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(PromptModal())

        tree.add_command(flux)

        @tree.context_menu(name="Edit with FLUX")
        async def edit_with_flux(
            interaction: discord.Interaction, message: discord.Message
        ) -> None:
            await interaction.response.send_message(f"editing {message.id}: {message.content}")


@dataclass
class World:
    fake: FakeDiscord
    guild: Guild
    channel: FakeChannel
    alice: User


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with FakeDiscord() as fake:
        guild = fake.add_guild("Test Guild")
        channel = fake.add_text_channel(guild.id, "general")
        mods = fake.add_role(
            guild.id, "Moderator", permissions=discord.Permissions(manage_guild=True).value
        )
        alice = fake.add_member(guild.id, "alice", roles=[mods.id])
        with fake.patch_discord_py():
            yield World(fake, guild, channel, alice)
        assert not fake.unhandled_requests, fake.unhandled_requests


@asynccontextmanager
async def running(
    world: World, *, sync: bool = True, message_content: bool = True
) -> AsyncIterator[StandinClient]:
    async with connected(
        StandinClient(message_content=message_content), world.fake.token
    ) as client:
        if sync:
            await sync_to_guild(client, world.guild.id)
        yield client


def text_channel(client: discord.Client, channel_id: int) -> discord.TextChannel:
    channel = client.get_channel(channel_id)
    assert isinstance(channel, discord.TextChannel)
    return channel


async def test_login_ready_and_guild_cache(world: World) -> None:
    async with running(world, sync=False) as client:
        assert client.user is not None and client.user.id == world.fake.bot_id
        assert client.application_id == world.fake.application_id
        guild = client.get_guild(world.guild.id)
        assert guild is not None and guild.name == "Test Guild"
        assert text_channel(client, world.channel.id).name == "general"
        assert guild.me is not None and guild.default_role.id == guild.id
        assert {r.name for r in guild.roles} >= {"@everyone", "Moderator", "Fluxcord"}
        identify = world.fake.last_identify
        assert (
            identify is not None
            and identify["intents"] & discord.Intents(message_content=True).value
        )
    assert world.fake.requests[0].path == "/users/@me"


async def test_members_intent_chunks_the_guild(world: World) -> None:
    intents = discord.Intents.default()
    intents.members = True
    client = discord.Client(intents=intents, guild_ready_timeout=0.05)
    task = asyncio.create_task(client.start(world.fake.token))
    try:
        await asyncio.wait_for(client.wait_until_ready(), 5)
        guild = client.get_guild(world.guild.id)
        assert guild is not None and guild.chunked
        assert {m.name for m in guild.members} >= {"alice", "Fluxcord"}
    finally:
        await client.close()
        await task


async def test_tree_sync_registers_guild_commands_with_stable_ids(world: World) -> None:
    async with running(world) as client:
        registered = {c["name"]: c for c in world.fake.commands(world.guild.id)}
        assert set(registered) == {
            "imagine",
            "secret",
            "followups",
            "pick",
            "threads",
            "flux",
            "Edit with FLUX",
        }
        assert registered["Edit with FLUX"]["type"] == 3
        options = {o["name"]: o for o in registered["imagine"]["options"]}
        assert options["image"]["type"] == 11 and options["style"]["choices"][1]["value"] == "art"
        assert registered["flux"]["options"][0] == {**registered["flux"]["options"][0], "type": 1}
        again = await client.tree.sync(guild=discord.Object(world.guild.id))
        assert {str(c.id) for c in again} == {c["id"] for c in registered.values()}
        assert world.fake.commands() == []


async def test_slash_attachment_defer_then_edit_with_file(world: World) -> None:
    fake = world.fake
    async with running(world) as client:
        it = await fake.invoke_slash(
            world.alice,
            world.channel,
            "imagine",
            {"prompt": "a cat", "image": Upload("in.png", BLUE), "style": "art"},
        )
        assert (await it.response()).type == 5
        original = await it.wait_original(lambda m: m.attachments)
        assert original.content == f"art: a cat from in.png 3x5 ({len(BLUE)} bytes)"
        assert original.attachment("result.png").data == RED
        assert original.attachment("result.png").content_type == "image/png"
        assert original.type == 20 and original.author_id == fake.bot_id and not original.loading
        assert original.interaction_metadata is not None
        assert original.interaction_metadata["user"]["id"] == str(world.alice.id)
        assert original.custom_ids == ["confirm:42", "later:7"]
        assert fake.messages(world.channel.id) == [original]
        # Interaction responses are ordinary bot messages for the channel endpoints too.
        fetched = await text_channel(client, world.channel.id).fetch_message(original.id)
        await fetched.edit(
            attachments=[*fetched.attachments, discord.File(io.BytesIO(GREEN), "x.png")]
        )
        assert [a.data for a in original.attachments] == [RED, GREEN]
        with pytest.raises(ValueError, match="choices"):
            await fake.invoke_slash(
                world.alice, world.channel, "imagine", {"prompt": "x", "style": "oil"}
            )


async def test_ephemeral_reply_is_only_visible_to_invoker(world: World) -> None:
    fake = world.fake
    async with running(world) as client:
        it = await fake.invoke_slash(world.alice, world.channel, "secret")
        callback = await it.response()
        assert callback.type == 4 and callback.data is not None and callback.data["flags"] == 64
        original = await it.wait_original()
        assert original.ephemeral and original.visible_to == world.alice.id
        assert fake.messages(world.channel.id, include_ephemeral=False) == []
        # As on Discord, the channel's endpoints don't know an ephemeral message.
        with pytest.raises(discord.NotFound) as refused:
            await text_channel(client, world.channel.id).fetch_message(original.id)
        assert refused.value.code == 10008  # Unknown Message


async def test_dynamic_button_works_after_bot_restart(world: World) -> None:
    fake = world.fake
    async with running(world):
        it = await fake.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "dog"})
        message = await it.wait_original(lambda m: m.components)
    async with running(world, sync=False):  # a brand-new client: no view state in memory
        click = await fake.click(world.alice, message, "confirm:42")
        assert (await click.response()).type == 7
        await click.wait_for(lambda: message.content == "confirmed job 42")
        assert message.components == [] and message.edits == 2
        with pytest.raises(LookupError, match="no component"):
            await fake.click(world.alice, message, "later:7")
    assert fake.identify_count == 2


async def test_component_deferred_update_edits_the_clicked_message(world: World) -> None:
    fake = world.fake
    async with running(world):
        it = await fake.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "owl"})
        message = await it.wait_original(lambda m: m.components)
        click = await fake.click(world.alice, message, "later:7")
        assert (await click.response()).type == 6
        await click.wait_for(lambda: message.content == "later job 7")
        assert click.original is message and message.custom_ids == ["confirm:42", "later:7"]


async def test_modal_round_trip_from_subcommand(world: World) -> None:
    fake = world.fake
    async with running(world):
        it = await fake.invoke_slash(world.alice, world.channel, "flux pro")
        callback = await it.response()
        assert callback.type == 9 and it.modal is not None
        with pytest.raises(ValueError, match="required"):
            await fake.submit_modal(world.alice, world.channel, it.modal["custom_id"], {})
        it = await fake.invoke_slash(world.alice, world.channel, "flux", subcommand="pro")
        assert it.modal is None and (await it.response()).type == 9
        assert it.modal is not None
        submitted = await fake.submit_modal(
            world.alice, world.channel, it.modal["custom_id"], {"prompt": "neon"}
        )
        reply = await submitted.wait_original()
        assert reply.content == "modal got neon"


async def test_message_context_menu(world: World) -> None:
    fake = world.fake
    async with running(world):
        target = await fake.post_user_message(world.alice, world.channel, "a red bicycle")
        it = await fake.invoke_message_command(world.alice, world.channel, "Edit with FLUX", target)
        original = await it.wait_original()
        assert original.content == f"editing {target.id}: a red bicycle"
        assert original.type == 23


async def test_user_reply_mentioning_bot_reaches_on_message(world: World) -> None:
    fake = world.fake
    async with running(world, sync=False) as client:
        bot_message = await text_channel(client, world.channel.id).send("here is your image")
        await fake.post_user_message(
            world.alice,
            world.channel,
            "make it blue",
            attachments=[Upload("ref.png", GREEN)],
            reply_to=bot_message.id,
            mention_bot=True,
        )
        received = await asyncio.wait_for(client.inbox.get(), 5)
        assert received.content == f"<@{fake.bot_id}> make it blue"
        assert received.reference is not None and received.reference.message_id == bot_message.id
        assert client.user in received.mentions
        assert isinstance(received.reference.resolved, discord.Message)
        assert await received.attachments[0].read() == GREEN
        assert received.attachments[0].width == 6


async def test_send_with_nonce_is_deduplicated_and_edit_replaces_attachments(world: World) -> None:
    fake = world.fake
    async with running(world, sync=False) as client:
        channel = text_channel(client, world.channel.id)
        created = asyncio.ensure_future(client.wait_for("message", timeout=5))
        first = await channel.send("v1", file=discord.File(io.BytesIO(RED), "a b.png"), nonce=1234)
        assert (await created).id == first.id  # the bot sees its own MESSAGE_CREATE
        assert first.attachments[0].filename == "a_b.png"
        second = await channel.send("v1", file=discord.File(io.BytesIO(RED), "a b.png"), nonce=1234)
        assert first.id == second.id
        assert [m.id for m in fake.messages(world.channel.id)] == [first.id]
        updated = asyncio.ensure_future(client.wait_for("raw_message_edit", timeout=5))
        edited = await first.edit(
            content="v2", attachments=[discord.File(io.BytesIO(BLUE), "b.png")]
        )
        assert (await updated).data["content"] == "v2"  # MESSAGE_UPDATE dispatched
        assert [a.filename for a in edited.attachments] == ["b.png"]
        kept = await edited.edit(
            attachments=[*edited.attachments, discord.File(io.BytesIO(GREEN), "c.png")]
        )
        stored = fake.message(first.id)
        assert [a.filename for a in kept.attachments] == ["b.png", "c.png"]
        assert [a.data for a in stored.attachments] == [BLUE, GREEN]
        assert stored.content == "v2" and stored.edits == 2


async def test_upload_limit_counts_the_files_of_one_request_together(world: World) -> None:
    world.fake.attachment_size_limit = 1000
    async with running(world, sync=False) as client:
        channel = text_channel(client, world.channel.id)
        part = b"x" * 600  # each file is under the limit, both together are over it
        with pytest.raises(discord.HTTPException) as refused:
            await channel.send(
                files=[
                    discord.File(io.BytesIO(part), "a.bin"),
                    discord.File(io.BytesIO(part), "b.bin"),
                ]
            )
        assert (refused.value.status, refused.value.code) == (413, 40005)
        assert world.fake.messages(world.channel.id) == []
        sent = await channel.send(file=discord.File(io.BytesIO(part), "a.bin"))
        assert [a.size for a in sent.attachments] == [600]


async def test_gateway_drop_resumes_and_events_keep_flowing(world: World) -> None:
    fake = world.fake
    async with running(world, sync=False) as client:
        await fake.drop_gateway()
        await asyncio.wait_for(client.resumed.wait(), 5)
        assert fake.resume_count == 1 and fake.identify_count == 1
        await fake.post_user_message(world.alice, world.channel, "still there?")
        assert (await asyncio.wait_for(client.inbox.get(), 5)).content == "still there?"
        await fake.request_gateway_reconnect()  # opcode 7
        await fake.wait_for(lambda: fake.resume_count == 2 and fake.gateway_connected)
        await fake.drop_gateway(resumable=False)
        await fake.wait_for(lambda: fake.identify_count == 2 and fake.gateway_connected)
        await fake.post_user_message(world.alice, world.channel, "and now?")
        assert (await asyncio.wait_for(client.inbox.get(), 5)).content == "and now?"


async def test_followups_after_ephemeral_deferral(world: World) -> None:
    fake = world.fake
    async with running(world) as client:
        it = await fake.invoke_slash(world.alice, world.channel, "followups")
        public = await it.wait_followup(lambda m: m.content == "public")
        first, second, _ = it.followups
        assert first is it.original and first.content == "first" and first.ephemeral
        assert second.ephemeral and second.attachment("g.png").data == GREEN
        assert not public.ephemeral and public.visible_to is None
        assert public.interaction_metadata is not None
        assert public.interaction_metadata["original_response_message_id"] == str(first.id)
        assert fake.messages(world.channel.id, include_ephemeral=False) == [public]
        assert client.errors == []


async def test_resolved_options_permissions_and_multipart_response(world: World) -> None:
    fake = world.fake
    bob = fake.add_member(world.guild.id, "bob")
    async with running(world) as client:
        role = fake.guild(world.guild.id).roles[world.guild.id]
        it = await fake.invoke_slash(
            world.alice, world.channel, "pick", {"who": bob, "role": role, "count": 3}
        )
        original = await it.wait_original()
        assert original.content == "bob/@everyone/3/True"
        assert original.attachment("pick.png").data == BLUE
        it = await fake.invoke_slash(bob, world.channel, "pick", {"who": world.alice, "role": role})
        assert (await it.wait_original()).content == "alice/@everyone/1/False"
        with pytest.raises(ValueError, match="outside"):
            await fake.invoke_slash(
                bob, world.channel, "pick", {"who": bob, "role": role, "count": 9}
            )
        with pytest.raises(ValueError, match="missing required"):
            await fake.invoke_slash(bob, world.channel, "pick", {"who": bob})
        assert client.errors == []


async def test_threads_typing_history_and_delete(world: World) -> None:
    fake = world.fake
    async with running(world) as client:
        it = await fake.invoke_slash(world.alice, world.channel, "threads")
        starter = await it.wait_original()
        await fake.wait_for(lambda: len(fake.threads(world.channel.id)) == 2)
        thread = fake.channel(starter.id)  # a thread started from a message shares its id
        assert thread.name == "job thread" and starter.thread_id == thread.id
        assert [m.content for m in fake.messages(thread.id)] == ["inside"]
        await fake.wait_for(lambda: fake.typing)
        assert client.get_channel(thread.id) is not None  # THREAD_CREATE reached the cache
        channel = text_channel(client, world.channel.id)
        history = [m.content async for m in channel.history(limit=10)]
        assert history == ["starting"]
        deleted = asyncio.ensure_future(client.wait_for("raw_message_delete", timeout=5))
        await (await channel.fetch_message(starter.id)).delete()
        assert (await deleted).message_id == starter.id  # MESSAGE_DELETE dispatched
        assert fake.message(starter.id).deleted and fake.messages(world.channel.id) == []
        with pytest.raises(discord.NotFound):
            await channel.pins()  # not implemented by the fake: 404 + recorded
        (unhandled,) = fake.unhandled_requests
        assert (unhandled.method, unhandled.path) == (
            "GET",
            f"/channels/{world.channel.id}/messages/pins",
        )
        fake.unhandled_requests.clear()


async def test_late_and_double_responses_are_rejected_like_discord(world: World) -> None:
    fake = world.fake
    async with running(world) as client:
        fake.interaction_deadline = 0.0
        it = await fake.invoke_slash(world.alice, world.channel, "secret")
        await asyncio.wait_for(client.failed.wait(), 5)
        (error,) = client.errors
        assert isinstance(error, discord.NotFound) and error.code == 10062 and it.callbacks == []
        fake.interaction_deadline = 3.0
        it = await fake.invoke_slash(world.alice, world.channel, "secret")
        await it.response()
        url = f"{fake.base_url}/api/v10/interactions/{it.id}/{it.token}/callback"
        async with aiohttp.ClientSession() as session, session.post(url, json={"type": 4}) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 40060


async def test_bot_reply_and_message_content_intent(world: World) -> None:
    fake = world.fake
    async with running(world, sync=False, message_content=False) as client:
        plain = await fake.post_user_message(world.alice, world.channel, "hello there")
        assert (await asyncio.wait_for(client.inbox.get(), 5)).content == ""  # no intent
        await fake.post_user_message(world.alice, world.channel, "hi bot", mention_bot=True)
        mentioned = await asyncio.wait_for(client.inbox.get(), 5)
        assert mentioned.content == f"<@{fake.bot_id}> hi bot"
        reply = await mentioned.reply("on it", mention_author=True)
        stored = fake.message(reply.id)
        assert stored.reply_to == mentioned.id and stored.mentions == [world.alice.id]
        assert stored.type == 19 and fake.message(plain.id).content == "hello there"
