"""A moderator's LoRA change in one process reaches every other process's catalogue
(bot/invalidation.py), so autocomplete and requests agree across the fleet."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from bot.invalidation import Cache, SharedCaches, announce
from bot.servers.audit import AuditLog
from bot.servers.loras import LoraCatalogue
from bot.storage.db import Database, Tx, open_database
from tests.postgres_fixtures import DsnFactory

GUILD = 42


async def test_a_lora_added_or_removed_in_one_process_reaches_the_other(
    postgres_dsn_factory: DsnFactory,
) -> None:
    dsn = postgres_dsn_factory()
    reloaded = asyncio.Event()
    async with AsyncExitStack() as stack:
        catalogues = []
        databases: list[Database] = []
        for index in range(2):
            db = await open_database(dsn)
            stack.push_async_callback(db.close)
            databases.append(db)
            catalogue = LoraCatalogue(db, AuditLog(db, audit_channel=lambda guild: None))
            await catalogue.load()
            caches = SharedCaches(db)

            async def reload(
                catalogue: LoraCatalogue = catalogue, watched: bool = index == 1
            ) -> None:
                await catalogue.load()
                if watched:
                    reloaded.set()

            caches.register(Cache.LORAS, reload)
            await caches.start()  # LISTENing once it returns
            stack.push_async_callback(caches.stop)
            catalogues.append(catalogue)
        first, second = catalogues

        async def until_second_has(names: list[str]) -> None:
            while [lora.name for lora in second.server_loras(GUILD)] != names:
                reloaded.clear()
                await asyncio.wait_for(reloaded.wait(), 5)

        async def notice(tx: Tx) -> None:
            await announce(tx, Cache.LORAS)

        # Each process reloads every cache once as it starts (then every RELOAD_INTERVAL, 30 s
        # away); from here on a reload of the second one is a notice's.
        await asyncio.wait_for(reloaded.wait(), 5)
        reloaded.clear()
        # It LISTENs from a connection of its own, opened in the background: announce until a
        # notice reaches it.
        for _ in range(50):
            await databases[0].run(notice)
            try:
                await asyncio.wait_for(reloaded.wait(), 0.2)
                break
            except TimeoutError:
                continue
        assert reloaded.is_set(), "the second process never heard a notice"

        await first.add(GUILD, 7, name="Ink", finetune_id="ink", base="klein-4b")
        await until_second_has(["Ink"])
        await first.remove(GUILD, 7, "Ink")
        await until_second_has([])
