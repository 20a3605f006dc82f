"""Results Discord will not take, end to end: fitted into the upload limit, moved out of a
closed thread, or ended with one clear message that says the member was charged."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
from PIL import Image

import bot.community.studios.service as studio_module
from bot.jobs.models import JobState
from tests.e2e.conftest import AIML_KEY, World
from tests.e2e.test_experience import image_file, job_id_of
from tests.e2e.test_studio import MANAGE_THREADS, galleries, open_studio, result_in, wait_closed
from tests.fakes.aiml_server import FakeAIML
from tests.fakes.discord_server import Message

TEN_MIB = 10 * 1024 * 1024


@pytest.fixture
async def world_with_large_images(world: World) -> AsyncIterator[World]:
    """The AI/ML API returns 2048×2048 noise JPEGs: ~3.7 MB each, four of them over 10 MiB."""
    async with FakeAIML(api_key=AIML_KEY, latency=0.05, image_side=2048) as aiml:
        world.aiml = aiml
        yield world


def bot_messages(world: World, channel_id: int) -> list[Message]:
    return [
        m
        for m in world.discord.messages(channel_id, include_ephemeral=False)
        if m.author_id == world.discord.application_id
    ]


async def test_four_images_over_the_upload_limit_are_reduced_to_fit_together(
    world_with_large_images: World,
) -> None:
    world = world_with_large_images
    assert world.aiml is not None
    bot = await world.start_bot()
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice,
        world.channel,
        "flux dev",
        # 1536² asked for, so the 2048² the stand-in makes is within what a result may be.
        {"prompt": "four foxes", "num_images": 4, "width": 1536, "height": 1536},
    )
    message = await world.result_after(before, within=30)
    originals = [world.aiml.image_bytes(0, n) for n in range(4)]
    assert sum(map(len, originals)) > TEN_MIB  # what was refused before
    assert len(message.attachments) == 4
    assert sum(a.size for a in message.attachments) <= TEN_MIB
    for attachment, original in zip(message.attachments, originals, strict=True):
        picture = Image.open(io.BytesIO(attachment.data))
        picture.load()
        assert picture.format == "JPEG" and attachment.data != original
        assert (attachment.width, attachment.height) == picture.size
        assert picture.size[0] >= 1024  # reduced no more than needed
    fields = {f["name"]: f["value"] for f in message.embeds[0]["fields"]}
    assert fields["Shown"] == "reduced to fit this server's upload limit"
    assert fields["Size"] == "2048×2048"  # what was made
    assert not [r for r in world.discord.requests if r.status == 413]
    [job] = await bot.services.engine.wait_closed([job_id_of(message)], 5)
    assert job.state is JobState.DELIVERED and job.result_message_id == message.id


async def test_a_result_that_can_never_fit_ends_with_a_message_saying_it_was_charged(
    world: World,
) -> None:
    bot = await world.start_bot()
    world.discord.attachment_size_limit = 64 * 1024 + 500  # no image fits in what is left
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a heron"}
    )
    original = await it.wait_original(lambda m: "could not be posted" in m.content, timeout=15)
    [job] = await bot.services.engine.wait_closed(await jobs_of(bot), 5)
    charged = job.cost if job.cost is not None else job.estimated_cost
    assert original.content == (
        f"❌ <@{world.alice.id}> Your image was made, but it could not be posted here: it is "
        f"larger than this server's upload limit, even reduced. You were charged {charged:g} "
        "credits for it."
    )
    assert not original.attachments
    assert job.state is JobState.FAILED and job.closed
    row = await bot.services.db.fetch_one("SELECT status FROM ledger WHERE job_id = ?", (job.id,))
    assert row is not None and row["status"] == "charged"


async def jobs_of(bot: object) -> list[str]:
    rows = await bot.services.db.fetch_all(  # type: ignore[attr-defined]
        "SELECT id FROM jobs ORDER BY created_at"
    )
    return [row["id"] for row in rows]


async def test_a_413_is_answered_by_reducing_a_bounded_number_of_times(world: World) -> None:
    bot = await world.start_bot()
    photo = image_file("cat.png", (120, 120, 120))
    original = await world.discord.post_user_message(
        world.bob, world.channel, "my cat", attachments=[photo]
    )
    # The bot believes the server's 10 MiB (no boosts), but Discord takes far less now.
    world.discord.attachment_size_limit = 10
    before = world.newest_message_id()
    request = await world.discord.post_user_message(
        world.alice, world.channel, "give it a hat", reply_to=original, mention_bot=True
    )
    bot_id = world.discord.application_id
    failure = await world.discord.wait_for_message(
        lambda m: m.author_id == bot_id and "could not be posted" in m.content,
        channel_id=world.channel.id,
        after=before,
        timeout=15,
    )
    assert "larger than this server's upload limit" in failure.content
    assert "You were charged" in failure.content and failure.reply_to == request.id
    assert not failure.attachments and not failure.custom_ids  # no stale Cancel button
    too_large = [r for r in world.discord.requests if r.status == 413]
    assert len(too_large) == 3  # the first try and two reductions, then the text
    [job_id] = await jobs_of(bot)
    [job] = await bot.services.engine.wait_closed([job_id], 5)
    assert job.state is JobState.FAILED and job.closed


async def test_a_result_whose_thread_was_archived_is_posted_in_the_parent(world: World) -> None:
    bot = await world.start_bot()
    thread = world.discord.add_thread(world.channel, "heron talk", owner_id=world.alice)
    world.bfl.latency = 1.0
    it = await world.discord.invoke_slash(world.alice, thread, "imagine", {"prompt": "a heron"})
    await it.response()
    await world.discord.edit_channel(thread, archived=True, locked=True)  # a moderator closes it
    result = await world.discord.wait_for_message(
        lambda m: m.author_id == world.discord.application_id and bool(m.attachments),
        channel_id=world.channel.id,
        timeout=15,
    )
    assert result.content.startswith(f"<@{world.alice.id}>")
    assert f"<#{thread.id}> is closed" in result.content
    [job] = await bot.services.engine.wait_closed([job_id_of(result)], 5)
    assert job.state is JobState.DELIVERED and job.result_message_id == result.id
    assert [m.id for m in bot_messages(world, world.channel.id)] == [result.id]


async def test_ending_a_studio_lets_its_running_jobs_finish_first(world: World) -> None:
    bot = await world.start_bot()
    mods = world.discord.add_role(world.guild.id, "Thread mods", permissions=MANAGE_THREADS)
    dave = world.discord.add_member(world.guild.id, "dave", roles=[mods.id])
    thread, _ = await open_studio(world, world.alice, "ink sketch")
    world.bfl.latency = 1.5
    before = max((m.id for m in world.discord.messages(thread.id, include_deleted=True)), default=0)
    it = await world.discord.invoke_slash(world.bob, thread, "imagine", {"prompt": "a heron"})
    await it.response()
    end = await world.discord.invoke_slash(dave, thread, "studio end")
    answer = await end.response()
    assert answer.data["flags"] & 64
    assert "1 image is still being made" in answer.data["content"]
    heron = await result_in(world, thread, before)  # shown in the thread, not the parent
    await wait_closed(world, thread)
    [gallery] = galleries(world, world.channel.id)
    assert f"[view](https://discord.com/channels/{world.guild.id}/{thread.id}/{heron.id})" in (
        gallery.content
    )
    [job] = await bot.services.engine.wait_closed([job_id_of(heron)], 5)
    assert job.state is JobState.DELIVERED


async def test_a_studio_ending_waits_for_running_jobs_only_so_long(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(studio_module, "SWEEP_SECONDS", 0.05)
    bot = await world.start_bot()
    bot.services.studios.drain_seconds = 0.3
    mods = world.discord.add_role(world.guild.id, "Thread mods", permissions=MANAGE_THREADS)
    dave = world.discord.add_member(world.guild.id, "dave", roles=[mods.id])
    thread, _ = await open_studio(world, world.alice, "ink sketch")
    world.bfl.latency = 3.0
    it = await world.discord.invoke_slash(world.bob, thread, "imagine", {"prompt": "a heron"})
    await it.response()
    end = await world.discord.invoke_slash(dave, thread, "studio end")
    await end.response()
    await wait_closed(world, thread)  # closed while the heron is still being made
    assert not [m for m in bot_messages(world, world.channel.id) if m.attachments]
    heron = await world.discord.wait_for_message(
        lambda m: m.author_id == world.discord.application_id and bool(m.attachments),
        channel_id=world.channel.id,
        timeout=15,
    )
    assert f"<#{thread.id}> is closed" in heron.content
    [job] = await bot.services.engine.wait_closed([job_id_of(heron)], 5)
    assert job.state is JobState.DELIVERED and job.result_message_id == heron.id
