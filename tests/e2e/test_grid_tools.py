"""The result tools on a grid's images and on private results, end to end: the real bot on
the Discord stand-in, the BFL stand-in receiving the requests. Each image of a grid has its
own row (Edit N, Hi-res N, Zoom N, ⭐ N, Share N) acting on that image's job and file; the
private answers (the Zoom N menu, the Hi-res offer) work on private results too, whose
message Discord won't let the bot fetch."""

from __future__ import annotations

import base64

import pytest

from cogs.client import FluxcordBot
from cogs.favourites import ADDED_TEXT
from tests.e2e.conftest import World
from tests.e2e.test_grid import grid_jobs
from tests.e2e.test_private_results import answer_text, delivered, make_private, private_result
from tests.e2e.test_result_tools import OUTPAINTING, job_id_of
from tests.fakes.discord_server import InteractionHandle, Message

MOVES = ("zoom15", "zoom2", "square", "left", "right", "up", "down")


async def four_images(world: World, bot: FluxcordBot) -> tuple[Message, list[str]]:
    """A 4-image grid (seeds 7–10) and its jobs' ids, image 1 to 4."""
    before = world.newest_message_id()
    options = {"prompt": "a fox, four ways", "images": 4, "seed": 7}
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", options)
    message = await world.result_after(before)
    jobs = await grid_jobs(bot, closed=True)
    return message, [job["id"] for job in jobs]


def rows_of(message: Message) -> list[list[tuple[str, str]]]:
    """Each row's buttons as (label with its emoji, custom id)."""
    return [
        [
            (f"{c.get('emoji', {}).get('name', '')} {c.get('label', '')}".strip(), c["custom_id"])
            for c in row["components"]
        ]
        for row in message.components
    ]


def sent_input(world: World) -> bytes:
    return base64.b64decode(world.bfl.submissions[-1].body["input_image"])


async def private_answer(it: InteractionHandle) -> Message:
    """A button's private answer, once it has its buttons (a deferred one is edited)."""
    message = await it.wait_original(lambda m: bool(m.components), timeout=10)
    assert message.ephemeral
    return message


async def parent_of(bot: FluxcordBot, result: Message) -> str | None:
    [job] = await bot.services.engine.wait_closed([job_id_of(result)], 5)
    return job.parent_job_id


async def test_a_four_image_grid_has_each_images_tools_on_its_own_row(world: World) -> None:
    bot = await world.start_bot()
    message, ids = await four_images(world, bot)
    rows = rows_of(message)
    assert len(rows) == 5 and all(len(row) <= 5 for row in rows)
    lead = ids[0]
    # The whole result's row: no Edit (which image?), no tools, no ⭐.
    assert [custom_id for _, custom_id in rows[0]] == [
        f"flux:{action}:{lead}" for action in ("reroll", "remix", "chain", "delete")
    ]
    for number, job_id in enumerate(ids, start=1):
        assert rows[number] == [
            (f"✏️ Edit {number}", f"flux:edit:{job_id}:{number}"),
            (f"🔎 Hi-res {number}", f"flux:hires:{job_id}"),
            (f"🔍 Zoom {number}", f"flux:zoom:{job_id}"),
            (f"⭐ {number}", f"flux:fav:{job_id}"),
            (f"📣 Share {number}", f"flux:share:{job_id}"),
        ]


@pytest.mark.parametrize("restart", [False, True], ids=["live", "after-restarts"])
async def test_zoom_3_then_zoom_out_2x_outpaints_image_3(world: World, restart: bool) -> None:
    bot = await world.start_bot()
    message, ids = await four_images(world, bot)
    _sheet, *images = message.attachments
    if restart:
        await world.stop_bot(bot)
        bot = await world.start_bot()

    it = await world.discord.click(world.alice, message, f"flux:zoom:{ids[2]}")
    menu = await private_answer(it)
    assert menu.content.startswith("Image 3: zoom out, pan")
    assert menu.custom_ids == [f"flux:out:{move}:{ids[2]}:{message.id}" for move in MOVES]
    assert len(world.bfl.submissions) == 4  # the menu sends nothing
    if restart:  # the menu's buttons work after a restart too
        await world.stop_bot(bot)
        bot = await world.start_bot()

    before = world.newest_message_id()
    await world.discord.click(world.alice, menu, f"flux:out:zoom2:{ids[2]}:{message.id}")
    zoomed = await world.result_after(before)
    sent = world.bfl.submissions[-1]
    assert sent.endpoint == OUTPAINTING
    assert sent_input(world) == images[2].data  # image 3, not the sheet or image 1
    assert (sent.body["width"], sent.body["height"]) == (64, 64)
    assert await parent_of(bot, zoomed) == ids[2]


async def test_hires_2_offers_then_confirm_sends_image_2(world: World) -> None:
    bot = await world.start_bot()
    message, ids = await four_images(world, bot)
    _sheet, *images = message.attachments
    it = await world.discord.click(world.alice, message, f"flux:hires:{ids[1]}")
    offer = await private_answer(it)
    assert offer.content.startswith("Re-render at 2048×2048 with FLUX.2 [pro]")
    assert offer.attachments == []  # a public grid is fetched when confirmed: no copy
    [confirm] = offer.custom_ids
    assert confirm == f"flux:hiresgo:{ids[1]}:{message.id}:2048x2048:pro"
    assert len(world.bfl.submissions) == 4

    before = world.newest_message_id()
    await world.discord.click(world.alice, offer, confirm)
    hires = await world.result_after(before)
    assert world.bfl.submissions[-1].endpoint == "flux-2-pro"
    assert sent_input(world) == images[1].data
    assert await parent_of(bot, hires) == ids[1]


