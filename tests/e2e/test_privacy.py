"""/privacy export and /privacy delete, and a server the bot leaves, end to end: the real bot
on the Discord and BFL stand-ins."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bot.generation import PROMPT_REMOVED_TEXT
from bot.privacy.batches import PROMPT_REMOVED
from bot.privacy.retention import DAY, PurgeReport, Retention
from cogs.client import FluxcordBot
from cogs.privacy import CANCELLED_TEXT, CONFIRM_TEXT
from cogs.render import PROMPT_REMOVED_LABEL
from cogs.results import EARLIER_STEPS_TEXT, UNKNOWN_JOB_TEXT
from tests.e2e.conftest import World
from tests.e2e.test_usage import ask, make_image, with_file
from tests.fakes.discord_server import Message, User

INTERNALS = (
    "webhook_secret",
    "interaction_token",
    "polling_url",
    "owner",
    "provider_key",
    "webhook_payload",
    "claim_seq",
    "slot",
)


async def export(world: World, who: User, where: Any = None) -> tuple[Message, dict[str, Any]]:
    it = await world.discord.invoke_slash(who, where or world.channel, "privacy export")
    message = await with_file(it)
    (attachment,) = message.attachments
    assert attachment.filename.endswith(".json")
    return message, json.loads(attachment.data)


async def job_id(bot: FluxcordBot, prompt: str) -> str:
    value = await bot.services.db.fetch_value("SELECT id FROM jobs WHERE prompt = ?", (prompt,))
    assert value is not None
    return str(value)


async def rows(bot: FluxcordBot, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await bot.services.db.fetch_all(sql, params)]


async def confirmation(world: World, who: User) -> Message:
    """The private question /privacy delete asks, with its buttons."""
    it = await world.discord.invoke_slash(who, world.channel, "privacy delete")
    callback = await it.response()
    assert callback.type == 4 and callback.data["flags"] & 64
    assert callback.data["content"] == CONFIRM_TEXT
    assert it.original is not None
    return it.original


def button(message: Message, answer: str) -> str:
    return next(c for c in message.custom_ids if c.startswith(f"flux:privacy:{answer}:"))


# --------------------------------------------------------------------------- export
async def test_export_sends_the_member_only_their_own_data_as_a_private_json_file(
    world: World,
) -> None:
    await world.start_bot()
    await make_image(world, world.alice, "a lighthouse at dawn")
    await make_image(world, world.bob, "bob's own secret")

    message, data = await export(world, world.alice)

    assert message.ephemeral
    assert message.content.startswith("Here is everything the bot stores about you")
    assert data["user_id"] == world.alice.id and data["omitted"] == {}
    (job,) = data["jobs"]
    assert job["prompt"] == "a lighthouse at dawn" and job["state"] == "delivered"
    assert job["variant"] == "pro" and job["guild_id"] == world.guild.id
    assert job["created_at"].endswith("+00:00")  # readable UTC times
    assert not set(INTERNALS) & set(job)
    (charge,) = data["ledger"]
    assert charge["job_id"] == job["id"] and charge["charged_mc"] == 3000
    assert [e["action"] for e in data["audit_log"]] == ["generate"]
    assert "bob's own secret" not in message.attachments[0].data.decode()


async def test_export_works_in_direct_messages_and_stays_under_the_size_it_is_given(
    world: World,
) -> None:
    bot = await world.start_bot(dev_guild_id=None)  # global commands: offered in DMs
    for n in range(3):
        await make_image(world, world.alice, f"picture number {n}")
    bot.services.privacy.members.max_bytes = 4000  # stands for Discord's 10 MiB
    alice_dm = world.discord.open_dm(world.alice)

    message, data = await export(world, world.alice, alice_dm)

    assert len(message.attachments[0].data) <= 4000
    kept = [job["prompt"] for job in data["jobs"]]
    assert kept and kept == ["picture number 2", "picture number 1"][: len(kept)]  # newest first
    assert data["omitted"]["jobs"] == 3 - len(kept)
    assert data["omitted"]["ledger"] == 3  # the budget was spent on the jobs
    assert "oldest" in message.content and "left out" in message.content


# --------------------------------------------------------------------------- delete
async def test_delete_erases_prompts_once_confirmed_keeps_the_accounts_and_is_audited(
    world: World,
) -> None:
    bot = await world.start_bot()
    result = await make_image(world, world.alice, "my private idea")
    await make_image(world, world.bob, "bob keeps this")
    alice_job = await job_id(bot, "my private idea")
    usage_before = await ask(world, world.alice, "usage")
    accounts_sql = (
        "SELECT guild_id, user_id, sum(credits_mc), sum(images) FROM ledger"
        " GROUP BY guild_id, user_id ORDER BY user_id"
    )
    totals_sql = "SELECT * FROM usage_totals ORDER BY user_id, period"
    accounts, totals = await rows(bot, accounts_sql), await rows(bot, totals_sql)

    confirm = await confirmation(world, world.alice)
    assert await job_id(bot, "my private idea") == alice_job  # nothing yet
    click = await world.discord.click(world.alice, confirm, button(confirm, "erase"))
    done = await click.wait_for(lambda: confirm.content.startswith("Erased") or None)
    assert done
    assert "the prompts of 1 image request" in confirm.content
    assert not confirm.custom_ids  # the buttons are gone

    # Gone from the job (both copies) and from the log entry that quoted it...
    ((prompt, params),) = await rows(
        bot, "SELECT prompt, params FROM jobs WHERE id = ?", (alice_job,)
    )
    assert prompt == "" and json.loads(params)["prompt"] == ""
    dump = json.dumps(await rows(bot, "SELECT * FROM audit_log"))
    assert "my private idea" not in dump and "bob keeps this" in dump
    assert await job_id(bot, "bob keeps this")
    # ... the accounts are untouched, and the erasure is on record, with counts only.
    assert await rows(bot, accounts_sql) == accounts
    assert await rows(bot, totals_sql) == totals
    assert await ask(world, world.alice, "usage") == usage_before
    (entry,) = await rows(
        bot, "SELECT actor_id, target_id, detail FROM audit_log WHERE action = 'privacy delete'"
    )
    assert entry[:2] == (world.alice.id, world.alice.id) and entry[2].startswith("prompts: 1,")

    # Old results degrade with a clear word instead of acting on an empty prompt.
    reroll = await world.discord.click(world.alice, result, f"flux:reroll:{alice_job}")
    assert await world.refusal(reroll) == PROMPT_REMOVED_TEXT
    history = await ask(world, world.alice, "history")
    assert PROMPT_REMOVED_LABEL in history and "my private idea" not in history
    assert len(world.bfl.submissions) == 2
    _, data = await export(world, world.alice)
    assert data["jobs"][0]["prompt"] is None and data["jobs"][0]["prompt_removed_at"]
    assert {e["detail"] for e in data["audit_log"] if e["action"] == "generate"} == {PROMPT_REMOVED}


async def test_cancelling_the_confirmation_erases_nothing(world: World) -> None:
    bot = await world.start_bot()
    await make_image(world, world.alice, "keep me")

    confirm = await confirmation(world, world.alice)
    click = await world.discord.click(world.alice, confirm, button(confirm, "keep"))
    await click.wait_for(lambda: confirm.content == CANCELLED_TEXT or None)

    assert await job_id(bot, "keep me")
    assert await rows(bot, "SELECT * FROM audit_log WHERE action = 'privacy delete'") == []


# --------------------------------------------------------------------------- leaving a server
async def test_a_server_that_removes_the_bot_is_erased_after_the_grace_period(
    world: World,
) -> None:
    bot = await world.start_bot(departed_server_grace_days=30)
    await make_image(world, world.alice, "made before the kick")
    recorded = asyncio.Event()
    retention = bot.services.privacy.retention
    record = retention.left

    async def left(guild_id: int) -> None:
        await record(guild_id)
        recorded.set()

    retention.left = left  # type: ignore[method-assign]
    world.discord.remove_bot_from_guild(world.guild.id)
    await asyncio.wait_for(recorded.wait(), 5)
    (left_at,) = await rows(bot, "SELECT left_at FROM server_departures")

    assert (await retention.purge(left_at[0] + 29 * DAY)).counts == {}
    assert await job_id(bot, "made before the kick")
    report = await retention.purge(left_at[0] + 31 * DAY)

    assert report.counts["servers erased"] == 1
    assert await rows(bot, "SELECT id FROM jobs") == []
    assert await rows(bot, "SELECT count(*) FROM ledger") == [(1,)]  # the accounts stay


# --------------------------------------------------------------------------- purged jobs
async def test_results_of_purged_jobs_answer_clearly_and_later_steps_keep_their_history(
    world: World,
) -> None:
    bot = await world.start_bot(finished_job_retention_days=1)
    first = await make_image(world, world.alice, "the first step")
    second = await make_image(world, world.alice, "the second step")
    first_id, second_id = await job_id(bot, "the first step"), await job_id(bot, "the second step")
    now = bot.services.clock()
    # The second was made from the first (as an edit is), and the first ended two days ago.
    await world.write_sql("UPDATE jobs SET parent_job_id = ? WHERE id = ?", (first_id, second_id))
    await world.write_sql("UPDATE jobs SET finished_at = ? WHERE id = ?", (now - 2 * DAY, first_id))

    report = await bot.services.privacy.retention.purge(now)

    assert report.counts["finished jobs deleted"] == 1
    reroll = await world.discord.click(world.alice, first, f"flux:reroll:{first_id}")
    assert await world.refusal(reroll) == UNKNOWN_JOB_TEXT
    chain = await world.discord.click(world.alice, second, f"flux:chain:{second_id}")
    lines = (await world.refusal(chain)).splitlines()
    assert lines[:2] == ["**This image's history** (1 step):", EARLIER_STEPS_TEXT]
    assert lines[2].startswith("1. the second step")
    assert len(world.bfl.submissions) == 2
    # Replying to the purged result still edits its image, as a new chain.
    before = world.newest_message_id()
    await world.discord.post_user_message(
        world.alice, world.channel, "make it green", reply_to=first, mention_bot=True
    )
    await world.result_after(before)
    assert world.bfl.submissions[2].body["prompt"] == "make it green"
    edit = await bot.services.generation.job(await job_id(bot, "make it green"))
    assert edit is not None and edit.reference_count == 1 and edit.parent_job_id is None


async def test_a_server_the_bot_came_back_to_while_it_was_away_is_not_erased(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = await world.start_bot()
    await make_image(world, world.alice, "made before the restart")
    await world.stop_bot(bot)
    # It had left long ago; it was added back while no process ran, and a round is due.
    await world.write_sql(
        "INSERT INTO server_departures (guild_id, left_at) VALUES (?, 0)", (world.guild.id,)
    )
    await world.write_sql("DELETE FROM app_state WHERE key = 'privacy_purge_round'")
    rounds: list[PurgeReport | None] = []
    ran = asyncio.Event()
    run_round = Retention.run_round

    async def counted(self: Retention) -> PurgeReport | None:
        rounds.append(await run_round(self))
        ran.set()
        return rounds[-1]

    monkeypatch.setattr(Retention, "run_round", counted)
    bot = await world.start_bot(departed_server_grace_days=1)
    await asyncio.wait_for(ran.wait(), 5)

    assert rounds == [PurgeReport()]  # it ran, once the bot knew where it was, and erased nothing
    assert await rows(bot, "SELECT * FROM server_departures") == []
    assert await job_id(bot, "made before the restart")
