"""Discord's hidden shared limit on webhook messages per channel (about 30 a minute, answered
with a 429 `X-RateLimit-Scope: shared` and a long `retry_after`), with edits of interaction
messages counted too: a busy channel still finishes every job, each with one result."""

from __future__ import annotations

import pytest

from bot.errors import INTERNAL_ERROR_TEXT
from bot.jobs.models import JobState
from tests.e2e.conftest import World
from tests.e2e.test_members import locked, photo
from tests.fakes.discord_server import InteractionHandle, Message

JOBS = 7


def results(world: World) -> list[Message]:
    return [
        m
        for m in world.discord.messages(world.channel.id, include_ephemeral=False)
        if m.author_id == world.discord.application_id and m.attachments
    ]


def webhook_requests(world: World, method: str) -> list[int]:
    """Indexes into the stand-in's request log of the bot's interaction webhook calls."""
    return [
        n
        for n, r in enumerate(world.discord.requests)
        if r.method == method and r.path.startswith("/webhooks/")
    ]


async def test_a_busy_channel_under_the_shared_limit_finishes_every_job_once(
    world: World,
) -> None:
    fake = world.discord
    fake.shared_webhook_limit, fake.shared_webhook_window = 3, 1.0
    fake.shared_webhook_limit_counts_edits = True
    members = [fake.add_member(world.guild.id, f"member{n}") for n in range(JOBS)]
    bot = await world.start_bot()
    world.bfl.hold()  # every job waits at the provider, so the results arrive together
    handles: list[InteractionHandle] = []
    for n, member in enumerate(members):
        handles.append(
            await fake.invoke_slash(member, world.channel, "imagine", {"prompt": f"crowd {n}"})
        )
    await fake.wait_for(lambda: len(world.bfl.submissions) == JOBS, timeout=10)
    world.bfl.release()

    await fake.wait_for(lambda: len(results(world)) >= JOBS, timeout=20)
    job_ids = [row["id"] for row in await bot.services.db.fetch_all("SELECT id FROM jobs")]
    finished = await bot.services.engine.wait_closed(job_ids, 10)
    assert [job.state for job in finished] == [JobState.DELIVERED] * JOBS
    assert all(job.error is None for job in finished)

    # Each member's own answer shows their image, and only one result each is visible.
    by_prompt = {
        s.body["prompt"]: world.bfl.image_bytes(s.task_id or "") for s in world.bfl.submissions
    }
    for n, it in enumerate(handles):
        assert it.original is not None and len(it.original.attachments) == 1
        assert it.original.attachments[0].data == by_prompt[f"crowd {n}"]
    assert len(results(world)) == JOBS
    everything = fake.messages(world.channel.id, include_deleted=True)
    assert not any("kept failing" in m.content for m in everything)

    # Discord did refuse with its shared limit, and the bot waited instead of giving up.
    shared = [hit for hit in fake.rate_limited if hit.scope == "shared"]
    assert shared and all(hit.method == "PATCH" for hit in shared)
    assert webhook_requests(world, "POST") == []  # no followups at all
    # After the first shared 429, only results were shown: progress edits gave way, and
    # each job's result went through once.
    first_refusal = next(
        n for n in webhook_requests(world, "PATCH") if fake.requests[n].status == 429
    )
    shown_after = [
        fake.requests[n]
        for n in webhook_requests(world, "PATCH")
        if n > first_refusal and fake.requests[n].status == 200
    ]
    assert shown_after and all(r.files for r in shown_after)
    finals = [r for n in webhook_requests(world, "PATCH") if (r := fake.requests[n]).files]
    assert sorted(r.path for r in finals if r.status == 200) == sorted(
        {r.path for r in finals}
    )  # one accepted final edit per job
    metrics = bot.services.metrics.render().decode()
    assert "fluxcord_discord_shared_limited_total 0.0" not in metrics
    assert "fluxcord_refusal_followups_total 0.0" in metrics


async def test_a_token_that_expires_while_the_channel_waits_ends_in_the_channel(
    world: World,
) -> None:
    fake = world.discord
    fake.shared_webhook_limit, fake.shared_webhook_window = 1, 2.0
    fake.shared_webhook_limit_counts_edits = True
    bot = await world.start_bot()
    world.bfl.hold()
    first = await fake.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "one"})
    second = await fake.invoke_slash(world.bob, world.channel, "imagine", {"prompt": "two"})
    await fake.wait_for(lambda: len(world.bfl.submissions) == 2, timeout=10)
    # The tokens run out while the second result waits for the channel's window.
    fake.interaction_token_lifetime = 1.0
    world.bfl.release()

    await fake.wait_for(lambda: len(results(world)) >= 2, timeout=15)
    job_ids = [row["id"] for row in await bot.services.db.fetch_all("SELECT id FROM jobs")]
    finished = await bot.services.engine.wait_closed(job_ids, 10)
    assert [job.state for job in finished] == [JobState.DELIVERED] * 2
    assert any(hit.scope == "shared" for hit in fake.rate_limited)
    shown = {m.attachments[0].data for m in results(world)}
    assert shown == {world.bfl.image_bytes(s.task_id or "") for s in world.bfl.submissions}
    # At least one ended as a channel reply to its interaction's message (the old fallback).
    originals = {first.original_id, second.original_id}
    assert any(m.reply_to in originals for m in results(world))
    assert len(results(world)) == 2


async def test_a_refusal_after_a_public_deferral_is_the_followup_the_bot_counts(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = await world.start_bot()
    monkeypatch.setattr(bot.services.engine.store, "create_then", locked)
    # With a reference the interaction is answered "thinking…" publicly first; a refusal
    # after that can only be a followup (one of the channel's shared webhook messages).
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "edit", {"prompt": "winter", "image": photo("a.png", (5, 5, 5))}
    )
    assert await world.refusal(it) == INTERNAL_ERROR_TEXT
    assert len(webhook_requests(world, "POST")) == 1
    assert "fluxcord_refusal_followups_total 1.0" in bot.services.metrics.render().decode()
