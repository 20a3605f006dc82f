"""Changing many rows a batch at a time, and blanking prompts, the same way on both engines.

Every batch is its own short transaction, so a purge of a big database never holds SQLite's
write lock (or PostgreSQL's row locks) for long, and the bot's own writes go in between.
Each change is idempotent: a round cut short, or run by two processes at once, is finished
by the next one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bot.storage.base import Backend
from bot.storage.db import Database, Tx
from bot.storage.rows import marks

BATCH_SIZE = 500
# What a text that quoted a prompt says once the prompt is gone (strikes, the audit log).
PROMPT_REMOVED = "[prompt removed]"
# The audit actions whose entry quotes the member's prompt (bot/generation.py,
# bot/moderation/strikes.py, bot/community/approvals/queue.py).
PROMPT_ACTIONS = (
    "generate",
    "edit",
    "cancelled",
    "deleted",
    "provider moderation",
    "approval requested",
    "prompt refused",
)
PROMPT_ACTIONS_SQL = "action IN (" + ", ".join(f"'{action}'" for action in PROMPT_ACTIONS) + ")"

Change = Callable[[Tx, list[Any]], Awaitable[int]]


async def in_batches(
    db: Database,
    select_keys: str,
    params: Sequence[Any],
    change: Change,
    *,
    batch_size: int = BATCH_SIZE,
) -> int:
    """Select up to `batch_size` keys with `select_keys` (one column, no LIMIT) and `change`
    them, in one transaction per batch, until a batch comes back short. The change must take
    its rows out of what `select_keys` finds (delete them, or blank what it looks for), or
    this never ends. Returns the rows changed."""
    changed = 0
    while True:

        async def step(tx: Tx) -> tuple[int, int]:
            rows = await tx.fetch_all(f"{select_keys} LIMIT ?", (*params, batch_size))
            keys = [row[0] for row in rows]
            if not keys:
                return 0, 0
            return len(keys), await change(tx, keys)

        found, done = await db.run(step)
        changed += done
        if found < batch_size:
            return changed


def blanked_json(backend: Backend, column: str, *path: str) -> str:
    """SQL for the JSON text in `column` with the string at `path` set to ''."""
    if backend == "postgres":
        return f"jsonb_set(({column})::jsonb, '{{{','.join(path)}}}', '\"\"')::text"
    return f"json_set({column}, '$.{'.'.join(path)}', '')"


def json_text(backend: Backend, column: str, *path: str) -> str:
    """SQL for the string at `path` in the JSON text in `column`."""
    if backend == "postgres":
        return f"(({column})::jsonb #>> '{{{','.join(path)}}}')"
    return f"json_extract({column}, '$.{'.'.join(path)}')"


async def blank_job_prompts(tx: Tx, job_ids: list[Any], now: float) -> int:
    """Blank the prompts of these jobs (the column and the parameters' copy)."""
    return await tx.execute(
        f"UPDATE jobs SET prompt = '', params = {blanked_json(tx.backend, 'params', 'prompt')},"
        f" prompt_removed_at = ? WHERE id IN ({marks(job_ids)}) AND prompt_removed_at IS NULL",
        (now, *job_ids),
    )


async def blank_approval_prompts(tx: Tx, approval_ids: list[Any]) -> int:
    request = blanked_json(tx.backend, "request", "params", "prompt")
    return await tx.execute(
        f"UPDATE approvals SET request = {request} WHERE id IN ({marks(approval_ids)})",
        approval_ids,
    )


async def delete_jobs(tx: Tx, job_ids: list[Any]) -> int:
    """Delete these jobs (their stored images, favourites and showcase records go with them:
    ON DELETE CASCADE, migrations 0001 and 0020). A job made from one of them
    keeps going, its history starting with itself (`parent_purged`)."""
    await tx.execute(
        "UPDATE jobs SET parent_job_id = NULL, parent_purged = 1"
        f" WHERE parent_job_id IN ({marks(job_ids)})",
        job_ids,
    )
    return await tx.execute(f"DELETE FROM jobs WHERE id IN ({marks(job_ids)})", job_ids)


def deleting(table: str, key: str) -> Change:
    """A change that deletes the rows of `table` whose `key` is among the batch's keys."""

    async def delete(tx: Tx, keys: list[Any]) -> int:
        return await tx.execute(f"DELETE FROM {table} WHERE {key} IN ({marks(keys)})", keys)

    return delete


def setting(table: str, key: str, assignment: str) -> Change:
    """A change that sets `assignment` (constant SQL) on the rows whose `key` is in the batch."""

    async def update(tx: Tx, keys: list[Any]) -> int:
        return await tx.execute(
            f"UPDATE {table} SET {assignment} WHERE {key} IN ({marks(keys)})", keys
        )

    return update
