"""One frozen process cannot stall the fleet (issue 21, item 3): two real bot processes
(`python -m bot`, through tests/multiprocess/run_bot.py, a shard each) share 40 queued
requests over 4 BFL slots. One of them is frozen with SIGSTOP for 30 s, caught (when the
test manages to) holding the claims' lock in an open transaction, as a paused VM or a
half-open connection would leave it. The other keeps delivering: no gap between two
deliveries is longer than the lease plus a few seconds while work remains. After SIGCONT,
nothing is posted, charged or sent to BFL twice."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.jobs.engine import INTERRUPTED_MESSAGE
from bot.storage.base import DATABASE_NOW
from bot.storage.db import Database, open_database
from tests.e2e.fleet import (
    KEY_A,
    KEY_B,
    Fleet,
    add_places,
    describe_open_jobs,
    running_fleet,
    wait_until,
)
from tests.postgres_fixtures import DsnFactory, on_postgres
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.skipif(not on_postgres(), reason="several processes need PostgreSQL")

LEASE_SECONDS = 3.0
FROZEN_SECONDS = 30.0
REQUESTS = 40
MEMBERS_PER_GUILD = 10  # two requests each
LATENCY = 2.0  # 4 slots: about 2 deliveries a second while nothing is frozen


@pytest.fixture
async def fleet(
    postgres_dsn_factory: DsnFactory, postgres_server: PostgresServer, tmp_path: Path
) -> AsyncIterator[Fleet]:
    dsn = postgres_dsn_factory()
    with contextlib.ExitStack() as expected:
        # What the server says about the frozen process's sessions: its open transaction is
        # cut off (idle in it by the server; frozen mid-statement, holding the claims' lock,
        # by the other process: bot/storage/postgres.py), a claim waiting behind its lock
        # gives up, and stopping cancels statements.
        for error in (
            "idle-in-transaction timeout",
            "terminating connection due to administrator command",
            "canceling statement due to lock timeout",
            "canceling statement due to user request",
        ):
            expected.enter_context(postgres_server.expect_error(error))
        async with running_fleet(
            dsn,
            tmp_path,
            keys={KEY_A: 2, KEY_B: 2},
            latency=LATENCY,
            settings={"LEASE_SECONDS": str(LEASE_SECONDS)},
        ) as fleet:
            yield fleet


def tcp_ports_of(pid: int) -> set[int]:
    """The local ports of process `pid`'s TCP sockets (Linux /proc): its database sessions
    are the server's `client_port`s."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    ports = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[9]) in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


ADVISORY_HOLDERS = (
    "SELECT a.client_port FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND a.client_port IS NOT NULL"
)


