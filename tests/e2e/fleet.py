"""Real bot processes (`python -m bot`, through tests/multiprocess/run_bot.py) on one
PostgreSQL database, against the Discord and BFL stand-ins, with a round-robin load balancer
in front of their webhook receivers: what the several-process e2e tests share.

Process `n` runs shard `n` of `shard_count`, listens for webhooks on its own port, and logs
to `logs/bot-<n>.log`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from bot.storage.base import DATABASE_NOW
from bot.storage.db import Database
from tests.fakes.bfl_server import FakeBFL
from tests.fakes.discord.models import Channel, User
from tests.fakes.discord_server import FakeDiscord

ROOT = Path(__file__).resolve().parents[2]
KEY_A, KEY_B = "key-a-0123456789abcdef", "key-b-0123456789abcdef"
# A process that does not answer a forwarded webhook within this is left out for a while (a
# real load balancer's passive health check): a frozen process must not hold webhooks up.
FORWARD_TIMEOUT = 2.0
LEFT_OUT_FOR = 10.0
# Discord's 3 s deadline to acknowledge an interaction is enforced by the stand-in, and tested
# on its own (tests/e2e/test_discord_standin.py). Several bot processes, PostgreSQL and the
# stand-ins on a CI machine shared with another job can be starved for longer than that (seen:
# "Unknown interaction" after 3 s, so a request never answered); here a late acknowledgement
# must not lose a request, and one that never comes still fails the test.
ACK_DEADLINE = 30.0


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
        self._down_until: dict[int, float] = {}  # port → loop time it is tried again
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
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT))

    async def stop(self) -> None:
        await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower().startswith("x-")}
        headers["Content-Type"] = request.headers.get("Content-Type", "application/json")
        now = asyncio.get_running_loop().time()
        for _ in range(len(self.ports)):
            port = self.ports[self._turn % len(self.ports)]
            self._turn += 1
            if self._down_until.get(port, 0.0) > now:
                continue
            try:
                async with self._session.post(
                    f"http://127.0.0.1:{port}{request.path}", data=body, headers=headers
                ) as answer:
                    self.forwarded[port] += 1
                    return web.Response(status=answer.status, body=await answer.read())
            except (aiohttp.ClientError, TimeoutError):
                # That process is down (or frozen): the next one, and not it for a while.
                self._down_until[port] = asyncio.get_running_loop().time() + LEFT_OUT_FOR
        return web.Response(status=502)


@dataclass
class Fleet:
    discord: FakeDiscord
    bfl: FakeBFL
    dsn: str
    balancer: LoadBalancer
    ports: list[int]
    logs: Path
    # BFL keys and their caps as the bots are told (the first is BFL_API_KEY).
    keys: Mapping[str, int]
    settings: Mapping[str, str] = field(default_factory=dict)  # more (or other) settings
    processes: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)

    @property
    def shard_count(self) -> int:
        return len(self.ports)

    def env(self, shard: int) -> dict[str, str]:
        (first_key, first_cap), *more = self.keys.items()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("FLUXCORD_", "PYTEST"))},
            "PYTHONPATH": str(ROOT),
            "FLUXCORD_TEST_DISCORD": self.discord.base_url,
            "DISCORD_TOKEN": self.discord.token,
            "BFL_API_KEY": first_key,
            "PROVIDER_MAX_ACTIVE": str(first_cap),
            "BFL_API_BASE": self.bfl.base_url,
            "ALLOW_LOOPBACK_PROVIDER_URLS": "true",
            "DATABASE_URL": self.dsn,
            "SHARD_COUNT": str(self.shard_count),
            "SHARD_IDS": str(shard),
            "LEASE_SECONDS": "3",
            "WEB_HOST": "127.0.0.1",
            "WEB_PORT": str(self.ports[shard]),
            "WEBHOOK_PUBLIC_URL": self.balancer.url,
            "WEBHOOK_GRACE_SECONDS": "4",
            "POLL_INITIAL_INTERVAL": "0.3",
            "POLL_MAX_INTERVAL": "1",
            "JOB_DEADLINE_SECONDS": "120",
            "BUTTON_COOLDOWN_SECONDS": "0",
            "LOG_LEVEL": "WARNING",
        }
        if more:
            env["BFL_API_KEYS"] = ",".join(f"{key}:{cap}" for key, cap in more)
        env.update(self.settings)
        return env

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
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)  # a frozen one must hear the SIGTERM
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()

    def log_text(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.logs.glob("bot-*.log")))

    async def leases_of(self, db: Database, shard: int) -> set[str]:
        """Every lease (process identity) shard `shard`'s process has had: a process that
        lost its lease rejoins under a new one."""
        pid = self.processes[shard].pid
        rows = await db.fetch_all(
            "SELECT id FROM processes WHERE description LIKE ?", (f"% pid {pid}",)
        )
        return {row["id"] for row in rows}


@contextlib.asynccontextmanager
async def running_fleet(
    dsn: str,
    logs: Path,
    *,
    shard_count: int = 2,
    keys: Mapping[str, int] | None = None,
    latency: float = 3.0,
    settings: Mapping[str, str] | None = None,
) -> AsyncIterator[Fleet]:
    """The stand-ins and the load balancer for `shard_count` processes (none started yet);
    every process still running at the end is stopped."""
    keys = dict(keys or {KEY_A: 24, KEY_B: 24})
    ports = [free_port() for _ in range(shard_count)]
    async with (
        FakeBFL(api_keys=keys, latency=latency) as bfl,
        FakeDiscord(shard_count=shard_count, interaction_deadline=ACK_DEADLINE) as discord,
    ):
        balancer = LoadBalancer(ports)
        await balancer.start()
        fleet = Fleet(discord, bfl, dsn, balancer, ports, logs, keys, dict(settings or {}))
        try:
            yield fleet
        finally:
            await fleet.stop_all()
            await balancer.stop()


@dataclass
class Place:
    channel: Channel
    members: list[User]


def add_places(discord: FakeDiscord, members_per_guild: int) -> list[Place]:
    """A server on each shard, with a channel and `members_per_guild` members."""
    places = []
    for shard in range(discord.shard_count):
        guild = discord.add_guild(f"Shard {shard} server", shard_id=shard)
        channel = discord.add_text_channel(guild.id, "art")
        members = [discord.add_member(guild.id, f"s{shard}m{n}") for n in range(members_per_guild)]
        places.append(Place(channel, members))
    return places


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    within: float,
    what: str,
    *,
    explain: Callable[[], Awaitable[str]] | None = None,
) -> None:
    """Wait for a condition the system reaches by itself; on timeout, fail saying what was
    awaited and (`explain`) what the system looked like then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            detail = f"\n{await explain()}" if explain is not None else ""
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}{detail}")
        await asyncio.sleep(0.25)


