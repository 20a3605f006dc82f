"""What a job costs the database on its way, and the claim that hands a finished task's slot
to the next job in the same transaction. Runs on SQLite and (FLUXCORD_TEST_DATABASE=postgres)
on PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.jobs import work
from bot.jobs.claims import ProviderKey, SharedQueue
from bot.jobs.following import PollingPolicy
from bot.jobs.leases import ProcessLease
from bot.jobs.models import Job, JobState
from bot.jobs.store import JobStore
from bot.storage.db import Database
from tests.conftest import EngineFactory, make_request
from tests.fakes.bfl_server import FakeBFL

# What starting an engine costs, at most: key rows, lease, adoption, the first heartbeat and
# chores, the database clock (10 on SQLite, a few more with PostgreSQL's polls of the shared
# queue and of recorded webhooks). Small beside the jobs, so a regression of one
# transaction per job (JOBS) cannot hide in it.
STARTING = 20
JOBS = 40
# Per job on its way: the claim (with its webhook secret and the lease check), submitted,
# the release (with the next job's claim), ready, delivered.
MOST_PER_JOB = 4


async def test_a_job_on_its_way_costs_at_most_four_transactions(
    db: Database, make_engine: EngineFactory, fake_bfl: FakeBFL, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough that polls see the provider's status text change on the way: showing it
    # costs no transaction.
    fake_bfl.latency = 0.15
    monkeypatch.setattr(work, "METRICS_REFRESH_INTERVAL", 3600.0)  # a chore, not the jobs'
    engine = await make_engine(
        max_active=4, start=False, polling=PollingPolicy(initial=0.05, maximum=0.1, deadline=5)
    )
    jobs = [
        await engine.store.create(make_request(f"job {n}", user_id=n % 7 + 1), estimated_cost=1)
        for n in range(JOBS)
    ]
    all_closed = asyncio.Event()
    closed: list[Job] = []

    def on_closed(job: Job) -> None:
        closed.append(job)
        if len(closed) == JOBS:
            all_closed.set()

    engine.on_job_closed(on_closed)
    before = db.committed + db.reads
    await engine.start()
    await asyncio.wait_for(all_closed.wait(), 20)
    spent = db.committed + db.reads - before

    assert {job.id for job in closed} == {job.id for job in jobs}
    assert all(job.state is JobState.DELIVERED for job in closed)
    assert spent <= MOST_PER_JOB * JOBS + STARTING, f"{spent / JOBS:.2f} per job"
    assert sum(task.polls for task in fake_bfl.tasks.values()) > JOBS  # some saw "Pending"


def bfl_keys(*caps: int) -> list[ProviderKey]:
    # The client is never called here: claims only touch the database.
    return [ProviderKey(f"bfl:{n}", "bfl", None, cap) for n, cap in enumerate(caps)]  # type: ignore[arg-type]


async def one_slot_two_jobs(db: Database) -> tuple[JobStore, SharedQueue, ProcessLease, Job]:
    """A key with one slot, a first job holding it and a second one queued."""
    store = JobStore(db, time.time)
    queue = SharedQueue(db, bfl_keys(1), time.time)
    await queue.prepare()
    lease = ProcessLease(db)
    await lease.register()
    store.owner = lease.id
    for n in range(2):
        await store.create(make_request(f"job {n}", user_id=n + 1), estimated_cost=1)
    first = await queue.claim("bfl", lease.id, lease_margin=0.0)
    assert first is not None and first.job.prompt == "job 0"
    return store, queue, lease, first.job


async def test_a_finished_tasks_slot_goes_to_the_next_job_in_one_commit(db: Database) -> None:
    store, queue, lease, first = await one_slot_two_jobs(db)
    committed = db.committed

    claimed = await queue.release_and_claim(
        [first.id], "bfl", lease.id, lease_margin=0.0, most=8, secret_for=lambda key: "s3cret"
    )

    assert db.committed == committed + 1
    [claim] = claimed.claims
    assert (claim.job.prompt, claim.job.slot, claim.job.state) == ("job 1", 0, JobState.SUBMITTING)
    second = await store.require(claim.job.id)
    assert (second.slot, second.webhook_secret, second.owner) == (0, "s3cret", lease.id)
    assert (await store.require(first.id)).slot is None
    assert (await queue.counts())["bfl"] == (0, 1)


async def test_a_crash_between_the_release_and_the_claim_loses_nothing(db: Database) -> None:
    store, queue, lease, first = await one_slot_two_jobs(db)

    def crash(key: ProviderKey) -> str:
        raise RuntimeError("the process died between the release and the claim")

    with pytest.raises(RuntimeError):
        await queue.release_and_claim(
            [first.id], "bfl", lease.id, lease_margin=0.0, most=8, secret_for=crash
        )

    # Nothing half done: the finished task still holds its slot, the next job still waits.
    assert (await store.require(first.id)).slot == 0
    assert (await queue.counts())["bfl"] == (1, 1)
    # And the hand-over works when tried again.
    claimed = await queue.release_and_claim([first.id], "bfl", lease.id, lease_margin=0.0, most=8)
    assert [claim.job.prompt for claim in claimed.claims] == ["job 1"]


async def test_a_released_slot_with_nothing_queued_stays_free_for_any_process(
    db: Database,
) -> None:
    store, queue, lease, first = await one_slot_two_jobs(db)
    taken = await queue.release_and_claim([first.id], "bfl", lease.id, lease_margin=0.0, most=8)
    [second] = taken.claims

    # Releasing the second with no job left frees the slot for whoever comes next.
    left = await queue.release_and_claim([second.job.id], "bfl", lease.id, lease_margin=0.0, most=8)

    assert left.claims == [] and not left.slots_full
    assert (await queue.counts()).get("bfl", (0, 0)) == (0, 0)
    await store.create(make_request("job 2", user_id=3), estimated_cost=1)
    other = SharedQueue(db, bfl_keys(1), time.time)  # another process's view
    claim = await other.claim("bfl", lease.id, lease_margin=0.0)
    assert claim is not None and claim.job.prompt == "job 2" and claim.job.slot == 0
