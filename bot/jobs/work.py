"""This process's share of the work, when every process serves one queue (bot/jobs/claims.py).

- A lease (bot/jobs/leases.py), renewed by a heartbeat; losing it means another process may
  have adopted this one's jobs, so all work on them is dropped and the process rejoins under
  a new identity (its late writes would be fenced off anyway).
- Adoption: at start, and on each heartbeat with a shared store, the unfinished jobs of
  processes whose lease ran out become this one's, resumed by the engine's recovery rules.
- Claiming: one loop per provider takes queued jobs while its keys have free slots, woken by
  this process's own changes, other processes' NOTIFY, the end of a key's pause, and (shared
  store) a short poll, since notifications are lost across reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from bot.jobs.claims import Claim, ClaimRound, SecretFor, SharedQueue
from bot.jobs.leases import ProcessLease
from bot.jobs.models import Job
from bot.jobs.store import QUEUE_CHANNEL, QUEUED, JobStore, job_from_row
from bot.periodic import repeat
from bot.storage.base import DATABASE_NOW
from bot.storage.db import Database
from bot.storage.outage import is_lock_timeout, is_outage

log = logging.getLogger(__name__)

SHARED_QUEUE_POLL = 1.0
METRICS_REFRESH_INTERVAL = 2.0
CLAIM_RETRY_DELAY = 1.0
# Jobs claimed in one transaction when several slots are free (a wave of tasks ended): a
# claim only ever takes free slots, so this just keeps each transaction short.
CLAIMS_PER_TRANSACTION = 8

Spawn = Callable[[Coroutine[Any, Any, Any], str], object]


async def adopt_jobs(db: Database, owner: str, *, everything: bool) -> list[Job]:
    """Make `owner` the owner of the unfinished jobs whose owner's lease has run out (or of
    all of them, `everything`, where no other process can be running), oldest first.
    Queued jobs belong to nobody: any process claims them."""
    orphaned = (
        ""
        if everything
        else " AND (owner IS NULL OR NOT EXISTS (SELECT 1 FROM processes"
        f" WHERE processes.id = jobs.owner AND lease_expires_at > {DATABASE_NOW[db.backend]}))"
    )
    rows = await db.run(
        lambda tx: tx.fetch_all(
            "UPDATE jobs SET owner = ? WHERE closed = 0 AND state <> 'queued'"
            f" AND owner IS DISTINCT FROM ?{orphaned} RETURNING *",
            (owner, owner),
        )
    )
    return sorted((job_from_row(row) for row in rows), key=lambda job: job.created_at)


class SharedWork:
    def __init__(
        self,
        db: Database,
        store: JobStore,
        queue: SharedQueue,
        lease: ProcessLease,
        *,
        recover: Callable[[Job], None],
        submit: Callable[[Claim], None],
        drop_job_tasks: Callable[[], Awaitable[None]],
        resume_unfollowed: Callable[[], Awaitable[None]],
        secret_for: SecretFor | None = None,
    ) -> None:
        self._db = db
        self._store = store
        self.queue = queue
        self.lease = lease
        self._recover = recover
        self._submit = submit
        self._drop_job_tasks = drop_job_tasks
        self._resume_unfollowed = resume_unfollowed
        self._secret_for = secret_for
        self._wake = {name: asyncio.Event() for name in queue.providers}
        # Claims of a provider take turns in this process; the slots of tasks that ended
        # wait here for the next turn, which frees them and fills them.
        self._turns = {name: asyncio.Lock() for name in queue.providers}
        self._to_release: dict[str, set[str]] = {}
        self._slots_full: dict[str, bool] = {}  # as the provider's last claim found them
        self.counts: Mapping[str, tuple[int, int]] = {}
        self._claiming = True
        self.on_owner_changed: Callable[[str], None] = lambda owner: None

    async def start(self, spawn: Spawn) -> None:
        await self.queue.prepare()
        await self._take_lease()
        if self._db.shared:
            await self._db.listen(QUEUE_CHANNEL, self._notified)
        for provider in self.queue.providers:
            spawn(self._admit(provider), f"admit-{provider}")
        spawn(self._heartbeat(), "lease-heartbeat")
        spawn(self._refresh_counts(), "queue-metrics")

    async def release(self) -> None:
        """Give the lease up (a clean stop): another process may adopt the work at once."""
        try:
            await self.lease.release()
        except Exception:
            log.warning("could not give up the process lease; it runs out by itself")

    def stop_claiming(self) -> None:
        """Claim nothing more (a graceful stop): the claim loops end at their next turn."""
        self._claiming = False
        for event in self._wake.values():
            event.set()

    def wake(self, provider: str) -> None:
        """Something changed for `provider`'s queue: look for work now."""
        event = self._wake.get(provider)
        if event is not None:
            event.set()

    def job_queued(self, provider: str) -> None:
        """A job of `provider` was queued: look for work, unless the last claim found every
        slot taken (then only a slot set free, which wakes the loop too, lets it in). Every
        command would otherwise cost each process a claim that finds no room."""
        if not self._slots_full.get(provider, False):
            self.wake(provider)

    def claims_here(self, provider: str) -> bool:
        """Whether this process claims `provider`'s jobs now (`job_queued` is enough to get
        a new job claimed: no other process need be told)."""
        return self._claiming and provider in self._wake and self.lease.may_submit()

    def _notified(self, payload: str) -> None:
        if payload.endswith(QUEUED):
            self.job_queued(payload.removesuffix(QUEUED))
        else:
            self.wake(payload)

    # ----------------------------------------------------------------- the lease
    async def _take_lease(self) -> None:
        """A fresh lease, then adopt what no live process owns. Without other processes
        (SQLite) every unfinished job is this one's: the previous run is gone."""
        await self.lease.register()
        self._store.owner = self.lease.id
        self.on_owner_changed(self.lease.id)
        await self._adopt(everything=not self._db.shared)

    async def _adopt(self, *, everything: bool) -> None:
        for job in await adopt_jobs(self._db, self.lease.id, everything=everything):
            self._recover(job)

    async def _heartbeat(self) -> None:
        async def beat() -> None:
            if not await self.lease.renew():
                log.warning("this process lost its lease; dropping its jobs and rejoining")
                await self._drop_job_tasks()
                await self._take_lease()
            else:
                if self._db.shared:
                    await self._adopt(everything=False)
                # Jobs of this process that a database outage left without a task.
                await self._resume_unfollowed()
                # A claim refused while the lease ran short may go ahead now.
                for provider in self.queue.providers:
                    self.wake(provider)

        await repeat(beat, lambda: self.lease.seconds / 4, what="renewing the process lease")

    # ----------------------------------------------------------------- claiming
    async def release_and_claim(self, job_id: str, provider: str) -> None:
        """A task has ended at the provider: free its slot and claim the next jobs into the
        free slots, in one transaction with the slots of other tasks that ended meanwhile
        (SharedQueue.release_and_claim), and start them. Raises if that transaction failed;
        a slot not freed here is freed by the job's next state change."""
        pending = self._to_release.setdefault(provider, set())
        pending.add(job_id)
        async with self._turns[provider]:
            if job_id in pending:  # else a turn taken meanwhile released it
                claimed, more = await self._turn(provider)
                if more or claimed.pause > 0:
                    # More may fit (the claim loop goes on), or it times the pause's end.
                    # Otherwise nothing is left to claim: a new job or lease wakes the loop.
                    self.wake(provider)

    async def _turn(self, provider: str) -> tuple[ClaimRound, bool]:
        """One claim transaction of `provider` (with `self._turns[provider]` held: this
        process's claims of a provider take turns here rather than queue for the database's
        lock, each holding a connection): frees the slots of the tasks that ended since the
        last turn and claims into the free slots. Also says whether it claimed all it
        might (more may fit)."""
        pending = self._to_release.setdefault(provider, set())
        batch = sorted(pending)
        pending.clear()
        owner, asked_at = self.lease.id, time.monotonic()
        most = max(CLAIMS_PER_TRANSACTION, len(batch)) if self._claiming else 0
        claimed = await self.queue.release_and_claim(
            batch,
            provider,
            owner,
            lease_margin=self.lease.submit_margin,
            most=most,
            secret_for=self._secret_for,
        )
        self._slots_full[provider] = claimed.slots_full
        if claimed.lease_left is not None and owner == self.lease.id:
            self.lease.runs_at_least(asked_at, claimed.lease_left)
        for claim in claimed.claims:
            self._submit(claim)
        return claimed, most > 0 and len(claimed.claims) == most

    async def _admit(self, provider: str) -> None:
        wake = self._wake[provider]
        idle = SHARED_QUEUE_POLL if self._db.shared else None
        while self._claiming:
            wake.clear()
            try:
                async with self._turns[provider]:
                    claimed, _ = await self._turn(provider)
            except Exception as exc:
                # An outage, or a claim that waited too long behind a frozen process's lock
                # (lock_timeout): the store has logged it; try again. (Nothing may end this
                # loop but a stop: no job would be claimed here again.)
                if not is_outage(exc):
                    log.exception("claiming a %s job failed; retrying", provider)
                if is_lock_timeout(exc):
                    await self._cut_off_frozen_holders()
                await asyncio.sleep(CLAIM_RETRY_DELAY)
                continue
            if claimed.claims:
                continue
            pause = claimed.pause
            try:
                async with asyncio.timeout(pause if pause > 0 else idle):
                    await wake.wait()
            except TimeoutError:
                pass

    async def _cut_off_frozen_holders(self) -> None:
        """The claims' lock was not free for `lock_timeout`: a process frozen in the middle
        of a claim would hold it until it wakes (bot/storage/postgres.py)."""
        try:
            await self._db.cut_off_frozen_lock_holders()
        except Exception as exc:
            if not is_outage(exc):
                log.warning("could not end a frozen process's database session", exc_info=True)

    async def _refresh_counts(self) -> None:
        async def refresh() -> None:
            self.counts = await self.queue.counts()

        await repeat(refresh, lambda: METRICS_REFRESH_INTERVAL, what="counting queued jobs")
