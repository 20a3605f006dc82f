"""Members' data: how long it is kept (retention), servers the bot left, and a member's own
export and erasure. `Privacy` is what the services and the Discord layer use."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NoReturn

from bot.periodic import cancel_and_wait, repeat
from bot.privacy.members import Erasure, Export, MemberData
from bot.privacy.retention import PurgeReport, Retention, RetentionPolicy
from bot.servers.audit import AuditLog
from bot.storage.db import Database

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
    ) -> None:
        self.retention = Retention(db, policy, clock=clock, on_server_erased=on_server_erased)
        self.members = MemberData(db, audit, clock=clock)
        self._task: asyncio.Task[NoReturn] | None = None

    def start(self) -> None:
        """Purge what is due now, then every hour (one process of a fleet per round). Call it
        once the servers this process is in are known (`servers_present`), so that a server
        the bot came back to while it was away is not erased; later calls do nothing."""
        if self._task is not None:
            return
        self._task = asyncio.create_task(
            repeat(self.retention.run_round, lambda: self.retention.interval, what="privacy purge"),
            name="privacy-purge",
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def server_left(self, guild_id: int) -> None:
        await self.retention.left(guild_id)

    async def servers_present(self, guild_ids: list[int]) -> None:
        await self.retention.present(guild_ids)

    async def export(self, user_id: int) -> Export:
        return await self.members.export(user_id)

    async def erase(self, user_id: int) -> Erasure:
        return await self.members.erase(user_id)
