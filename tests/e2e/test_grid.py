"""Several images per prompt (`images: 1–4` on BFL), end to end: the real bot on the Discord
stand-in, generating through the BFL one. Each image is its own task, job and ledger row;
all of them are shown in one message (a contact sheet, the files, an Edit button each)."""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image

from bot.generation import GRID_MESSAGE_TEXT
from bot.jobs.engine import MODERATED_STRIKE_MESSAGE
from bot.ledger import credits_to_mc
from cogs.client import FluxcordBot
from tests.e2e.conftest import World
from tests.e2e.test_approvals import button, enable_approvals, review_message, setup_world
from tests.e2e.test_experience import decoded_inputs
from tests.fakes.bfl_server import Outcome
from tests.fakes.discord_server import Message


async def grid_jobs(bot: FluxcordBot, *, closed: bool = False) -> list[dict[str, Any]]:
    """The grid's jobs in order; `closed`: once every one of them has been shown."""
    if closed:
        ids = await bot.services.db.fetch_all("SELECT id FROM jobs WHERE batch_id IS NOT NULL")
        await bot.services.engine.wait_closed([row["id"] for row in ids], 5)
    rows = await bot.services.db.fetch_all(
        "SELECT id, state, batch_index, result_message_id, closed FROM jobs"
        " WHERE batch_id IS NOT NULL ORDER BY batch_index"
    )
    return [dict(row) for row in rows]


def bot_results(world: World) -> list[Message]:
    return [
        m
        for m in world.discord.messages(world.channel.id)
        if m.author_id == world.discord.application_id and m.attachments and not m.ephemeral
    ]


async def test_four_images_are_four_tasks_shown_in_one_message_and_charged_each(
    world: World,
) -> None:
    bot = await world.start_bot()
    before = world.newest_message_id()
    it = await world.discord.invoke_slash(
        world.alice,
        world.channel,
        "imagine",
        {"prompt": "a fox, four ways", "images": 4, "seed": 7},
    )
    message = await world.result_after(before)

    submissions = world.bfl.submissions
    assert sorted(s.body["seed"] for s in submissions) == [7, 8, 9, 10]
    assert {s.body["prompt"] for s in submissions} == {"a fox, four ways"}
    by_seed = {s.body["seed"]: world.bfl.image_bytes(s.task_id or "") for s in submissions}
    # One message, the interaction's own: the contact sheet, then image 1…4 in seed order.
    assert it.original is not None and it.original.id == message.id
    posted = world.discord.messages(world.channel.id, include_ephemeral=False)
    assert [m.id for m in posted if m.author_id == world.discord.application_id] == [message.id]
    sheet, *images = message.attachments
    assert [a.data for a in images] == [by_seed[seed] for seed in (7, 8, 9, 10)]
    with Image.open(io.BytesIO(sheet.data)) as picture:
        assert picture.size[0] > 32 and picture.size[0] == picture.size[1]  # 2×2 of squares
    [embed] = message.embeds
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Seeds"] == "1: 7 · 2: 8 · 3: 9 · 4: 10"
    assert embed["image"]["url"] == sheet.url

    jobs = await grid_jobs(bot, closed=True)
    assert [job["state"] for job in jobs] == ["delivered"] * 4
    assert {job["result_message_id"] for job in jobs} == {message.id}
    edits = {f"flux:edit:{job['id']}:{job['batch_index'] + 1}" for job in jobs}
    assert edits <= set(message.custom_ids)
    assert f"flux:edit:{jobs[0]['id']}" not in message.custom_ids  # no ambiguous Edit
    # Four ledger rows, each charged what BFL reported for its own task.
    rows = await bot.services.db.fetch_all(
        "SELECT j.params, l.status, l.charged_mc FROM ledger l JOIN jobs j ON j.id = l.job_id"
    )
    cost_by_seed = {s.body["seed"]: world.bfl.tasks[s.task_id or ""].cost for s in submissions}
    assert len(rows) == 4
    for row in rows:
        seed = json.loads(row["params"])["seed"]
        assert row["status"] == "charged"
        assert row["charged_mc"] == credits_to_mc(cost_by_seed[seed])