async def test_favourite_4_keeps_image_4(world: World) -> None:
    bot = await world.start_bot()
    message, ids = await four_images(world, bot)
    it = await world.discord.click(world.bob, message, f"flux:fav:{ids[3]}")
    assert await world.refusal(it) == ADDED_TEXT
    kept = await bot.services.db.fetch_all("SELECT job_id FROM favourites WHERE user_id = ?",
                                           (world.bob.id,))  # fmt: skip
    assert [row["job_id"] for row in kept] == [ids[3]]
    listing = await world.discord.invoke_slash(world.bob, world.channel, "favourites")
    [embed] = (await listing.response()).data["embeds"]
    assert embed["description"].count("a fox, four ways") == 1
    assert embed["footer"]["text"] == "Page 1 of 1 · 1 favourite"


async def test_hires_on_a_private_result_confirms_from_its_copy_and_stays_private(
    world: World,
) -> None:
    bot = await world.start_bot()
    await make_private(bot, world)
    _, result = await private_result(world, world.alice, "a lantern in the fog")
    await delivered(bot)
    parent_id = job_id_of(result)

    it = await world.discord.click(world.alice, result, f"flux:hires:{parent_id}")
    offer = await private_answer(it)
    assert offer.content.startswith("Re-render at 2048×2048")
    # The result can't be fetched later (ephemeral): the offer carries its image.
    [copy] = offer.attachments
    assert copy.data == result.attachments[0].data
    [confirm] = offer.custom_ids
    confirmed = await world.discord.click(world.alice, offer, confirm)
    hires = await confirmed.wait_original(lambda m: bool(m.attachments), timeout=10)

    assert hires.ephemeral and hires.visible_to == world.alice.id  # private again
    assert job_id_of(hires) != parent_id
    assert world.bfl.submissions[-1].endpoint == "flux-2-pro"
    assert sent_input(world) == result.attachments[0].data
    assert await parent_of(bot, hires) == parent_id
    public = [
        m for m in world.discord.messages(world.channel.id, include_ephemeral=False)
        if m.attachments
    ]  # fmt: skip
    assert public == []


async def test_zoom_2_on_a_private_grid_outpaints_image_2_from_the_menus_copy(
    world: World,
) -> None:
    bot = await world.start_bot()
    await make_private(bot, world)
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "two boats", "images": 2, "seed": 5}
    )
    grid = await it.wait_original(lambda m: len(m.attachments) == 3, timeout=10)
    ids = [job["id"] for job in await grid_jobs(bot, closed=True)]
    _sheet, _one, two = grid.attachments

    click = await world.discord.click(world.alice, grid, f"flux:zoom:{ids[1]}")
    menu = await private_answer(click)
    assert [a.data for a in menu.attachments] == [two.data]
    await world.stop_bot(bot)
    bot = await world.start_bot()
    moved = await world.discord.click(world.alice, menu, f"flux:out:right:{ids[1]}:{grid.id}")
    zoomed = await moved.wait_original(lambda m: bool(m.attachments), timeout=10)
    assert zoomed.ephemeral
    assert world.bfl.submissions[-1].endpoint == OUTPAINTING
    assert sent_input(world) == two.data
    assert await parent_of(bot, zoomed) == ids[1]


async def test_share_3_posts_image_3_alone_in_the_showcase(world: World) -> None:
    from tests.e2e.test_favourites import add_moderator, set_showcase

    bot = await world.start_bot()
    gallery = world.discord.add_text_channel(world.guild.id, "showcase")
    await set_showcase(world, add_moderator(world), gallery)
    message, ids = await four_images(world, bot)
    _sheet, *images = message.attachments
    it = await world.discord.click(world.alice, message, f"flux:share:{ids[2]}")
    assert (await world.refusal(it)).startswith(f"Shared in <#{gallery.id}>")
    [post] = world.discord.messages(gallery.id)
    assert [a.data for a in post.attachments] == [images[2].data]


async def test_publish_2_on_a_private_grid_posts_image_2_alone_as_its_result(
    world: World,
) -> None:
    """A private grid has Publish N per image (no grid-wide Publish): Publish 2 posts image 2
    on its own, publicly, as image 2's result, and nothing else of the grid."""
    bot = await world.start_bot()
    await make_private(bot, world)
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "three kites", "images": 3, "seed": 2}
    )
    grid = await it.wait_original(lambda m: len(m.attachments) == 4, timeout=10)
    ids = [job["id"] for job in await grid_jobs(bot, closed=True)]
    rows = rows_of(grid)
    assert not any(custom.startswith("flux:publish:") for _, custom in rows[0])
    for number, job_id in enumerate(ids, start=1):
        assert (f"📣 Publish {number}", f"flux:publish:{job_id}") in rows[number]
        assert not any(custom.startswith("flux:share:") for _, custom in rows[number])
    _sheet, _one, two, _three = grid.attachments

    await world.stop_bot(bot)  # the buttons work after a restart
    bot = await world.start_bot()
    click = await world.discord.click(world.alice, grid, f"flux:publish:{ids[1]}")
    # Its answer comes once the post is recorded as the job's (the post shows a moment before).
    assert (await answer_text(click)).startswith("Published: ")
    [public] = await world.discord.wait_for(
        lambda: [
            m
            for m in world.discord.messages(world.channel.id, include_ephemeral=False)
            if m.author_id == world.discord.application_id and m.attachments
        ]
        or None,
        timeout=10,
    )
    assert [a.data for a in public.attachments] == [two.data]
    job = await bot.services.generation.job(ids[1])
    assert job is not None and job.result_message_id == public.id
    assert job.published_message_id == public.id
    others = [await bot.services.generation.job(i) for i in (ids[0], ids[2])]
    assert all(other is not None and other.published_message_id is None for other in others)
