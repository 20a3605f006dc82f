"""The AI/ML API's FLUX.2 models behind the same commands, end to end."""

from __future__ import annotations

import base64

from bot.jobs.models import JobState
from tests.e2e.conftest import AIML_KEY, World
from tests.e2e.test_experience import image_file, job_id_of


async def test_dev_and_lora_commands_exist_only_with_an_aiml_key(world: World) -> None:
    await world.start_bot()
    flux = world.discord.command("flux", guild_id=world.guild.id)
    assert flux is not None
    assert {sub["name"] for sub in flux["options"]} == {
        "pro",
        "max",
        "flex",
        "klein-4b",
        "klein-9b",
    }


async def test_flux_dev_with_four_images_posts_them_together(world_with_aiml: World) -> None:
    world = world_with_aiml
    assert world.aiml is not None
    bot = await world.start_bot()
    flux = world.discord.command("flux", guild_id=world.guild.id)
    assert flux is not None
    dev = next(sub for sub in flux["options"] if sub["name"] == "dev")
    assert {"guidance", "steps", "acceleration", "num_images"} <= {
        o["name"] for o in dev["options"]
    }

    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice,
        world.channel,
        "flux dev",
        {"prompt": "four foxes", "num_images": 4, "steps": 20, "seed": 11, "size": "square_1mp"},
    )
    message = await world.result_after(before)
    [request] = world.aiml.requests
    assert request.headers["authorization"] == f"Bearer {AIML_KEY}"
    assert request.body["model"] == "blackforestlabs/flux-2"
    assert request.body["num_images"] == 4 and request.body["num_inference_steps"] == 20
    assert request.body["image_size"] == {"width": 1024, "height": 1024}
    assert [a.data for a in message.attachments] == [world.aiml.image_bytes(0, n) for n in range(4)]
    assert len(message.embeds) == 4
    job_id = job_id_of(message)
    assert {f"flux:edit:{job_id}:{n}" for n in range(1, 5)} <= set(message.custom_ids)
    [job] = await bot.services.engine.wait_closed([job_id], 5)
    assert job.state is JobState.DELIVERED and job.cost is not None

    # "Edit 3" edits exactly the third image, with the -edit model.
    it = await world.discord.click(world.bob, message, f"flux:edit:{job_id}:3")
    modal = await it.response()
    before = world.newest_message_id()
    await world.discord.submit_modal(
        world.bob,
        world.channel,
        modal.data["custom_id"],
        {"prompt": "only this one, in red"},
        message_id=message,
    )
    await world.result_after(before)
    edit = world.aiml.requests[1]
    assert edit.body["model"] == "blackforestlabs/flux-2-edit"
    [url] = edit.body["image_urls"]
    assert base64.b64decode(url.split(",", 1)[1]) == message.attachments[2].data


async def test_lora_paths_are_validated_and_sent(world_with_aiml: World) -> None:
    world = world_with_aiml
    assert world.aiml is not None
    await world.start_bot()
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "flux lora", {"prompt": "x", "lora_1": "not a path"}
    )
    assert await world.refusal(it) == (
        "lora 1 must be an https URL or a Hugging Face repo (owner/repo)."
    )
    # The help promises https, and the API fetches the URL: plain http and private hosts fail.
    for path, reason in [
        ("http://huggingface.co/a/b.safetensors", "be an https URL or a Hugging Face repo"),
        ("https://10.0.0.7/lora.safetensors", "name a public host (like huggingface.co)"),
    ]:
        it = await world.discord.invoke_slash(
            world.alice, world.channel, "flux lora", {"prompt": "x", "lora_1": path}
        )
        assert (await world.refusal(it)).startswith(f"lora 1 must {reason}")
    assert world.aiml.requests == []

    before = world.newest_message_id()
    photo = image_file("me.png", (200, 100, 50))
    await world.discord.invoke_slash(
        world.alice,
        world.channel,
        "flux lora",
        {
            "prompt": "as a watercolour",
            "lora_1": "someone/watercolor-lora",
            "lora_1_scale": 1.5,
            "image": photo,
        },
    )
    await world.result_after(before)
    [request] = world.aiml.requests
    assert request.body["model"] == "blackforestlabs/flux-2-lora-edit"
    assert request.body["loras"] == [{"path": "someone/watercolor-lora", "scale": 1.5}]
    assert base64.b64decode(request.body["image_urls"][0].split(",", 1)[1]) == photo.data


async def test_an_aiml_failure_is_shown_and_refunded(world_with_aiml: World) -> None:
    world = world_with_aiml
    assert world.aiml is not None
    from tests.fakes.aiml_server import Fault

    world.aiml.faults.append(Fault(status=403))
    bot = await world.start_bot()
    await world.discord.invoke_slash(world.alice, world.channel, "flux dev", {"prompt": "x"})
    message = await world.discord.wait_for_message(
        lambda m: m.content.startswith("❌"), channel_id=world.channel.id, timeout=10
    )
    assert "out of credits" in message.content
    assert await bot.services.db.fetch_value("SELECT status FROM ledger") == "refunded"


async def test_without_a_bfl_key_pro_is_served_by_the_aiml_api(world_with_aiml: World) -> None:
    world = world_with_aiml
    assert world.aiml is not None
    await world.start_bot(bfl_api_key=None)
    flux = world.discord.command("flux", guild_id=world.guild.id)
    assert flux is not None
    assert {sub["name"] for sub in flux["options"]} == {"pro", "dev", "lora"}
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a quiet harbour"}
    )
    message = await world.result_after(before)
    # Without BFL there is no outpainting: Hi-res is offered, zoom out and pan are not.
    assert any(c.startswith("flux:hires:") for c in message.custom_ids)
    assert not any(c.startswith("flux:out:") for c in message.custom_ids)
    [request] = world.aiml.requests
    assert request.body["model"] == "blackforestlabs/flux-2-pro"
    assert request.body["safety_tolerance"] == "2"  # a string, as the AI/ML API wants
    assert world.bfl.submissions == []
    assert message.attachments[0].data == world.aiml.image_bytes(0, 0)


async def test_imagine_and_edit_use_dev_when_it_is_the_default(world_with_aiml: World) -> None:
    world = world_with_aiml
    assert world.aiml is not None
    await world.start_bot(default_variant="dev")
    before = world.newest_message_id()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "dunes"})
    await world.result_after(before)
    before = world.newest_message_id()
    photo = image_file("dune.png", (230, 200, 150))
    await world.discord.invoke_slash(
        world.alice, world.channel, "edit", {"prompt": "at night", "image": photo}
    )
    await world.result_after(before)
    assert [r.body["model"] for r in world.aiml.requests] == [
        "blackforestlabs/flux-2",
        "blackforestlabs/flux-2-edit",
    ]
    assert world.bfl.submissions == []
