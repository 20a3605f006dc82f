"""Zoom out, pan, Make square (BFL outpainting) and Hi-res end to end: the real bot on the
Discord stand-in, the BFL stand-in receiving the requests."""

from __future__ import annotations

import base64
import io
import json
import time

from PIL import Image

from bot.jobs.models import JobState
from bot.tools.canvas import ALREADY_SQUARE_TEXT
from bot.tools.result_tools import HIRES_PROMPT_REMOVED_TEXT
from tests.e2e.conftest import World
from tests.e2e.test_usage import make_image
from tests.fakes.bfl_server import OUTPAINTING, OUTPAINTING_FIELDS
from tests.fakes.discord.models import Message


def job_id_of(message: Message) -> str:
    footer = message.embeds[0]["footer"]
    return str(footer["text"]).removeprefix("Job ")


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


async def zoom_out_2x(world: World, result: Message) -> Message:
    before = world.newest_message_id()
    await world.discord.click(world.alice, result, f"flux:out:zoom2:{job_id_of(result)}")
    return await world.result_after(before)


async def test_a_result_has_the_tool_buttons_on_rows_1_and_2(world: World) -> None:
    await world.start_bot()
    result = await make_image(world, world.alice, "a lighthouse")
    job_id = job_id_of(result)
    rows = [[c["custom_id"] for c in row["components"]] for row in result.components]
    assert rows[1] == [
        f"flux:out:zoom15:{job_id}",
        f"flux:out:zoom2:{job_id}",
        f"flux:out:square:{job_id}",
        f"flux:hires:{job_id}",
    ]
    assert rows[2] == [f"flux:out:{move}:{job_id}" for move in ("left", "right", "up", "down")]


async def test_zoom_out_2x_sends_the_canvas_and_delivers_the_new_image(world: World) -> None:
    bot = await world.start_bot()
    result = await make_image(world, world.alice, "a lighthouse on a cliff")
    parent_id = job_id_of(result)
    zoomed = await zoom_out_2x(world, result)

    first, sent = world.bfl.submissions
    assert sent.endpoint == OUTPAINTING and sent.status == 200
    body = dict(sent.body)
    # The result's own image (32×32 at the stand-in), centred on a 2× canvas.
    assert base64.b64decode(body.pop("input_image")) == result.attachments[0].data
    assert body.pop("user") == first.body["user"]
    assert body == {
        "width": 64,
        "height": 64,
        "reference_offset_x": 16,
        "reference_offset_y": 16,
        "auto_crop": False,
        "mode": "high",
        "prompt": "a lighthouse on a cliff",
        "disable_pup": False,
        "safety_tolerance": 2,
        "output_format": "jpeg",
    }
    assert set(sent.body) <= OUTPAINTING_FIELDS  # nothing else: no seed, no webhook fields
    [attachment] = zoomed.attachments
    assert attachment.data == world.bfl.image_bytes(sent.task_id or "")
    assert size_of(attachment.data) == (64, 64)

    job_id = job_id_of(zoomed)
    [job] = await bot.services.engine.wait_closed([job_id], 5)
    assert job.state is JobState.DELIVERED and job.parent_job_id == parent_id
    assert job.variant == "outpaint" and job.webhook_secret is None
    # Charged what BFL returned (the stand-in's 5 credits), not the 6-credit estimate.
    row = await bot.services.db.fetch_one(
        "SELECT status, reserved_mc, charged_mc FROM ledger WHERE job_id = ?", (job_id,)
    )
    assert row is not None
    assert (row["status"], row["charged_mc"]) == ("charged", 5000)
    assert row["reserved_mc"] >= 6000
    it = await world.discord.invoke_slash(world.alice, world.channel, "history", {"result": job_id})
    chain = (await it.response()).data["content"]
    assert chain.startswith("**This image's history** (2 steps):")


async def test_the_outpainting_mode_is_the_servers_setting_and_is_audited(world: World) -> None:
    from tests.e2e.test_usage import add_moderator, ask

    bot = await world.start_bot()
    moderator = add_moderator(world)
    answer = await ask(world, moderator, "settings outpaint", {"mode": "fast"})
    assert answer == "Zoom out / pan mode: fast (was high fidelity)."
    audit = await bot.services.db.fetch_value(
        "SELECT detail FROM audit_log WHERE action = 'settings' ORDER BY id DESC LIMIT 1"
    )
    assert audit == "Zoom out / pan mode: fast (was high fidelity)"
    result = await make_image(world, world.alice, "a field of wheat")
    await zoom_out_2x(world, result)
    assert world.bfl.submissions[-1].body["mode"] == "fast"


