"""FAILOVER=aiml end to end, through the real discord.py client: BFL (stand-in) cannot take a
request, the AI/ML API (stand-in) makes it, the member is told, the ledger and /usage-admin
say which provider made it; and the cases where it must not happen."""

from __future__ import annotations

import socket

import pytest

from bot.errors import InsufficientCredits, SubmitOutcomeUnknown
from bot.jobs.engine import MODERATED_STRIKE_MESSAGE
from bot.ledger import Metric, Period, Scope
from tests.e2e.conftest import World
from tests.e2e.test_experience import job_id_of
from tests.e2e.test_studio import open_studio
from tests.e2e.test_usage import add_moderator, with_file
from tests.fakes.bfl_server import Outcome, SubmitFault

NOTE = "Made by the backup provider (AI/ML API) because BFL's account is out of credits."


def fields_of(message: object) -> dict[str, str]:
    embeds = getattr(message, "embeds")  # noqa: B009 - the stand-in's message
    return {f["name"]: f["value"] for f in embeds[0]["fields"]}


async def test_bfl_out_of_credits_the_aiml_api_makes_it_and_everyone_can_tell(
    world_with_aiml: World,
) -> None:
    world = world_with_aiml
    assert world.aiml is not None
    world.aiml.usd_spent = True
    world.bfl.credits = 0  # BFL answers 402
    bot = await world.start_bot(failover="aiml")

    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "flux pro", {"prompt": "a red kite", "seed": 5}
    )
    message = await world.result_after(before)

    [refused] = world.bfl.submissions
    assert refused.status == 402
    [request] = world.aiml.requests
    assert request.body["model"] == "blackforestlabs/flux-2-pro"
    assert (request.body["prompt"], request.body["seed"]) == ("a red kite", 5)
    assert [a.data for a in message.attachments] == [world.aiml.image_bytes(0)]
    shown = fields_of(message)
    assert shown["Backup provider"] == NOTE
    assert shown["Cost"] == "3.15 credits"  # what the AI/ML API reported
    job_id = job_id_of(message)
    [job] = await bot.services.engine.wait_closed([job_id], 5)
    db = bot.services.db
    row = await db.fetch_one("SELECT * FROM ledger WHERE job_id = ?", (job_id,))
    assert row is not None
    assert (row["status"], row["variant"], row["credits_mc"]) == ("charged", "pro-aiml", 3150)
    assert (job.provider, job.failover_from) == ("aiml", "pro")

    # /usage-admin names the provider that made the images.
    mod = add_moderator(world)
    report = await with_file(
        await world.discord.invoke_slash(mod, world.channel, "usage-admin server")
    )
    assert "FLUX.2 [pro], AI/ML API: 1 image · 3.15 credits" in report.content.splitlines()

    # After a restart, with BFL's credits back, Reroll asks BFL for pro again.
    await world.stop_bot(bot)
    world.bfl.credits = 10_000
    await world.start_bot(failover="aiml")
    before = world.newest_message_id()
    await world.discord.click(world.alice, message, f"flux:reroll:{job_id}")
    again = await world.result_after(before)
    assert [s.endpoint for s in world.bfl.submissions] == ["flux-2-pro", "flux-2-pro"]
    assert world.bfl.submissions[1].status == 200
    assert len(world.aiml.requests) == 1
    assert "Backup provider" not in fields_of(again)


async def test_bfl_unreachable_the_aiml_api_makes_it(world_with_aiml: World) -> None:
    world = world_with_aiml
    assert world.aiml is not None
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{closed.getsockname()[1]}"
        await world.start_bot(failover="aiml", bfl_api_base=base)
        before = world.newest_message_id()
        await world.discord.invoke_slash(world.alice, world.channel, "flux pro", {"prompt": "x"})
        message = await world.result_after(before)
    assert len(world.aiml.requests) == 1
    assert fields_of(message)["Backup provider"] == (
        "Made by the backup provider (AI/ML API) because BFL could not be reached or was "
        "overloaded."
    )


