"""Gateway shards over several processes.

Guilds map to shards as Discord defines (`(guild_id >> 22) % shard_count`, DMs on shard 0).
Each process runs a fixed set (SHARD_IDS). Two rules Discord does not enforce, so we do:

- A shard is never connected from two processes at once: a process holds a lease row per
  shard in `shard_leases`, renewed like its job lease, in database time. A process that
  finds one of its shards held waits for that lease to run out (the holder may have just
  died), and gives up with a clear message if it is still renewed after that.
- IDENTIFY is serialised across the fleet per `max_concurrency` bucket (`shard_id %
  max_concurrency`): one IDENTIFY per bucket per IDENTIFY_INTERVAL, the turns kept in
  `app_state` under a per-bucket advisory lock (`IdentifyGate.wait_turn`, called from the
  client's `before_identify_hook`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence

from bot.errors import StartupError
from bot.storage.base import DATABASE_NOW
from bot.storage.db import Database, Tx
from bot.storage.outage import is_outage

log = logging.getLogger(__name__)

SHARD_LEASE_SECONDS = 20.0
IDENTIFY_INTERVAL = 5.0  # Discord: max_concurrency IDENTIFYs per 5 seconds
# Added to every wait between two IDENTIFYs of a bucket. The turns are spaced by the
# database's clock, but Discord times arrivals by its own, after each IDENTIFY's own trip
# (a websocket connect, HELLO, the network): spaced exactly 5.000 s, real arrivals landed
# 0.2-2.4 ms early and were refused. A quarter second absorbs that jitter many times over.
IDENTIFY_MARGIN = 0.25


def shard_for(guild_id: int | None, shard_count: int) -> int:
    return 0 if guild_id is None else (guild_id >> 22) % shard_count


class ShardTaken(StartupError):
    pass


class ShardLeases:
    def __init__(
        self,
        db: Database,
        owner: str,
        shard_ids: Sequence[int],
        shard_count: int,
        *,
        seconds: float = SHARD_LEASE_SECONDS,
    ) -> None:
        self._db = db
        self.owner = owner
        self.shard_ids = list(shard_ids)
        self.shard_count = shard_count
        self.seconds = seconds
        self._now = DATABASE_NOW[db.backend]

    async def acquire(self) -> None:
        """Take every shard of this process, waiting out a lease left by a dead process.
        Raises ShardTaken if a live process keeps holding one, or runs another shard count."""
        waited_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            problem = await self._db.run(self.try_acquire)
            if problem is None:
                return
            if waited_since is None:
                waited_since = loop.time()
                log.info("%s; waiting for its lease to run out", problem)
            elif loop.time() - waited_since > 2 * self.seconds:
                raise ShardTaken(f"{problem}, and that process is still running: check SHARD_IDS")
            await asyncio.sleep(min(1.0, self.seconds / 4))

    async def try_acquire(self, tx: Tx) -> str | None:
        """Take the shards in `tx`, or say why not (a live process holds one of them)."""
        await tx.lock("shard-leases")
        now = self._now
        rows = await tx.fetch_all(
            f"SELECT shard_id, shard_count, owner FROM shard_leases WHERE lease_expires_at > {now}"
            " AND owner <> ?",
            (self.owner,),
        )
        for row in rows:
            if int(row["shard_count"]) != self.shard_count:
                return (
                    f"another process runs with SHARD_COUNT={row['shard_count']}, this one with"
                    f" {self.shard_count}: stop every process to change the shard count"
                )
            if int(row["shard_id"]) in self.shard_ids:
                return f"shard {row['shard_id']} is held by another process"
        await tx.execute(f"DELETE FROM shard_leases WHERE lease_expires_at <= {now}")
        await tx.execute_many(
            "INSERT INTO shard_leases (shard_id, shard_count, owner, lease_expires_at)"
            f" VALUES (?, ?, ?, {now} + ?) ON CONFLICT (shard_id) DO UPDATE SET"
            " shard_count = excluded.shard_count, owner = excluded.owner,"
            " lease_expires_at = excluded.lease_expires_at",
            [(shard, self.shard_count, self.owner, self.seconds) for shard in self.shard_ids],
        )
        return None

    async def renew(self) -> bool:
        """False when a lease had run out: the shard may be someone else's now."""
        renewed = await self._db.execute(
            f"UPDATE shard_leases SET lease_expires_at = {self._now} + ?"
            f" WHERE owner = ? AND lease_expires_at > {self._now}",
            (self.seconds, self.owner),
        )
        return renewed == len(self.shard_ids)

    async def release(self) -> None:
        await self._db.execute("DELETE FROM shard_leases WHERE owner = ?", (self.owner,))


