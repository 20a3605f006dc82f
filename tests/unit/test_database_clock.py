"""DatabaseClock on its own: the database's time, carried by the monotonic clock between
readings, whatever this process's wall clock says."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import pytest

from bot.storage.base import DATABASE_NOW
from bot.storage.clock import DatabaseClock
from bot.storage.db import Database


class Ticking:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


async def test_after_a_sync_it_tells_database_time_and_ignores_the_wall_clock(
    db: Database,
) -> None:
    monotonic = Ticking()
    clock = DatabaseClock(db, wall=lambda: time.time() + 900, monotonic=monotonic)
    assert clock() > time.time() + 800  # before any reading: the process's own clock
    await clock.sync()
    database_now = float(await db.fetch_value(f"SELECT {DATABASE_NOW[db.backend]}"))
    assert clock.synced and abs(clock() - database_now) < 5
    monotonic.now += 10.0
    assert abs(clock() - database_now - 10.0) < 5


class Unreachable:
    """A store that has stopped answering (as during a PostgreSQL restart)."""

    backend = "sqlite"

    def __init__(self) -> None:
        self.attempts = 0
        self.tried_thrice = asyncio.Event()

    async def fetch_value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.attempts += 1
        if self.attempts >= 3:
            self.tried_thrice.set()
        raise ConnectionRefusedError(111, "Connection refused")


async def test_an_outage_leaves_it_running_on_the_last_reading_without_a_word(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Unreachable()
    monotonic = Ticking()
    clock = DatabaseClock(store, wall=lambda: 1000.0, monotonic=monotonic)  # type: ignore[arg-type]
    keeping = asyncio.create_task(clock.keep_synced(interval=0))
    try:
        await asyncio.wait_for(store.tried_thrice.wait(), 5)
    finally:
        keeping.cancel()
    monotonic.now += 2.0
    assert clock() == 1002.0
    # The store says once that the database is down; the clock adds nothing to that.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
