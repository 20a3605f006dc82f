"""Studios end to end: `/studio start` → a themed shared thread → lock → end → gallery, on the
Discord and BFL stand-ins, checked by what members see and what reaches the image service."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from PIL import Image

import bot.community.studios.service as studio_module
from bot.community.studios import (
    ALREADY_ENDED_TEXT,
    LOCKED_TEXT,
    NOT_A_STUDIO_TEXT,
    NOT_ALLOWED_TEXT,
    SHEET_GAP,
    SHEET_TILE,
)
from bot.errors import InvalidRequest
from cogs.client import FluxcordBot
from tests.e2e.conftest import World
from tests.e2e.test_experience import decoded_inputs, image_file
from tests.fakes.discord_server import Channel, Message, User

MANAGE_THREADS = 1 << 34


async def open_studio(
    world: World, user: User, theme: str, **options: object
) -> tuple[Channel, Message]:
    """Start a studio in the test channel; returns its thread and the channel's announcement."""
    known = {thread.id for thread in world.discord.threads(world.channel.id)}
    it = await world.discord.invoke_slash(
        user, world.channel, "studio start", {"theme": theme, **options}
    )
    announcement = await it.wait_original(lambda m: "opened a studio" in m.content)
    assert not announcement.ephemeral and announcement.channel_id == world.channel.id
    [thread] = [t for t in world.discord.threads(world.channel.id) if t.id not in known]
    return thread, announcement


def newest(world: World, channel_id: int) -> int:
    messages = world.discord.messages(channel_id, include_deleted=True)
    return messages[-1].id if messages else 0


async def imagine_in(world: World, user: User, thread: Channel, prompt: str) -> Message:
    before = newest(world, thread.id)
    await world.discord.invoke_slash(user, thread, "imagine", {"prompt": prompt})
    return await result_in(world, thread, before)


async def result_in(world: World, thread: Channel, after: int) -> Message:
    bot_id = world.discord.application_id
    return await world.discord.wait_for_message(
        lambda m: m.author_id == bot_id and bool(m.attachments) and not m.ephemeral,
        channel_id=thread.id,
        after=after,
        timeout=10,
    )


def galleries(world: World, channel_id: int) -> list[Message]:
    return [
        m
        for m in world.discord.messages(channel_id, include_ephemeral=False)
        if m.author_id == world.discord.application_id and "Studio gallery" in m.content
    ]


async def wait_closed(world: World, thread: Channel) -> None:
    def closed() -> bool:
        stored = world.discord.channel(thread.id)
        return bool(stored.archived and stored.locked)

    await world.discord.wait_for(closed, timeout=10)


async def studio_audit(bot: FluxcordBot) -> list[tuple[str, int]]:
    rows = await bot.services.db.fetch_all(
        "SELECT action, actor_id FROM audit_log WHERE action LIKE 'studio%' ORDER BY id"
    )
    return [(row["action"], row["actor_id"]) for row in rows]


async def count(bot: FluxcordBot, table: str) -> int:
    return int(await bot.services.db.fetch_value(f"SELECT count(*) FROM {table}"))


