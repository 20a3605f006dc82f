"""Quotas through the real engine and the BFL stand-in: admission is atomic under load, and
every way a job ends settles its reservation exactly once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from bot.errors import DeliveryImpossible
from bot.jobs.engine import JobEngine
from bot.jobs.models import Job, JobState
from bot.ledger import Ledger, Metric, Period, QuotaExceeded, Scope
from bot.providers.base import OutputImage
from bot.providers.bfl import BFLClient
from bot.storage.db import Database, open_database
from tests.conftest import BFL_KEY, EngineFactory, make_request
from tests.fakes.bfl_server import FakeBFL, Outcome, SubmitFault
from tests.fakes.notifier import RecordingNotifier

GUILD = 42  # make_request's guild
MOD = 9


async def ledger_row(db: Database, job_id: str) -> tuple[str, str | None, int, int]:
    row = await db.fetch_one(
        "SELECT status, settled_by, credits_mc, images FROM ledger WHERE job_id = ?", (job_id,)
    )
    assert row is not None, job_id
    return row["status"], row["settled_by"], row["credits_mc"], row["images"]


async def used_today(engine: JobEngine, user_id: int) -> tuple[int, int]:
    usage = await engine.ledger.member_usage(GUILD, user_id)
    day = usage.windows[0]
    return day.images, day.credits_mc


async def accept_all(engine: JobEngine, prompts_users: list[tuple[str, int]]) -> list[Any]:
    return await asyncio.gather(
        *(engine.accept(make_request(prompt, user_id=user)) for prompt, user in prompts_users),
        return_exceptions=True,
    )


# --------------------------------------------------------------------------- concurrency
@pytest.mark.parametrize("level", ["member", "server"])
async def test_200_simultaneous_requests_against_10_images_start_exactly_10(
    level: str, make_engine: EngineFactory, fake_bfl: FakeBFL
) -> None:
    engine = await make_engine()
    if level == "member":  # one member fires all 200
        await engine.ledger.admin.set_limit(
            GUILD, MOD, Scope.USER, 7, Period.DAY, Metric.IMAGES, 10
        )
        senders = [(f"burst {n}", 7) for n in range(200)]
    else:  # 200 members share a server budget of 10
        await engine.ledger.admin.set_limit(
            GUILD, MOD, Scope.GUILD, 0, Period.DAY, Metric.IMAGES, 10
        )
        senders = [(f"burst {n}", 5000 + n) for n in range(200)]

    results = await accept_all(engine, senders)

    accepted: list[Job] = [result[0] for result in results if isinstance(result, tuple)]
    refused = [result for result in results if isinstance(result, QuotaExceeded)]
    assert (len(accepted), len(refused)) == (10, 190)
    assert await engine.store._db.fetch_value("SELECT count(*) FROM jobs") == 10
    await engine.wait_closed([job.id for job in accepted], 20)
    assert len(fake_bfl.submissions) == 10  # nothing refused ever reached the provider
    costs = sum(round(task.cost * 1000) for task in fake_bfl.tasks.values())
    rows = await engine.store._db.fetch_all("SELECT status, credits_mc, images FROM ledger")
    assert [(r["status"], r["images"]) for r in rows] == [("charged", 1)] * 10
    assert sum(r["credits_mc"] for r in rows) == costs
    server = await engine.ledger.state(GUILD, 0)
    assert server.used_guild[(Period.DAY, Metric.IMAGES)] == 10
    assert server.used_guild[(Period.DAY, Metric.CREDITS)] == costs


async def test_four_connections_to_one_database_reserve_exactly_10(tmp_path: Path) -> None:
    """Separate SQLite connections (as separate processes would have), 50 reservations each,
    against a server budget of 10: BEGIN IMMEDIATE serialises them across connections."""
    path = tmp_path / "shared.sqlite3"
    databases = [await open_database(path) for _ in range(4)]
    try:
        ledgers = [Ledger(database) for database in databases]
        await ledgers[0].admin.set_limit(GUILD, MOD, Scope.GUILD, 0, Period.DAY, Metric.IMAGES, 10)

        async def reserve(ledger: Ledger, name: str) -> bool:
            try:
                await ledger.db.run(lambda conn: ledger.reserve(
                    conn, job_id=name, guild_id=GUILD, user_id=hash(name), role_ids=(),
                    variant="pro", credits=3, images=1))
            except QuotaExceeded:
                return False
            return True

        results = await asyncio.gather(
            *(reserve(ledger, f"w{w}-{n}") for n in range(50) for w, ledger in enumerate(ledgers))
        )
        assert results.count(True) == 10
        db = databases[0]
        assert await db.fetch_value("SELECT count(*) FROM ledger") == 10
        assert await db.fetch_value(
            "SELECT images FROM usage_totals WHERE guild_id = ? AND user_id = 0 AND period = 'day'",
            (GUILD,),
        ) == 10
    finally:
        for database in databases:
            await database.close()


# --------------------------------------------------------------------------- each ending
async def test_a_delivered_image_is_charged_the_providers_cost_not_the_estimate(
    make_engine: EngineFactory, fake_bfl: FakeBFL, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stand-in prices like our estimate; make it quote something else to tell them apart.
    monkeypatch.setattr(fake_bfl, "_quote", lambda spec, body, input_mp: (1.0, 4.37))
    engine = await make_engine()
    job, _ = await engine.accept(make_request("priced"))
    assert job.estimated_cost == 3.0
    assert await ledger_row(engine.store._db, job.id) == ("reserved", None, 3000, 1)
    [final] = await engine.wait_closed([job.id], 10)
    assert final.state is JobState.DELIVERED and final.cost == 4.37
    assert await ledger_row(engine.store._db, job.id) == ("charged", "ready", 4370, 1)
    assert await used_today(engine, 1001) == (1, 4370)


@pytest.mark.parametrize(
    ("final_status", "state"),
    [
        ("Request Moderated", "moderated"),
        ("Content Moderated", "moderated"),
        ("Error", "failed"),
    ],
)
async def test_moderated_or_failed_images_are_refunded_in_full(
    final_status: str, state: str, make_engine: EngineFactory, fake_bfl: FakeBFL
) -> None:
    fake_bfl.script("forbidden", Outcome(final_status=final_status))
    engine = await make_engine()
    await engine.ledger.admin.set_limit(GUILD, MOD, Scope.USER, 1001, Period.DAY, Metric.IMAGES, 1)
    job, _ = await engine.accept(make_request("forbidden"))
    with pytest.raises(QuotaExceeded):  # the one image is held while the job runs
        await engine.accept(make_request("meanwhile"))
    [final] = await engine.wait_closed([job.id], 10)
    assert final.state.value == state
    assert await ledger_row(engine.store._db, job.id) == ("refunded", state, 0, 0)
    assert await used_today(engine, 1001) == (0, 0)
    again, _ = await engine.accept(make_request("something else"))  # the allowance is back
    await engine.wait_closed([again.id], 10)
    assert await ledger_row(engine.store._db, again.id) == ("charged", "ready", 3000, 1)


async def test_a_refused_submit_is_refunded(
    make_engine: EngineFactory, fake_bfl: FakeBFL
) -> None:
    fake_bfl.submit_faults.append(SubmitFault(status=402, create_task=False))
    engine = await make_engine()
    job, _ = await engine.accept(make_request("no credits at BFL"))
    await engine.wait_closed([job.id], 10)
    assert await ledger_row(engine.store._db, job.id) == ("refunded", "failed", 0, 0)


async def test_an_unconfirmed_submit_is_refunded_to_the_member(
    make_engine: EngineFactory, fake_bfl: FakeBFL
) -> None:
    """BFL may have billed a submit that answered 500; the member got nothing, so the bot
    absorbs it (the stand-in's ledger shows the task, ours shows the refund)."""
    fake_bfl.submit_faults.append(SubmitFault(status=500, create_task=True))
    engine = await make_engine()
    job, _ = await engine.accept(make_request("lost answer"))
    await engine.wait_closed([job.id], 10)
    assert len(fake_bfl.tasks) == 1
    assert await ledger_row(engine.store._db, job.id) == ("refunded", "failed", 0, 0)


async def test_a_cancelled_queued_job_is_refunded(make_engine: EngineFactory) -> None:
    engine = await make_engine(start=False)
    job, _ = await engine.accept(make_request("never mind"))
    assert await used_today(engine, 1001) == (1, 3000)
    assert await engine.cancel(job.id)
    assert await ledger_row(engine.store._db, job.id) == ("refunded", "cancelled", 0, 0)
    assert await used_today(engine, 1001) == (0, 0)


class UndeliverableNotifier(RecordingNotifier):
    async def job_delivered(self, job: Job, images: list[OutputImage]) -> int:
        raise DeliveryImpossible("channel deleted")


async def test_an_image_that_cannot_be_posted_stays_charged(
    make_engine: EngineFactory, fake_bfl: FakeBFL
) -> None:
    """The provider made and billed it; Discord refusing the post does not undo that."""
    engine = await make_engine(job_notifier=UndeliverableNotifier())
    job, _ = await engine.accept(make_request("into the void"))
    [final] = await engine.wait_closed([job.id], 10)
    assert final.state is JobState.FAILED
    assert await ledger_row(engine.store._db, job.id) == ("charged", "ready", 3000, 1)


async def test_a_restart_settles_each_job_once(
    db: Database, make_engine: EngineFactory, fake_bfl: FakeBFL
) -> None:
    dead = await make_engine(start=False)  # the process that crashed
    store = dead.store
    interrupted = await store.create(make_request("interrupted"), estimated_cost=3)
    await store.transition(interrupted.id, from_states=[JobState.QUEUED], to=JobState.SUBMITTING)
    running = await store.create(make_request("running"), estimated_cost=3)
    client = BFLClient(BFL_KEY, fake_bfl.base_url, allow_loopback=True)
    request = make_request("running")
    task = await client.submit(request.variant, request.params, [], user_id=1001)
    await client.aclose()
    await store.transition(running.id, from_states=[JobState.QUEUED], to=JobState.SUBMITTING)
    await store.transition(
        running.id, from_states=[JobState.SUBMITTING], to=JobState.SUBMITTED,
        provider_task_id=task.task_id, polling_url=task.polling_url, submitted_at=time.time(),
    )
    ready = await store.create(make_request("ready"), estimated_cost=3)
    await store.transition(ready.id, from_states=[JobState.QUEUED], to=JobState.SUBMITTED)
    await store.mark_ready(ready.id, [OutputImage("image/png", 1, 1, b"png")], seed=1, cost=2.5)
    assert await used_today(dead, 1001) == (3, 8500)

    engine = await make_engine()
    await engine.wait_closed([interrupted.id, running.id, ready.id], 10)
    assert await ledger_row(db, interrupted.id) == ("refunded", "failed", 0, 0)
    assert await ledger_row(db, running.id) == ("charged", "ready", round(task.cost * 1000), 1)
    assert await ledger_row(db, ready.id) == ("charged", "ready", 2500, 1)  # not re-settled
    settled = await used_today(engine, 1001)
    assert settled == (2, 2500 + round(task.cost * 1000))
    await engine.stop()

    again = await make_engine()  # another restart finds nothing to settle
    assert await again.store.open_jobs() == []
    assert await used_today(again, 1001) == settled
