"""Users the owner blocked everywhere: every server and direct messages.

Checked where every request is admitted (`CommunityPolicy.admit`), before anything else
about the member is looked at, so a blocked user's request is refused privately with
BLOCKED_EVERYWHERE_TEXT and nothing is reserved, sent or charged, whichever way they ask.
Kept in memory (read on every request), reloaded when another process changes them
(bot/invalidation.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.errors import InvalidRequest
from bot.invalidation import Cache, announce
from bot.storage.db import Database, Tx
from bot.storage.rows import from_row

log = logging.getLogger(__name__)

BLOCKED_EVERYWHERE_TEXT = (
    "You are blocked from making images with this bot, on every server and in direct "
    "messages. Nothing was charged."
)
MAX_REASON = 200


class BlockedEverywhere(InvalidRequest):
    def __init__(self) -> None:
        super().__init__(BLOCKED_EVERYWHERE_TEXT)


@dataclass(frozen=True)
class GlobalBlock:
    user_id: int
    reason: str
    blocked_by: int
    at: float


class GlobalBlocks:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._blocks: dict[int, GlobalBlock] = {}

    async def load(self) -> None:
        rows = await self._db.fetch_all("SELECT * FROM global_blocks")
        self._blocks = {row["user_id"]: from_row(GlobalBlock, row) for row in rows}

    def block_of(self, user_id: int) -> GlobalBlock | None:
        return self._blocks.get(user_id)

    def check(self, user_id: int) -> None:
        """Raises BlockedEverywhere for a user the owner blocked."""
        if user_id in self._blocks:
            raise BlockedEverywhere()

    def all(self) -> list[GlobalBlock]:
        return sorted(self._blocks.values(), key=lambda block: block.at)

    async def block(self, actor_id: int, user_id: int, reason: str) -> GlobalBlock:
        block = GlobalBlock(
            user_id, reason.strip()[:MAX_REASON] or "no reason given", actor_id, self._clock()
        )

        async def write(tx: Tx) -> None:
            await announce(tx, Cache.GLOBAL_BLOCKS)
            await tx.execute(
                "INSERT INTO global_blocks (user_id, reason, blocked_by, at) VALUES (?,?,?,?)"
                " ON CONFLICT (user_id) DO UPDATE SET reason = excluded.reason,"
                " blocked_by = excluded.blocked_by, at = excluded.at",
                (block.user_id, block.reason, block.blocked_by, block.at),
            )

        await self._db.run(write)
        self._blocks[user_id] = block
        # The owner's actions belong to no server's audit log: the operator's log has them.
        log.info("owner %s blocked user %s everywhere: %s", actor_id, user_id, block.reason)
        return block

    async def unblock(self, actor_id: int, user_id: int) -> bool:
        """Lift the block; False if the user was not blocked."""

        async def write(tx: Tx) -> int:
            await announce(tx, Cache.GLOBAL_BLOCKS)
            return await tx.execute("DELETE FROM global_blocks WHERE user_id = ?", (user_id,))

        removed = await self._db.run(write)
        self._blocks.pop(user_id, None)
        if removed:
            log.info("owner %s unblocked user %s everywhere", actor_id, user_id)
        return bool(removed)
