"""Two real bot processes (`python -m bot`, through tests/multiprocess/run_bot.py) on one
PostgreSQL database: the Discord stand-in with two shards (a guild on each), the BFL
stand-in with two keys at cap 24, a round-robin load balancer in front of both processes'
webhook receivers. About 300 commands from 40 members, some over their allowance and some
cancelled; one process is killed with SIGKILL mid-flight and started again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.jobs.engine import INTERRUPTED_MESSAGE
from bot.storage.db import Database, open_database
from tests.fakes.bfl_server import FakeBFL
from tests.fakes.discord.models import Channel, InteractionHandle, User
from tests.fakes.discord_server import FakeDiscord
from tests.postgres_fixtures import DsnFactory, on_postgres
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.skipif(not on_postgres(), reason="several processes need PostgreSQL")

ROOT = Path(__file__).resolve().parents[2]
KEY_A, KEY_B = "key-a-0123456789abcdef", "key-b-0123456789abcdef"
DAILY_IMAGES = 7
MEMBERS_PER_GUILD = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoadBalancer:
    """Forwards each webhook to the next process in turn (skipping one that is down)."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.forwarded: Counter[int] = Counter()
        self._turn = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhooks/bfl/{job_id}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower().startswith("x-")}
        headers["Content-Type"] = request.headers.get("Content-Type", "application/json")
        for _ in range(len(self.ports)):
            port = self.ports[self._turn % len(self.ports)]
            self._turn += 1
            try:
                async with self._session.post(
                    f"http://127.0.0.1:{port}{request.path}", data=body, headers=headers
                ) as answer:
                    self.forwarded[port] += 1
                    return web.Response(status=answer.status, body=await answer.read())
            except aiohttp.ClientError:
                continue  # that process is down: the next one
        return web.Response(status=502)


@dataclass
class Fleet:
    discord: FakeDiscord
    bfl: FakeBFL
    dsn: str
    balancer: LoadBalancer
    ports: list[int]
    logs: Path
    processes: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)

    def env(self, shard: int) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("FLUXCORD_", "PYTEST"))},
            "PYTHONPATH": str(ROOT),
            "FLUXCORD_TEST_DISCORD": self.discord.base_url,
            "DISCORD_TOKEN": self.discord.token,
            "BFL_API_KEY": KEY_A,
            "BFL_API_KEYS": f"{KEY_B}:24",
            "BFL_API_BASE": self.bfl.base_url,
            "ALLOW_LOOPBACK_PROVIDER_URLS": "true",
            "DATABASE_URL": self.dsn,
            "SHARD_COUNT": "2",
            "SHARD_IDS": str(shard),
            "LEASE_SECONDS": "3",
            "WEB_HOST": "127.0.0.1",
            "WEB_PORT": str(self.ports[shard]),
            "WEBHOOK_PUBLIC_URL": self.balancer.url,
            "WEBHOOK_GRACE_SECONDS": "4",
            "POLL_INITIAL_INTERVAL": "0.3",
            "POLL_MAX_INTERVAL": "1",
            "JOB_DEADLINE_SECONDS": "120",
            "DEFAULT_USER_DAILY_IMAGES": str(DAILY_IMAGES),
            "MAX_JOBS_IN_FLIGHT_PER_MEMBER": "20",
            "BUTTON_COOLDOWN_SECONDS": "0",
            "LOG_LEVEL": "WARNING",
        }

    async def start(self, shard: int) -> None:
        log = (self.logs / f"bot-{shard}.log").open("a")
        self.processes[shard] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.multiprocess.run_bot", cwd=ROOT, env=self.env(shard),
            stdout=log, stderr=log,
        )  # fmt: skip

    def kill(self, shard: int) -> None:
        self.processes[shard].send_signal(signal.SIGKILL)

    async def stop_all(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()

    def log_text(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.logs.glob("bot-*.log")))


@pytest.fixture
async def fleet(
    postgres_dsn_factory: DsnFactory, postgres_server: PostgresServer, tmp_path: Path
) -> AsyncIterator[Fleet]:
    dsn = postgres_dsn_factory()
    # Stopping a process cancels its tasks, some in the middle of a statement.
    stack = contextlib.ExitStack()
    stack.enter_context(postgres_server.expect_error("canceling statement due to user request"))
    ports = [free_port(), free_port()]
    async with (
        FakeBFL(api_keys={KEY_A: 24, KEY_B: 24}, latency=3.0) as bfl,
        FakeDiscord(shard_count=2) as discord,
    ):
        balancer = LoadBalancer(ports)
        await balancer.start()
        fleet = Fleet(discord, bfl, dsn, balancer, ports, tmp_path)
        try:
            yield fleet
        finally:
            await fleet.stop_all()
            await balancer.stop()
            stack.close()


