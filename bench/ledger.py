"""Ledger throughput: reserve + settle with concurrent writers, on SQLite WAL (a file on
disk) and on PostgreSQL, side by side.

Each writer repeats: reserve a job's estimate against the member, role and server allowances
(in its own BEGIN IMMEDIATE transaction, run on the database thread in one trip with
`Database.run`, as `JobStore.create` does), then settle it in a
second transaction — a charge of a "provider cost" that differs from the estimate, or (one
time in five) a full refund. Afterwards every total is checked against what the writers
themselves recorded: the ledger rows, the per-member and per-server window totals, and the
statuses must all agree exactly.

Writers can be (default: all three, one after another):

* ``connections``: separate SQLite connections in one process (each its own aiosqlite
  thread) — SQLite's own locking serialises them;
* ``processes``: separate OS processes, one connection each;
* ``tasks``: asyncio tasks sharing one connection — the shape of the running bot.

    python -m bench.ledger                          # 4 writers × 5,000 reserve+settle each
    python -m bench.ledger --backend postgres       # only PostgreSQL (a server of its own)
    python -m bench.ledger --mode connections --ops 20000

One *operation* below is a reserve together with its settlement (two transactions).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

from bot.ledger import (
    Ledger,
    Metric,
    Period,
    QuotaPolicy,
    ResetSchedule,
    Scope,
    credits_to_mc,
    unlimited_limits,
)
from bot.periods import PERIODS
from bot.storage.db import Tx, open_database
from tests.postgres_server import PostgresServer, durable_postgres

# With synchronous=FULL every commit waits for its fsync (a queued → submitting commit must
# survive a power cut, or a job is sent and billed twice): measured here 1,800/s, against
# 3,400-4,000/s with NORMAL. The bot's busiest run (480 jobs in 20 s, bench/discord_load.py)
# needs about 25 reserve+settle/s, so 1,000/s still leaves forty times that.
TARGET_OPS_PER_SECOND = 1_000
GUILD = 1
ROLE = 77
USERS_PER_WRITER = 50
COSTS = (3.0, 4.37, 1.4, 7.0, 3.15)  # what the "provider" charges; estimates are 3.0


@dataclass
class Tally:
    """What one writer did, by its own count."""

    reserved: int = 0
    charged: int = 0
    refunded: int = 0
    charged_mc: int = 0
    charged_images: int = 0
    elapsed: float = 0.0


def policy() -> QuotaPolicy:
    # Real limits at every level, so every reservation does the full check; generous enough
    # that none is refused (a refusal would make the totals check trivial).
    user = unlimited_limits()
    user[(Period.DAY, Metric.IMAGES)] = 10**9
    user[(Period.MONTH, Metric.CREDITS)] = 10**12
    guild = unlimited_limits()
    guild[(Period.DAY, Metric.CREDITS)] = 10**13
    return QuotaPolicy(ResetSchedule(), user=user, guild=guild)


async def prepare(path: str | Path) -> None:
    db = await open_database(path)
    ledger = Ledger(db, policy())
    await ledger.admin.set_limit(GUILD, 0, Scope.ROLE, ROLE, Period.WEEK, Metric.IMAGES, 10**9)
    await db.close()


async def write(ledger: Ledger, writer: int, ops: int, seed: int) -> Tally:
    rng = random.Random(seed)
    tally = Tally()
    started = time.perf_counter()
    for n in range(ops):
        job_id = f"w{writer}-{n}"
        user = writer * 1000 + 1 + rng.randrange(USERS_PER_WRITER)  # ids start at 1; 0 = server
        reserve = partial(
            ledger.reserve,
            job_id=job_id,
            guild_id=GUILD,
            user_id=user,
            role_ids=(ROLE,),
            variant="pro",
            credits=3.0,
            images=1,
        )
        await ledger.db.run(reserve)
        tally.reserved += 1
        if rng.random() < 0.2:
            assert await ledger.db.run(partial(ledger.refund, job_id=job_id, settled_by="failed"))
            tally.refunded += 1
        else:
            cost = rng.choice(COSTS)
            charge = partial(
                ledger.charge, job_id=job_id, credits=cost, images=1, settled_by="ready"
            )
            assert await ledger.db.run(charge)
            tally.charged += 1
            tally.charged_mc += credits_to_mc(cost)
            tally.charged_images += 1
    tally.elapsed = time.perf_counter() - started
    return tally


async def run_connections(path: str | Path, writers: int, ops: int) -> list[Tally]:
    databases = [await open_database(path, migrate=False) for _ in range(writers)]
    try:
        return list(
            await asyncio.gather(
                *(write(Ledger(db, policy()), w, ops, seed=w) for w, db in enumerate(databases))
            )
        )
    finally:
        for db in databases:
            await db.close()


async def run_tasks(path: str | Path, writers: int, ops: int) -> list[Tally]:
    db = await open_database(path, migrate=False)
    try:
        ledger = Ledger(db, policy())
        return list(await asyncio.gather(*(write(ledger, w, ops, seed=w) for w in range(writers))))
    finally:
        await db.close()


def _process_main(
    path: str, writer: int, ops: int, go: EventType, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    async def main() -> Tally:
        db = await open_database(path, migrate=False)
        try:
            go.wait()
            return await write(Ledger(db, policy()), writer, ops, seed=writer)
        finally:
            await db.close()

    out.put(asyncio.run(main()))


def run_processes(path: str | Path, writers: int, ops: int) -> list[Tally]:
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    out: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    procs = [
        context.Process(target=_process_main, args=(str(path), w, ops, go, out))
        for w in range(writers)
    ]
    for proc in procs:
        proc.start()
    time.sleep(1.0)  # let every process import and connect before the start signal
    go.set()
    tallies = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    return tallies


async def verify(path: str | Path, tallies: list[Tally]) -> list[str]:
    """Compare the database with the writers' own accounts; returns the discrepancies."""
    db = await open_database(path, migrate=False)
    problems: list[str] = []
    try:
        expected_mc = sum(t.charged_mc for t in tallies)
        expected_images = sum(t.charged_images for t in tallies)
        statuses = {
            row["status"]: row["n"]
            for row in await db.fetch_all(
                "SELECT status, count(*) AS n FROM ledger GROUP BY status"
            )
        }
        want = {
            "charged": sum(t.charged for t in tallies),
            "refunded": sum(t.refunded for t in tallies),
        }
        if statuses != want:
            problems.append(f"statuses {statuses} != {want}")
        row = await db.fetch_one("SELECT SUM(credits_mc) AS mc, SUM(images) AS images FROM ledger")
        assert row is not None
        if (row["mc"], row["images"]) != (expected_mc, expected_images):
            problems.append(
                f"ledger sums {(row['mc'], row['images'])} != {(expected_mc, expected_images)}"
            )
        for period in PERIODS:
            server = await db.fetch_one(
                "SELECT SUM(credits_mc) AS mc, SUM(images) AS images FROM usage_totals"
                " WHERE guild_id = ? AND user_id = 0 AND period = ?",
                (GUILD, period.value),
            )
            members = await db.fetch_one(
                "SELECT SUM(credits_mc) AS mc, SUM(images) AS images FROM usage_totals"
                " WHERE guild_id = ? AND user_id != 0 AND period = ?",
                (GUILD, period.value),
            )
            assert server is not None and members is not None
            for label, got in (("server", server), ("members", members)):
                if (got["mc"], got["images"]) != (expected_mc, expected_images):
                    problems.append(
                        f"{period.value} {label} totals {(got['mc'], got['images'])}"
                        f" != {(expected_mc, expected_images)}"
                    )
    finally:
        await db.close()
    return problems


