"""/prefer end to end: the real bot on the Discord stand-in, generating through the BFL one. A
member's defaults reach the provider's request when a command leaves an option out; the
server's rules win with a note under the result; every answer is private."""

from __future__ import annotations

from typing import Any

from bot.members import MemberPreferences
from cogs.preferences import HEADER
from tests.e2e.conftest import World
from tests.e2e.test_approvals import button, enable_approvals, review_message, setup_world
from tests.fakes.discord.models import InteractionHandle, Message


def job_id_of(message: Message) -> str:
    return str(message.embeds[0]["footer"]["text"]).removeprefix("Job ")


def fields_of(message: Message) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message.embeds[0]["fields"]}


async def prefer(world: World, subcommand: str, options: dict[str, Any]) -> str:
    it = await world.discord.invoke_slash(
        world.alice, world.channel, f"prefer {subcommand}", options
    )
    return await private_answer(it)


async def private_answer(it: InteractionHandle) -> str:
    callback = await it.response()
    assert callback.type == 4 and callback.data.get("flags", 0) & 64, "answers must be private"
    return str(callback.data["content"])


async def imagine(world: World, prompt: str) -> Message:
    before = world.newest_message_id()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": prompt})
    return await world.result_after(before)


async def test_imagine_without_options_uses_the_members_defaults_and_reroll_keeps_the_prompt(
    world: World,
) -> None:
    await world.start_bot()
    saved = await prefer(
        world,
        "set",
        {"variant": "max", "prompt_suffix": "cinematic lighting", "prompt_upsampling": False},
    )
    assert saved.startswith("Saved.\n" + HEADER)

    result = await imagine(world, "a red fox in the snow")

    [submission] = world.bfl.submissions
    assert submission.endpoint == "flux-2-max"  # not the server's default (pro)
    assert submission.body["prompt"] == "a red fox in the snow, cinematic lighting"
    assert submission.body["disable_pup"] is True
    assert result.embeds[0]["description"] == "a red fox in the snow, cinematic lighting"
    assert "Note" not in fields_of(result)  # nothing gave way

    before = world.newest_message_id()
    await world.discord.click(world.alice, result, f"flux:reroll:{job_id_of(result)}")
    await world.result_after(before)
    rerolled = world.bfl.submissions[1]
    assert rerolled.body["prompt"] == "a red fox in the snow, cinematic lighting"  # not twice
    assert rerolled.endpoint == "flux-2-max" and rerolled.body["disable_pup"] is True


async def test_a_server_that_does_not_offer_the_default_model_wins_and_the_result_says_so(
    world: World,
) -> None:
    bot = await world.start_bot()
    await bot.services.server_settings.update(
        world.guild.id, 1, "allowed", allowed_variants=frozenset({"pro", "klein-4b"})
    )
    await prefer(world, "set", {"variant": "flex", "size": "landscape_4_3"})

    result = await imagine(world, "a lighthouse")

    [submission] = world.bfl.submissions
    assert submission.endpoint == "flux-2-pro"  # the server's default
    assert (submission.body["width"], submission.body["height"]) == (1152, 864)  # still applies
    assert (
        fields_of(result)["Note"] == "Your default model flex isn't offered here, so this used pro."
    )
    job = await bot.services.generation.job(job_id_of(result))
    assert job is not None and job.params.notes == (fields_of(result)["Note"],)


async def test_show_set_and_clear_answer_privately_with_the_defaults_in_force(
    world: World,
) -> None:
    bot = await world.start_bot()
    assert await prefer(world, "show", {}) == "\n".join(
        [
            HEADER,
            "• Model: not set (the server's default)",
            "• Size: not set (the model's standard size)",
            "• Prompt suffix: none",
            "• Prompt upsampling: not set (the model's default)",
            "• Private results: off",
        ]
    )
    await prefer(world, "set", {"variant": "max", "size": "1024x768", "private": True})
    await prefer(world, "set", {"prompt_suffix": "*bold* <@123456789012345678>"})
    shown = await prefer(world, "show", {})
    assert shown.splitlines()[1:] == [
        "• Model: max",
        "• Size: 1024×768",
        # The member's own text, shown inert.
        "• Prompt suffix: “\\*bold\\* <@\u200b123456789012345678>”",
        "• Prompt upsampling: not set (the model's default)",
        "• Private results: on",
    ]

    cleared = await prefer(world, "clear", {"field": "size"})
    assert cleared.startswith("Cleared your default size.\n")
    assert "• Size: not set (the model's standard size)" in cleared
    assert (await bot.services.preferences.get(world.alice.id)).variant == "max"
    await prefer(world, "clear", {"field": "all"})
    assert await bot.services.preferences.get(world.alice.id) == MemberPreferences(world.alice.id)


async def test_an_over_long_suffix_is_refused_privately_and_nothing_is_stored(
    world: World,
) -> None:
    bot = await world.start_bot()
    await prefer(world, "set", {"variant": "klein-4b"})
    it = await world.discord.invoke_slash(
        world.alice,
        world.channel,
        "prefer set",
        {"prompt_suffix": "golden hour " * 30, "variant": "max"},
    )
    assert await world.refusal(it) == (
        "The prompt suffix is 359 characters; the most is 300. Nothing was changed."
    )
    assert await bot.services.preferences.get(world.alice.id) == MemberPreferences(
        world.alice.id, variant="klein-4b"
    )
    await imagine(world, "a cat")
    assert world.bfl.submissions[0].body["prompt"] == "a cat"
    assert world.bfl.submissions[0].endpoint == "flux-2-klein-4b"


async def test_a_request_held_for_review_keeps_the_defaults_and_the_note_across_a_restart(
    world: World,
) -> None:
    review, moderator, trusted = setup_world(world)
    bot = await world.start_bot()
    await enable_approvals(bot, world, review, trusted)
    await bot.services.server_settings.update(
        world.guild.id, 1, "allowed", allowed_variants=frozenset({"pro", "klein-4b"})
    )
    await prefer(world, "set", {"variant": "max", "prompt_suffix": "at dusk"})
    before = world.newest_message_id()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "a barn"})
    queued = await review_message(world, review)
    assert queued.embeds[0]["description"] == "a barn, at dusk"  # moderators see what is sent

    await world.stop_bot(bot)
    await world.start_bot()
    await world.discord.click(moderator, queued, button(queued, "approve"))
    result = await world.result_after(before)

    [submission] = world.bfl.submissions
    assert submission.endpoint == "flux-2-pro" and submission.body["prompt"] == "a barn, at dusk"
    note = "Your default model max isn't offered here, so this used pro."
    assert fields_of(result)["Note"] == note
