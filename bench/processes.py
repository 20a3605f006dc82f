"""Throughput with each engine in an OS process of its own (`bench/throughput.py --processes`).

The parent hosts the BFL stand-in (its keys × cap) and plays the members; each child is a bot
process: its own engine, connection pool, LISTEN connection, BFL clients and webhook
receiver, taking its share of the commands. Webhooks go to the *next* child's receiver (a
load balancer's worst case). The parent prints, besides makespan and delays:

- CPU per delivered job of the bot processes (/proc/<pid>/stat utime+stime, from the first
  command to the last delivery: start and stop are not counted);
- CPU per job of PostgreSQL: the postmaster and all its children (exited backends count
  through the postmaster's cutime+cstime), same window;
- transactions per job: `pg_stat_database.xact_commit` over the whole run (start and stop
  included, a few dozen per process), and the bots' own count of committed write
  transactions and of reads outside one (bot/storage/base.py), first command to last delivery.

    python -m bench.throughput --backend postgres --processes 2 --keys 2 --mode polling
    python -m bench.processes --child '<json>'    # what the parent runs (not by hand)

BENCH_PROFILE=/tmp/prof writes each child's cProfile to /tmp/prof/child-<n>.prof.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import json
import logging
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    EngineTarget,
    always_ok,
    cpu_seconds,
    free_port,
    percentile,
    server_cpu_seconds,
)
from bot.catalogue import get_variant
from bot.jobs.claims import ProviderKey, key_fingerprint
from bot.jobs.engine import JobEngine, WebhookConfig
from bot.jobs.following import PollingPolicy
from bot.jobs.models import GenerationRequest, Job
from bot.operations.metrics import Metrics
from bot.operations.web import HealthChecks, WebServer, create_app
from bot.providers.base import OutputImage
from bot.providers.bfl import BFLClient
from bot.storage.db import open_database
from tests.fakes.bfl_server import FakeBFL
from tests.postgres_server import PostgresServer


# ----------------------------------------------------------------------------- PostgreSQL
async def xact_commits(dsn: str, database: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", database
        )
    finally:
        await conn.close()
    return int(value)


# ----------------------------------------------------------------------------- the child
class ReportingNotifier:
    """Tells the parent (on stdout) when each result is handed over."""

    async def job_progress(self, job: Job, *, queue_position: int | None) -> None:
        return None

    async def job_delivered(self, job: Job, images: list[OutputImage]) -> int:
        print(f"delivered {job.id} {job.provider_task_id} {time.time()}", flush=True)
        return 1

    async def job_failed(self, job: Job) -> None:
        print(f"failed {job.id} - {time.time()}", flush=True)


async def child(config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    metrics = Metrics(process_metrics=False)
    target = EngineTarget()
    server = WebServer(
        create_app(
            metrics=metrics,
            health=HealthChecks(always_ok, lambda: True, lambda: 0),
            webhook_target=target,
        ),
        "127.0.0.1",
        config["port"],
    )
    await server.start()
    db = await open_database(config["target"], migrate=False)
    cap = config["cap"]
    clients = [
        BFLClient(secret, config["bfl"], max_connections=cap * 2 + 8, allow_loopback=True)
        for secret in config["api_keys"]
    ]
    keys = [
        ProviderKey(key_fingerprint("bfl", secret), "bfl", client, cap)
        for secret, client in zip(config["api_keys"], clients, strict=True)
    ]
    latency = config["latency"]
    engine = JobEngine(
        db,
        {"bfl": clients[0]},
        ReportingNotifier(),
        keys=keys,
        metrics=metrics,
        polling=PollingPolicy(initial=0.5, maximum=4.0, deadline=600),
        webhooks=(
            WebhookConfig(f"http://127.0.0.1:{config['webhook_port']}", grace=max(5.0, latency * 3))
            if config["webhooks"]
            else None
        ),
    )
    target.engine = engine
    await engine.start()
    print("ready", flush=True)
    await commands.readline()  # go
    committed, reads = db.committed, db.reads
    variant = get_variant("klein-4b")
    rng = random.Random(7 + config["index"])
    for n in range(config["index"], config["jobs"], config["processes"]):
        params = variant.validate(f"bench image {n}", rng=rng)
        request = GenerationRequest(
            user_id=n % config["users"] + 1,
            guild_id=1,
            channel_id=1,
            variant=variant,
            params=params,
        )
        await engine.accept(request)
    await commands.readline()  # every job was delivered
    print(f"stats {engine.stats.polls} {db.committed - committed} {db.reads - reads}", flush=True)
    await engine.stop()
    for client in clients:
        await client.aclose()
    await db.close()
    await server.stop()


def child_main(config: dict[str, Any]) -> None:

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    profile_to = os.environ.get("BENCH_PROFILE")
    if not profile_to:
        asyncio.run(child(config))
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(child(config))
    finally:
        profiler.disable()
        Path(profile_to).mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(Path(profile_to) / f"child-{config['index']}.prof")


# ----------------------------------------------------------------------------- the parent
async def run_processes(
    jobs: int,
    users: int,
    cap: int,
    latency: float,
    *,
    webhooks: bool,
    postgres: PostgresServer | None,
    processes: int,
    keys: int,
) -> dict[str, float]:
    """One run of `jobs` over `processes` bot processes and `keys` BFL keys of `cap` each."""
    api_keys = {f"bench-key-{n}-0123456789": cap for n in range(keys)}
    with tempfile.TemporaryDirectory() as folder:
        async with FakeBFL(api_keys=api_keys, latency=latency) as fake:
            name = f"throughput_{'webhook' if webhooks else 'polling'}_{processes}"
            target = (
                str(Path(folder) / "bench.sqlite3")
                if postgres is None
                else postgres.fresh_database(name)
            )
            db = await open_database(target)  # migrated once, before the bots start
            await db.close()
            commits_before = 0 if postgres is None else await xact_commits(postgres.dsn(), name)
            ports = [free_port() for _ in range(processes)]
            children = []
            for index in range(processes):
                config = {
                    "index": index,
                    "processes": processes,
                    "jobs": jobs,
                    "users": users,
                    "cap": cap,
                    "latency": latency,
                    "webhooks": webhooks,
                    "target": target,
                    "bfl": fake.base_url,
                    "api_keys": list(api_keys),
                    "port": ports[index],
                    "webhook_port": ports[(index + 1) % processes],
                }
                children.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "bench.processes", "--child", json.dumps(config),
                        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    )
                )  # fmt: skip
            try:
                figures = await _drive(children, fake, jobs, postgres)
            finally:
                for process in children:
                    if process.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            process.kill()
                        await process.wait()
            if postgres is not None:
                # Every bot's connections are closed, so their statistics are flushed.
                commits = await xact_commits(postgres.dsn(), name) - commits_before
                figures["xact_per_job"] = commits / jobs
            ideal = math.ceil(jobs / (cap * keys)) * latency
            figures.update(ideal=ideal, ratio=figures["makespan"] / ideal)
            figures.update(rejected_429=fake.rejected_429, max_active_seen=fake.max_active_seen)
            return figures


async def _drive(
    children: list[asyncio.subprocess.Process],
    fake: FakeBFL,
    jobs: int,
    postgres: PostgresServer | None,
) -> dict[str, float]:
    async def line_of(process: asyncio.subprocess.Process) -> list[str]:
        assert process.stdout is not None
        line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"bot process {process.pid} ended (exit {await process.wait()})")
        return line.decode().split()

    async def tell(word: str) -> None:
        for process in children:
            assert process.stdin is not None
            process.stdin.write(word.encode() + b"\n")
            await process.stdin.drain()

    for process in children:
        assert (await line_of(process)) == ["ready"]
    postmaster = None if postgres is None else postgres._postmaster()
    bot_cpu = [cpu_seconds(process.pid) for process in children]
    server_cpu = 0.0 if postmaster is None else server_cpu_seconds(postmaster)
    started = time.time()
    await tell("go")
    shown: dict[str, tuple[str, float]] = {}
    failed = 0
    done = asyncio.Event()

    async def follow(process: asyncio.subprocess.Process) -> None:
        nonlocal failed
        while not done.is_set():
            kind, job_id, task_id, at = await line_of(process)
            shown[job_id] = (task_id, float(at))
            failed += kind == "failed"
            if len(shown) >= jobs:
                done.set()

    readers = [asyncio.create_task(follow(process)) for process in children]
    try:
        finished = asyncio.create_task(done.wait())
        await asyncio.wait([finished, *readers], timeout=jobs * 10, return_when="FIRST_COMPLETED")
        for reader in readers:
            if reader.done() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
        if not done.is_set():
            raise TimeoutError(f"only {len(shown)} of {jobs} jobs were shown")
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    makespan = max(at for _, at in shown.values()) - started
    bot_cpu = [cpu_seconds(p.pid) - before for p, before in zip(children, bot_cpu, strict=True)]
    if postmaster is not None:
        server_cpu = server_cpu_seconds(postmaster) - server_cpu
    await tell("stop")
    polls = committed = reads = 0
    for process in children:
        words = await line_of(process)
        assert words[0] == "stats", words
        polls += int(words[1])
        committed += int(words[2])
        reads += int(words[3])
        if await process.wait() != 0:
            raise RuntimeError(f"bot process {process.pid} failed")
    delays = [
        at - fake.tasks[task_id].end_wall for task_id, at in shown.values() if task_id in fake.tasks
    ]
    delivered = jobs - failed
    return {
        "makespan": makespan,
        "polls_per_job": polls / jobs,
        "p50_ms": statistics.median(delays) * 1000,
        "p95_ms": percentile(delays, 0.95) * 1000,
        "failed": failed,
        "bot_cpu_ms": sum(bot_cpu) / max(1, delivered) * 1000,
        "bot_cpu_each": sum(bot_cpu),
        "server_cpu_ms": server_cpu / jobs * 1000,
        "writes_per_job": committed / jobs,
        "reads_per_job": reads / jobs,
    }


def report(title: str, figures: dict[str, float]) -> None:
    print(f"makespan            {figures['makespan']:.2f} s")
    print(f"ideal makespan      {figures['ideal']:.2f} s  (ceil(N/(cap × keys)) × latency)")
    print(f"ratio               {figures['ratio']:.3f}  (target ≤ 1.10)")
    print(f"polls per job       {figures['polls_per_job']:.2f}")
    print(f"ready→delivered p50 {figures['p50_ms']:.1f} ms")
    print(f"ready→delivered p95 {figures['p95_ms']:.1f} ms")
    print(f"failed jobs         {figures['failed']:.0f}")
    print(f"429s / peak active  {figures['rejected_429']:.0f} / {figures['max_active_seen']:.0f}")
    print(f"bot CPU per job     {figures['bot_cpu_ms']:.1f} ms  (all bot processes together)")
    if "xact_per_job" in figures:
        print(f"PostgreSQL CPU/job  {figures['server_cpu_ms']:.1f} ms  (postmaster and children)")
        print(f"xact_commit per job {figures['xact_per_job']:.2f}  (whole run, start/stop too)")
    print(
        f"bot transactions    {figures['writes_per_job']:.2f} writes + "
        f"{figures['reads_per_job']:.2f} reads per job  (the accept and the provider's status"
        " text included: the job's way itself targets ≤ 4)"
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(json.loads(sys.argv[2]))
    else:
        raise SystemExit("run `python -m bench.throughput --processes N` instead")
