"""The approvals tables: each held request whole (its parameters in `request`, its
reference images in `approval_inputs`), so it survives restarts. Returns dataclasses."""

from __future__ import annotations

import json

from bot.community.approvals.rules import Approval, PendingLoad
from bot.jobs.models import GenerationRequest
from bot.providers.base import InputImage
from bot.storage.base import json_integer
from bot.storage.db import Database, Row, Tx
from bot.storage.rows import from_row
from bot.variants import JobParams


def _approval(row: Row) -> Approval:
    # The request's own fields (variant, params, …) are kept as JSON in one column.
    columns = {"batch_size": 1, **dict(row), **json.loads(row["request"])}
    return from_row(Approval, columns, params=JobParams.from_json, role_ids=tuple)


class ApprovalStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @staticmethod
    async def pending_load(tx: Tx, guild_id: int, user_id: int) -> PendingLoad:
        """In the current transaction."""
        images_sql = json_integer(tx.backend, "request", "need", "images")
        credits_sql = json_integer(tx.backend, "request", "need", "credits_mc")
        [(count, images, credits_mc)] = await tx.fetch_all(
            f"SELECT count(*), COALESCE(SUM(COALESCE({images_sql}, 1)), 0),"
            f" COALESCE(SUM(COALESCE({credits_sql}, 0)), 0)"
            " FROM approvals WHERE guild_id = ? AND user_id = ? AND state = 'pending'",
            (guild_id, user_id),
        )
        return PendingLoad(int(count), int(images), int(credits_mc))

    @staticmethod
    async def insert(
        tx: Tx,
        approval_id: str,
        request: GenerationRequest,
        *,
        variant_name: str,
        need: tuple[int, int],
        created_at: float,
        status_message_id: int,
        review_channel_id: int,
    ) -> None:
        """In the current transaction."""
        await tx.execute(
            "INSERT INTO approvals (id, created_at, guild_id, channel_id, user_id, request,"
            " status_message_id, review_channel_id) VALUES (?,?,?,?,?,?,?,?)",
            (
                approval_id,
                created_at,
                request.guild_id,
                request.channel_id,
                request.user_id,
                json.dumps(
                    {
                        "variant": variant_name,
                        "params": request.params.to_json(),
                        "parent_job_id": request.parent_job_id,
                        "role_ids": list(request.role_ids),
                        "need": {"images": need[0], "credits_mc": need[1]},
                        "batch_size": request.batch_size,
                    }
                ),
                status_message_id,
                review_channel_id,
            ),
        )
        await tx.execute_many(
            "INSERT INTO approval_inputs (approval_id, position, content_type, width,"
            " height, data) VALUES (?,?,?,?,?,?)",
            [
                (approval_id, i, image.content_type, image.width, image.height, image.data)
                for i, image in enumerate(request.inputs)
            ],
        )

    async def get(self, approval_id: str) -> Approval | None:
        row = await self._db.fetch_one("SELECT * FROM approvals WHERE id = ?", (approval_id,))
        return None if row is None else _approval(row)

    async def inputs(self, approval_id: str) -> list[InputImage]:
        rows = await self._db.fetch_all(
            "SELECT * FROM approval_inputs WHERE approval_id = ? ORDER BY position",
            (approval_id,),
        )
        return [InputImage(r["content_type"], r["width"], r["height"], r["data"]) for r in rows]

    async def pending(self, guild_id: int) -> list[Approval]:
        rows = await self._db.fetch_all(
            "SELECT * FROM approvals WHERE guild_id = ? AND state = 'pending' ORDER BY created_at",
            (guild_id,),
        )
        return [_approval(row) for row in rows]

    async def decide(
        self, approval_id: str, to: str, moderator_id: int, decided_at: float, reason: str | None
    ) -> Approval | None:
        """pending → `to`, once; None when it was not pending any more."""
        rows = await self._db.run(
            lambda tx: tx.fetch_all(
                "UPDATE approvals SET state = ?, decided_by = ?, decided_at = ?, reason = ?"
                " WHERE id = ? AND state = 'pending' RETURNING *",
                (to, moderator_id, decided_at, reason, approval_id),
            )
        )
        return _approval(rows[0]) if rows else None

    async def delete(self, approval_id: str) -> None:
        await self._db.execute("DELETE FROM approvals WHERE id = ?", (approval_id,))

    async def set_review_message(self, approval_id: str, message_id: int) -> None:
        await self._db.execute(
            "UPDATE approvals SET review_message_id = ? WHERE id = ?", (message_id, approval_id)
        )

    async def mark_not_started(self, approval_id: str, reason: str) -> None:
        """An approved request that could not become a job after all."""
        await self._db.execute(
            "UPDATE approvals SET state = 'rejected', reason = ? WHERE id = ?",
            (reason, approval_id),
        )

    async def mark_started(self, approval_id: str) -> None:
        """Its job exists (with the approval's id): the images are the job's now."""
        await self._db.execute(
            "UPDATE approvals SET job_id = ? WHERE id = ?", (approval_id, approval_id)
        )
        await self.drop_inputs(approval_id)

    async def drop_inputs(self, approval_id: str) -> None:
        await self._db.execute("DELETE FROM approval_inputs WHERE approval_id = ?", (approval_id,))

    async def pending_before(self, cutoff: float) -> list[str]:
        """The ids of the requests still waiting that were made before `cutoff`, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT id FROM approvals WHERE state = 'pending' AND created_at < ?"
            " ORDER BY created_at",
            (cutoff,),
        )
        return [row["id"] for row in rows]

    async def approved_not_started(self) -> list[str]:
        rows = await self._db.fetch_all(
            "SELECT id FROM approvals WHERE state = 'approved' AND job_id IS NULL"
        )
        return [row["id"] for row in rows]