async def freeze_one_while_it_claims(fleet: Fleet, db: Database, within: float) -> int:
    """SIGSTOP whichever process is first seen holding an advisory lock (claims take the
    provider's: bot/jobs/claims.py), or, after `within` seconds, process 0. Returns its
    shard."""
    pids = {shard: process.pid for shard, process in fleet.processes.items()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        # Its sessions' ports (a pool connection may be opened meanwhile: read again).
        ports = {shard: tcp_ports_of(pid) for shard, pid in pids.items()}
        for _ in range(100):  # as often as the database answers: a claim lasts milliseconds
            holders = {int(row["client_port"]) for row in await db.fetch_all(ADVISORY_HOLDERS)}
            for shard, pid in pids.items():
                if holders & ports[shard]:
                    os.kill(pid, signal.SIGSTOP)
                    return shard
    os.kill(pids[0], signal.SIGSTOP)
    return 0


async def locks_held_by(db: Database, pid: int) -> int:
    """How many advisory locks the sessions of process `pid` hold."""
    ports = tcp_ports_of(pid)
    return sum(1 for row in await db.fetch_all(ADVISORY_HOLDERS) if row["client_port"] in ports)


async def test_a_frozen_process_does_not_stall_the_fleet(fleet: Fleet) -> None:
    discord, bfl = fleet.discord, fleet.bfl
    places = add_places(discord, MEMBERS_PER_GUILD)
    await fleet.start(0)
    await fleet.start(1)
    await discord.wait_until_connected(timeout=60)
    db = await open_database(fleet.dsn, migrate=False)
    bot_id = discord.application_id
    loop = asyncio.get_running_loop()
    delivered_at: list[float] = []

    def result_count() -> int:
        return sum(
            1
            for place in places
            for message in discord.messages(place.channel.id)
            if message.author_id == bot_id and message.attachments
        )

    def more_than(seen: int) -> int:
        count = result_count()
        return count if count > seen else 0

    async def watch_deliveries() -> None:
        while True:
            seen = len(delivered_at)
            count = await discord.wait_for(functools.partial(more_than, seen), 600)
            delivered_at.extend([loop.time()] * (count - seen))

    watcher = asyncio.create_task(watch_deliveries())
    try:
        limit = asyncio.Semaphore(16)

        async def ask(place_index: int, member_index: int, n: int) -> None:
            place = places[place_index]
            prompt = f"picture {n} of {place.members[member_index].username}"
            async with limit:
                await discord.invoke_slash(
                    place.members[member_index], place.channel, "imagine", {"prompt": prompt}
                )

        await asyncio.gather(
            *(
                ask(p, m, n)
                for n in range(2)
                for m in range(MEMBERS_PER_GUILD)
                for p in range(len(places))
            )
        )

        async def all_queued() -> bool:
            return await db.fetch_value("SELECT COUNT(*) FROM jobs") == REQUESTS

        async def explain() -> str:
            return await describe_open_jobs(db, bfl)

        await wait_until(all_queued, 30, f"the {REQUESTS} requests to be accepted")
        frozen_shard = await freeze_one_while_it_claims(fleet, db, within=10)
        frozen = fleet.processes[frozen_shard]
        frozen_at = loop.time()
        # For the record (-s): how often the freeze catches it inside a claim.
        print(f"\nfroze shard {frozen_shard}'s process holding", end=" ")
        print(f"{await locks_held_by(db, frozen.pid)} advisory lock(s)")
        await asyncio.sleep(FROZEN_SECONDS)  # how long it stays frozen (not a wait)
        frozen.send_signal(signal.SIGCONT)

        async def all_ended_and_rejoined() -> bool:
            open_ = await db.fetch_value("SELECT COUNT(*) FROM jobs WHERE closed = 0")
            # Its leases ran out while it was frozen: it rejoins under a new identity,
            # dropping whatever it was doing, and holds its shard again.
            rejoined = len(await fleet.leases_of(db, frozen_shard)) >= 2
            shard_held = await db.fetch_value(
                "SELECT COUNT(*) FROM shard_leases WHERE shard_id = ?"
                f" AND lease_expires_at > {DATABASE_NOW['postgres']}",
                (frozen_shard,),
            )
            return open_ == 0 and rejoined and shard_held == 1

        await wait_until(
            all_ended_and_rejoined,
            60,
            "every job to end and the thawed process to rejoin",
            explain=explain,
        )
        await discord.wait_until_connected(timeout=30, shard_id=frozen_shard)

        # Nobody waited much longer than the lease for the frozen process.
        moments = [frozen_at, *sorted(t for t in delivered_at if t > frozen_at)]
        gaps = [later - earlier for earlier, later in itertools.pairwise(moments)]
        print(f"longest wait for a delivery: {max(gaps):.1f} s")
        assert max(gaps) <= LEASE_SECONDS + 5, [round(gap, 1) for gap in gaps]

        await check_once_each(fleet, db, frozen_at)
        assert fleet.processes[frozen_shard].returncode is None
        assert "Traceback" not in fleet.log_text()
    finally:
        watcher.cancel()
        await db.close()


async def check_once_each(fleet: Fleet, db: Database, frozen_at: float) -> None:
    """Every delivered job has exactly one result message with its own image, one charge
    and one task at BFL; a job caught mid-send was failed and refunded, never sent twice."""
    discord, bfl = fleet.discord, fleet.bfl
    jobs = await db.fetch_all("SELECT * FROM jobs")
    assert len(jobs) == REQUESTS
    delivered = [row for row in jobs if row["state"] == "delivered"]
    interrupted = [row for row in jobs if row["error"] == INTERRUPTED_MESSAGE]
    assert len(delivered) + len(interrupted) == REQUESTS, Counter(row["state"] for row in jobs)
    bot_id = discord.application_id
    results = [
        message
        for channel in {row["channel_id"] for row in jobs}
        for message in discord.messages(channel)
        if message.author_id == bot_id and message.attachments
    ]
    wrong = []
    for row in delivered:
        message = discord.message(row["result_message_id"])
        images = [attachment.data for attachment in message.attachments]
        if images != [bfl.image_bytes(row["provider_task_id"])]:
            versions = [version.get("content") for version in message.history]
            wrong.append(
                f"job {row['id']}: {len(images)} images; shows {message.content!r},"
                f" after {versions}"
            )
    assert not wrong, "results not shown as delivered:\n" + "\n".join(wrong)
    assert len(results) == len(delivered)
    # At most one task at BFL per job. (Submits answered 429 made none. On waking, the
    # frozen process may send a submit it had prepared, checked against its lease before
    # the pause, for a job since failed as interrupted: that task holds a slot the fleet
    # gave away, so a claim or two meet a 429, go back in line and are sent again.)
    tasks = Counter(bfl.tasks[s.task_id].body["prompt"] for s in bfl.submissions if s.task_id)
    twice = [
        (row["id"], row["state"], row["error"], [
            (s.status, round(s.received_at - frozen_at, 2), s.key_label, s.task_id)
            for s in bfl.submissions if s.body["prompt"] == row["prompt"]
        ])
        for row in jobs if tasks[row["prompt"]] > 1
    ]  # fmt: skip
    assert not twice, f"more than one task at BFL: {twice}"
    ledger = await db.fetch_all("SELECT job_id, status FROM ledger")
    assert Counter(row["job_id"] for row in ledger if row["status"] == "charged") == Counter(
        {row["id"]: 1 for row in delivered}
    )
    refunded = {row["job_id"] for row in ledger if row["status"] == "refunded"}
    assert {row["id"] for row in interrupted} <= refunded
    assert await db.fetch_value("SELECT COUNT(*) FROM ledger WHERE status = 'reserved'") == 0
    assert bfl.max_active_seen_by_key[KEY_A] <= 2 and bfl.max_active_seen_by_key[KEY_B] <= 2
