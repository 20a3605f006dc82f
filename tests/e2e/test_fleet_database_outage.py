"""A database outage longer than LEASE_SECONDS does not quietly end the fleet (issue 21,
item 2): the real bot process (`python -m bot`, through tests/multiprocess/run_bot.py) on a
PostgreSQL server of the test's own, stopped for 30 s with a lease of 3 s. The process keeps
running and takes its shard back when the database returns (keeping its gateway session: no
other process took the shard); the next `/imagine` is delivered; its log says the database
was unreachable once and back once, with no traceback."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.storage.base import DATABASE_NOW
from bot.storage.db import open_database
from tests.e2e.fleet import Fleet, Place, add_places, running_fleet, wait_until
from tests.fakes.discord.models import Message
from tests.postgres_fixtures import on_postgres
from tests.postgres_server import PostgresServer, find_binaries

pytestmark = pytest.mark.skipif(not on_postgres(), reason="several processes need PostgreSQL")

OUTAGE_SECONDS = 30.0
# Who may say something about a lease that ran out: the shards (lost, held again), the job
# lease (lost, rejoined).
LEASE_LOGGERS = {"cogs.client", "bot.shards", "bot.jobs.work"}


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own, to stop and start (the session's is shared)."""
    binaries = find_binaries()
    if binaries is None:
        if os.environ.get("FLUXCORD_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required (FLUXCORD_REQUIRE_POSTGRES) but not installed")
        pytest.skip("PostgreSQL is not installed")
    server = PostgresServer(binaries)
    server.start()
    yield server
    server.stop()


async def imagine_delivered(fleet: Fleet, place: Place, prompt: str, within: float) -> None:
    """A member asks for an image and it is posted: the bytes BFL made for that prompt."""
    discord, bot_id = fleet.discord, fleet.discord.application_id
    before = max((m.id for m in discord.messages(place.channel.id)), default=0)
    await discord.invoke_slash(place.members[0], place.channel, "imagine", {"prompt": prompt})

    def result() -> Message | None:
        found = [
            m
            for m in discord.messages(place.channel.id)
            if m.id > before and m.author_id == bot_id and m.attachments
        ]
        return found[0] if found else None

    message = await discord.wait_for(result, timeout=within)
    [task] = [task for task in fleet.bfl.tasks.values() if task.body["prompt"] == prompt]
    assert message.attachments[0].data == fleet.bfl.image_bytes(task.id)


async def test_an_outage_longer_than_the_lease_does_not_end_the_bot(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    dsn = own_postgres.fresh_database("fleet_outage")
    async with running_fleet(dsn, tmp_path, shard_count=1, latency=0.5) as fleet:
        discord = fleet.discord
        [place] = add_places(discord, 1)
        await fleet.start(0)
        await discord.wait_until_connected(timeout=60)
        process = fleet.processes[0]
        await imagine_delivered(fleet, place, "before the outage", within=30)

        await asyncio.to_thread(own_postgres.halt, "fast")
        await asyncio.sleep(OUTAGE_SECONDS)  # how long the database is down (not a wait)
        await asyncio.to_thread(own_postgres.resume_serving)

        # Its shard lease ran out meanwhile; nobody else took the shard, so it holds it
        # again, without exiting.
        db = await open_database(dsn, migrate=False)
        try:

            async def holds_its_shard_again() -> bool:
                assert process.returncode is None, f"the bot exited with {process.returncode}"
                held = await db.fetch_value(
                    "SELECT COUNT(*) FROM shard_leases"
                    f" WHERE lease_expires_at > {DATABASE_NOW['postgres']}"
                )
                return held == 1 and discord.gateway_connected

            await wait_until(holds_its_shard_again, 60, "the bot to hold its shard again")
        finally:
            await db.close()
        await imagine_delivered(fleet, place, "after the outage", within=30)
        assert process.returncode is None
        assert discord.overlapping_shard_sessions == 0

    log = fleet.log_text()
    assert process.returncode == 0  # it ended when the test stopped it (SIGTERM), cleanly
    assert "Traceback" not in log, log
    said = [match.groups() for match in re.finditer(r" (WARNING|ERROR) +([\w.]+): (.*)", log)]
    storage = [text for _, name, text in said if name == "bot.storage"]
    assert sum("is not answering" in text for text in storage) == 1, storage
    assert sum("answers again" in text for text in storage) == 1, storage
    # Besides those two lines, only the shards and the process lease say what they did.
    assert {name for _, name, _ in said} <= LEASE_LOGGERS | {"bot.storage"}, said