class IdentifyGate:
    """One IDENTIFY per `max_concurrency` bucket per IDENTIFY_INTERVAL (plus
    IDENTIFY_MARGIN), over the fleet."""

    def __init__(
        self,
        db: Database,
        *,
        interval: float = IDENTIFY_INTERVAL,
        margin: float = IDENTIFY_MARGIN,
    ) -> None:
        self._db = db
        self.interval = interval
        self.margin = margin
        self.max_concurrency = 1
        self._now = DATABASE_NOW[db.backend]

    async def wait_turn(self, shard_id: int) -> None:
        bucket = shard_id % max(1, self.max_concurrency)
        while True:
            wait = await self._db.run(lambda tx: self._take_turn(tx, bucket))
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def _take_turn(self, tx: Tx, bucket: int) -> float:
        key = f"identify_turn:{bucket}"
        await tx.lock(key)
        now = float(await tx.fetch_value(f"SELECT {self._now}"))
        row = await tx.fetch_value("SELECT value FROM app_state WHERE key = ?", (key,))
        next_turn = float(row) if row is not None else 0.0
        if now < next_turn:
            return next_turn - now
        await tx.execute(
            "INSERT INTO app_state (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, repr(now + self.interval + self.margin)),
        )
        return 0.0


class ShardFleet:
    """This process's shards: their leases, renewed in the background, and the IDENTIFY gate."""

    def __init__(
        self,
        db: Database,
        shard_ids: Sequence[int],
        shard_count: int,
        *,
        lease_seconds: float = SHARD_LEASE_SECONDS,
    ) -> None:
        owner = f"{socket.gethostname()} pid {os.getpid()} {secrets.token_hex(4)}"
        self.leases = ShardLeases(db, owner, shard_ids, shard_count, seconds=lease_seconds)
        self.gate = IdentifyGate(db)
        self._db = db
        self._renewal: asyncio.Task[None] | None = None

    async def join(
        self,
        *,
        on_lost: Callable[[], Awaitable[None]],
        on_regained: Callable[[], Awaitable[None]],
    ) -> None:
        """Take this process's shards, then keep them. A lease that ran out (the database
        was unreachable for longer than the lease) is not the end: `on_lost` disconnects the
        shards, the process waits until it holds them again (standing by while another
        process runs them), and `on_regained` reconnects them."""
        await self.leases.acquire()
        self._renewal = asyncio.create_task(self._keep(on_lost, on_regained), name="shard-leases")

    async def _keep(
        self, on_lost: Callable[[], Awaitable[None]], on_regained: Callable[[], Awaitable[None]]
    ) -> None:
        while True:
            await asyncio.sleep(self.leases.seconds / 4)
            try:
                held = await self.leases.renew()
            except Exception as exc:
                if not is_outage(exc):  # the store has logged an outage
                    log.warning("renewing the shard leases failed; retrying", exc_info=True)
                continue
            if held:
                continue
            # The lease ran out (the database was unreachable, or this process stalled for
            # longer than the lease). If no other process took a shard meantime, this one's
            # sessions were the only ones all along: keep them. Disconnecting only to
            # connect again would cost an IDENTIFY each time, and race discord.py's own
            # reconnects (two sessions of one shard were seen under load).
            if await self._retake_at_once():
                continue
            await on_lost()
            await self._take_back()
            await on_regained()

    async def _retake_at_once(self) -> bool:
        """Take this process's shards again if nobody else holds any of them."""
        try:
            problem = await self._db.run(self.leases.try_acquire)
        except Exception as exc:
            if not is_outage(exc):
                log.warning("taking the shard leases back failed", exc_info=True)
            return False
        if problem is None:
            log.warning(
                "the lease on shards %s had run out (was the database unreachable?); no other"
                " process took them, so this one keeps them",
                self.leases.shard_ids,
            )
        return problem is None

    async def _take_back(self) -> None:
        """Wait until this process holds all its shards again."""
        standing_by = False
        while True:
            try:
                problem = await self._db.run(self.leases.try_acquire)
            except Exception as exc:
                if not is_outage(exc):
                    log.warning("taking the shard leases back failed; retrying", exc_info=True)
                problem = "the database is unreachable"
            if problem is None:
                log.warning("this process holds shards %s again", self.leases.shard_ids)
                return
            if not standing_by and "database" not in problem:
                log.warning("%s; standing by until it is free", problem)
                standing_by = True
            await asyncio.sleep(self.leases.seconds / 4)

    async def leave(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        try:
            await self.leases.release()
        except Exception:
            log.warning("could not release the shard leases; they run out by themselves")
