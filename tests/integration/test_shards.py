"""Shards over several processes: settings, leases (never one shard in two processes) and
the fleet-wide IDENTIFY turns. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from bot.errors import SettingsError
from bot.settings import load_settings, parse_shard_ids
from bot.shards import IdentifyGate, ShardFleet, ShardLeases, ShardTaken, shard_for
from bot.storage.base import DATABASE_NOW
from bot.storage.db import Database
from tests.postgres_fixtures import on_postgres

PG_URL = "postgresql://fluxcord@127.0.0.1/fluxcord"


def test_guilds_map_to_shards_as_discord_defines() -> None:
    guild = (123456 << 22) | 999
    assert shard_for(guild, 4) == 123456 % 4
    assert shard_for(None, 4) == 0  # direct messages


def test_shard_ids_accept_lists_and_ranges() -> None:
    assert parse_shard_ids("0-2,5") == [0, 1, 2, 5]
    assert parse_shard_ids(" 3 ") == [3]
    for bad in ("a", "2-1", "-1", ""):
        with pytest.raises(ValueError, match="SHARD_IDS"):
            parse_shard_ids(bad)


def test_part_of_the_shards_without_postgresql_is_refused_in_one_line() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(discord_token="t", shard_count=2, shard_ids="0")
    assert "needs PostgreSQL" in str(refused.value) and "DATABASE_URL" in str(refused.value)
    # All the shards in one process is fine on SQLite; a subset is fine on PostgreSQL.
    assert load_settings(discord_token="t", shard_count=2, shard_ids="0-1").process_shard_ids == [
        0,
        1,
    ]
    assert load_settings(
        discord_token="t", shard_count=2, shard_ids="1", database_url=PG_URL
    ).process_shard_ids == [1]
    with pytest.raises(SettingsError, match="SHARD_IDS 2 is not a shard of SHARD_COUNT=2"):
        load_settings(discord_token="t", shard_count=2, shard_ids="2", database_url=PG_URL)
    with pytest.raises(SettingsError, match="SHARD_IDS needs SHARD_COUNT"):
        load_settings(discord_token="t", shard_ids="0")


def test_several_bfl_keys_with_caps_and_errors_that_never_show_a_key() -> None:
    settings = load_settings(
        discord_token="t", bfl_api_key="first-key", bfl_api_keys="second-key:20, third-key"
    )
    assert settings.bfl_keys() == [("first-key", 24), ("second-key", 20), ("third-key", 24)]
    for bad, reason in (
        ("secret-one:lots", "entry 1 has a cap that is not a number"),
        ("ok-key:5,secret-two:0", "entry 2 has a cap outside 1-1000"),
        ("first-key", "same key twice"),
    ):
        with pytest.raises(SettingsError) as refused:
            load_settings(discord_token="t", bfl_api_key="first-key", bfl_api_keys=bad)
        message = str(refused.value)
        assert reason in message and "secret" not in message and "first-key" not in message


async def test_a_shard_is_never_held_by_two_processes(db: Database) -> None:
    first = ShardLeases(db, "process-a", [0, 1], 2, seconds=0.6)
    second = ShardLeases(db, "process-b", [1], 2, seconds=0.6)
    await first.acquire()
    renewing = True

    async def keep_renewing() -> None:
        while renewing:
            assert await first.renew()
            await asyncio.sleep(0.1)

    renewer = asyncio.create_task(keep_renewing())
    started = time.monotonic()
    with pytest.raises(ShardTaken, match="shard 1 is held by another process"):
        await second.acquire()
    assert time.monotonic() - started >= 1.2  # it waited out two lease lengths first
    renewing = False
    await renewer
    await first.release()
    await second.acquire()  # the first process is gone: the shard is free at once
    rows = await db.fetch_all("SELECT shard_id, owner FROM shard_leases ORDER BY shard_id")
    assert [(row["shard_id"], row["owner"]) for row in rows] == [(1, "process-b")]


async def test_a_dead_processes_shard_is_taken_once_its_lease_runs_out(db: Database) -> None:
    dead = ShardLeases(db, "dead", [0], 1, seconds=0.3)
    await dead.acquire()  # and never renewed: the process was killed
    successor = ShardLeases(db, "successor", [0], 1, seconds=0.3)
    started = time.monotonic()
    await successor.acquire()
    assert 0.2 <= time.monotonic() - started < 2.0
    assert not await dead.renew()  # the dead one, back late, learns it lost the shard


async def test_a_different_shard_count_is_refused(db: Database) -> None:
    await ShardLeases(db, "old", [0, 1], 2, seconds=5).acquire()
    with pytest.raises(ShardTaken, match="SHARD_COUNT=2"):
        await ShardLeases(db, "new", [2], 4, seconds=0.05).acquire()


async def test_identify_turns_are_spaced_per_bucket_over_the_fleet(db: Database) -> None:
    # Two processes' gates on one store; max_concurrency 2: buckets 0 and 1.
    interval = 1.0
    gates = [IdentifyGate(db, interval=interval), IdentifyGate(db, interval=interval)]
    for gate in gates:
        gate.max_concurrency = 2
    loop = asyncio.get_running_loop()
    started = loop.time()
    times: dict[int, float] = {}

    async def identify(gate: IdentifyGate, shard: int) -> None:
        await gate.wait_turn(shard)
        times[shard] = loop.time() - started

    await asyncio.gather(
        identify(gates[0], 0), identify(gates[1], 2), identify(gates[0], 1), identify(gates[1], 3)
    )
    bucket0 = sorted([times[0], times[2]])
    bucket1 = sorted([times[1], times[3]])
    # One of each bucket at once: the buckets don't wait for each other (on a loaded machine
    # "at once" can take a few tenths of a second, so compare with the interval, not a clock).
    assert abs(bucket0[0] - bucket1[0]) < interval * 0.75
    assert bucket0[1] - bucket0[0] >= interval * 0.95 and bucket1[1] - bucket1[0] >= interval * 0.95


@pytest.fixture
def leaving_cancels_a_statement(request: pytest.FixtureRequest) -> Iterator[None]:
    """`ShardFleet.leave` stops its renewals, maybe in the middle of one: PostgreSQL logs
    the statement as cancelled."""
    if not on_postgres():
        yield
        return
    server = request.getfixturevalue("postgres_server")
    with server.expect_error("canceling statement due to user request"):
        yield


class Sessions:
    """What a lost shard lease did to the gateway sessions (cogs/client.py disconnects on
    `on_lost` and connects again on `on_regained`)."""

    def __init__(self) -> None:
        self.lost = asyncio.Event()
        self.regained = asyncio.Event()

    async def on_lost(self) -> None:
        self.lost.set()

    async def on_regained(self) -> None:
        self.regained.set()


async def wait_for(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Wait for a condition the fleet reaches by itself (checked every 20 ms)."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


@pytest.mark.usefixtures("leaving_cancels_a_statement")
async def test_a_lease_that_ran_out_while_nobody_took_the_shard_keeps_its_sessions(
    db: Database,
) -> None:
    fleet, sessions = ShardFleet(db, [0], 1, lease_seconds=0.4), Sessions()
    await fleet.join(on_lost=sessions.on_lost, on_regained=sessions.on_regained)
    try:
        # The database was unreachable for longer than the lease: it has run out.
        await db.execute("UPDATE shard_leases SET lease_expires_at = 0")

        async def held_again() -> bool:
            now = DATABASE_NOW[db.backend]
            rows = await db.fetch_all(
                f"SELECT owner FROM shard_leases WHERE lease_expires_at > {now}"
            )
            return [row["owner"] for row in rows] == [fleet.leases.owner]

        await wait_for(held_again)
        assert not sessions.lost.is_set()  # never disconnected: no IDENTIFY, no second session
    finally:
        await fleet.leave()


@pytest.mark.usefixtures("leaving_cancels_a_statement")
async def test_a_lease_taken_by_another_process_meanwhile_disconnects_until_it_is_free(
    db: Database,
) -> None:
    fleet, sessions = ShardFleet(db, [0], 1, lease_seconds=0.4), Sessions()
    await fleet.join(on_lost=sessions.on_lost, on_regained=sessions.on_regained)
    try:
        await db.execute(
            "UPDATE shard_leases SET owner = 'another process',"
            f" lease_expires_at = {DATABASE_NOW[db.backend]} + 60"
        )
        await asyncio.wait_for(sessions.lost.wait(), 5)  # it stands by
        assert not sessions.regained.is_set()
        await db.execute("DELETE FROM shard_leases")  # the other process stopped
        await asyncio.wait_for(sessions.regained.wait(), 5)
        owners = await db.fetch_all("SELECT owner FROM shard_leases")
        assert [row["owner"] for row in owners] == [fleet.leases.owner]
    finally:
        await fleet.leave()
