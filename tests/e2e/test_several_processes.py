"""Two real bot processes (`python -m bot`, through tests/multiprocess/run_bot.py) on one
PostgreSQL database: the Discord stand-in with two shards (a guild on each), the BFL
stand-in with two keys at cap 24, a round-robin load balancer in front of both processes'
webhook receivers. About 300 commands from 40 members, some over their allowance and some
cancelled; one process is killed with SIGKILL mid-flight and started again."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.jobs.engine import INTERRUPTED_MESSAGE
from bot.storage.db import Database, open_database
from tests.e2e.fleet import (
    KEY_A,
    KEY_B,
    Fleet,
    Place,
    add_places,
    describe_open_jobs,
    running_fleet,
    wait_until,
)
from tests.fakes.discord.models import InteractionHandle, Message
from tests.postgres_fixtures import DsnFactory, on_postgres
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.skipif(not on_postgres(), reason="several processes need PostgreSQL")

DAILY_IMAGES = 7
MEMBERS_PER_GUILD = 20
CAP = 24  # each key's, at BFL and as the bots are told
CANCELS = 8


@pytest.fixture
async def fleet(
    postgres_dsn_factory: DsnFactory, postgres_server: PostgresServer, tmp_path: Path
) -> AsyncIterator[Fleet]:
    dsn = postgres_dsn_factory()
    # Stopping a process cancels its tasks, some in the middle of a statement.
    with postgres_server.expect_error("canceling statement due to user request"):
        async with running_fleet(
            dsn,
            tmp_path,
            keys={KEY_A: CAP, KEY_B: CAP},
            settings={
                "DEFAULT_USER_DAILY_IMAGES": str(DAILY_IMAGES),
                "MAX_JOBS_IN_FLIGHT_PER_MEMBER": "20",
            },
        ) as fleet:
            yield fleet


async def test_two_processes_share_shards_keys_and_jobs_and_survive_a_kill(
    fleet: Fleet,
) -> None:
    discord = fleet.discord
    places = add_places(discord, MEMBERS_PER_GUILD)
    await fleet.start(0)
    await fleet.start(1)
    await discord.wait_until_connected(timeout=60)
    db = await open_database(fleet.dsn, migrate=False)
    try:
        await run_the_load(fleet, db, places)
    finally:
        await db.close()


async def run_the_load(fleet: Fleet, db: Database, places: list[Place]) -> None:
    discord = fleet.discord
    rng = random.Random(7)
    # 40 members, 7 or 8 requests each (the 8th is over the daily allowance of 7): 300.
    requests = [
        (place_index, member, f"{member.username} picture {n}")
        for place_index, place in enumerate(places)
        for index, member in enumerate(place.members)
        for n in range(DAILY_IMAGES + (1 if index % 2 == 0 else 0))
    ]
    rng.shuffle(requests)
    assert len(requests) == 300
    handles: list[tuple[str, InteractionHandle]] = []
    limit = asyncio.Semaphore(16)

    async def ask(place_index: int, member: Any, prompt: str) -> None:
        async with limit:
            handle = await discord.invoke_slash(
                member, places[place_index].channel, "imagine", {"prompt": prompt}
            )
            handles.append((prompt, handle))

    async def explain() -> str:
        unanswered = sum(1 for _, handle in handles if not handle.callbacks)
        return f"{unanswered} requests unanswered\n{await describe_open_jobs(db, fleet.bfl)}"

    first, rest = requests[:150], requests[150:]
    # No task ends while members cancel: no slot frees, so no claim can race a cancel.
    fleet.bfl.hold()
    await asyncio.gather(*(ask(*request) for request in first))
    await cancel_some(fleet, db, explain)
    fleet.bfl.release()
    # Shard 1's process dies with jobs queued, being submitted and running.
    doomed = fleet.processes[1]

    async def in_flight() -> bool:
        leases = await fleet.leases_of(db, 1)
        running = await db.fetch_value(
            f"SELECT COUNT(*) FROM jobs WHERE state = 'submitted'"
            f" AND owner IN ({','.join('?' for _ in leases)})",
            sorted(leases),
        )
        return int(running) >= 5

    await wait_until(
        in_flight, 30, "shard 1's process to have jobs at the provider", explain=explain
    )
    fleet.kill(1)
    await doomed.wait()
    dead = sorted(await fleet.leases_of(db, 1))  # every identity it had
    orphans = [
        row["id"]
        for row in await db.fetch_all(
            f"SELECT id FROM jobs WHERE closed = 0 AND owner IN ({','.join('?' for _ in dead)})",
            dead,
        )
    ]
    assert orphans
    on_shard_0 = [r for r in rest if r[0] == 0]
    await asyncio.gather(*(ask(*request) for request in on_shard_0[:40]))
    await fleet.start(1)
    await discord.wait_until_connected(timeout=60, shard_id=1)
    later = on_shard_0[40:] + [r for r in rest if r[0] == 1]
    await asyncio.gather(*(ask(*request) for request in later))

    async def all_answered_and_closed() -> bool:
        answered = all(handle.callbacks for _, handle in handles)
        open_ = await db.fetch_value("SELECT COUNT(*) FROM jobs WHERE closed = 0")
        return answered and open_ == 0

    await wait_until(
        all_answered_and_closed,
        120,
        "every request answered and every job ended",
        explain=explain,
    )
    # The dead process's jobs were adopted and ended by another (or by it, restarted).
    ended = await db.fetch_all(
        f"SELECT owner FROM jobs WHERE id IN ({','.join('?' for _ in orphans)})", orphans
    )
    assert all(row["owner"] not in dead for row in ended)
    await check_outcomes(fleet, db, handles)
    await lower_the_caps(fleet, db, places)


async def lower_the_caps(fleet: Fleet, db: Database, places: list[Place]) -> None:
    """The accounts now take 20 each while the bot believes 24: 429s come, the bot backs off
    together, the cap holds and every job still finishes."""
    discord, bfl = fleet.discord, fleet.bfl
    bfl.set_cap(KEY_A, 20)
    bfl.set_cap(KEY_B, 20)
    newcomers = [
        (place, discord.add_member(place.channel.guild_id, f"late{n}-{index}"))
        for index, place in enumerate(places)
        for n in range(15)
    ]
    before = await db.fetch_value("SELECT COUNT(*) FROM jobs")
    await asyncio.gather(
        *(
            discord.invoke_slash(member, place.channel, "imagine", {"prompt": f"late {n} {m}"})
            for m, (place, member) in enumerate(newcomers)
            for n in range(4)
        )
    )

    async def all_made_and_closed() -> bool:
        made = await db.fetch_value("SELECT COUNT(*) FROM jobs")
        open_ = await db.fetch_value("SELECT COUNT(*) FROM jobs WHERE closed = 0")
        return bool(made == before + 120 and open_ == 0)

    await wait_until(
        all_made_and_closed,
        120,
        "every late job to be made and to end",
        explain=lambda: describe_open_jobs(db, bfl),
    )
    late = await db.fetch_all("SELECT state FROM jobs ORDER BY created_at OFFSET ?", (before,))
    assert len(late) == 120 and {row["state"] for row in late} == {"delivered"}
    assert bfl.rejected_429 > 0
    assert bfl.max_active_seen_by_key[KEY_A] <= 24 and bfl.max_active_seen_by_key[KEY_B] <= 24
    assert await db.fetch_value("SELECT COUNT(*) FROM ledger WHERE status = 'reserved'") == 0
    await check_usage_totals(db)


async def cancel_some(fleet: Fleet, db: Database, explain: Any) -> None:
    """With the provider held and every slot taken, members cancel requests waiting in
    line: each cancel takes effect, as nothing else can move those jobs now."""
    discord, bfl = fleet.discord, fleet.bfl

    async def every_slot_taken() -> bool:
        return bfl.active_count() == 2 * CAP

    await wait_until(every_slot_taken, 30, "every slot of both keys taken", explain=explain)
    waiting = await db.fetch_all(
        "SELECT id, user_id, channel_id FROM jobs WHERE state = 'queued'"
        " ORDER BY created_at DESC LIMIT ?",
        (CANCELS,),
    )
    assert len(waiting) == CANCELS
    for row in waiting:
        custom_id = f"flux:cancel:{row['id']}"

        def its_message(
            channel: int = row["channel_id"], wanted: str = custom_id
        ) -> Message | None:
            found = [m for m in discord.messages(channel) if wanted in m.custom_ids]
            return found[0] if found else None

        message = await discord.wait_for(its_message, timeout=20)
        await discord.click(int(row["user_id"]), message, custom_id)
    chosen = [row["id"] for row in waiting]

    async def all_cancelled() -> bool:
        cancelled = await db.fetch_all("SELECT id FROM jobs WHERE state = 'cancelled'")
        return {row["id"] for row in cancelled} == set(chosen)

    await wait_until(all_cancelled, 20, f"the {CANCELS} cancels to be recorded", explain=explain)
    assert bfl.active_count() == 2 * CAP  # nothing moved meanwhile


async def check_outcomes(
    fleet: Fleet, db: Database, handles: list[tuple[str, InteractionHandle]]
) -> None:
    discord, bfl = fleet.discord, fleet.bfl
    jobs = await db.fetch_all("SELECT * FROM jobs")
    states = Counter(row["state"] for row in jobs)
    delivered = [row for row in jobs if row["state"] == "delivered"]
    assert states["delivered"] > 200, states
    assert set(states) <= {"delivered", "failed", "cancelled"}, states
    assert states["cancelled"] == CANCELS  # the members who cancelled a waiting request
    # Exactly one result message per delivered job, and it holds that job's image.
    bot_id = discord.application_id
    results = [
        m
        for channel in {row["channel_id"] for row in jobs}
        for m in discord.messages(channel)
        if m.author_id == bot_id and m.attachments
    ]
    assert len(results) == len(delivered)
    by_id = {m.id: m for m in results}
    for row in delivered:
        message = by_id[row["result_message_id"]]
        assert message.attachments[0].data == bfl.image_bytes(row["provider_task_id"])
    # At most one submit per job; those caught mid-submit by the kill failed, refunded.
    submits = Counter(s.body["prompt"] for s in bfl.submissions)
    assert max(submits.values()) == 1
    interrupted = [row for row in jobs if row["error"] == INTERRUPTED_MESSAGE]
    for row in interrupted:
        assert (
            await db.fetch_value("SELECT status FROM ledger WHERE job_id = ?", (row["id"],))
            == "refunded"
        )
    # Each key stayed within its cap of 24, with no 429 at all.
    assert bfl.max_active_seen_by_key[KEY_A] <= 24 and bfl.max_active_seen_by_key[KEY_B] <= 24
    assert bfl.rejected_429 == 0
    assert bfl.submits_by_key[KEY_A] > 0 and bfl.submits_by_key[KEY_B] > 0
    # Requests over the daily allowance were refused and created nothing (a refunded one, a
    # cancel, gives its place back); nobody got more than the allowance.
    assert len(jobs) < 300
    per_member = Counter(row["user_id"] for row in delivered)
    assert max(per_member.values()) <= DAILY_IMAGES
    # The ledger is exact.
    assert await db.fetch_value("SELECT COUNT(*) FROM ledger WHERE status = 'reserved'") == 0
    charged = await db.fetch_all("SELECT job_id FROM ledger WHERE status = 'charged'")
    assert {row["job_id"] for row in charged} == {row["id"] for row in delivered}
    await check_usage_totals(db)
    # Some webhooks reached the process that did not own their job (and were recorded).
    assert await db.fetch_value("SELECT COUNT(*) FROM jobs WHERE webhook_payload IS NOT NULL") > 0
    assert all(count > 0 for count in fleet.balancer.forwarded.values())
    # Never two sessions for one shard.
    assert discord.overlapping_shard_sessions == 0
    assert "Traceback" not in fleet.log_text()


async def check_usage_totals(db: Database) -> None:
    """`usage_totals` equal a recomputation from the ledger."""
    recomputed: Counter[tuple[Any, ...]] = Counter()
    for row in await db.fetch_all("SELECT * FROM ledger"):
        for period in ("day", "week", "month"):
            start = row[f"{period}_start"]
            for user in (row["user_id"], 0):
                recomputed[(row["guild_id"], user, period, start, "mc")] += row["credits_mc"]
                recomputed[(row["guild_id"], user, period, start, "images")] += row["images"]
    stored: Counter[tuple[Any, ...]] = Counter()
    for row in await db.fetch_all("SELECT * FROM usage_totals"):
        key = (row["guild_id"], row["user_id"], row["period"], row["period_start"])
        stored[(*key, "mc")] += row["credits_mc"]
        stored[(*key, "images")] += row["images"]
    assert +stored == +recomputed