# ---------------------------------------------------------------------- the thread's rules
async def test_a_studio_themes_prompts_checks_words_and_any_reply_edits(world: World) -> None:
    bot = await world.start_bot()
    thread, announcement = await open_studio(
        world, world.alice, "watercolour, soft light", required_words="fox, Moon"
    )
    assert thread.name == "🎨 watercolour, soft light" and thread.type == 11  # public
    assert thread.auto_archive_duration == 10080
    assert f"<#{thread.id}>" in announcement.content
    [intro] = world.discord.messages(thread.id)
    assert intro.content.startswith(
        f"🎨 **Studio: watercolour, soft light** — opened by <@{world.alice.id}>"
    )
    assert "Every prompt must include: **fox**, **Moon**." in intro.content
    assert "no need to mention me" in intro.content

    first = await imagine_in(world, world.bob, thread, "a fox under the moon")
    [submission] = world.bfl.submissions
    assert submission.body["prompt"] == "a fox under the moon, watercolour, soft light"

    # A prompt without every required word is refused privately, and nothing is made.
    jobs = await count(bot, "jobs")
    it = await world.discord.invoke_slash(world.bob, thread, "imagine", {"prompt": "a fox"})
    assert await world.refusal(it) == (
        "Every prompt in this studio must include **fox**, **Moon**; yours is missing "
        "**Moon**. Add it and try again."
    )
    assert await count(bot, "jobs") == jobs and len(world.bfl.submissions) == 1

    # Another member replies to the result without mentioning (or pinging) the bot: an edit.
    carol = world.discord.add_member(world.guild.id, "carol")
    before = newest(world, thread.id)
    await world.discord.post_user_message(
        carol, thread, "the fox jumps over the MOON", reply_to=first, reply_ping=False
    )
    second = await result_in(world, thread, before)
    edit = world.bfl.submissions[1]
    assert decoded_inputs(edit.body) == [first.attachments[0].data]
    assert edit.body["prompt"] == "the fox jumps over the MOON, watercolour, soft light"
    parent = await bot.services.generation.job_for_message(first.id)
    child = await bot.services.generation.job_for_message(second.id)
    assert parent is not None and child is not None
    assert (child.parent_job_id, child.user_id) == (parent.id, carol.id)

    # Reroll keeps the theme once (the stored prompt has it already).
    before = newest(world, thread.id)
    job_id = str(second.embeds[0]["footer"]["text"]).removeprefix("Job ")
    await world.discord.click(world.bob, second, f"flux:reroll:{job_id}")
    third = await result_in(world, thread, before)
    assert world.bfl.submissions[2].body["prompt"] == edit.body["prompt"]

    # Chatting is not a request: a reply to a message without images does nothing...
    await world.discord.post_user_message(
        world.bob, thread, "so good", reply_to=intro, reply_ping=False
    )
    # ...and outside a studio a reply still needs the bot's mention; nor is there a theme.
    photo = await world.discord.post_user_message(
        world.bob, world.channel, "", attachments=[image_file("p.png", (9, 9, 9))]
    )
    await world.discord.post_user_message(
        world.alice, world.channel, "make it red", reply_to=photo, reply_ping=False
    )
    before = world.newest_message_id()
    await world.discord.invoke_slash(world.bob, world.channel, "imagine", {"prompt": "a plain cat"})
    await world.result_after(before)
    await asyncio.sleep(0.2)
    assert [s.body["prompt"] for s in world.bfl.submissions][3:] == ["a plain cat"]
    bot_posts = [
        m for m in world.discord.messages(thread.id) if m.author_id == world.discord.application_id
    ]
    assert bot_posts[-1].id == third.id  # no answer to the chat


async def test_a_studio_budget_refuses_what_would_go_over(world: World) -> None:
    bot = await world.start_bot()
    thread, _ = await open_studio(world, world.alice, "pixel art", budget=5)
    assert "Budget: 5 credits for this thread" in world.discord.messages(thread.id)[0].content
    first = await imagine_in(world, world.bob, thread, "a castle")
    spent = await bot.services.studios.spent_mc(thread.id)
    assert spent > 2500  # one image at least half the budget: a second does not fit

    ledger_rows = await count(bot, "ledger")
    it = await world.discord.invoke_slash(world.alice, thread, "imagine", {"prompt": "a moat"})
    text = await world.refusal(it)
    assert text.startswith("This image would go over this studio's budget of 5 credits: ")
    assert f"{(5000 - spent) / 1000:g} credits left, and it needs" in text
    assert await count(bot, "ledger") == ledger_rows and len(world.bfl.submissions) == 1
    assert [m.id for m in world.discord.messages(thread.id) if not m.ephemeral][-1] == first.id

    # An edit by reply is refused too (publicly: it answers a public message).
    before = newest(world, thread.id)
    await world.discord.post_user_message(
        world.bob, thread, "add a dragon", reply_to=first, reply_ping=False
    )
    refusal = await world.discord.wait_for_message(
        lambda m: m.author_id == world.discord.application_id, channel_id=thread.id, after=before
    )
    assert refusal.content.startswith("This image would go over this studio's budget")
    assert await count(bot, "ledger") == ledger_rows

    # The studio's budget is the thread's: the channel itself is unaffected.
    before = world.newest_message_id()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "a moat"})
    await world.result_after(before)
    assert world.bfl.submissions[-1].body["prompt"] == "a moat"


