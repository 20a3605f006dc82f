"""A running process's lease on its work, in database time.

Every engine registers a row in `processes` and renews its lease with a heartbeat; the jobs
it claims name it as their owner. When a process dies (or is cut off from the database long
enough), its lease runs out and another process adopts its jobs. A process that finds its own
lease gone must assume its jobs were taken: it drops what it was doing and starts again
under a new identity (see JobEngine._heartbeat).
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import time

from bot.storage.base import DATABASE_NOW
from bot.storage.db import Database

# Long enough that a busy event loop or a slow database never loses a live process its
# work; short enough that a dead one's jobs are picked up within about half a minute.
LEASE_SECONDS = 20.0
# A process only submits while its lease has at least this much left, so a process cut off
# from the database cannot send a task after its jobs may have been given to another.
SUBMIT_MARGIN = LEASE_SECONDS / 2
# Process rows dead for longer than this are removed (they only matter while adopting).
FORGET_AFTER = 24 * 3600.0


def _description() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


class ProcessLease:
    """This process's row in `processes`."""

    def __init__(self, db: Database, *, seconds: float = LEASE_SECONDS) -> None:
        self._db = db
        self.seconds = seconds
        self.id = self._new_id()
        self._now = DATABASE_NOW[db.backend]
        # By this process's clock (time.monotonic), when the lease may run out at the
        # earliest: it was extended from a moment after this one.
        self._runs_until = -math.inf

    @staticmethod
    def _new_id() -> str:
        return f"p-{secrets.token_hex(6)}"

    async def register(self) -> None:
        """Start a lease under a fresh identity (the first time, or after losing one)."""
        self.id = self._new_id()
        now = self._now
        asked_at = time.monotonic()
        await self._db.execute(
            "INSERT INTO processes (id, started_at, lease_expires_at, description)"
            f" VALUES (?, {now}, {now} + ?, ?)",
            (self.id, self.seconds, _description()),
        )
        self._runs_until = asked_at + self.seconds

    async def renew(self) -> bool:
        """Extend the lease; False when it had already run out (the work may be taken)."""
        now = self._now
        asked_at = time.monotonic()
        renewed = await self._db.execute(
            f"UPDATE processes SET lease_expires_at = {now} + ?"
            f" WHERE id = ? AND lease_expires_at > {now}",
            (self.seconds, self.id),
        )
        if renewed == 1:
            self._runs_until = asked_at + self.seconds
        await self._db.execute(
            f"DELETE FROM processes WHERE lease_expires_at < {now} - ?", (FORGET_AFTER,)
        )
        return renewed == 1

    async def remaining(self) -> float:
        """Seconds the lease has left (negative or -inf once it is gone)."""
        left = await self._db.fetch_value(
            f"SELECT lease_expires_at - {self._now} FROM processes WHERE id = ?", (self.id,)
        )
        return float("-inf") if left is None else float(left)

    @property
    def surely_held(self) -> bool:
        """Whether the lease still runs, for certain, by this process's clock alone: false
        once it may have run out (the process was paused, or could not renew it), when
        another process may own this one's jobs."""
        return time.monotonic() < self._runs_until

    @property
    def submit_margin(self) -> float:
        """What must be left of the lease to start sending work (see SUBMIT_MARGIN)."""
        return min(SUBMIT_MARGIN, self.seconds / 2)

    def runs_at_least(self, asked_at: float, left: float) -> None:
        """A read sent at `asked_at` (time.monotonic) found `left` seconds of the lease (a
        claim reads it): it runs at least until then."""
        self._runs_until = max(self._runs_until, asked_at + left)

    def may_submit(self) -> bool:
        """Whether the lease surely has `submit_margin` left, by this process's clock: what
        the heartbeat and the claims last read of it, counted from when they asked. No read
        on each job's path, and no weaker: a lease only ever runs out, and a process that
        cannot reach the database (or was paused) sees its own clock run past it."""
        return time.monotonic() + self.submit_margin < self._runs_until

    async def release(self) -> None:
        """End the lease now (a clean stop): another process may adopt the work at once."""
        self._runs_until = -math.inf
        await self._db.execute("DELETE FROM processes WHERE id = ?", (self.id,))
