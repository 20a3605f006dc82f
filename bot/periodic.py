"""Background chores that run for the bot's whole life (sweeps, purges)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

from bot.storage.outage import is_database_outage

log = logging.getLogger(__name__)


async def repeat(
    step: Callable[[], Awaitable[object]], interval: Callable[[], float], *, what: str
) -> NoReturn:
    """Run `step` now, then every `interval()` seconds (read each time: tests shorten it),
    until cancelled. A failed round is logged as "`what` failed" and the next one goes on;
    one that failed because the database is unreachable is not (the store logs the outage)."""
    while True:
        try:
            await step()
        except Exception as exc:
            if is_database_outage(exc):
                log.debug("%s failed: the database is unreachable", what)
            else:
                log.exception("%s failed", what)
        await asyncio.sleep(interval())


async def cancel_and_wait(task: asyncio.Task[object] | None) -> None:
    """Stop a background chore and wait until it has (a no-op when it never started)."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