@dataclass
class Place:
    channel: Channel
    members: list[User]


async def wait_until(check: Any, within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


async def test_two_processes_share_shards_keys_and_jobs_and_survive_a_kill(
    fleet: Fleet,
) -> None:
    discord = fleet.discord
    places = []
    for shard in (0, 1):
        guild = discord.add_guild(f"Shard {shard} server", shard_id=shard)
        channel = discord.add_text_channel(guild.id, "art")
        members = [discord.add_member(guild.id, f"s{shard}m{n}") for n in range(MEMBERS_PER_GUILD)]
        places.append(Place(channel, members))
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

    async def ask(place_index: int, member: User, prompt: str) -> None:
        async with limit:
            handle = await discord.invoke_slash(
                member, places[place_index].channel, "imagine", {"prompt": prompt}
            )
            handles.append((prompt, handle))

    first, rest = requests[:150], requests[150:]
    await asyncio.gather(*(ask(*request) for request in first))
    assert await cancel_some(discord, places) == 8
    # Shard 1's process dies with jobs queued, being submitted and running.
    doomed = fleet.processes[1]
    lease = await db.fetch_value(
        "SELECT id FROM processes WHERE description LIKE ?", (f"% pid {doomed.pid}",)
    )

    async def in_flight() -> bool:
        running = await db.fetch_value(
            "SELECT COUNT(*) FROM jobs WHERE owner = ? AND state = 'submitted'", (lease,)
        )
        return int(running) >= 5

    await wait_until(in_flight, 30, "shard 1's process to have jobs at the provider")
    fleet.kill(1)
    await doomed.wait()
    orphans = [
        row["id"]
        for row in await db.fetch_all(
            "SELECT id FROM jobs WHERE owner = ? AND closed = 0", (lease,)
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

    await wait_until(all_answered_and_closed, 120, "every request answered and every job ended")
    # The dead process's jobs were adopted and ended by another (or by it, restarted).
    ended = await db.fetch_all(
        f"SELECT owner FROM jobs WHERE id IN ({','.join('?' for _ in orphans)})", orphans
    )
    assert all(row["owner"] != lease for row in ended)
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
    await asyncio.sleep(0.5)  # the member joins reach the bots
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

    await wait_until(all_made_and_closed, 120, "every late job to be made and to end")
    late = await db.fetch_all("SELECT state FROM jobs ORDER BY created_at OFFSET ?", (before,))
    assert len(late) == 120 and {row["state"] for row in late} == {"delivered"}
    assert bfl.rejected_429 > 0
    assert bfl.max_active_seen_by_key[KEY_A] <= 24 and bfl.max_active_seen_by_key[KEY_B] <= 24
    assert await db.fetch_value("SELECT COUNT(*) FROM ledger WHERE status = 'reserved'") == 0
    await check_usage_totals(db)


async def cancel_some(discord: FakeDiscord, places: list[Place]) -> int:
    """A few members cancel a request still waiting in line; returns how many clicked."""
    bot_id = discord.application_id

    def waiting() -> list[tuple[User, Any, str]]:
        found = []
        for place in places:
            members = {f"<@{m.id}>": m for m in place.members}
            for message in discord.messages(place.channel.id):
                ids = [c for c in message.custom_ids if c.startswith("flux:cancel:")]
                requester = next((m for tag, m in members.items() if tag in message.content), None)
                if message.author_id == bot_id and ids and requester is not None:
                    found.append((requester, message, ids[0]))
        return found

    async def some_waiting() -> bool:
        return len(waiting()) >= 8

    await wait_until(some_waiting, 20, "requests waiting in line")
    clicks = 0
    # The newest waiting messages: those jobs are the furthest back in line.
    newest_first = sorted(waiting(), key=lambda found: found[1].id, reverse=True)
    for requester, message, custom_id in newest_first[:8]:
        await discord.click(requester, message, custom_id)
        clicks += 1
    return clicks


async def check_outcomes(
    fleet: Fleet, db: Database, handles: list[tuple[str, InteractionHandle]]
) -> None:
    discord, bfl = fleet.discord, fleet.bfl
    jobs = await db.fetch_all("SELECT * FROM jobs")
    states = Counter(row["state"] for row in jobs)
    delivered = [row for row in jobs if row["state"] == "delivered"]
    assert states["delivered"] > 200, states
    assert set(states) <= {"delivered", "failed", "cancelled"}, states
    assert states["cancelled"] > 0  # the members who cancelled a waiting request
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