# ---------------------------------------------------------------------- lock and end
async def test_only_the_starter_or_a_moderator_may_lock_and_a_locked_studio_is_closed(
    world: World,
) -> None:
    bot = await world.start_bot()
    thread, _ = await open_studio(world, world.alice, "noir")

    it = await world.discord.invoke_slash(world.bob, thread, "studio lock")
    assert await world.refusal(it) == NOT_ALLOWED_TEXT.format(action="lock")
    assert not world.discord.channel(thread.id).locked
    it = await world.discord.invoke_slash(world.alice, world.channel, "studio lock")
    assert await world.refusal(it) == NOT_A_STUDIO_TEXT

    it = await world.discord.invoke_slash(world.alice, thread, "studio lock")
    answer = await it.response()
    assert answer.data["flags"] & 64 and answer.data["content"].startswith("Locked.")
    assert world.discord.channel(thread.id).locked
    notice = world.discord.messages(thread.id, include_ephemeral=False)[-1]
    assert notice.content.startswith(f"🔒 <@{world.alice.id}> locked this studio")

    with pytest.raises(PermissionError, match="locked"):
        await world.discord.post_user_message(world.bob, thread, "let me in")
    it = await world.discord.invoke_slash(world.bob, thread, "imagine", {"prompt": "a detective"})
    assert await world.refusal(it) == LOCKED_TEXT
    assert await count(bot, "jobs") == 0 and world.bfl.submissions == []
    assert await studio_audit(bot) == [
        ("studio started", world.alice.id),
        ("studio locked", world.alice.id),
    ]


