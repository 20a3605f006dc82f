"""The audit log: every generation, edit, deletion and moderation action on a server.

Entries go to the `audit_log` table and, when the server set one, to its audit channel
(through an `AuditSink` the Discord layer provides). A failure to post never loses the row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bot.storage.db import Database, Tx
from bot.storage.rows import from_row

log = logging.getLogger(__name__)

BOT_ACTOR = 0  # actions the bot takes by itself (a block after strikes, a studio ending)


@dataclass(frozen=True)
class AuditEntry:
    at: float
    guild_id: int
    actor_id: int
    action: str
    detail: str
    target_id: int | None = None
    job_id: str | None = None


class AuditSink(Protocol):
    async def post(self, channel_id: int, entry: AuditEntry) -> None: ...


class AuditLog:
    def __init__(
        self,
        db: Database,
        *,
        audit_channel: Callable[[int], int | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._audit_channel = audit_channel
        self._clock = clock
        self.sink: AuditSink | None = None

    def entry(
        self,
        guild_id: int,
        actor_id: int,
        action: str,
        detail: str,
        *,
        target_id: int | None = None,
        job_id: str | None = None,
    ) -> AuditEntry:
        return AuditEntry(self._clock(), guild_id, actor_id, action, detail, target_id, job_id)

    @staticmethod
    async def write(tx: Tx, entry: AuditEntry) -> None:
        """Write inside the caller's transaction (see `Database.run`), with the change itself."""
        await tx.execute(
            "INSERT INTO audit_log (at, guild_id, actor_id, action, target_id, job_id, detail)"
            " VALUES (?,?,?,?,?,?,?)",
            (
                entry.at,
                entry.guild_id,
                entry.actor_id,
                entry.action,
                entry.target_id,
                entry.job_id,
                entry.detail,
            ),
        )

    async def record(
        self,
        guild_id: int | None,
        actor_id: int,
        action: str,
        detail: str,
        *,
        target_id: int | None = None,
        job_id: str | None = None,
    ) -> None:
        """Write one entry and post it to the audit channel. Direct messages have no server
        and no moderators, so nothing is audited for them."""
        if not guild_id:
            return
        entry = self.entry(guild_id, actor_id, action, detail, target_id=target_id, job_id=job_id)
        await self._db.run(lambda tx: self.write(tx, entry))
        await self.publish(entry)

    async def publish(self, entry: AuditEntry) -> None:
        """Post an entry already written to the table to the server's audit channel."""
        channel_id = self._audit_channel(entry.guild_id)
        if channel_id is None or self.sink is None:
            return
        try:
            await self.sink.post(channel_id, entry)
        except Exception:  # the table has it; a missing channel must not fail the action
            log.warning("could not post to the audit channel of %s", entry.guild_id, exc_info=True)

    async def recent(
        self, guild_id: int, limit: int = 20, *, target_id: int | None = None
    ) -> list[AuditEntry]:
        """The newest entries first; with `target_id`, only those about that member (/mod why)."""
        where, params = "guild_id = ?", [guild_id]
        if target_id is not None:
            where, params = where + " AND target_id = ?", [*params, target_id]
        rows = await self._db.fetch_all(
            f"SELECT * FROM audit_log WHERE {where} ORDER BY at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [from_row(AuditEntry, r) for r in rows]
