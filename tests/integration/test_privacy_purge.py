"""The retention purge (bot/privacy/retention.py) on either engine: each kind of data goes
once it is older than its setting and not before, a batch at a time; "for ever" keeps all;
one process of a fleet runs each round; a departed server's data goes after the grace period
unless the bot came back."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

from bot.jobs.engine import JobEngine
from bot.jobs.models import Job, JobState
from bot.privacy.batches import PROMPT_REMOVED, in_batches, marks
from bot.privacy.retention import DAY, Retention, RetentionPolicy
from bot.providers.base import InputImage
from bot.storage.db import Database, Tx, open_database
from tests.conftest import EngineFactory, make_request

GUILD, OTHER_GUILD = 42, 77
NOW = 400 * DAY


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def reference() -> InputImage:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "PNG")
    return InputImage("image/png", 8, 8, buffer.getvalue())


async def finished_job(
    engine: JobEngine,
    prompt: str,
    *,
    finished_at: float,
    user_id: int = 1001,
    guild_id: int = GUILD,
    parent: str | None = None,
    references: int = 0,
) -> Job:
    request = make_request(prompt, user_id=user_id, inputs=[reference()] * references or None)
    request = type(request)(**{**request.__dict__, "guild_id": guild_id, "parent_job_id": parent})
    job = await engine.store.create(request, estimated_cost=3)
    await engine.store.transition(
        job.id,
        from_states=[JobState.QUEUED],
        to=JobState.CANCELLED,
        finished_at=finished_at,
        closed=1,
    )
    return await engine.store.require(job.id)


async def audit(
    db: Database,
    at: float,
    action: str,
    detail: str,
    *,
    guild_id: int = GUILD,
    target_id: int | None = 1001,
) -> None:
    await db.execute(
        "INSERT INTO audit_log (at, guild_id, actor_id, action, target_id, detail)"
        " VALUES (?,?,?,?,?,?)",
        (at, guild_id, 1001, action, target_id, detail),
    )


async def strike(db: Database, at: float, prompt: str, *, guild_id: int = GUILD) -> None:
    await db.execute(
        "INSERT INTO strikes (guild_id, user_id, at, term, prompt) VALUES (?,?,?,?,?)",
        (guild_id, 1001, at, "bad", prompt),
    )


async def approval(
    db: Database,
    approval_id: str,
    created_at: float,
    prompt: str,
    *,
    state: str = "rejected",
    guild_id: int = GUILD,
) -> None:
    request = json.dumps({"variant": "pro", "params": {"prompt": prompt, "width": None}})
    await db.execute(
        "INSERT INTO approvals (id, created_at, guild_id, channel_id, user_id, request, state)"
        " VALUES (?,?,?,?,?,?,?)",
        (approval_id, created_at, guild_id, 4242, 1001, request, state),
    )
    await db.execute(
        "INSERT INTO approval_inputs (approval_id, position, content_type, width, height, data)"
        " VALUES (?, 0, 'image/png', 8, 8, ?)",
        (approval_id, reference().data),
    )


async def values(db: Database, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    return [row[0] for row in await db.fetch_all(sql, params)]


def retention(db: Database, clock: Clock | None = None, **days: float) -> Retention:
    policy = RetentionPolicy(**{kind: value * DAY for kind, value in days.items()})
    return Retention(db, policy, clock=clock or Clock())


# --------------------------------------------------------------------------- prompts
async def test_prompts_older_than_the_setting_are_blanked_everywhere_and_nothing_newer(
    db: Database, make_engine: EngineFactory
) -> None:
    engine = await make_engine(start=False)
    old = await finished_job(engine, "an old secret", finished_at=NOW - 100 * DAY)
    recent = await finished_job(engine, "a recent secret", finished_at=NOW - 10 * DAY)
    waiting = await engine.store.create(make_request("still queued"), estimated_cost=3)
    await strike(db, NOW - 100 * DAY, "an old refused prompt")
    await strike(db, NOW - 10 * DAY, "a recent refused prompt")
    await audit(db, NOW - 100 * DAY, "generate", "FLUX.2 [pro]: image `an old secret`")
    await audit(db, NOW - 100 * DAY, "settings", "audit channel set")
    await audit(db, NOW - 10 * DAY, "generate", "FLUX.2 [pro]: image `a recent secret`")
    await approval(db, "a" * 16, NOW - 100 * DAY, "an old held prompt")
    await approval(db, "b" * 16, NOW - 100 * DAY, "still waiting", state="pending")

    report = await retention(db, prompts=90).purge(NOW)

    gone = await engine.store.require(old.id)
    assert gone.prompt == "" and gone.prompt_removed
    assert await db.fetch_value("SELECT prompt FROM jobs WHERE id = ?", (old.id,)) == ""
    assert (await engine.store.require(recent.id)).prompt == "a recent secret"
    assert (await engine.store.require(waiting.id)).prompt == "still queued"
    assert await values(db, "SELECT prompt FROM strikes ORDER BY at") == [
        PROMPT_REMOVED,
        "a recent refused prompt",
    ]
    assert await values(db, "SELECT detail FROM audit_log ORDER BY at, id") == [
        PROMPT_REMOVED,
        "audit channel set",
        "FLUX.2 [pro]: image `a recent secret`",
    ]
    requests = await values(db, "SELECT request FROM approvals ORDER BY id")
    assert [json.loads(r)["params"]["prompt"] for r in requests] == ["", "still waiting"]
    assert report.counts == {
        "job prompts blanked": 1,
        "strike prompts blanked": 1,
        "audit prompts blanked": 1,
        "approval prompts blanked": 1,
    }
    # A second round finds nothing more to do.
    assert (await retention(db, prompts=90).purge(NOW)).counts == {}


async def test_kept_for_ever_when_every_setting_is_zero(
    db: Database, make_engine: EngineFactory
) -> None:
    engine = await make_engine(start=False)
    old = await finished_job(engine, "ancient", finished_at=1.0, references=1)
    await audit(db, 1.0, "generate", "image `ancient`")
    departed = Retention(db, RetentionPolicy(), clock=Clock(2.0))
    await departed.left(GUILD)

    assert (await Retention(db, RetentionPolicy(), clock=Clock()).purge(NOW)).counts == {}
    assert (await engine.store.require(old.id)).prompt == "ancient"
    assert len(await engine.store.inputs(old.id)) == 1
    assert await values(db, "SELECT detail FROM audit_log") == ["image `ancient`"]


# --------------------------------------------------------------------------- images, jobs, audit
async def test_unposted_results_and_reviewed_requests_images_go_after_the_image_setting(
    db: Database, make_engine: EngineFactory
) -> None:
    engine = await make_engine(start=False)
    old = await finished_job(engine, "never posted", finished_at=NOW - 40 * DAY)
    recent = await finished_job(engine, "posted soon", finished_at=NOW - 1 * DAY)
    for job in (old, recent):
        await db.execute(
            "INSERT INTO job_outputs (job_id, position, content_type, width, height, data)"
            " VALUES (?, 0, 'image/png', 8, 8, ?)",
            (job.id, reference().data),
        )
    await approval(db, "c" * 16, NOW - 40 * DAY, "reviewed")
    await approval(db, "d" * 16, NOW - 40 * DAY, "waiting", state="pending")

    await retention(db, images=30).purge(NOW)

    assert await values(db, "SELECT job_id FROM job_outputs") == [recent.id]
    assert await values(db, "SELECT approval_id FROM approval_inputs") == ["d" * 16]


async def test_finished_jobs_go_after_the_setting_and_a_later_edit_says_its_past_is_gone(
    db: Database, make_engine: EngineFactory
) -> None:
    engine = await make_engine(start=False)
    parent = await finished_job(engine, "first", finished_at=NOW - 400 * DAY, references=1)
    child = await finished_job(engine, "second", finished_at=NOW - 5 * DAY, parent=parent.id)
    ledger = "SELECT job_id, credits_mc, images FROM ledger ORDER BY job_id"
    accounts = [tuple(row) for row in await db.fetch_all(ledger)]

    report = await retention(db, finished_jobs=365).purge(NOW)

    assert report.counts == {"finished jobs deleted": 1}
    assert await engine.store.get(parent.id) is None
    assert await engine.store.inputs(parent.id) == []
    kept = await engine.store.require(child.id)
    assert kept.parent_job_id is None and kept.parent_purged
    # The money journal outlives the job.
    assert [tuple(row) for row in await db.fetch_all(ledger)] == accounts
    assert parent.id in await values(db, "SELECT job_id FROM ledger")


async def test_audit_entries_and_quota_history_go_after_the_audit_setting(db: Database) -> None:
    await audit(db, NOW - 400 * DAY, "settings", "old")
    await audit(db, NOW - 300 * DAY, "settings", "recent")
    for at, summary in ((NOW - 400 * DAY, "old"), (NOW - 300 * DAY, "recent")):
        await db.execute(
            "INSERT INTO quota_audit (at, guild_id, actor_id, action, scope, target_id, summary)"
            " VALUES (?, ?, 5, 'set', 'user', 1001, ?)",
            (at, GUILD, summary),
        )

    await retention(db, audit=365).purge(NOW)

    assert await values(db, "SELECT detail FROM audit_log") == ["recent"]
    assert await values(db, "SELECT summary FROM quota_audit") == ["recent"]


# --------------------------------------------------------------------------- batches
async def test_batches_are_one_short_transaction_each_and_stop_at_a_short_one(
    db: Database,
) -> None:
    for at in range(5):
        await audit(db, float(at), "settings", f"entry {at}")
    sizes: list[int] = []

    async def delete(tx: Tx, ids: list[Any]) -> int:
        sizes.append(len(ids))
        return await tx.execute(f"DELETE FROM audit_log WHERE id IN ({marks(ids)})", ids)

    committed = db.committed
    select = "SELECT id FROM audit_log WHERE at < ? ORDER BY at"
    assert await in_batches(db, select, (4.0,), delete, batch_size=2) == 4
    # Exactly two full batches: a third, empty one says there is no more.
    assert sizes == [2, 2] and db.committed - committed == 3
    assert await in_batches(db, select, (10.0,), delete, batch_size=2) == 1
    assert sizes == [2, 2, 1]
    assert await values(db, "SELECT count(*) FROM audit_log") == [0]


async def test_a_purge_bigger_than_a_batch_finishes_in_one_round(
    db: Database, make_engine: EngineFactory
) -> None:
    engine = await make_engine(start=False)
    jobs = [await finished_job(engine, f"job {n}", finished_at=float(n)) for n in range(7)]
    purge = Retention(
        db, RetentionPolicy(prompts=DAY, finished_jobs=2 * DAY), clock=Clock(), batch_size=3
    )

    report = await purge.purge(NOW)

    assert report.counts == {"job prompts blanked": 7, "finished jobs deleted": 7}
    assert [await engine.store.get(job.id) for job in jobs] == [None] * 7


# --------------------------------------------------------------------------- one round per fleet
async def test_one_process_runs_each_round(database_target: str | Path, db: Database) -> None:
    other_process = await open_database(database_target)
    try:
        clock = Clock()
        first = Retention(db, RetentionPolicy(), clock=clock)
        second = Retention(other_process, RetentionPolicy(), clock=clock)
        assert await first.run_round() is not None
        assert await second.run_round() is None
        clock.now += first.interval
        assert await second.run_round() is not None
        assert await first.run_round() is None
    finally:
        await other_process.close()


# --------------------------------------------------------------------------- servers left
async def test_a_departed_servers_data_goes_after_the_grace_period_and_the_ledger_stays(
    database_target: str | Path, db: Database, make_engine: EngineFactory
) -> None:
    engine = await make_engine(start=False)
    theirs = await finished_job(engine, "theirs", finished_at=NOW - DAY, references=1)
    ours = await finished_job(engine, "ours", finished_at=NOW - DAY, guild_id=OTHER_GUILD)
    for guild in (GUILD, OTHER_GUILD):
        await audit(db, NOW - DAY, "settings", f"set in {guild}", guild_id=guild)
        await strike(db, NOW - DAY, f"refused in {guild}", guild_id=guild)
        await approval(db, f"{guild:016x}", NOW - DAY, "held", guild_id=guild)
        await db.execute(
            "INSERT INTO guild_settings (guild_id, updated_at, updated_by) VALUES (?, 0, 5)",
            (guild,),
        )
        await db.execute(
            "INSERT INTO blocks (guild_id, user_id, reason, blocked_by, at)"
            " VALUES (?, 1001, 'x', 5, 0)",
            (guild,),
        )
        await db.execute(
            "INSERT INTO ledger (job_id, guild_id, user_id, variant, reserved_at, day_start,"
            " week_start, month_start, reserved_mc, reserved_images, status, credits_mc, images)"
            " VALUES (?, ?, 1001, 'pro', 0, 0, 0, 0, 3000, 1, 'charged', 3000, 1)",
            (f"ledger-{guild}", guild),
        )
        await db.execute(
            "INSERT INTO server_loras (guild_id, name_key, name, finetune_id, base, strength,"
            " added_at) VALUES (?, 'ink', 'Ink', 'ink', 'klein-4b', 1.0, 0)",
            (guild,),
        )
    clock = Clock(NOW)
    # The shard that saw the departure is in one process; the purge runs in another.
    other_process = await open_database(database_target)
    try:
        await Retention(other_process, RetentionPolicy(), clock=clock).left(GUILD)
        erased: list[bool] = []

        async def reload() -> None:
            erased.append(True)

        purge = Retention(
            db, RetentionPolicy(departed_grace=30 * DAY), clock=clock, on_server_erased=reload
        )
        assert (await purge.purge(NOW + 29 * DAY)).counts == {}  # within the grace period
        assert await engine.store.get(theirs.id) is not None

        report = await purge.purge(NOW + 31 * DAY)
    finally:
        await other_process.close()

    assert report.counts["servers erased"] == 1 and erased == [True]
    assert await engine.store.get(theirs.id) is None
    assert await engine.store.get(ours.id) is not None
    for table in ("audit_log", "strikes", "approvals", "guild_settings", "blocks", "server_loras"):
        assert await values(db, f"SELECT guild_id FROM {table}") == [OTHER_GUILD], table
    assert await values(db, "SELECT count(*) FROM approval_inputs") == [1]
    assert await values(db, "SELECT count(*) FROM job_inputs") == [0]
    assert await values(db, "SELECT DISTINCT guild_id FROM ledger ORDER BY guild_id") == [
        GUILD,
        OTHER_GUILD,
    ]
    assert await values(db, "SELECT count(*) FROM server_departures") == [0]


async def test_coming_back_within_the_grace_period_keeps_everything(
    db: Database, make_engine: EngineFactory
) -> None:
    engine = await make_engine(start=False)
    theirs = await finished_job(engine, "theirs", finished_at=NOW - DAY)
    clock = Clock(NOW)
    purge = Retention(db, RetentionPolicy(departed_grace=30 * DAY), clock=clock)
    await purge.left(GUILD)
    clock.now += 10 * DAY
    await purge.left(GUILD)  # a second departure event keeps the first time
    assert await values(db, "SELECT left_at FROM server_departures") == [NOW]

    assert await purge.present([GUILD, OTHER_GUILD]) == 1

    assert (await purge.purge(NOW + 365 * DAY)).counts == {}
    assert await engine.store.get(theirs.id) is not None
