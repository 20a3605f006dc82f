"""The studios table, and what a studio's thread has made and spent in the job tables.
Returns dataclasses; every change of a studio is written together with its audit entry."""

from __future__ import annotations

import json
from typing import Any

from bot.community.studios.gallery import ThreadImage
from bot.community.studios.rules import Studio, StudioState
from bot.invalidation import Cache, announce
from bot.servers.audit import AuditEntry, AuditLog
from bot.storage.base import INSERTION_ORDER
from bot.storage.db import Database, Row, Tx
from bot.storage.rows import from_row, marks

# What a studio's thread has used: each job's ledger row counts its reservation while it runs,
# then what it was charged (0 when refunded).
_SPENT_SQL = (
    "SELECT COALESCE(SUM(ledger.credits_mc), 0) FROM jobs"
    " JOIN ledger ON ledger.job_id = jobs.id WHERE jobs.channel_id = ?"
)
# The ending steps, recorded as they complete.
UPDATABLE = frozenset({"gallery_message_id", "thread_gallery_message_id", "finished_at"})


def _studio(row: Row) -> Studio:
    return from_row(
        Studio, row, required_words=lambda text: tuple(json.loads(text)), state=StudioState
    )


class StudioStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def all(self) -> list[Studio]:
        return [_studio(row) for row in await self._db.fetch_all("SELECT * FROM studios")]

    async def insert(self, studio: Studio, entry: AuditEntry) -> None:
        async def insert(tx: Tx) -> None:
            await announce(tx, Cache.STUDIOS)
            await tx.execute(
                "INSERT INTO studios (thread_id, guild_id, parent_channel_id, starter_id, theme,"
                " required_words, ends_at, budget_mc, state, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    studio.thread_id,
                    studio.guild_id,
                    studio.parent_channel_id,
                    studio.starter_id,
                    studio.theme,
                    json.dumps(list(studio.required_words)),
                    studio.ends_at,
                    studio.budget_mc,
                    studio.state.value,
                    studio.created_at,
                ),
            )
            await AuditLog.write(tx, entry)

        await self._db.run(insert)

    async def set_state(
        self,
        thread_id: int,
        from_states: tuple[StudioState, ...],
        to: StudioState,
        entry: AuditEntry,
    ) -> Studio | None:
        """A compare-and-set on the state, written with its audit entry; None when the
        studio was in none of `from_states`."""
        placeholders = marks(from_states)

        async def update(tx: Tx) -> Row | None:

            await announce(tx, Cache.STUDIOS)
            row: Row | None = await tx.fetch_one(
                f"UPDATE studios SET state = ? WHERE thread_id = ? AND state IN ({placeholders})"
                " RETURNING *",
                (to.value, thread_id, *(s.value for s in from_states)),
            )
            if row is not None:
                await AuditLog.write(tx, entry)
            return row

        row = await self._db.run(update)
        return None if row is None else _studio(row)

    async def record(self, thread_id: int, entry: AuditEntry | None, **fields: Any) -> None:
        """Record ending steps done (with their audit entry, if any)."""
        if set(fields) - UPDATABLE:
            raise ValueError(f"cannot set {sorted(set(fields) - UPDATABLE)} on a studio")
        assignments = ", ".join(f"{name} = ?" for name in fields)

        async def update(tx: Tx) -> None:

            await announce(tx, Cache.STUDIOS)
            await tx.execute(
                f"UPDATE studios SET {assignments} WHERE thread_id = ?",
                (*fields.values(), thread_id),
            )
            if entry is not None:
                await AuditLog.write(tx, entry)

        await self._db.run(update)

    @staticmethod
    async def standing(tx: Tx, thread_id: int) -> Studio | None:
        """The studio as it is in the current transaction."""
        row = await tx.fetch_one("SELECT * FROM studios WHERE thread_id = ?", (thread_id,))
        return None if row is None else _studio(row)

    @staticmethod
    async def spent_in(tx: Tx, thread_id: int) -> int:
        """The thread's spending so far, in the current transaction (millicredits)."""
        return int(await tx.fetch_value(_SPENT_SQL, (thread_id,)))

    async def spent_mc(self, thread_id: int) -> int:
        return int(await self._db.fetch_value(_SPENT_SQL, (thread_id,)))

    async def delivered(self, thread_id: int) -> list[ThreadImage]:
        """The images made in the thread that are still there, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT id, user_id, prompt, result_message_id, parent_job_id FROM jobs"
            " WHERE channel_id = ? AND state = 'delivered' AND result_message_id IS NOT NULL"
            f" ORDER BY created_at, {INSERTION_ORDER[self._db.backend]}",
            (thread_id,),
        )
        return [from_row(ThreadImage, row) for row in rows]

    async def running_jobs(self, thread_id: int) -> int:
        """Jobs of the thread that have not shown their outcome yet."""
        row = await self._db.fetch_one(
            "SELECT COUNT(*) AS n FROM jobs WHERE channel_id = ? AND closed = 0", (thread_id,)
        )
        return int(row["n"]) if row is not None else 0
