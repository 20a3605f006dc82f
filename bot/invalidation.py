"""Keeping in-memory caches right when several processes share the store.

Per-server settings, banned terms and blocks, studios, the owner's blocks and bot-wide
defaults are read on every command, so each process keeps them in memory. A change written
by one process is announced in its own transaction (`announce`, a NOTIFY delivered at
COMMIT); every process reloads that cache when the notice arrives, and all of them every
RELOAD_INTERVAL in case one was lost (they are, across reconnects). With one process
(SQLite) there is nothing to invalidate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum

from bot.periodic import repeat
from bot.storage.db import Database, Tx
from bot.storage.outage import is_outage

log = logging.getLogger(__name__)

CACHE_CHANNEL = "fluxcord_cache"
RELOAD_INTERVAL = 30.0


class Cache(StrEnum):
    SERVER_SETTINGS = "settings"
    MODERATION = "moderation"
    STUDIOS = "studios"
    MEMBER_PREFERENCES = "member_preferences"  # members' /prefer (bot/members/preferences.py)
    GLOBAL_BLOCKS = "global_blocks"  # the owner's blocks everywhere (bot/operator/blocks.py)
    BOT_DEFAULTS = "bot_defaults"  # the owner's bot-wide defaults (bot/operator/defaults.py)
    LORAS = "loras"  # the servers' LoRA catalogues (bot/servers/loras.py)


async def announce(tx: Tx, cache: Cache) -> None:
    """This transaction changes `cache`: other processes reload it once it commits."""
    await tx.notify(CACHE_CHANNEL, cache.value)


class SharedCaches:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._reloads: dict[str, Callable[[], Awaitable[None]]] = {}
        self._pending: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def register(self, cache: Cache, reload: Callable[[], Awaitable[None]]) -> None:
        self._reloads[cache.value] = reload

    async def start(self) -> None:
        if not self._db.shared:
            return
        await self._db.listen(CACHE_CHANNEL, self._changed)
        self._spawn(repeat(self._reload_all, lambda: RELOAD_INTERVAL, what="reloading caches"))

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _changed(self, name: str) -> None:
        # A burst of changes reloads once: later notices find a reload already pending.
        if name in self._reloads and name not in self._pending:
            self._pending.add(name)
            self._spawn(self._reload(name))

    async def _reload(self, name: str) -> None:
        await asyncio.sleep(0)  # let the rest of a burst arrive first
        self._pending.discard(name)
        try:
            await self._reloads[name]()
        except Exception as exc:
            if is_outage(exc):  # the store has said so, once for the whole outage
                log.debug("reloading the %s cache waits for the database", name)
            else:
                log.warning("reloading the %s cache failed; the periodic reload retries", name)

    async def _reload_all(self) -> None:
        for name in list(self._reloads):
            await self._reload(name)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