async def test_a_moderated_image_is_refunded_alone_and_the_others_still_show(
    world: World,
) -> None:
    world.bfl.script_task("three cats", 41, Outcome(final_status="Request Moderated"))
    bot = await world.start_bot()
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "three cats", "images": 4, "seed": 40}
    )
    message = await world.result_after(before)

    by_seed = {s.body["seed"]: s.task_id or "" for s in world.bfl.submissions}
    _sheet, *images = message.attachments
    assert [a.data for a in images] == [world.bfl.image_bytes(by_seed[s]) for s in (40, 42, 43)]
    assert message.content == (f"<@{world.alice.id}>\n🛡️ Image 2: {MODERATED_STRIKE_MESSAGE}")
    jobs = await grid_jobs(bot, closed=True)
    assert [job["state"] for job in jobs] == ["delivered", "moderated", "delivered", "delivered"]
    assert all(job["closed"] for job in jobs)
    statuses = await bot.services.db.fetch_all(
        "SELECT l.status FROM ledger l JOIN jobs j ON j.id = l.job_id ORDER BY j.batch_index"
    )
    assert [row["status"] for row in statuses] == ["charged", "refunded", "charged", "charged"]
    # The moderated image has no button; the others keep their numbers.
    assert not [c for c in message.custom_ids if c.startswith(f"flux:edit:{jobs[1]['id']}")]
    assert f"flux:edit:{jobs[3]['id']}:4" in message.custom_ids


async def test_four_images_over_an_allowance_that_fits_one_are_refused_with_nothing_sent(
    world: World,
) -> None:
    bot = await world.start_bot(default_user_daily_images=3)
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "too many", "images": 4}
    )
    text = await world.refusal(it)
    assert text.startswith("This request would go over your daily image allowance (3 images")
    assert "it needs 4 images" in text
    assert world.bfl.submissions == []
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == 0
    assert await bot.services.db.fetch_value("SELECT count(*) FROM ledger") == 0

    before = world.newest_message_id()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "one"})
    await world.result_after(before)
    assert len(world.bfl.submissions) == 1


async def test_more_images_than_the_in_flight_cap_allows_are_refused(world: World) -> None:
    bot = await world.start_bot(max_jobs_in_flight_per_member=3)
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "four", "images": 4}
    )
    assert await world.refusal(it) == (
        "4 images count as 4 requests; one member can have at most 3 at once. Ask for fewer "
        "images, or wait for one to finish."
    )
    assert world.bfl.submissions == []
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == 0


async def test_an_aiml_variant_is_refused_images_and_keeps_num_images(
    world_with_aiml: World,
) -> None:
    world = world_with_aiml
    await world.start_bot()
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "x", "images": 2, "variant": "dev"}
    )
    assert "has its own option for that" in await world.refusal(it)
    flux = world.discord.command("flux", guild_id=world.guild.id)
    assert flux is not None
    options = {sub["name"]: {o["name"] for o in sub["options"]} for sub in flux["options"]}
    assert "images" in options["pro"] and "images" in options["klein-4b"]
    assert "images" not in options["dev"] and "num_images" in options["dev"]


async def test_four_images_are_four_tasks_active_at_once_at_the_stand_in(world: World) -> None:
    world.bfl.hold()
    await world.start_bot()
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "together", "images": 4}
    )
    await world.bfl.wait_for(lambda: world.bfl.active_count() == 4)
    assert len({task.owner_key for task in world.bfl.tasks.values()}) == 1  # one key's cap
    world.bfl.release()
    message = await world.result_after(before)
    assert len(message.attachments) == 5


async def test_the_stand_in_sees_every_task_and_members_take_turns(world: World) -> None:
    """Each image takes its own slot: with two slots, Alice's four images fill both, and
    Bob's one image, asked later, goes before her last two (the fair queue's turns)."""
    world.bfl.hold()
    await world.start_bot(provider_max_active=2)
    await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "alice's four", "images": 4}
    )
    await world.bfl.wait_for(lambda: world.bfl.active_count() == 2)
    before = world.newest_message_id()
    it = await world.discord.invoke_slash(
        world.bob, world.channel, "imagine", {"prompt": "bob's one"}
    )
    # His request is in line (its answer follows the accept; a loaded loop may first answer
    # "thinking…", which then becomes the queued text).
    await it.wait_original(lambda m: "Queued" in m.content, timeout=10)
    assert len(world.bfl.submissions) == 2  # the cap holds while the stand-in holds
    world.bfl.release()
    await world.result_after(before, within=15)
    await world.discord.wait_for(lambda: len(bot_results(world)) == 2, timeout=15)
    prompts = [s.body["prompt"] for s in world.bfl.submissions]
    assert prompts[:2] == ["alice's four"] * 2
    assert prompts.index("bob's one") == 2
    assert world.bfl.max_active_seen <= 2


