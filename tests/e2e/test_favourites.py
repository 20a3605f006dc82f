"""Favourites and the showcase end to end, through the real discord.py client: the ⭐ button
and /favourites (pages that work after a restart), Share to showcase (once, with the image,
the credit and an audit entry), its refusals, and favourites of purged jobs."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.privacy.retention import DAY
from cogs.favourites import (
    ADDED_TEXT,
    BEING_SHARED_TEXT,
    CANNOT_POST_TEXT,
    NO_SHOWCASE_TEXT,
    REMOVED_TEXT,
    SHARE_REFUSED_TEXT,
)
from cogs.results import UNKNOWN_JOB_TEXT
from tests.e2e.conftest import World
from tests.e2e.test_community import MANAGE_GUILD
from tests.e2e.test_experience import job_id_of
from tests.fakes.discord.models import Channel, InteractionHandle, Message, User


async def make_result(world: World, prompt: str) -> Message:
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "flux klein-4b", {"prompt": prompt, "seed": 5}
    )
    return await world.result_after(before)


def link_to(world: World, message: Message, channel: Channel | None = None) -> str:
    where = channel or world.channel
    return f"https://discord.com/channels/{world.guild.id}/{where.id}/{message.id}"


async def favourites(world: World, who: User) -> tuple[Message, dict[str, Any]]:
    """/favourites: the private listing and its embed."""
    it = await world.discord.invoke_slash(who, world.channel, "favourites")
    callback = await it.response()
    assert callback.type == 4 and callback.data["flags"] & 64, "the listing is private"
    assert it.original is not None
    return it.original, it.original.embeds[0]


async def star(world: World, who: User, result: Message) -> str:
    it = await world.discord.click(who, result, f"flux:fav:{job_id_of(result)}")
    return await world.refusal(it)  # (any private answer)


def add_moderator(world: World) -> User:
    mods = world.discord.add_role(world.guild.id, "Mods", permissions=MANAGE_GUILD | 1 << 13)
    return world.discord.add_member(world.guild.id, "mod", roles=[mods.id])


async def set_showcase(world: World, mod: User, channel: Channel) -> None:
    it = await world.discord.invoke_slash(
        mod, world.channel, "settings showcase", {"channel": channel}
    )
    text = (await it.response()).data["content"]
    assert text.startswith(f"Showcase channel: <#{channel.id}> (was off).")


async def share(world: World, who: User, result: Message) -> InteractionHandle:
    return await world.discord.click(who, result, f"flux:share:{job_id_of(result)}")


# --------------------------------------------------------------------------- favourites
async def test_a_star_keeps_a_result_in_favourites_and_a_second_star_removes_it(
    world: World,
) -> None:
    await world.start_bot()
    result = await make_result(world, "a *bold* lighthouse")

    assert await star(world, world.bob, result) == ADDED_TEXT  # anyone who sees it may
    _, listing = await favourites(world, world.bob)
    line = listing["description"]
    assert line.startswith(r"• a \*bold\* lighthouse — FLUX.2 [klein] 4B · ")  # inert
    assert f"[view]({link_to(world, result)})" in line
    assert listing["footer"]["text"] == "Page 1 of 1 · 1 favourite"
    _, alices = await favourites(world, world.alice)
    assert alices["description"].startswith("You have no favourites here yet.")  # per member

    assert await star(world, world.bob, result) == REMOVED_TEXT
    _, listing = await favourites(world, world.bob)
    assert listing["description"].startswith("You have no favourites here yet.")


async def test_a_deleted_result_shows_as_deleted(world: World) -> None:
    await world.start_bot()
    result = await make_result(world, "a short-lived teapot")
    await star(world, world.bob, result)
    deleting = await world.discord.click(world.alice, result, f"flux:delete:{job_id_of(result)}")
    assert await world.refusal(deleting) == "Deleted."  # (answered once it is recorded)

    _, listing = await favourites(world, world.bob)
    assert listing["description"] == "• a short-lived teapot — FLUX.2 [klein] 4B · deleted"


async def test_pages_of_ten_turn_with_next_and_prev_after_a_restart(world: World) -> None:
    first_bot = await world.start_bot()
    for n in range(12):
        await star(world, world.bob, await make_result(world, f"image number {n}"))
    page_one, listing = await favourites(world, world.bob)
    lines = listing["description"].splitlines()
    assert [line.split(" — ")[0] for line in lines] == [
        f"• image number {n}" for n in range(11, 1, -1)
    ]  # newest first
    assert listing["footer"]["text"] == "Page 1 of 2 · 12 favourites"

    await world.stop_bot(first_bot)
    await world.start_bot()
    it = await world.discord.click(world.bob, page_one, "flux:favpage:next:1")
    assert (await it.response()).type == 7  # the listing itself turns
    page = world.discord.message(page_one.id).embeds[0]
    assert [line.split(" — ")[0] for line in page["description"].splitlines()] == [
        "• image number 1",
        "• image number 0",
    ]
    assert page["footer"]["text"] == "Page 2 of 2 · 12 favourites"
    it = await world.discord.click(world.bob, page_one, "flux:favpage:prev:0")
    await it.response()
    assert world.discord.message(page_one.id).embeds[0]["footer"]["text"].startswith("Page 1")


async def test_a_favourite_of_a_job_purged_by_retention_disappears(world: World) -> None:
    bot = await world.start_bot(finished_job_retention_days=1)
    old = await make_result(world, "an old sunset")
    await make_result(world, "a new sunrise")
    for result in world.discord.messages(world.channel.id):
        if result.attachments:
            await star(world, world.bob, result)
    now = bot.services.clock()
    await world.write_sql(
        "UPDATE jobs SET finished_at = ? WHERE id = ?", (now - 2 * DAY, job_id_of(old))
    )

    report = await bot.services.privacy.retention.purge(now)

    assert report.counts["finished jobs deleted"] == 1
    _, listing = await favourites(world, world.bob)
    assert "an old sunset" not in listing["description"]
    assert "a new sunrise" in listing["description"]
    assert listing["footer"]["text"] == "Page 1 of 1 · 1 favourite"
    it = await world.discord.click(world.bob, old, f"flux:fav:{job_id_of(old)}")
    assert await world.refusal(it) == UNKNOWN_JOB_TEXT


# --------------------------------------------------------------------------- showcase
async def test_share_posts_once_with_the_image_and_the_credit_and_is_audited(
    world: World,
) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    gallery = world.discord.add_text_channel(world.guild.id, "showcase")
    await set_showcase(world, mod, gallery)
    result = await make_result(world, "a @everyone [prize](https://evil.example) castle")

    # Two clicks at once (a double click): one post.
    first, second = await asyncio.gather(
        share(world, world.alice, result), share(world, mod, result)
    )
    answers = sorted([await world.refusal(first), await world.refusal(second)])

    posts = world.discord.messages(gallery.id)
    assert len(posts) == 1
    post = posts[0]
    assert answers[0] == f"Shared in <#{gallery.id}>: {link_to(world, post, gallery)}"
    assert answers[1] in (
        BEING_SHARED_TEXT,
        f"This image is already shared in the showcase: {link_to(world, post, gallery)}",
    )
    assert [a.data for a in post.attachments] == [a.data for a in result.attachments]
    assert post.content.startswith(f"🌟 by <@{world.alice.id}> · FLUX.2 [klein] 4B\n")
    assert post.mentions == []  # credited, not pinged
    assert (
        "@\u200beveryone" in post.content and r"\[prize](" in post.content
    )  # inert: no masked link
    assert post.content.endswith(f"Original: {link_to(world, result)}")
    entries = [e for e in await bot.services.audit.recent(world.guild.id) if e.action == "showcase"]
    assert [(e.actor_id, e.target_id, e.job_id) for e in entries] in (
        [(world.alice.id, world.alice.id, job_id_of(result))],
        [(mod.id, world.alice.id, job_id_of(result))],
    )

    again = await share(world, world.alice, result)
    assert await world.refusal(again) == (
        f"This image is already shared in the showcase: {link_to(world, post, gallery)}"
    )
    assert len(world.discord.messages(gallery.id)) == 1


async def test_share_is_refused_without_a_channel_and_to_other_members(world: World) -> None:
    await world.start_bot()
    mod = add_moderator(world)
    gallery = world.discord.add_text_channel(world.guild.id, "showcase")
    result = await make_result(world, "a quiet harbour")

    assert await world.refusal(await share(world, world.alice, result)) == NO_SHOWCASE_TEXT
    await set_showcase(world, mod, gallery)
    assert await world.refusal(await share(world, world.bob, result)) == SHARE_REFUSED_TEXT
    assert world.discord.messages(gallery.id) == []

    # A moderator may share anyone's result, and the button still works after the refusals.
    answer = await world.refusal(await share(world, mod, result))
    assert answer.startswith(f"Shared in <#{gallery.id}>")


async def test_a_claim_left_by_a_crash_does_not_block_sharing_for_ever(world: World) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    gallery = world.discord.add_text_channel(world.guild.id, "showcase")
    await set_showcase(world, mod, gallery)
    result = await make_result(world, "an interrupted share")
    now = bot.services.clock()
    # A process claimed it a minute ago and died before posting.
    await world.write_sql(
        "INSERT INTO showcase_posts (job_id, guild_id, channel_id, shared_by, claimed_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (job_id_of(result), world.guild.id, gallery.id, world.alice.id, now - 60),
    )
    assert await world.refusal(await share(world, world.alice, result)) == BEING_SHARED_TEXT

    await world.write_sql("UPDATE showcase_posts SET claimed_at = ?", (now - 3600,))
    answer = await world.refusal(await share(world, world.alice, result))

    assert answer.startswith(f"Shared in <#{gallery.id}>")
    assert len(world.discord.messages(gallery.id)) == 1


async def test_in_direct_messages_favourites_from_everywhere_are_listed(world: World) -> None:
    await world.start_bot(dev_guild_id=None)  # global commands: offered in DMs
    mod = add_moderator(world)
    it = await world.discord.invoke_slash(mod, world.channel, "settings dms", {"allowed": True})
    await it.response()
    in_server = await make_result(world, "a server lighthouse")
    dm = world.discord.open_dm(world.alice)
    await world.discord.invoke_slash(world.alice, dm, "flux klein-4b", {"prompt": "a dm comet"})
    in_dm = await world.discord.wait_for_message(
        lambda m: bool(m.attachments) and not m.ephemeral, channel_id=dm.id
    )
    for result in (in_server, in_dm):
        assert await star(world, world.alice, result) == ADDED_TEXT
    assert "flux:share:" not in " ".join(in_dm.custom_ids)  # no showcase outside a server

    _, here = await favourites(world, world.alice)
    it = await world.discord.invoke_slash(world.alice, dm, "favourites")
    await it.response()
    assert it.original is not None
    everywhere = it.original.embeds[0]["description"]

    assert "a server lighthouse" in here["description"]
    assert "a dm comet" not in here["description"]
    assert everywhere.index("a dm comet") < everywhere.index("a server lighthouse")
    assert f"https://discord.com/channels/@me/{dm.id}/{in_dm.id}" in everywhere


async def test_a_showcase_the_bot_cannot_post_in_is_explained_and_sharing_stays_possible(
    world: World,
) -> None:
    await world.start_bot()
    mod = add_moderator(world)
    gallery = world.discord.add_text_channel(world.guild.id, "showcase")
    await set_showcase(world, mod, gallery)
    result = await make_result(world, "a locked gallery")
    send_messages = 1 << 11
    world.discord.set_overwrite(gallery, world.discord.bot_id, deny=send_messages)

    refused = await world.refusal(await share(world, world.alice, result))

    assert refused == CANNOT_POST_TEXT.format(channel=gallery.id)
    assert world.discord.messages(gallery.id) == []
    world.discord.set_overwrite(gallery, world.discord.bot_id)  # a moderator fixes it
    answer = await world.refusal(await share(world, world.alice, result))
    assert answer.startswith(f"Shared in <#{gallery.id}>")  # the failed post held no claim
