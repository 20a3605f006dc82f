"""One clock for the whole fleet: the database's.

Times that another process reads back (when a job joined the queue, which allowance window a
reservation counts in, when an interaction token stops working, when a job was submitted)
are written on the database's clock (`DATABASE_NOW`), so every process sharing the store
agrees on them. A process whose own clock runs 15 minutes fast would otherwise erase every
live interaction token, put its requests at the back of the queue (or, running slow, ahead),
and count reservations in the wrong day near a reset.

`DatabaseClock` reads the database's clock once per `SYNC_INTERVAL` and runs on this
process's monotonic clock in between, so a reading costs no round trip and a jump of this
process's wall clock never shows. Durations within one run (poll schedules and job deadlines,
button pacing, log throttling) stay on the monotonic clock: they never leave the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import NoReturn

from bot.storage.base import DATABASE_NOW, Database
from bot.storage.outage import is_outage

log = logging.getLogger(__name__)

# Between readings the monotonic clock carries the time: it drifts from the database's by
# parts per million, so a minute's drift is far below anything the times above decide.
SYNC_INTERVAL = 60.0


class DatabaseClock:
    """Unix time by the database's clock; call it like `time.time`.

    Until the first `sync` it reads `wall` (this process's clock): `sync` before relying on
    it, and run `keep_synced` for the process's life."""

    def __init__(
        self,
        db: Database,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._monotonic = monotonic
        self._sql = f"SELECT {DATABASE_NOW[db.backend]}"
        # (database time, monotonic time) at the last reading.
        self._anchor = (wall(), monotonic())
        self.synced = False

    def __call__(self) -> float:
        database_time, read_at = self._anchor
        return database_time + (self._monotonic() - read_at)

    async def sync(self) -> None:
        """Read the database's clock now."""
        before = self._monotonic()
        database_time = float(await self._db.fetch_value(self._sql))
        after = self._monotonic()
        # The database read its clock somewhere during the round trip: the middle is the
        # best guess, off by at most half the round trip.
        self._anchor = (database_time, (before + after) / 2)
        self.synced = True

    async def keep_synced(self, interval: float = SYNC_INTERVAL) -> NoReturn:
        """Read the database's clock every `interval` seconds, until cancelled. While the
        database cannot be reached the monotonic clock carries on from the last reading
        (the store itself says once that the database is down: bot/storage/outage.py)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except Exception as exc:
                if not is_outage(exc):
                    log.warning("reading the database's clock failed", exc_info=True)