async def test_zoom_out_works_after_a_restart(world: World) -> None:
    first = await world.start_bot()
    result = await make_image(world, world.alice, "a quiet harbour")
    await world.stop_bot(first)
    await world.start_bot()
    zoomed = await zoom_out_2x(world, result)
    assert size_of(zoomed.attachments[0].data) == (64, 64)
    assert world.bfl.submissions[-1].endpoint == OUTPAINTING


async def test_over_quota_zoom_out_is_refused_and_nothing_is_sent(world: World) -> None:
    bot = await world.start_bot(default_user_daily_images=1)
    result = await make_image(world, world.alice, "the only one today")
    it = await world.discord.click(world.alice, result, f"flux:out:zoom2:{job_id_of(result)}")
    text = await world.refusal(it)
    assert text.startswith("This request would go over your daily image allowance")
    assert [s.endpoint for s in world.bfl.submissions] == ["flux-2-pro"]
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == 1


async def test_make_square_on_a_square_result_says_so(world: World) -> None:
    await world.start_bot()
    result = await make_image(world, world.alice, "a square tile")
    it = await world.discord.click(world.alice, result, f"flux:out:square:{job_id_of(result)}")
    assert await world.refusal(it) == ALREADY_SQUARE_TEXT
    assert len(world.bfl.submissions) == 1


async def test_hires_tells_the_price_and_only_confirm_sends(world: World) -> None:
    bot = await world.start_bot()
    result = await make_image(world, world.alice, "a mountain at dawn")
    parent_id = job_id_of(result)
    it = await world.discord.click(world.alice, result, f"flux:hires:{parent_id}")
    offer = await it.response()
    assert offer.type == 4 and offer.data["flags"] & 64
    # pro's estimate: 3 + (4 - 1) × 1.5 for 2048² plus 32² of reference.
    assert offer.data["content"].startswith(
        "Re-render at 2048×2048 with FLUX.2 [pro], about 7.5 credits."
    )
    assert len(world.bfl.submissions) == 1  # nothing sent yet

    [confirm] = [c["custom_id"] for row in offer.data["components"] for c in row["components"]]
    assert confirm == f"flux:hiresgo:{parent_id}:{result.id}:2048x2048:pro"
    offer_message = await it.wait_original()
    before = world.newest_message_id()
    await world.discord.click(world.alice, offer_message, confirm)
    hires = await world.result_after(before)

    sent = world.bfl.submissions[-1]
    assert sent.endpoint == "flux-2-pro"
    assert (sent.body["width"], sent.body["height"]) == (2048, 2048)
    assert sent.body["prompt"] == "a mountain at dawn"
    assert base64.b64decode(sent.body["input_image"]) == result.attachments[0].data
    [job] = await bot.services.engine.wait_closed([job_id_of(hires)], 5)
    assert job.parent_job_id == parent_id and job.state is JobState.DELIVERED


async def test_zoom_out_waits_for_approval_like_any_request_then_is_made(world: World) -> None:
    from tests.e2e.test_approvals import button, enable_approvals, review_message, setup_world

    review, moderator, trusted = setup_world(world)
    bot = await world.start_bot()
    result = await make_image(world, world.alice, "a windmill")  # before the queue is on
    await enable_approvals(bot, world, review, trusted)
    before = world.newest_message_id()
    it = await world.discord.click(world.alice, result, f"flux:out:zoom15:{job_id_of(result)}")
    queued = await review_message(world, review)
    # Held once the member is told so (the review message is recorded by then).
    await it.wait_original(lambda m: "Waiting for a moderator" in m.content)
    assert len(world.bfl.submissions) == 1  # held: nothing sent

    await world.discord.click(moderator, queued, button(queued, "approve"))
    zoomed = await world.result_after(before)
    sent = world.bfl.submissions[-1]
    assert sent.endpoint == OUTPAINTING
    # 1.5× of 32 is 48, below BFL's 64 px: the smallest canvas, the input centred on it.
    placed = [sent.body[k] for k in ("width", "height", "reference_offset_x", "reference_offset_y")]
    assert placed == [64, 64, 16, 16]
    [job] = await bot.services.engine.wait_closed([job_id_of(zoomed)], 5)
    assert job.parent_job_id == job_id_of(result) and job.state is JobState.DELIVERED
    decided = await world.discord.wait_for(
        lambda: "Approved by" in world.discord.message(queued.id).content
    )
    assert decided