async def bench(
    mode: str, writers: int, ops: int, server: PostgresServer | None = None
) -> tuple[float, list[str]]:
    with tempfile.TemporaryDirectory() as folder:
        path: str | Path = Path(folder) / "ledger.sqlite3"
        if server is not None:
            path = server.fresh_database(f"ledger_{mode}")
        await prepare(path)
        started = time.perf_counter()
        if mode == "connections":
            tallies = await run_connections(path, writers, ops)
        elif mode == "tasks":
            tallies = await run_tasks(path, writers, ops)
        else:
            tallies = await asyncio.to_thread(run_processes, path, writers, ops)
            started = None  # measured inside the processes, after the start signal
        wall = (
            (time.perf_counter() - started)
            if started is not None
            else max(t.elapsed for t in tallies)
        )
        problems = await verify(path, tallies)
    return writers * ops / wall, problems


async def _empty_transaction(tx: Tx) -> None:
    return None


async def transaction_floor(count: int = 3_000, server: PostgresServer | None = None) -> float:
    """Pairs of *empty* transactions per second through the same Database: the ceiling any
    reserve+settle could reach here, whatever the ledger does inside them."""
    with tempfile.TemporaryDirectory() as folder:
        target: str | Path = Path(folder) / "floor.sqlite3"
        if server is not None:
            target = server.fresh_database("ledger_floor")
        db = await open_database(target)
        try:
            started = time.perf_counter()
            for _ in range(count):
                for _ in range(2):
                    await db.run(_empty_transaction)
            return count / (time.perf_counter() - started)
        finally:
            await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--ops", type=int, default=5_000, help="reserve+settle per writer")
    parser.add_argument(
        "--mode", choices=("connections", "processes", "tasks", "all"), default="all"
    )
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args()
    modes = ("connections", "processes", "tasks") if args.mode == "all" else (args.mode,)
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    print(
        f"{args.writers} writers × {args.ops} reserve+settle each; "
        f"target ≥ {TARGET_OPS_PER_SECOND:,}/s"
    )
    failed = False
    for backend in backends:
        server = durable_postgres() if backend == "postgres" else None
        try:
            label = (
                "SQLite WAL on disk, synchronous=FULL"
                if server is None
                else "PostgreSQL on this machine (127.0.0.1), fsync on"
            )
            print(f"{label}:")
            for mode in modes:
                rate, problems = asyncio.run(bench(mode, args.writers, args.ops, server))
                verdict = "meets" if rate >= TARGET_OPS_PER_SECOND else "BELOW"
                exact = "totals exact" if not problems else "TOTALS WRONG: " + "; ".join(problems)
                print(
                    f"  {mode:<12} {rate:>8,.0f} reserve+settle/s"
                    f" ({2 * rate:,.0f} transactions/s) — {verdict} target — {exact}"
                )
                failed |= bool(problems)
            floor = asyncio.run(transaction_floor(server=server))
            print(f"  for scale: two empty transactions through the same Database: {floor:,.0f}/s")
        finally:
            if server is not None:
                server.stop()
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
