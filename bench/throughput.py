"""Throughput of the job engine against the BFL stand-in.

N jobs from M users go through the real engine (SQLite on disk, httpx, the fair scheduler)
to the stand-in, which holds `cap` active tasks and finishes each after a fixed latency.
Prints the makespan against the ideal ceil(N/cap) × latency, provider polls per job, and the
delay between the provider finishing a task and the result being handed to the channel —
once with polling alone and once with BFL webhooks to our receiver (same run, same load).

    python -m bench.throughput                  # N=480, M=40, cap 24, latency 1 s, both modes
    python -m bench.throughput --jobs 96 --latency 0.5 --mode webhook
    python -m bench.throughput --backend both    # SQLite, then PostgreSQL (a server of its own)
    python -m bench.throughput --backend postgres --processes 2
    python -m bench.throughput --mode polling --latencies 1.1,2.7,7.3   # learnt poll timing
    python -m bench.throughput --mode polling --latencies 2.7 --jitter 0.1

`--latencies` runs one polling engine per stand-in latency and prints, per latency, the polls
per job and the turnaround (the task's creation at the stand-in to the first poll that saw it
final) minus the latency, for the first wave (`cap` jobs, no history: today's schedule) and
after the first two waves (learnt timing), next to the makespan / ideal.

`--processes 2` (PostgreSQL only) runs two bot processes sharing the store, each an OS
process of its own (bench/processes.py) with its own connection pool, LISTEN connection, BFL
clients and webhook receiver, and commands arriving at both; `--keys 2` gives them two BFL
keys of `cap` each. Webhooks go to the *other* process's receiver (a load balancer's worst
case). Besides the figures above they print CPU per job of the bot processes and of
PostgreSQL, and database transactions per job. `--separate` does the same for one process
(SQLite too).

    python -m bench.throughput --backend postgres --processes 2 --keys 2 --mode polling
    python -m bench.throughput --separate --mode polling        # one process, SQLite
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import EngineTarget, always_ok, percentile
from bot.catalogue import get_variant
from bot.jobs.engine import JobEngine, WebhookConfig
from bot.jobs.following import PollingPolicy
from bot.jobs.models import GenerationRequest, Job
from bot.operations.metrics import Metrics
from bot.operations.web import HealthChecks, WebServer, create_app
from bot.providers.base import OutputImage
from bot.providers.bfl import BFLClient
from bot.storage.db import open_database
from tests.fakes.bfl_server import FakeBFL, Task
from tests.postgres_server import PostgresServer, durable_postgres

API_KEY = "bench-key"


class TimingNotifier:
    """Records when each result is handed over; posting itself is not what we measure."""

    def __init__(self, expected: int) -> None:
        self.delivered_at: dict[str, float] = {}
        self.expected = expected
        self.all_shown = asyncio.Event()

    def _shown(self, job: Job) -> None:
        self.delivered_at[job.id] = time.time()
        if len(self.delivered_at) >= self.expected:
            self.all_shown.set()

    async def job_progress(self, job: Job, *, queue_position: int | None) -> None:
        return None

    async def job_delivered(self, job: Job, images: list[OutputImage]) -> int:
        self._shown(job)
        return 1

    async def job_failed(self, job: Job) -> None:
        self._shown(job)


async def run(
    jobs: int,
    users: int,
    cap: int,
    latency: float,
    *,
    webhooks: bool = False,
    postgres: PostgresServer | None = None,
    latency_jitter: float = 0.0,
) -> dict[str, float]:
    """One engine in this process (`--processes`/`--separate` run bots of their own:
    bench/processes.py)."""
    with tempfile.TemporaryDirectory() as folder:
        async with FakeBFL(
            api_key=API_KEY, latency=latency, max_active=cap, latency_jitter=latency_jitter
        ) as fake:
            target_db: str | Path = Path(folder) / "bench.sqlite3"
            if postgres is not None:
                mode = "webhook" if webhooks else "polling"
                target_db = postgres.fresh_database(f"throughput_{mode}")
            notifier = TimingNotifier(jobs)
            metrics = Metrics(process_metrics=False)
            target = EngineTarget()
            server = WebServer(
                create_app(
                    metrics=metrics,
                    health=HealthChecks(always_ok, lambda: True, lambda: 0),
                    webhook_target=target,
                ),
                "127.0.0.1",
                0,
            )
            await server.start()
            db = await open_database(target_db)
            client = BFLClient(
                API_KEY, fake.base_url, max_connections=cap * 2 + 8, allow_loopback=True
            )
            engine = JobEngine(
                db,
                {"bfl": client},
                notifier,
                max_active=cap,
                metrics=metrics,
                polling=PollingPolicy(initial=0.5, maximum=4.0, deadline=600),
                webhooks=(
                    WebhookConfig(f"http://127.0.0.1:{server.port}", grace=max(5.0, latency * 3))
                    if webhooks
                    else None
                ),
            )
            target.engine = engine
            await engine.start()
            variant = get_variant("klein-4b")
            rng = random.Random(7)
            started = time.time()
            accepted: list[Job] = []
            for n in range(jobs):
                params = variant.validate(f"bench image {n}", rng=rng)
                request = GenerationRequest(
                    user_id=n % users + 1, guild_id=1, channel_id=1, variant=variant, params=params
                )
                accepted.append((await engine.accept(request))[0])
            await asyncio.wait_for(notifier.all_shown.wait(), jobs * 10)
            makespan = time.time() - started
            finished = [await engine.store.require(job.id) for job in accepted]
            polls = engine.stats.polls
            await engine.stop()
            await client.aclose()
            await db.close()
            await server.stop()

            failed = [job for job in finished if job.state != "delivered"]
            delays = [
                notifier.delivered_at[job.id] - fake.tasks[job.provider_task_id or ""].end_wall
                for job in finished
                if job.provider_task_id
            ]
            ideal = math.ceil(jobs / cap) * latency
            return poll_timing_figures(list(fake.tasks.values()), cap) | {
                "makespan": makespan,
                "ideal": ideal,
                "ratio": makespan / ideal,
                "polls_per_job": polls / jobs,
                "p50_ms": statistics.median(delays) * 1000,
                "p95_ms": percentile(delays, 0.95) * 1000,
                "failed": len(failed),
                "rejected_429": fake.rejected_429,
                "max_active_seen": fake.max_active_seen,
            }


def poll_timing_figures(tasks: list[Task], cap: int) -> dict[str, float]:
    """Polls per job and turnaround minus latency (ms), for the first wave of tasks (`cap`,
    submitted with no history) and for those after the first two waves (warmed up)."""
    ordered = sorted(tasks, key=lambda task: task.created_at)
    figures: dict[str, float] = {}
    for name, part in (("cold", ordered[:cap]), ("warm", ordered[2 * cap :])):
        seen = [task for task in part if task.turnaround is not None]
        if not seen:
            continue
        late = [((task.turnaround or 0.0) - task.latency) * 1000 for task in seen]
        figures[f"{name}_polls"] = statistics.mean(task.polls for task in seen)
        figures[f"{name}_max_polls"] = max(task.polls for task in seen)
        figures[f"{name}_late_p50_ms"] = statistics.median(late)
        figures[f"{name}_late_p95_ms"] = percentile(late, 0.95)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=480)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--cap", type=int, default=24)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--mode", choices=["polling", "webhook", "both"], default="both")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--processes", type=int, default=1, help="bot processes (OS processes)")
    parser.add_argument("--keys", type=int, default=1, help="BFL keys, `cap` each (--processes)")
    parser.add_argument(
        "--separate", action="store_true", help="one bot in a process of its own, with CPU figures"
    )
    parser.add_argument(
        "--latencies",
        help="comma-separated stand-in latencies, one polling run each (one engine, SQLite)",
    )
    parser.add_argument(
        "--jitter", type=float, default=0.0, help="with --latencies: latency × uniform(1 ± jitter)"
    )
    args = parser.parse_args()
    if args.latencies:
        if args.mode == "webhook" or args.backend != "sqlite" or args.processes != 1:
            parser.error("--latencies measures polling with one engine on SQLite")
        latencies(args, [float(value) for value in args.latencies.split(",")])
        return
    if args.processes > 1 and args.backend != "postgres":
        parser.error("--processes needs --backend postgres (several processes share PostgreSQL)")
    if args.processes > 1 or args.separate or args.keys > 1:
        run_separate_processes(args)
        return
    for backend, mode, postgres in each_setup(args):
        figures = asyncio.run(
            run(
                args.jobs, args.users, args.cap, args.latency,
                webhooks=mode == "webhook", postgres=postgres,
            )
        )  # fmt: skip
        report(f"{backend} ×{args.processes}, {mode}", args, figures)


def each_setup(args: argparse.Namespace) -> Iterator[tuple[str, str, PostgresServer | None]]:
    """(backend, mode, the PostgreSQL server or None) for each run asked for; a server of
    its own per backend, stopped after its runs."""
    modes = ["polling", "webhook"] if args.mode == "both" else [args.mode]
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        postgres = durable_postgres() if backend == "postgres" else None
        try:
            for mode in modes:
                yield backend, mode, postgres
        finally:
            if postgres is not None:
                postgres.stop()


def latencies(args: argparse.Namespace, values: list[float]) -> None:
    """One single-engine polling run per latency (SQLite), and a table of the poll timing."""
    rows = []
    for latency in values:
        figures = asyncio.run(
            run(args.jobs, args.users, args.cap, latency, latency_jitter=args.jitter)
        )
        rows.append((latency, figures))
    print(
        f"--- polling, sqlite ×1: jobs={args.jobs} users={args.users} cap={args.cap} "
        f"jitter={args.jitter}; turnaround = creation at the stand-in → first poll seeing it final"
    )
    print(
        "latency | polls/job cold  warm (max) | turnaround−latency p50/p95 ms: cold   warm"
        " | makespan/ideal | failed"
    )
    for latency, figures in rows:
        f = dict.fromkeys(("cold_polls", "warm_polls", "warm_max_polls"), 0.0) | figures
        for part in ("cold", "warm"):
            f.setdefault(f"{part}_late_p50_ms", 0.0)
            f.setdefault(f"{part}_late_p95_ms", 0.0)
        print(
            f"{latency:6.2f}s | {f['cold_polls']:9.2f} {f['warm_polls']:5.2f}"
            f" ({f['warm_max_polls']:.0f})"
            f"  | {f['cold_late_p50_ms']:6.0f}/{f['cold_late_p95_ms']:<6.0f}"
            f" {f['warm_late_p50_ms']:6.0f}/{f['warm_late_p95_ms']:<6.0f}"
            f" | {f['ratio']:14.3f} | {f['failed']:.0f}"
        )
    print("targets (warm): polls/job ≤ 3, turnaround−latency p50 ≤ 100 ms, makespan/ideal ≤ 1.10")


def run_separate_processes(args: argparse.Namespace) -> None:
    from bench.processes import report as report_processes
    from bench.processes import run_processes

    for backend, mode, postgres in each_setup(args):
        figures = asyncio.run(
            run_processes(
                args.jobs, args.users, args.cap, args.latency, webhooks=mode == "webhook",
                postgres=postgres, processes=args.processes, keys=args.keys,
            )
        )  # fmt: skip
        print(
            f"--- {backend} ×{args.processes} processes, {args.keys} key(s), {mode}:"
            f" jobs={args.jobs} users={args.users} cap={args.cap} latency={args.latency}s"
        )
        report_processes(mode, figures)


def report(mode: str, args: argparse.Namespace, figures: dict[str, float]) -> None:
    print(f"--- {mode}: jobs={args.jobs} users={args.users} cap={args.cap} latency={args.latency}s")
    print(f"makespan            {figures['makespan']:.2f} s")
    print(f"ideal makespan      {figures['ideal']:.2f} s  (ceil(N/cap) × latency)")
    print(f"ratio               {figures['ratio']:.3f}  (target ≤ 1.10)")
    webhook = mode.endswith("webhook")
    target = "≤ 0.1 with webhooks" if webhook else "≤ 4"
    print(f"polls per job       {figures['polls_per_job']:.2f}  (target {target})")
    print(
        f"ready→delivered p50 {figures['p50_ms']:.1f} ms"
        + ("  (target ≤ 50 ms)" if webhook else "")
    )
    print(f"ready→delivered p95 {figures['p95_ms']:.1f} ms")
    print(f"failed jobs         {figures['failed']:.0f}")
    print(f"429s / peak active  {figures['rejected_429']:.0f} / {figures['max_active_seen']:.0f}")


if __name__ == "__main__":
    main()