async def test_within_the_servers_megapixel_cap_the_picture_shrinks_as_a_whole(
    world: World,
) -> None:
    bot = await world.start_bot()
    await bot.services.server_settings.update(world.guild.id, 1, "cap", max_megapixels=1.0)
    world.bfl.result_size = (1024, 1024)  # a 1 MP result
    result = await make_image(world, world.alice, "a valley")
    world.bfl.result_size = None
    await zoom_out_2x(world, result)
    sent = world.bfl.submissions[-1]
    # 2048² would be 4 MP: canvas, image and offsets are halved together.
    placed = [sent.body[k] for k in ("width", "height", "reference_offset_x", "reference_offset_y")]
    assert placed == [1024, 1024, 256, 256]
    assert size_of(base64.b64decode(sent.body["input_image"])) == (512, 512)
    assert sent.status == 200


async def test_after_the_prompt_is_removed_zoom_sends_none_and_hires_says_why(
    world: World,
) -> None:
    bot = await world.start_bot()
    result = await make_image(world, world.alice, "a secret garden")
    job_id = job_id_of(result)
    params = json.loads(
        await bot.services.db.fetch_value("SELECT params FROM jobs WHERE id = ?", (job_id,))
    )
    params["prompt"] = ""
    await bot.services.db.execute(  # as retention or /privacy delete leave it
        "UPDATE jobs SET prompt = '', params = ?, prompt_removed_at = ? WHERE id = ?",
        (json.dumps(params), time.time(), job_id),
    )
    await zoom_out_2x(world, result)
    sent = world.bfl.submissions[-1]
    assert sent.endpoint == OUTPAINTING and "prompt" not in sent.body

    it = await world.discord.click(world.alice, result, f"flux:hires:{job_id}")
    assert await world.refusal(it) == HIRES_PROMPT_REMOVED_TEXT


async def test_zoom_out_shares_the_buttons_cooldown(world: World) -> None:
    await world.start_bot(button_cooldown_seconds=60)
    result = await make_image(world, world.alice, "a slow river")
    job_id = job_id_of(result)
    before = world.newest_message_id()
    await world.discord.click(world.bob, result, f"flux:out:zoom2:{job_id}")
    await world.result_after(before)  # bob's first click acts
    it = await world.discord.click(world.bob, result, f"flux:out:right:{job_id}")
    assert (await world.refusal(it)).startswith("Slow down a little")
    assert [s.endpoint for s in world.bfl.submissions].count(OUTPAINTING) == 1


async def test_a_members_prompt_suffix_is_not_added_again_by_zoom_or_hires(world: World) -> None:
    """The result's prompt already carries the member's /prefer suffix: a tool sends it as
    it is, like Reroll, even after the member chose another suffix."""
    await world.start_bot()
    for suffix in ("ink wash", "neon"):
        chose = await world.discord.invoke_slash(
            world.alice, world.channel, "prefer set", {"prompt_suffix": suffix}
        )
        await chose.response()
        if suffix == "ink wash":
            result = await make_image(world, world.alice, "a heron")
    assert world.bfl.submissions[-1].body["prompt"] == "a heron, ink wash"

    await zoom_out_2x(world, result)
    assert world.bfl.submissions[-1].body["prompt"] == "a heron, ink wash"

    it = await world.discord.click(world.alice, result, f"flux:hires:{job_id_of(result)}")
    offer = (await it.response()).data
    [confirm] = [c["custom_id"] for row in offer["components"] for c in row["components"]]
    before = world.newest_message_id()
    await world.discord.click(world.alice, await it.wait_original(), confirm)
    await world.result_after(before)
    assert world.bfl.submissions[-1].body["prompt"] == "a heron, ink wash"
