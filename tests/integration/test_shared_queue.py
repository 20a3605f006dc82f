"""The shared queue in the database: round-robin by member, numbered slots under each key's
cap, the shared back-off after a 429, and the lease a claimer must hold. Runs on SQLite and
(FLUXCORD_TEST_DATABASE=postgres) on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time

import pytest

from bot.jobs.claims import ProviderKey, SharedQueue
from bot.jobs.leases import ProcessLease
from bot.jobs.models import Job, JobState
from bot.jobs.store import JobStore
from bot.jobs.work import adopt_jobs
from bot.storage.db import Database
from tests.conftest import make_request
from tests.fakes.notifier import RecordingNotifier
from tests.postgres_fixtures import on_postgres

NO_MARGIN = 0.0


def bfl_keys(*caps: int) -> list[ProviderKey]:
    # The client is never called here: claims only touch the database.
    return [ProviderKey(f"bfl:{n}", "bfl", None, cap) for n, cap in enumerate(caps)]  # type: ignore[arg-type]


async def setup(db: Database, *caps: int) -> tuple[JobStore, SharedQueue, ProcessLease]:
    store = JobStore(db, time.time)
    queue = SharedQueue(db, bfl_keys(*caps), time.time)
    await queue.prepare()
    lease = ProcessLease(db)
    await lease.register()
    store.owner = lease.id
    return store, queue, lease


async def queue_jobs(store: JobStore, jobs: list[tuple[int, str]]) -> dict[str, Job]:
    made = {}
    for user_id, prompt in jobs:
        made[prompt] = await store.create(make_request(prompt, user_id=user_id), estimated_cost=1)
    return made


async def claim_prompts(queue: SharedQueue, lease: ProcessLease, count: int) -> list[str]:
    prompts = []
    for _ in range(count):
        claim = await queue.claim("bfl", lease.id, lease_margin=NO_MARGIN)
        assert claim is not None
        prompts.append(claim.job.prompt)
    return prompts


async def test_one_members_backlog_does_not_starve_a_newcomer(db: Database) -> None:
    store, queue, lease = await setup(db, 50)
    jobs = await queue_jobs(store, [(1, f"heavy-{n}") for n in range(30)] + [(2, "newcomer")])
    assert await queue.position(jobs["newcomer"]) == 2
    assert await claim_prompts(queue, lease, 3) == ["heavy-0", "newcomer", "heavy-1"]


async def test_round_robin_order_and_positions_agree(db: Database) -> None:
    store, queue, lease = await setup(db, 10)
    order = [(1, "a1"), (1, "a2"), (1, "a3"), (2, "b1"), (3, "c1"), (3, "c2")]
    jobs = await queue_jobs(store, order)
    expected = ["a1", "b1", "c1", "a2", "c2", "a3"]
    assert [await queue.position(jobs[p]) for p in expected] == [1, 2, 3, 4, 5, 6]
    assert await claim_prompts(queue, lease, 6) == expected
    assert await queue.claim("bfl", lease.id, lease_margin=NO_MARGIN) is None  # none left
    assert await queue.position(jobs["a3"]) is None  # no longer in line


async def test_the_member_served_longest_ago_goes_first(db: Database) -> None:
    store, queue, lease = await setup(db, 10)
    await queue_jobs(store, [(1, "a1"), (2, "b1")])
    assert await claim_prompts(queue, lease, 2) == ["a1", "b1"]
    # Both come back with a job at the same turn: b was served more recently than a.
    await queue_jobs(store, [(2, "b2"), (1, "a2")])
    assert await claim_prompts(queue, lease, 2) == ["a2", "b2"]


async def test_the_cap_holds_and_a_released_slot_lets_the_next_one_in(db: Database) -> None:
    store, queue, lease = await setup(db, 3)
    await queue_jobs(store, [(n % 2 + 1, f"job-{n}") for n in range(6)])
    claims = [await queue.claim("bfl", lease.id, lease_margin=NO_MARGIN) for _ in range(3)]
    assert sorted(c.job.slot for c in claims if c is not None) == [0, 1, 2]
    assert await queue.claim("bfl", lease.id, lease_margin=NO_MARGIN) is None  # at the cap
    first = claims[0]
    assert first is not None
    await queue.release(first.job.id, lease.id)
    again = await queue.claim("bfl", lease.id, lease_margin=NO_MARGIN)
    assert again is not None and again.job.slot == first.job.slot
    assert (await queue.counts())["bfl"] == (2, 3)


async def test_two_keys_each_keep_their_own_cap_and_share_the_load(db: Database) -> None:
    store, queue, lease = await setup(db, 2, 3)
    await queue_jobs(store, [(n + 1, f"job-{n}") for n in range(8)])
    claims = []
    while (claim := await queue.claim("bfl", lease.id, lease_margin=NO_MARGIN)) is not None:
        claims.append(claim)
    per_key = {key: sorted(c.job.slot for c in claims if c.key.key_id == key) for key in
               ("bfl:0", "bfl:1")}  # fmt: skip
    assert per_key == {"bfl:0": [0, 1], "bfl:1": [0, 1, 2]}
    stored = [await store.require(c.job.id) for c in claims]
    assert all(job.state is JobState.SUBMITTING and job.owner == lease.id for job in stored)
    assert {job.provider_key for job in stored} == {"bfl:0", "bfl:1"}


async def test_a_429_pauses_the_key_for_everyone_and_shrinks_its_limit(db: Database) -> None:
    store, queue, lease = await setup(db, 4)
    await queue_jobs(store, [(n + 1, f"job-{n}") for n in range(6)])
    claims = [await queue.claim("bfl", lease.id, lease_margin=NO_MARGIN) for _ in range(3)]
    key = queue.keys("bfl")[0]
    pause = await queue.busy(key, retry_after=0.4)
    assert pause == pytest.approx(0.4)
    # Another process's view of the same key: paused too.
    other = SharedQueue(db, bfl_keys(4), time.time)
    assert await other.pause_left("bfl") > 0.2
    assert await other.claim("bfl", lease.id, lease_margin=NO_MARGIN) is None
    await asyncio.sleep(0.45)
    # The pause is over; the limit is what the provider held minus the one refused: 2 of 3.
    for claim in claims[:2]:
        assert claim is not None
        await queue.release(claim.job.id, lease.id)
    assert await other.claim("bfl", lease.id, lease_margin=NO_MARGIN) is not None
    assert await other.claim("bfl", lease.id, lease_margin=NO_MARGIN) is None  # limit 2
    # Accepted submits raise the limit again, one at a time, back to the cap.
    await queue.accepted(key)
    await queue.accepted(key)
    assert await other.claim("bfl", lease.id, lease_margin=NO_MARGIN) is not None  # limit 3


async def test_a_claimer_without_a_live_lease_claims_nothing(db: Database) -> None:
    store, queue, lease = await setup(db, 4)
    jobs = await queue_jobs(store, [(1, "job")])
    assert await queue.claim("bfl", lease.id, lease_margin=lease.seconds + 5) is None
    await lease.release()
    assert await queue.claim("bfl", lease.id, lease_margin=NO_MARGIN) is None
    assert await queue.claim("bfl", "p-nobody", lease_margin=NO_MARGIN) is None
    job = await store.require(jobs["job"].id)
    assert job.state is JobState.QUEUED and job.owner is None


async def test_a_lease_is_surely_held_by_the_processs_own_clock_only_while_it_runs(
    db: Database,
) -> None:
    """What a process may still say about its jobs without asking the database (a paused
    process must not, on waking, undo what the process that adopted them showed)."""
    lease = ProcessLease(db, seconds=0.4)
    assert not lease.surely_held  # nothing registered yet
    await lease.register()
    assert lease.surely_held and await lease.remaining() > 0
    await asyncio.sleep(0.5)  # not renewed for longer than the lease (a pause)
    assert not lease.surely_held and await lease.remaining() <= 0
    assert not await lease.renew()  # too late: it stays unheld
    assert not lease.surely_held
    await lease.register()  # rejoined under a new identity
    assert lease.surely_held
    assert await lease.renew() and lease.surely_held
    await lease.release()
    assert not lease.surely_held


async def test_the_unique_index_refuses_a_second_holder_of_a_slot(
    db: Database, request: pytest.FixtureRequest
) -> None:
    store, _, _ = await setup(db, 4)
    jobs = await queue_jobs(store, [(1, "a"), (2, "b")])
    sql = "UPDATE jobs SET provider_key = 'bfl:0', slot = 0 WHERE id = ?"
    await db.execute(sql, (jobs["a"].id,))
    expected: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    refused: type[Exception] = sqlite3.IntegrityError
    if on_postgres():
        import asyncpg

        expected = request.getfixturevalue("postgres_server").expect_error("jobs_provider_slot")
        refused = asyncpg.UniqueViolationError
    with expected, pytest.raises(refused):
        await db.execute(sql, (jobs["b"].id,))


async def test_an_engine_stop_hands_its_jobs_over_at_once(
    db: Database, notifier: RecordingNotifier
) -> None:
    """A clean stop gives the lease up: a job it was following is adopted at once."""
    store, queue, lease = await setup(db, 4)
    await queue_jobs(store, [(1, "running")])
    claim = await queue.claim("bfl", lease.id, lease_margin=NO_MARGIN)
    assert claim is not None
    await store.transition(claim.job.id, from_states=(JobState.SUBMITTING,),
                           to=JobState.SUBMITTED, provider_task_id="t-1")  # fmt: skip
    other = JobStore(db, time.time)
    other_lease = ProcessLease(db)
    await other_lease.register()
    other.owner = other_lease.id
    assert await adopt_jobs(db, other_lease.id, everything=False) == []  # its owner is alive
    await lease.release()
    adopted = await adopt_jobs(db, other_lease.id, everything=False)
    assert [job.id for job in adopted] == [claim.job.id]
    assert adopted[0].owner == other_lease.id
    # The first owner's late writes are fenced off.
    assert await store.transition(claim.job.id, from_states=(JobState.SUBMITTED,),
                                  to=JobState.FAILED) is None  # fmt: skip
    assert (await other.require(claim.job.id)).state is JobState.SUBMITTED


async def test_several_claims_in_one_transaction_keep_the_cap_and_the_turns(
    db: Database,
) -> None:
    store, queue, lease = await setup(db, 3)
    await queue_jobs(store, [(1, "a1"), (1, "a2"), (1, "a3"), (2, "b1"), (3, "c1")])
    claims = await queue.claim_some("bfl", lease.id, lease_margin=NO_MARGIN, most=8)
    assert [c.job.prompt for c in claims] == ["a1", "b1", "c1"]  # three free slots only
    assert sorted(c.job.slot for c in claims) == [0, 1, 2]
    assert await queue.claim_some("bfl", lease.id, lease_margin=NO_MARGIN, most=8) == []


async def test_a_new_jobs_place_matches_the_ranked_queue(db: Database) -> None:
    """The accept's cheap count (`place_of_newest`) agrees with the queue's full ranking for
    every new job, as members come and go and are served in between."""
    store, queue, lease = await setup(db, 50)
    rng = random.Random(7)
    for n in range(60):
        if n % 7 == 6:
            await claim_prompts(queue, lease, rng.randint(1, 3))
        job = await store.create(
            make_request(f"job-{n}", user_id=rng.randint(1, 6)), estimated_cost=1
        )
        ranked = await queue.position(job)
        assert ranked is not None
        assert await queue.place_of_newest(db, job) == ranked, f"job {n}"