async def describe_open_jobs(db: Database, bfl: FakeBFL) -> str:
    """The unfinished jobs (state, owner, slot, the provider's view of their task) and the
    process leases: what a stuck run needs to be understood."""
    lines = ["process leases (id, description, seconds left):"]
    for row in await db.fetch_all(
        f"SELECT id, description, lease_expires_at - {DATABASE_NOW['postgres']} AS left_s"
        " FROM processes ORDER BY started_at"
    ):
        lines.append(f"  {row['id']} {row['description']} {float(row['left_s']):.1f}")
    jobs = await db.fetch_all(
        "SELECT id, state, owner, slot, provider_key, provider_task_id, error, updated_at"
        " FROM jobs WHERE closed = 0 ORDER BY created_at"
    )
    states = Counter(row["state"] for row in jobs)
    lines.append(f"{len(jobs)} open jobs: {dict(states)}")
    for row in jobs[:40]:
        task = bfl.tasks.get(row["provider_task_id"] or "")
        at_bfl = "no task" if task is None else f"task {task.status}, polls {task.polls}"
        lines.append(
            f"  {row['id']} {row['state']} owner={row['owner']} slot={row['slot']}"
            f" key={row['provider_key']} updated_at={row['updated_at']} ({at_bfl})"
            + (f" error={row['error']!r}" if row["error"] else "")
        )
    return "\n".join(lines)
