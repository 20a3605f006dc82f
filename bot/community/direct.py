"""Who may ask for images in direct messages, whatever process their servers are on.

A direct message has no server, so it is admitted through the servers that allow direct
messages (`/settings dms`) and may use the bot at all (ALLOWED_GUILD_IDS): a member of one of
them, not blocked there, may ask. Discord sends every direct message to shard 0, but those
servers may be on any shard, in any process, so membership is read from the store
(`server_members`), which every process writes for the servers on its own shards: a member
seen asking there, a member joining or leaving (with the Server Members intent), a server
the bot left. A member the store does not know (or not since MEMBERSHIP_FRESH_SECONDS) is
looked up through Discord's REST API, which answers any process about any server: every
server at once (at most LOOKUP_CONCURRENCY at a time), after the caller has acknowledged
the member's interaction; what it finds is stored for every process.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Iterable

from bot.community.policy import DMS_CLOSED_TEXT
from bot.errors import InvalidRequest
from bot.moderation.strikes import Block, Blocked, Moderation
from bot.servers.settings import SettingsStore
from bot.storage.db import Database, Tx

__all__ = ["Acknowledge", "DirectMessages", "MembershipLookup"]

log = logging.getLogger(__name__)

# A sighting older than this is checked with Discord again (members who left are not
# reported without the Server Members intent).
MEMBERSHIP_FRESH_SECONDS = 24 * 3600.0
# One process writes a member's sighting in a server at most this often.
SEEN_WRITE_INTERVAL = 3600.0
# A lookup that found nothing is not repeated for the same servers within this.
NOT_MEMBER_SECONDS = 60.0
LOOKUP_CONCURRENCY = 8
# Entries each in-memory note (sightings written, lookups that found nothing) may hold.
MAX_REMEMBERED = 50_000

# (guild id, user id) → whether the user is a member (None: Discord could not say).
MembershipLookup = Callable[[int, int], Awaitable[bool | None]]
# Answers the member's interaction ("thinking…") before slow work.
Acknowledge = Callable[[], Awaitable[None]]


def _lifts_last(block: Block) -> float:
    return math.inf if block.until is None else block.until


class DirectMessages:
    def __init__(
        self,
        db: Database,
        settings: SettingsStore,
        moderation: Moderation,
        *,
        server_allowed: Callable[[int], bool] = lambda _guild: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._settings = settings
        self._moderation = moderation
        self._server_allowed = server_allowed
        self._clock = clock
        # Asks Discord whether someone is a member; attached by the Discord client.
        self.lookup: MembershipLookup | None = None
        self._written: dict[tuple[int, int], float] = {}  # sightings this process wrote, when
        self._missed: dict[int, tuple[float, frozenset[int]]] = {}  # lookups that found none

    def granting(self) -> set[int]:
        """The servers direct messages are admitted through."""
        return {
            guild for guild in self._settings.guilds_allowing_dms() if self._server_allowed(guild)
        }

    # ----------------------------------------------------------------- admission
    async def admit(self, user_id: int, *, acknowledge: Acknowledge | None = None) -> None:
        """May this member ask in direct messages? Raises InvalidRequest: the block's text
        when they are blocked on every granting server they are in, else DMS_CLOSED_TEXT.
        `acknowledge` is awaited before Discord is asked anything."""
        granting = self.granting()
        if not granting:
            raise InvalidRequest(DMS_CLOSED_TEXT)
        now = self._clock()
        rows = await self._db.fetch_all(
            "SELECT guild_id FROM server_members WHERE user_id = ? AND seen_at >= ?",
            (user_id, now - MEMBERSHIP_FRESH_SECONDS),
        )
        known = {row["guild_id"] for row in rows} & granting
        blocks: list[Block] = []
        if self._unblocked_in(known, user_id, blocks):
            return
        unknown = granting - known
        if unknown and self.lookup is not None and not self._missed_lately(user_id, unknown, now):
            if acknowledge is not None:
                await acknowledge()
            found = await self._look_up(self.lookup, user_id, sorted(unknown))
            if found:
                await self._record_best_effort([(guild, user_id) for guild in found], now)
            else:
                self._note_miss(user_id, unknown, now)
            if self._unblocked_in(found, user_id, blocks):
                return
        if blocks:
            raise Blocked(max(blocks, key=_lifts_last))
        raise InvalidRequest(DMS_CLOSED_TEXT)

    def _unblocked_in(self, guilds: Iterable[int], user_id: int, blocks: list[Block]) -> bool:
        """Whether the member is unblocked on one of `guilds`; the blocks found are added."""
        for guild in guilds:
            block = self._moderation.block_of(guild, user_id)
            if block is None:
                return True
            blocks.append(block)
        return False

    def _missed_lately(self, user_id: int, guilds: Collection[int], now: float) -> bool:
        missed = self._missed.get(user_id)
        return (
            missed is not None
            and now - missed[0] < NOT_MEMBER_SECONDS
            and missed[1].issuperset(guilds)
        )

    def _note_miss(self, user_id: int, guilds: Collection[int], now: float) -> None:
        if len(self._missed) >= MAX_REMEMBERED:
            self._missed.clear()
        self._missed[user_id] = (now, frozenset(guilds))

    @staticmethod
    async def _look_up(lookup: MembershipLookup, user_id: int, guilds: list[int]) -> set[int]:
        gate = asyncio.Semaphore(LOOKUP_CONCURRENCY)

        async def member_of(guild: int) -> int | None:
            async with gate:
                try:
                    return guild if await lookup(guild, user_id) else None
                except Exception:
                    log.warning("could not check membership in server %s", guild, exc_info=True)
                    return None

        answers = await asyncio.gather(*(member_of(guild) for guild in guilds))
        return {guild for guild in answers if guild is not None}

    # ----------------------------------------------------------------- what processes see
    async def seen(self, guild_id: int, user_id: int) -> None:
        """The member is in this server (they asked there, or joined): noted if the server
        grants direct messages. Best effort: a sighting that cannot be written only costs a
        lookup on the member's next direct message."""
        if not (self._settings.get(guild_id).allow_dms and self._server_allowed(guild_id)):
            return
        now = self._clock()
        last = self._written.get((guild_id, user_id))
        if last is not None and now - last < SEEN_WRITE_INTERVAL:
            return
        await self._record_best_effort([(guild_id, user_id)], now)

    async def _record_best_effort(self, memberships: list[tuple[int, int]], now: float) -> None:
        try:
            await self._record(memberships, now)
        except Exception:
            log.warning("could not note %d server memberships", len(memberships), exc_info=True)

    async def _record(self, memberships: list[tuple[int, int]], now: float) -> None:
        async def write(tx: Tx) -> None:
            await tx.execute_many(
                "INSERT INTO server_members (guild_id, user_id, seen_at) VALUES (?,?,?)"
                " ON CONFLICT (guild_id, user_id) DO UPDATE SET seen_at = excluded.seen_at",
                [(guild, user, now) for guild, user in memberships],
            )

        await self._db.run(write)
        if len(self._written) + len(memberships) > MAX_REMEMBERED:
            self._written.clear()
        for guild, user in memberships:
            self._written[(guild, user)] = now
            self._missed.pop(user, None)

    async def left(self, guild_id: int, user_id: int) -> None:
        """The member left (or was removed from) the server."""
        self._written.pop((guild_id, user_id), None)
        await self._db.execute(
            "DELETE FROM server_members WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        )

    async def server_left(self, guild_id: int) -> None:
        """The bot left the server (or was removed): none of its members counts any more."""
        self._written = {key: at for key, at in self._written.items() if key[0] != guild_id}
        await self._db.execute("DELETE FROM server_members WHERE guild_id = ?", (guild_id,))