async def test_ending_a_studio_posts_a_gallery_and_closes_the_thread(world: World) -> None:
    bot = await world.start_bot()
    mods = world.discord.add_role(world.guild.id, "Thread mods", permissions=MANAGE_THREADS)
    dave = world.discord.add_member(world.guild.id, "dave", roles=[mods.id])
    carol = world.discord.add_member(world.guild.id, "carol")
    thread, _ = await open_studio(world, world.alice, "ink sketch")
    heron = await imagine_in(world, world.bob, thread, "a heron")
    before = newest(world, thread.id)
    await world.discord.post_user_message(
        carol, thread, "the heron takes off", reply_to=heron, reply_ping=False
    )
    flight = await result_in(world, thread, before)

    it = await world.discord.invoke_slash(world.bob, thread, "studio end")
    assert await world.refusal(it) == NOT_ALLOWED_TEXT.format(action="end")
    it = await world.discord.invoke_slash(dave, thread, "studio end")  # a moderator
    answer = await it.response()
    assert answer.data["flags"] & 64 and answer.data["content"].startswith("Ending the studio")
    await wait_closed(world, thread)

    [in_channel] = galleries(world, world.channel.id)
    [in_thread] = galleries(world, thread.id)
    base = f"https://discord.com/channels/{world.guild.id}/{thread.id}"
    for gallery in (in_channel, in_thread):
        lines = gallery.content.splitlines()
        assert lines[1] == f"2 images by 2 members, in a studio opened by <@{world.alice.id}>."
        assert lines[2:] == [
            f"**#1** <@{world.bob.id}> · `a heron` · [view]({base}/{heron.id})",
            f"**#2** <@{carol.id}> (edit of #1) · `the heron takes off` · "
            f"[view]({base}/{flight.id})",
        ]
        assert gallery.allowed_mentions == {"parse": []}  # names, never pings
    assert in_channel.content.startswith(f"🖼️ **Studio gallery: ink sketch** from <#{thread.id}>")

    # The contact sheet: both results, numbered, side by side.
    [sheet_file] = in_channel.attachments
    assert sheet_file.filename == "studio-gallery.png"
    sheet = Image.open(io.BytesIO(sheet_file.data)).convert("RGB")
    step = SHEET_TILE + SHEET_GAP
    assert sheet.size == (SHEET_GAP + 2 * step, SHEET_GAP + step)
    for index, result in enumerate((heron, flight)):
        original = Image.open(io.BytesIO(result.attachments[0].data)).convert("RGB")
        centre = (SHEET_GAP + index * step + SHEET_TILE // 2, SHEET_GAP + SHEET_TILE // 2)
        expected = original.getpixel((16, 16))
        assert all(abs(a - b) <= 12 for a, b in zip(sheet.getpixel(centre), expected, strict=True))
    assert in_thread.attachments[0].data == sheet_file.data

    assert await studio_audit(bot) == [
        ("studio started", world.alice.id),
        ("studio ended", dave.id),
        ("studio gallery", 0),
    ]
    # The ending's last step (finished) is recorded just after the thread is closed.
    for _ in range(100):
        stored = bot.services.studios.get(thread.id)
        if stored is not None and stored.finished_at is not None:
            break
        await asyncio.sleep(0.02)
    assert stored is not None and stored.finished_at is not None
    assert stored.gallery_message_id == in_channel.id
    with pytest.raises(PermissionError):  # archived: Discord itself takes nothing more
        await world.discord.invoke_slash(world.alice, thread, "studio end")
    with pytest.raises(InvalidRequest, match=ALREADY_ENDED_TEXT):
        await bot.services.studios.end(thread.id, world.alice.id, is_moderator=True)


# ---------------------------------------------------------------------- automatic end
async def test_a_studio_ends_by_itself_once_its_time_is_up(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(studio_module, "SWEEP_SECONDS", 0.05)
    bot = await world.start_bot()
    thread, _ = await open_studio(world, world.alice, "stained glass", duration=1)
    await imagine_in(world, world.bob, thread, "a rose window")
    await asyncio.sleep(0.2)
    assert not world.discord.channel(thread.id).archived  # not yet: an hour to go

    bot.services.studios.clock = lambda: time.time() + 2 * 3600
    await wait_closed(world, thread)
    await asyncio.sleep(0.3)  # several more sweeps
    assert len(galleries(world, world.channel.id)) == len(galleries(world, thread.id)) == 1
    assert "`a rose window`" in galleries(world, world.channel.id)[0].content
    assert await studio_audit(bot) == [
        ("studio started", world.alice.id),
        ("studio ended", 0),
        ("studio gallery", 0),
    ]


async def test_a_studio_that_ended_while_the_bot_was_offline_ends_once_at_startup(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(studio_module, "SWEEP_SECONDS", 0.05)
    first = await world.start_bot()
    thread, _ = await open_studio(world, world.alice, "claymation", duration=1)
    await imagine_in(world, world.bob, thread, "a snail")
    it = await world.discord.invoke_slash(world.alice, thread, "studio lock")
    await it.response()
    await world.stop_bot(first)

    await world.write_sql("UPDATE studios SET ends_at = ?", (time.time() - 60,))  # time passed
    second = await world.start_bot()
    await wait_closed(world, thread)
    await asyncio.sleep(0.3)
    await world.stop_bot(second)
    third = await world.start_bot()
    await asyncio.sleep(0.3)

    assert len(galleries(world, world.channel.id)) == len(galleries(world, thread.id)) == 1
    assert await studio_audit(third) == [
        ("studio started", world.alice.id),
        ("studio locked", world.alice.id),
        ("studio ended", 0),
        ("studio gallery", 0),
    ]