@pytest.mark.parametrize("case", ["moderated", "unknown outcome", "failover off"])
async def test_no_failover_the_usual_failure_is_shown_and_refunded(
    case: str, world_with_aiml: World
) -> None:
    world = world_with_aiml
    assert world.aiml is not None
    if case == "moderated":
        world.bfl.script("x", Outcome(final_status="Request Moderated"))
        text = f"🛡️ <@{world.alice.id}> {MODERATED_STRIKE_MESSAGE}"  # a strike: never stepped around
    elif case == "unknown outcome":  # BFL read the body, made the task, then answered 500
        world.bfl.submit_faults = [SubmitFault(500, create_task=True)]
        text = f"❌ <@{world.alice.id}> {SubmitOutcomeUnknown.user_message}"
    else:
        world.bfl.credits = 0
        text = f"❌ <@{world.alice.id}> {InsufficientCredits.user_message}"
    bot = await world.start_bot(failover="off" if case == "failover off" else "aiml")

    await world.discord.invoke_slash(world.alice, world.channel, "flux pro", {"prompt": "x"})
    message = await world.discord.wait_for_message(
        lambda m: m.content == text, channel_id=world.channel.id, timeout=10
    )
    assert message.attachments == []
    assert world.aiml.requests == []
    row = await bot.services.db.fetch_one("SELECT status, variant FROM ledger")
    assert row is not None and (row["status"], row["variant"]) == ("refunded", "pro")


async def test_a_backup_estimate_over_the_role_allowance_is_refused_and_nothing_charged(
    world_with_aiml: World,
) -> None:
    world = world_with_aiml
    assert world.aiml is not None
    world.bfl.credits = 0
    role = world.discord.add_role(world.guild.id, "limited")
    carol = world.discord.add_member(world.guild.id, "carol", roles=[role])
    bot = await world.start_bot(failover="aiml")
    # 3.1 credits a day: BFL's pro (3) fits, the AI/ML API's (3.15) does not.
    await bot.services.ledger.admin.set_limit(
        world.guild.id, 1, Scope.ROLE, role.id, Period.DAY, Metric.CREDITS, 3100
    )

    await world.discord.invoke_slash(carol, world.channel, "flux pro", {"prompt": "x"})
    message = await world.discord.wait_for_message(
        lambda m: m.content.startswith(f"❌ <@{carol.id}>"), channel_id=world.channel.id, timeout=10
    )
    assert message.content.startswith(
        f"❌ <@{carol.id}> BFL's account is out of credits, and the backup provider (AI/ML API) "
        "would need 0.15 more credits than were held for this request. This request would go "
        f"over the daily credit allowance for your role <@&{role.id}> (3.1 credits a day)."
    )
    assert message.content.endswith("Nothing was charged.")
    assert world.aiml.requests == []
    row = await bot.services.db.fetch_one("SELECT status, credits_mc FROM ledger")
    assert row is not None and (row["status"], row["credits_mc"]) == ("refunded", 0)


async def test_a_backup_estimate_over_a_studio_budget_is_refused_and_nothing_charged(
    world_with_aiml: World,
) -> None:
    world = world_with_aiml
    assert world.aiml is not None
    world.bfl.credits = 0
    bot = await world.start_bot(failover="aiml")
    thread, _ = await open_studio(world, world.alice, "pixel art", budget=3.1)

    await world.discord.invoke_slash(world.bob, thread, "imagine", {"prompt": "a castle"})
    message = await world.discord.wait_for_message(
        lambda m: m.content.startswith(f"❌ <@{world.bob.id}>"), channel_id=thread.id, timeout=10
    )
    assert message.content.startswith(
        f"❌ <@{world.bob.id}> BFL's account is out of credits, and the backup provider (AI/ML "
        "API) would need 0.15 more credits than were held for this request. This image would "
        "go over this studio's budget of 3.1 credits: "
    )
    assert world.aiml.requests == []
    row = await bot.services.db.fetch_one("SELECT status, credits_mc FROM ledger")
    assert row is not None and (row["status"], row["credits_mc"]) == ("refunded", 0)
    assert await bot.services.studios.spent_mc(thread.id) == 0
