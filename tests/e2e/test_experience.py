"""The Discord experience end to end: every command, references, chains, buttons, refusals.

Each test drives the real bot (real discord.py) through the Discord stand-in and checks what
Discord received and what the BFL stand-in received.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image

from tests.e2e.conftest import World
from tests.fakes.discord_server import Upload


def png(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def image_file(name: str, colour: tuple[int, int, int], kind: str = "PNG") -> Upload:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, kind)
    mime = {"PNG": "image/png", "GIF": "image/gif", "JPEG": "image/jpeg"}[kind]
    return Upload(name, buffer.getvalue(), mime)


def decoded_inputs(body: dict[str, object]) -> list[bytes]:
    keys = ["input_image"] + [f"input_image_{n}" for n in range(2, 9)]
    return [base64.b64decode(str(body[key])) for key in keys if key in body]


def job_id_of(message: object) -> str:
    embeds = message.embeds
    return str(embeds[0]["footer"]["text"]).removeprefix("Job ")


# ---------------------------------------------------------------------- command surface
async def test_flux_subcommands_expose_exactly_each_variants_options(world: World) -> None:
    await world.start_bot()
    flux = world.discord.command("flux", guild_id=world.guild.id)
    assert flux is not None
    subcommands = {sub["name"]: sub for sub in flux["options"]}
    assert set(subcommands) == {"pro", "max", "flex", "klein-4b", "klein-9b"}

    def names(key: str) -> set[str]:
        return {option["name"] for option in subcommands[key]["options"]}

    base = {"prompt", "size", "width", "height", "seed", "safety_tolerance", "output_format"}
    images = {"image"} | {f"image{n}" for n in range(2, 9)}
    klein_images = {"image", "image2", "image3", "image4"}
    assert names("pro") == names("max") == base | {"prompt_upsampling"} | images
    assert names("flex") == base | {"steps", "guidance", "prompt_upsampling"} | images
    assert names("klein-4b") == names("klein-9b") == base | klein_images | {"lora"}
    edit = world.discord.command("edit", guild_id=world.guild.id)
    assert edit is not None
    variant_option = next(o for o in edit["options"] if o["name"] == "variant")
    assert {c["value"] for c in variant_option["choices"]} == {
        "pro",
        "max",
        "flex",
        "klein-4b",
        "klein-9b",
    }
    menu = world.discord.command("Edit with FLUX", guild_id=world.guild.id, type=3)
    assert menu is not None


@pytest.mark.parametrize(
    ("variant", "options", "expected"),
    [
        ("pro", {"prompt_upsampling": False}, {"disable_pup": True}),
        ("max", {}, {"disable_pup": False}),
        (
            "flex",
            {"steps": 20, "guidance": 3.5, "prompt_upsampling": False},
            {"steps": 20, "guidance": 3.5, "prompt_upsampling": False},
        ),
        ("klein-4b", {}, {}),
        ("klein-9b", {}, {}),
    ],
)
async def test_flux_variant_sends_its_own_fields(
    world: World, variant: str, options: dict[str, object], expected: dict[str, object]
) -> None:
    await world.start_bot()
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice,
        world.channel,
        f"flux {variant}",
        {
            "prompt": f"a castle ({variant})",
            "size": "landscape_16_9",
            "seed": 99,
            "safety_tolerance": 1,
            "output_format": "png",
            **options,
        },
    )
    message = await world.result_after(before)
    [submission] = world.bfl.submissions
    assert submission.endpoint == f"flux-2-{variant}"
    body = dict(submission.body)
    user = body.pop("user")
    assert body == {
        "prompt": f"a castle ({variant})",
        "seed": 99,
        "width": 1360,
        "height": 768,
        **expected,
        "safety_tolerance": 1,
        "output_format": "png",
    }
    assert isinstance(user, str) and str(world.alice.id) not in user
    assert message.attachments[0].filename.endswith(".png")
    assert message.attachments[0].data == world.bfl.image_bytes(submission.task_id or "")


# ---------------------------------------------------------------------- references
async def test_edit_sends_every_attachment_as_a_reference_in_order(world: World) -> None:
    await world.start_bot()
    first, second = image_file("a.png", (255, 0, 0)), image_file("b.jpg", (0, 0, 255), "JPEG")
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice,
        world.channel,
        "edit",
        {"prompt": "merge these", "image": first, "image2": second, "variant": "klein-9b"},
    )
    await world.result_after(before)
    [submission] = world.bfl.submissions
    assert submission.endpoint == "flux-2-klein-9b"
    assert decoded_inputs(submission.body) == [first.data, second.data]


async def test_edit_with_flux_context_menu_uses_that_messages_images(world: World) -> None:
    await world.start_bot()
    photo = image_file("photo.png", (10, 200, 10))
    target = await world.discord.post_user_message(
        world.bob, world.channel, "my photo", attachments=[photo]
    )
    it = await world.discord.invoke_message_command(
        world.alice, world.channel, "Edit with FLUX", target
    )
    modal = await it.response()
    assert modal.type == 9
    before = world.newest_message_id()
    await world.discord.submit_modal(
        world.alice, world.channel, modal.data["custom_id"], {"prompt": "make it autumn"}
    )
    await world.result_after(before)
    [submission] = world.bfl.submissions
    assert submission.body["prompt"] == "make it autumn"
    assert decoded_inputs(submission.body) == [photo.data]


async def test_context_menu_on_a_message_without_images_is_refused(world: World) -> None:
    await world.start_bot()
    target = await world.discord.post_user_message(world.bob, world.channel, "just text")
    it = await world.discord.invoke_message_command(
        world.alice, world.channel, "Edit with FLUX", target
    )
    assert await world.refusal(it) == "That message has no images to edit."


async def test_reply_to_edit_builds_a_chain_of_three(world: World) -> None:
    bot = await world.start_bot()
    photo = image_file("cat.png", (120, 120, 120))
    original = await world.discord.post_user_message(
        world.bob, world.channel, "my cat", attachments=[photo]
    )
    results = []
    target = original
    for step, prompt in enumerate(["give it a hat", "make it blue", "at night"]):
        before = world.newest_message_id()
        await world.discord.post_user_message(
            world.alice, world.channel, prompt, reply_to=target, mention_bot=True
        )
        result = await world.result_after(before)
        submission = world.bfl.submissions[step]
        assert submission.body["prompt"] == prompt  # the mention is not part of the prompt
        expected_input = photo.data if step == 0 else target.attachments[0].data
        assert decoded_inputs(submission.body) == [expected_input]
        results.append(result)
        target = result

    jobs = [await bot.services.generation.job_for_message(r.id) for r in results]
    assert [j.parent_job_id if j else "missing" for j in jobs] == [
        None,
        jobs[0].id if jobs[0] else "",
        jobs[1].id if jobs[1] else "",
    ]
    embed_fields = {f["name"]: f["value"] for f in results[2].embeds[0]["fields"]}
    assert str(results[1].id) in embed_fields["Edit of"]

    it = await world.discord.click(world.bob, results[2], f"flux:chain:{job_id_of(results[2])}")
    callback = await it.response()
    assert callback.data["flags"] & 64
    lines = callback.data["content"].splitlines()
    assert lines[0] == "**This image's history** (3 steps):"
    assert [line.split(" — ")[0] for line in lines[1:]] == [
        "1. give it a hat",
        "2. make it blue",
        "3. at night",
    ]


async def test_reply_with_an_extra_attachment_adds_it_as_a_reference(world: World) -> None:
    await world.start_bot()
    base, extra = image_file("base.png", (1, 2, 3)), image_file("style.png", (9, 8, 7))
    original = await world.discord.post_user_message(
        world.bob, world.channel, "", attachments=[base]
    )
    before = world.newest_message_id()
    await world.discord.post_user_message(
        world.alice,
        world.channel,
        "in this style",
        reply_to=original,
        mention_bot=True,
        attachments=[extra],
    )
    await world.result_after(before)
    assert decoded_inputs(world.bfl.submissions[0].body) == [base.data, extra.data]


# ---------------------------------------------------------------------- buttons
async def make_result(world: World, prompt: str = "a teapot") -> object:
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "flux flex", {"prompt": prompt, "steps": 12, "seed": 5}
    )
    return await world.result_after(before)


async def test_reroll_keeps_everything_but_the_seed(world: World) -> None:
    await world.start_bot()
    result = await make_result(world)
    before = world.newest_message_id()
    await world.discord.click(world.bob, result, f"flux:reroll:{job_id_of(result)}")
    await world.result_after(before)
    first, second = world.bfl.submissions
    assert {k: v for k, v in first.body.items() if k not in ("seed", "user")} == {
        k: v for k, v in second.body.items() if k not in ("seed", "user")
    }
    assert first.body["seed"] == 5 and second.body["seed"] != 5


async def test_edit_button_uses_the_result_as_reference_and_records_the_parent(
    world: World,
) -> None:
    bot = await world.start_bot()
    result = await make_result(world)
    job_id = job_id_of(result)
    it = await world.discord.click(world.bob, result, f"flux:edit:{job_id}")
    modal = await it.response()
    before = world.newest_message_id()
    await world.discord.submit_modal(
        world.bob,
        world.channel,
        modal.data["custom_id"],
        {"prompt": "add steam"},
        message_id=result,
    )
    edited = await world.result_after(before)
    submission = world.bfl.submissions[1]
    assert submission.endpoint == "flux-2-flex"
    assert decoded_inputs(submission.body) == [result.attachments[0].data]
    child = await bot.services.generation.job_for_message(edited.id)
    assert child is not None and child.parent_job_id == job_id and child.user_id == world.bob.id


async def test_remix_is_prefilled_and_applies_the_changes(world: World) -> None:
    await world.start_bot()
    result = await make_result(world, "a red teapot")
    it = await world.discord.click(world.alice, result, f"flux:remix:{job_id_of(result)}")
    modal = await it.response()
    prefilled = {
        c["components"][0]["custom_id"]: c["components"][0].get("value") or ""
        for c in modal.data["components"]
    }
    assert prefilled == {"prompt": "a red teapot", "variant": "flex", "size": "", "seed": "5"}
    before = world.newest_message_id()
    await world.discord.submit_modal(
        world.alice,
        world.channel,
        modal.data["custom_id"],
        {"prompt": "a green teapot", "variant": "klein-4b", "size": "512x512", "seed": "7"},
    )
    await world.result_after(before)
    body = world.bfl.submissions[1].body
    assert world.bfl.submissions[1].endpoint == "flux-2-klein-4b"
    assert (body["prompt"], body["width"], body["height"], body["seed"]) == (
        "a green teapot",
        512,
        512,
        7,
    )
    assert "steps" not in body  # klein has no steps: flex's options don't leak across


async def test_delete_is_refused_to_strangers_and_allowed_to_the_requester(world: World) -> None:
    await world.start_bot()
    result = await make_result(world)
    custom_id = f"flux:delete:{job_id_of(result)}"
    it = await world.discord.click(world.bob, result, custom_id)
    callback = await it.response()
    assert callback.data["content"] == (
        "Only the person who made this image or a moderator can delete it."
    )
    assert callback.data["flags"] & 64
    assert world.discord.message(result.id).deleted is False

    it = await world.discord.click(world.alice, result, custom_id)
    await it.response()
    assert world.discord.message(result.id).deleted is True
    it = await world.discord.invoke_slash(world.alice, world.channel, "history")
    listing = (await it.response()).data["content"]
    assert "a teapot — FLUX.2 [flex] · deleted" in listing  # no dead link to the message


async def test_a_moderator_may_delete_anyones_result(world: World) -> None:
    await world.start_bot()
    mods = world.discord.add_role(world.guild.id, "Mods", permissions=1 << 13)  # manage messages
    carol = world.discord.add_member(world.guild.id, "carol", roles=[mods.id])
    result = await make_result(world)
    it = await world.discord.click(carol, result, f"flux:delete:{job_id_of(result)}")
    await it.response()
    assert world.discord.message(result.id).deleted is True


async def test_buttons_keep_working_after_a_restart(world: World) -> None:
    first = await world.start_bot()
    result = await make_result(world)
    await world.stop_bot(first)
    await world.start_bot()
    before = world.newest_message_id()
    await world.discord.click(world.bob, result, f"flux:reroll:{job_id_of(result)}")
    await world.result_after(before)
    assert len(world.bfl.submissions) == 2


async def test_history_lists_recent_images_and_a_chain(world: World) -> None:
    await world.start_bot()
    result = await make_result(world, "first teapot")
    it = await world.discord.invoke_slash(world.alice, world.channel, "history")
    callback = await it.response()
    assert callback.data["flags"] & 64
    assert "first teapot" in callback.data["content"]
    link = f"https://discord.com/channels/{world.guild.id}/{world.channel.id}/{result.id}"
    it = await world.discord.invoke_slash(world.alice, world.channel, "history", {"result": link})
    callback = await it.response()
    assert callback.data["content"].startswith("**This image's history** (1 step):")


# ---------------------------------------------------------------------- refusals
def tiny_png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG header that claims a huge size: a decompression bomb's calling card."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("command", "options", "message"),
    [
        (
            "flux pro",
            {"prompt": "x", "width": 1000, "height": 1024},
            "The width must be a multiple of 16 (got 1000).",
        ),
        (
            "flux pro",
            {"prompt": "x", "width": 2048, "height": 4096},
            "2048×4096 is 8.00 MP; the limit is 4 MP.",
        ),
        ("flux pro", {"prompt": "x", "width": 1024}, "Give both a width and a height, or neither."),
        (
            "edit",
            {
                "prompt": "x",
                "variant": "klein-4b",
                **{
                    name: image_file(f"{name}.png", (n, n, n))
                    for n, name in enumerate(["image", "image2", "image3", "image4", "image5"])
                },
            },
            "FLUX.2 [klein] 4B accepts at most 4 reference images; you gave 5.",
        ),
        (
            "imagine",
            {"prompt": "x", "image": image_file("anim.gif", (1, 1, 1), "GIF")},
            "GIF images can't be used as references (FLUX.2 takes PNG, JPEG or WebP). "
            "Convert anim.gif to PNG and try again.",
        ),
        (
            "imagine",
            {"prompt": "x", "image": Upload("notes.txt", b"hello", "text/plain")},
            "notes.txt is not a PNG, JPEG or WebP image, so it can't be a reference.",
        ),
        (
            "imagine",
            {
                "prompt": "x",
                "image": Upload("bomb.png", tiny_png_claiming(30000, 30000), "image/png"),
            },
            "bomb.png has far too many pixels; references can be at most 40 MP.",
        ),
        (
            "imagine",
            {"prompt": "x", "image": Upload("big.png", tiny_png_claiming(8000, 8000), "image/png")},
            "big.png is 8000×8000 (61 MP); references can be at most 40 MP.",
        ),
        (
            "imagine",
            {"prompt": "x", "image": Upload("broken.png", b"\x89PNG\r\n\x1a\nnope", "image/png")},
            "broken.png is not a readable image.",
        ),
    ],
)
async def test_bad_input_is_refused_privately_and_changes_nothing(
    world: World, command: str, options: dict[str, object], message: str
) -> None:
    bot = await world.start_bot()
    it = await world.discord.invoke_slash(world.alice, world.channel, command, options)
    assert await world.refusal(it) == message
    assert world.bfl.submissions == []
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == 0
    assert [m for m in world.discord.messages(world.channel.id) if not m.ephemeral] == []


async def test_an_oversized_reference_is_refused_before_download(world: World) -> None:
    bot = await world.start_bot(max_reference_bytes=1000)
    big = Upload("big.png", png((5, 5, 5), (300, 300)) + b"\x00" * 2000, "image/png")
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "x", "image": big}
    )
    assert await world.refusal(it) == "big.png is 3 KB; references can be at most 1 KB."
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == 0


async def test_reroll_after_its_references_were_purged_is_refused_clearly(world: World) -> None:
    import time

    from bot.generation import REFERENCES_PURGED_TEXT

    bot = await world.start_bot()
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice,
        world.channel,
        "edit",
        {"prompt": "sepia", "image": image_file("old.png", (90, 60, 30))},
    )
    result = await world.result_after(before)
    job_id = job_id_of(result)
    await bot.services.engine.wait_closed([job_id], 5)
    assert await bot.services.engine.store.purge_inputs(time.time() + 1) == 1

    it = await world.discord.click(world.bob, result, f"flux:reroll:{job_id}")
    assert await world.refusal(it) == REFERENCES_PURGED_TEXT
    assert len(world.bfl.submissions) == 1  # nothing new was sent


async def test_a_queued_request_can_be_cancelled_by_its_requester_only(world: World) -> None:
    world.bfl.latency = 3.0
    bot = await world.start_bot(provider_max_active=1)
    await make_result_started(world, "first, keeps the only slot")
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "flux klein-4b", {"prompt": "second, waits"}
    )
    waiting = await world.discord.wait_for_message(
        lambda m: any(c.startswith("flux:cancel:") for c in m.custom_ids),
        channel_id=world.channel.id,
        after=before,
        timeout=5,
    )
    assert "position 1 in line" in waiting.content
    [custom_id] = [c for c in waiting.custom_ids if c.startswith("flux:cancel:")]

    it = await world.discord.click(world.bob, waiting, custom_id)
    assert (await it.response()).data["content"] == (
        "Only the person who asked for this image or a moderator can cancel it."
    )

    await world.discord.click(world.alice, waiting, custom_id)
    cancelled = await world.discord.wait_for_message(
        lambda m: m.id == waiting.id and "Cancelled" in m.content,
        channel_id=world.channel.id,
        timeout=5,
    )
    assert cancelled.content == (
        f"🚫 <@{world.alice.id}> Cancelled before it started. Nothing was charged."
    )
    assert cancelled.components == []
    job_id = custom_id.removeprefix("flux:cancel:")
    assert (
        await bot.services.db.fetch_value("SELECT status FROM ledger WHERE job_id = ?", (job_id,))
        == "refunded"
    )
    assert [s.body["prompt"] for s in world.bfl.submissions] == ["first, keeps the only slot"]


async def make_result_started(world: World, prompt: str) -> None:
    """Ask for an image and wait until the provider has it (it is then running)."""
    count = len(world.bfl.submissions)
    await world.discord.invoke_slash(
        world.alice, world.channel, "flux klein-4b", {"prompt": prompt}
    )
    await world.discord.wait_for(lambda: len(world.bfl.submissions) > count, timeout=5)


async def test_unexpected_failures_get_a_private_apology_not_a_dead_interaction(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.errors import INTERNAL_ERROR_TEXT

    bot = await world.start_bot()
    result = await make_result(world)

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(bot.services.generation, "prepare", broken)
    it = await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "x"})
    message = await it.wait_for(
        lambda: any(m.content == INTERNAL_ERROR_TEXT for m in [it.original, *it.followups] if m)
    )
    assert message

    monkeypatch.setattr(bot.services.generation, "reroll_draft", broken)
    it = await world.discord.click(world.bob, result, f"flux:reroll:{job_id_of(result)}")
    assert await world.refusal(it) == INTERNAL_ERROR_TEXT
    assert len(world.bfl.submissions) == 1