async def test_a_reply_to_a_grid_asks_for_edit_n_and_edit_2_after_a_restart_edits_image_2(
    world: World,
) -> None:
    first = await world.start_bot()
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "two boats", "images": 2, "seed": 5}
    )
    message = await world.result_after(before)
    _sheet, _one, two = message.attachments
    jobs = await grid_jobs(first)

    # A reply to the grid does not guess which image: it points at the buttons.
    await world.discord.post_user_message(
        world.bob, world.channel, "make it night", reply_to=message, mention_bot=True
    )
    refusal = await world.discord.wait_for_message(
        lambda m: m.author_id == world.discord.application_id and "Edit 1" in m.content,
        channel_id=world.channel.id,
    )
    assert refusal.content == GRID_MESSAGE_TEXT.format(count=2)
    assert len(world.bfl.submissions) == 2

    await world.stop_bot(first)
    second = await world.start_bot()
    it = await world.discord.click(world.bob, message, f"flux:edit:{jobs[1]['id']}:2")
    modal = await it.response()
    before = world.newest_message_id()
    await world.discord.submit_modal(
        world.bob,
        world.channel,
        modal.data["custom_id"],
        {"prompt": "the second boat, at night"},
        message_id=message,
    )
    await world.result_after(before)
    edit = world.bfl.submissions[2]
    assert edit.body["prompt"] == "the second boat, at night"
    assert decoded_inputs(edit.body) == [two.data]  # image 2, never the contact sheet
    parent = await second.services.db.fetch_value(
        "SELECT parent_job_id FROM jobs WHERE batch_id IS NULL"
    )
    assert parent == jobs[1]["id"]


async def test_a_restart_between_two_images_ready_still_shows_the_grid_once(
    world: World,
) -> None:
    world.bfl.script_task("slow and fast", 21, Outcome(latency=3.0))
    first = await world.start_bot()
    before = world.newest_message_id()
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "slow and fast", "images": 2, "seed": 20}
    )
    # The request's one message says so once image 1 is made and stored (its state first).
    await world.discord.wait_for(
        lambda: it.original is not None and "1 of 2 ready" in it.original.content
    )
    assert [job["state"] for job in await grid_jobs(first)] == ["ready", "submitted"]
    await world.stop_bot(first)  # image 2 is still being made at BFL

    second = await world.start_bot()
    message = await world.result_after(before, within=15)
    by_seed = {s.body["seed"]: s.task_id or "" for s in world.bfl.submissions}
    assert [a.data for a in message.attachments[1:]] == [
        world.bfl.image_bytes(by_seed[20]),
        world.bfl.image_bytes(by_seed[21]),
    ]
    jobs = await grid_jobs(second, closed=True)
    assert [job["state"] for job in jobs] == ["delivered", "delivered"]
    assert {job["result_message_id"] for job in jobs} == {message.id}
    assert len(world.bfl.submissions) == 2  # followed again, never resubmitted
    assert [m.id for m in bot_results(world)] == [message.id]


async def test_a_grid_held_for_approval_is_made_whole_once_approved(world: World) -> None:
    """The request waits with its size; approved after a restart (no live interaction), the
    grid replaces the waiting message, and the batch was reserved as two images."""
    review, moderator, trusted = setup_world(world)
    bot = await world.start_bot()
    await enable_approvals(bot, world, review, trusted)
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "two owls", "images": 2, "seed": 3}
    )
    status = await world.discord.wait_for_message(
        lambda m: "Waiting for a moderator" in m.content, channel_id=world.channel.id,
        after=before,
    )  # fmt: skip
    queued = await review_message(world, review)
    fields = {f["name"]: f["value"] for f in queued.embeds[0]["fields"]}
    assert fields["Images"] == "2"  # the moderator sees what approving costs
    await world.stop_bot(bot)
    bot = await world.start_bot()
    await world.discord.click(moderator, queued, button(queued, "approve"))
    result = await world.result_after(before)
    assert result.id == status.id
    assert sorted(s.body["seed"] for s in world.bfl.submissions) == [3, 4]
    assert len(result.attachments) == 3  # the sheet and both images
    jobs = await grid_jobs(bot, closed=True)
    assert [job["state"] for job in jobs] == ["delivered", "delivered"]
    statuses = await bot.services.db.fetch_all("SELECT status FROM ledger")
    assert [row["status"] for row in statuses] == ["charged", "charged"]
    assert [m.id for m in bot_results(world)] == [result.id]


async def test_reroll_on_a_grid_makes_a_new_grid_and_delete_unlinks_every_image(
    world: World,
) -> None:
    bot = await world.start_bot()
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "pears", "images": 2}
    )
    first = await world.result_after(before)
    jobs = await grid_jobs(bot, closed=True)
    lead = jobs[0]["id"]

    before = world.newest_message_id()
    await world.discord.click(world.alice, first, f"flux:reroll:{lead}")
    second = await world.result_after(before)
    assert len(world.bfl.submissions) == 4
    assert len(second.attachments) == 3  # a new grid of two

    it = await world.discord.click(world.alice, first, f"flux:delete:{lead}")
    assert await world.refusal(it) == "Deleted."  # answered once the jobs are unlinked
    assert world.discord.message(first.id).deleted
    linked = await bot.services.db.fetch_all(
        "SELECT id FROM jobs WHERE result_message_id = ?", (first.id,)
    )
    assert linked == []


