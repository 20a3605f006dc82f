"""Members' data: how long it is kept (retention), servers the bot left, and a member's own
export and erasure. `Privacy` is what the services and the Discord layer use."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NoReturn

from bot.members.preferences import Preferences
from bot.periodic import cancel_and_wait, repeat
from bot.privacy.members import Erasure, Export, MemberData
from bot.privacy.retention import PurgeReport, Retention, RetentionPolicy
from bot.servers.audit import AuditLog
from bot.storage.db import Database
from bot.storage.outage import DEFAULT_PATIENCE, retry_through_outage

__all__ = ["Erasure", "Export", "MemberData", "Privacy", "PurgeReport", "RetentionPolicy"]


class Privacy:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        policy: RetentionPolicy,
        *,
        clock: Callable[[], float],
        on_server_erased: Callable[[], Awaitable[None]] | None = None,
        preferences: Preferences | None = None,
    ) -> None:
        self.retention = Retention(db, policy, clock=clock, on_server_erased=on_server_erased)
        self.members = MemberData(db, audit, clock=clock, preferences=preferences)
        self._task: asyncio.Task[NoReturn] | None = None

    def start(self, servers_here: Callable[[], list[int]]) -> None:
        """Purge what is due now, then every hour (one process of a fleet per round). Each
        round until one succeeds first marks `servers_here()` (the servers this process is
        in) as present, so that a server the bot came back to while it was away is never
        erased; a database outage only delays that. Later calls do nothing."""
        if self._task is not None:
            return
        checked = False

        async def purge_round() -> None:
            nonlocal checked
            if not checked:
                await self.retention.present(servers_here())
                checked = True
            await self.retention.run_round()

        self._task = asyncio.create_task(
            repeat(purge_round, lambda: self.retention.interval, what="privacy purge"),
            name="privacy-purge",
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def server_left(self, guild_id: int) -> None:
        # Discord says it once: wait through a database outage rather than lose it.
        await retry_through_outage(
            lambda: self.retention.left(guild_id),
            patience=DEFAULT_PATIENCE,
            what="recording a server the bot left",
        )

    async def servers_present(self, guild_ids: list[int]) -> None:
        await retry_through_outage(
            lambda: self.retention.present(guild_ids),
            patience=DEFAULT_PATIENCE,
            what="recording a server the bot is in",
        )

    async def export(self, user_id: int) -> Export:
        return await self.members.export(user_id)

    async def erase(self, user_id: int) -> Erasure:
        return await self.members.erase(user_id)
