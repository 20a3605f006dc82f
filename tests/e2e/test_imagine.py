"""/imagine end to end: the real bot on the Discord stand-in, generating through the BFL one."""

from __future__ import annotations

from bot.jobs.models import JobState
from tests.e2e.conftest import World
from tests.fakes.bfl_server import Outcome


async def test_imagine_posts_the_generated_image_with_its_parameters(world: World) -> None:
    bot = await world.start_bot()
    assert world.discord.command("imagine", guild_id=world.guild.id) is not None
    before = world.newest_message_id()

    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a red fox in the snow"}
    )
    message = await world.result_after(before)

    [submission] = world.bfl.submissions
    assert submission.endpoint == "flux-2-pro"
    assert submission.body["prompt"] == "a red fox in the snow"
    [attachment] = message.attachments
    assert attachment.data == world.bfl.image_bytes(submission.task_id or "")
    assert attachment.filename.endswith(".jpg")
    [embed] = message.embeds
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert embed["description"] == "a red fox in the snow"
    assert fields["Model"] == "FLUX.2 [pro]"
    assert fields["Seed"] == str(submission.body["seed"])
    assert fields["Size"] == "32×32"
    assert fields["Requested by"] == f"<@{world.alice.id}>"
    assert embed["image"]["url"] == attachment.url  # the embed shows the attached file
    assert message.content == f"<@{world.alice.id}>"
    job_id = fields_job_id(embed)
    assert set(message.custom_ids) == {
        f"flux:{action}:{job_id}" for action in ("reroll", "edit", "remix", "chain", "delete")
    } | {  # the result tools' rows (tests/e2e/test_result_tools.py)
        f"flux:out:{move}:{job_id}"
        for move in ("zoom15", "zoom2", "square", "left", "right", "up", "down")
    } | {f"flux:hires:{job_id}", f"flux:fav:{job_id}", f"flux:share:{job_id}"}
    # The result is the interaction's own answer, edited through its token: no channel post.
    assert it.original is not None and it.original.id == message.id
    assert not [
        r for r in world.discord.requests if r.method == "POST" and r.path.startswith("/channels/")
    ]
    job_id = await bot.services.db.fetch_value("SELECT id FROM jobs")
    [job] = await bot.services.engine.wait_closed([job_id], 5)
    assert job.state is JobState.DELIVERED and job.result_message_id == message.id


def fields_job_id(embed: dict[str, object]) -> str:
    footer = embed["footer"]
    assert isinstance(footer, dict)
    return str(footer["text"]).removeprefix("Job ")


async def test_prompt_text_can_never_ping_everyone_or_roles(world: World) -> None:
    await world.start_bot()
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "@everyone look <@&123> @here"}
    )
    message = await world.result_after(before)
    assert message.mentions == [world.alice.id]
    assert message.mention_roles == []
    for status in world.discord.messages(world.channel.id, include_ephemeral=False):
        assert status.mention_roles == []
        assert status.allowed_mentions is not None
        assert "everyone" not in status.allowed_mentions.get("parse", [])


async def test_a_blank_prompt_is_refused_privately_and_nothing_is_created(world: World) -> None:
    bot = await world.start_bot()
    it = await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "   "})
    assert await world.refusal(it) == "Please give a prompt describing the image."
    assert world.bfl.submissions == []
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == 0
    assert [m for m in world.discord.messages(world.channel.id) if not m.ephemeral] == []


async def test_moderated_request_shows_a_clear_message(world: World) -> None:
    world.bfl.script("something forbidden", Outcome(final_status="Request Moderated"))
    await world.start_bot()
    await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "something forbidden"}
    )
    message = await world.discord.wait_for_message(
        lambda m: "safety filter" in m.content, channel_id=world.channel.id, timeout=10
    )
    assert message.content == (
        f"🛡️ <@{world.alice.id}> The image service's safety filter blocked this request, so no "
        "image was made. You were not charged, but it counts as a strike on this server, like "
        "a banned term."
    )
    assert message.attachments == []


async def test_a_job_running_during_a_restart_is_delivered_once_by_the_new_process(
    world: World,
) -> None:
    world.bfl.latency = 1.0
    first = await world.start_bot()
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "survives restarts"}
    )
    await world.discord.wait_for(lambda: len(world.bfl.submissions) == 1, timeout=5)
    await world.stop_bot(first)  # the task is still generating at the provider

    await world.start_bot()
    message = await world.result_after(before)
    task_id = world.bfl.submissions[0].task_id or ""
    assert message.attachments[0].data == world.bfl.image_bytes(task_id)
    assert len(world.bfl.submissions) == 1  # polled again, never resubmitted
    results = [m for m in world.discord.messages(world.channel.id) if m.attachments]
    assert len(results) == 1


async def test_a_running_job_is_shown_generating_once_not_at_every_status(world: World) -> None:
    """The provider's status text changes twice during this job ("Pending", "Generating"),
    and the bot polls it many times: the member sees "generating" put up once, then the
    result. Each edit would be a request against the channel's limits."""
    world.bfl.latency = 2.0
    await world.start_bot()
    before = world.newest_message_id()
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a slow sunrise"}
    )
    message = await world.result_after(before, within=15)
    assert it.original is not None and it.original.id == message.id
    versions = [*message.history, {"content": message.content}]
    generating = [v for v in versions if "Generating with" in str(v.get("content"))]
    assert len(generating) == 1, [v.get("content") for v in versions]
    assert world.bfl.tasks and all(t.polls >= 3 for t in world.bfl.tasks.values())


async def test_a_fast_result_replaces_the_queued_answer_without_an_edit_between(
    world: World,
) -> None:
    """Bob waits in line while Alice's image (another model) is made, then his own takes
    0.2 s: his message goes from "Queued" straight to the result, with no "generating" edit
    in between."""
    world.bfl.latency = 0.2
    world.bfl.script("first", Outcome(latency=2.5))
    await world.start_bot(provider_max_active=1)
    await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "first", "variant": "klein-4b"}
    )
    await world.discord.wait_for(lambda: world.bfl.submissions)
    it = await world.discord.invoke_slash(world.bob, world.channel, "imagine", {"prompt": "next"})
    # In line for over a second: a "generating" edit would go out the moment his image starts
    # (progress edits are spaced 1 s apart), and it is the grace that saves it.
    message = await world.discord.wait_for_message(
        lambda m: m.id == it.original_id and bool(m.attachments), timeout=10
    )
    versions = [str(v.get("content")) for v in message.history]
    assert versions and all("Queued" in v for v in versions), versions
    assert [s.body["prompt"] for s in world.bfl.submissions] == ["first", "next"]