async def test_a_grid_over_the_upload_limit_reduces_the_sheet_and_keeps_the_images(
    world: World,
) -> None:
    """The contact sheet is the large file of a grid of small images: it is the one reduced,
    and the images themselves arrive exactly as made."""
    world.bfl.result_size = (1024, 1024)  # tiny PNGs of 1 MP: a sheet of ~20 kB
    world.discord.attachment_size_limit = 64 * 1024 + 16_000  # the margin, and 16 kB of files
    await world.start_bot()
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "tight fit", "images": 4, "seed": 1}
    )
    message = await world.result_after(before)
    by_seed = {
        s.body["seed"]: world.bfl.image_bytes(s.task_id or "") for s in world.bfl.submissions
    }
    sheet, *images = message.attachments
    assert [a.data for a in images] == [by_seed[seed] for seed in (1, 2, 3, 4)]
    assert sum(a.size for a in message.attachments) <= 16_000
    assert sheet.filename.endswith(".jpg") and sheet.size > 0
    fields = {f["name"]: f["value"] for f in message.embeds[0]["fields"]}
    assert fields["Shown"] == "reduced to fit this server's upload limit"


async def test_two_refused_images_of_one_request_are_one_strike(world: World) -> None:
    for seed in (51, 52):
        world.bfl.script_task("risky", seed, Outcome(final_status="Request Moderated"))
    bot = await world.start_bot()
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "risky", "images": 3, "seed": 50}
    )
    message = await world.result_after(before)
    assert len(message.attachments) == 1  # one image made: no contact sheet for one
    assert message.content.count("You were not charged") == 2
    await grid_jobs(bot, closed=True)
    await bot.services.generation.audits_written()
    rows = await bot.services.db.fetch_all("SELECT user_id FROM strikes")
    assert [row["user_id"] for row in rows] == [world.alice.id]
    audited = await bot.services.db.fetch_value(
        "SELECT count(*) FROM audit_log WHERE action = 'provider moderation'"
    )
    assert audited == 2  # each refused image is in the audit log


async def test_a_grid_whose_every_image_fails_says_so_once_and_charges_nothing(
    world: World,
) -> None:
    world.bfl.script("all refused", Outcome(final_status="Error"))
    bot = await world.start_bot()
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "all refused", "images": 2}
    )
    message = await world.discord.wait_for_message(
        lambda m: m.content.count("Image ") == 2, channel_id=world.channel.id
    )
    assert it.original is not None and it.original.id == message.id
    assert message.attachments == [] and message.embeds == [] and message.custom_ids == []
    assert message.content.splitlines()[1:] == [
        f"❌ Image {n}: The image service could not make this image. You were not charged."
        for n in (1, 2)
    ]
    await grid_jobs(bot, closed=True)
    statuses = await bot.services.db.fetch_all("SELECT status FROM ledger")
    assert [row["status"] for row in statuses] == ["refunded", "refunded"]


async def test_cancel_on_a_queued_grid_cancels_the_images_still_in_line(world: World) -> None:
    """While images of a grid wait in line, its message has Cancel: it cancels those (each
    refunded), and the image already being made still shows, with a line for the others."""
    world.bfl.hold()
    bot = await world.start_bot(provider_max_active=1)
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "four owls", "images": 4}
    )
    await world.bfl.wait_for(lambda: world.bfl.active_count() == 1)
    lead = (await grid_jobs(bot))[0]["id"]
    waiting = await it.wait_original(
        lambda m: "3 in line" in m.content and f"flux:cancel:{lead}" in m.custom_ids, timeout=10
    )
    await world.discord.click(world.alice, waiting, f"flux:cancel:{lead}")
    # Once none waits, the line and the button go.
    await it.wait_original(
        lambda m: "3 not made" in m.content and not any("cancel" in c for c in m.custom_ids),
        timeout=10,
    )
    assert len(world.bfl.submissions) == 1
    world.bfl.release()
    shown = await it.wait_original(lambda m: bool(m.attachments), timeout=15)
    [made] = world.bfl.submissions
    assert world.bfl.image_bytes(made.task_id or "") in [a.data for a in shown.attachments]
    assert shown.content.count("Cancelled before it started") == 3
    statuses = await bot.services.db.fetch_all("SELECT status FROM ledger ORDER BY job_id")
    assert sorted(row["status"] for row in statuses) == ["charged"] + ["refunded"] * 3
