"""Who the bot's owners are: the Discord application's owner, or its team's owner and its
members with the admin or developer role (as discord.py's `Bot.is_owner` reads a team).
Discord has no owner-only command scope, so every owner command asks `Owners.check`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

from bot.errors import InvalidRequest

NOT_OWNER_TEXT = "Only the bot's owner can use this command."
# Team changes reach the bot within this; the application is not asked on every command.
OWNERS_FRESH_SECONDS = 300.0
# Team roles that may act as the owner (read-only members may not).
OWNER_TEAM_ROLES = frozenset({"admin", "developer"})

# Asks Discord for the current owners (the application's information).
OwnerLookup = Callable[[], Awaitable[frozenset[int]]]


class NotOwner(InvalidRequest):
    def __init__(self) -> None:
        super().__init__(NOT_OWNER_TEXT)


def owner_ids(
    owner_id: int | None, team_owner_id: int | None, members: Iterable[tuple[int, str, bool]]
) -> frozenset[int]:
    """The owners from the application's information: its owner, or its team's owner and
    the team's accepted members (id, role, accepted) whose role may act as the owner."""
    if team_owner_id is None:
        return frozenset() if owner_id is None else frozenset({owner_id})
    team = {uid for uid, role, accepted in members if accepted and role in OWNER_TEAM_ROLES}
    return frozenset({team_owner_id, *team})


class Owners:
    def __init__(self, lookup: OwnerLookup, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup = lookup
        self._clock = clock
        self._ids: frozenset[int] | None = None
        self._read_at = 0.0
        self._reading = asyncio.Lock()  # one lookup at a time, however many commands wait

    async def ids(self) -> frozenset[int]:
        """The owners, read from Discord at most every OWNERS_FRESH_SECONDS. If Discord can't
        be asked, the last answer stands (raises only when there was none)."""
        async with self._reading:
            if self._ids is None or self._clock() - self._read_at >= OWNERS_FRESH_SECONDS:
                try:
                    self._ids = await self._lookup()
                except Exception:
                    if self._ids is None:
                        raise
                self._read_at = self._clock()
            return self._ids

    async def check(self, user_id: int) -> None:
        """Raises NotOwner unless `user_id` is one of the owners."""
        if user_id not in await self.ids():
            raise NotOwner()
